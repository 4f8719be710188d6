package dnsflow

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/net/dns/dnsmessage"
)

// message is what dnsflow needs of one DNS message.
type message struct {
	id       uint16
	response bool
	rcode    int
	question bool   // the message has a question (a query must; an answer may lack one)
	qname    string // lower case, presentation format, no trailing dot ("." for the root)
	qtype    string // "A", "AAAA", ... or the number of an unknown type
	addrs    []answerAddr
	cnames   []string // CNAME targets in the answer section, in order
}

// answerAddr is one A or AAAA record of an answer.
type answerAddr struct {
	owner string // the record's name (the question's, or a CNAME target)
	addr  netip.Addr
	ttl   uint32
}

var errNoQuestion = errors.New("dns query without a question")

// parse decodes a message's header and first question and, for answers, its A, AAAA and CNAME records.
// The capture may be cut (512 bytes, or the part of a TCP message that was captured): answers are read
// until the first error, and only a header or question that cannot be read is an error.
func parse(b []byte) (message, error) {
	var p dnsmessage.Parser
	h, err := p.Start(b)
	if err != nil {
		return message{}, err
	}
	m := message{id: h.ID, response: h.Response, rcode: int(h.RCode)}
	q, err := p.Question()
	switch {
	case err == nil:
		m.question = true
		m.qname = nameString(q.Name)
		m.qtype = typeString(q.Type)
	case errors.Is(err, dnsmessage.ErrSectionDone) && m.response:
		// Some servers answer errors (FORMERR, REFUSED) without echoing the question; the query has it.
	case errors.Is(err, dnsmessage.ErrSectionDone):
		return message{}, errNoQuestion
	default:
		return message{}, err
	}
	if !m.response || m.rcode != int(dnsmessage.RCodeSuccess) {
		return m, nil
	}
	if p.SkipAllQuestions() != nil {
		return m, nil // cut inside a further question: header and question are all we have
	}
	for {
		rh, err := p.AnswerHeader()
		if err != nil {
			return m, nil // ErrSectionDone, or the capture ends here
		}
		switch rh.Type {
		case dnsmessage.TypeA:
			r, err := p.AResource()
			if err != nil {
				return m, nil
			}
			m.addrs = append(m.addrs, answerAddr{nameString(rh.Name), netip.AddrFrom4(r.A), rh.TTL})
		case dnsmessage.TypeAAAA:
			r, err := p.AAAAResource()
			if err != nil {
				return m, nil
			}
			m.addrs = append(m.addrs, answerAddr{nameString(rh.Name), netip.AddrFrom16(r.AAAA).Unmap(), rh.TTL})
		case dnsmessage.TypeCNAME:
			r, err := p.CNAMEResource()
			if err != nil {
				return m, nil
			}
			m.cnames = append(m.cnames, nameString(r.CNAME))
		default:
			if p.SkipAnswer() != nil {
				return m, nil
			}
		}
	}
}

func containsString(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// nameString returns a name in lower case without its trailing dot. Bytes that are not printable ASCII
// (labels are raw bytes) are written as \DDD, as in zone files, so a tag value is always valid UTF-8.
func nameString(n dnsmessage.Name) string {
	d := n.Data[:n.Length]
	if len(d) > 1 && d[len(d)-1] == '.' {
		d = d[:len(d)-1]
	}
	var sb strings.Builder
	sb.Grow(len(d))
	for _, c := range d {
		switch {
		case c >= 'A' && c <= 'Z':
			sb.WriteByte(c + 'a' - 'A')
		case c <= ' ' || c >= 0x7f || c == '\\':
			sb.WriteByte('\\')
			sb.WriteString(strconv.Itoa(int(c) + 1000)[1:])
		default:
			sb.WriteByte(c)
		}
	}
	if sb.Len() == 0 {
		return "."
	}
	return sb.String()
}

// typeString names a query type as DataKit's decoder does: "A", "AAAA", ..., or its number. Type 255 is
// "ANY" (RFC 8482), which dnsmessage calls ALL.
func typeString(t dnsmessage.Type) string {
	if t == dnsmessage.TypeALL {
		return "ANY"
	}
	return strings.TrimPrefix(t.String(), "Type")
}

// rcodeNames are the tag values of the RCODEs of RFC 1035 and RFC 2136; others are their number.
var rcodeNames = map[int]string{
	-1: "TIMEOUT", 0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
	6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE",
}

func rcodeName(rc int) string {
	if n, ok := rcodeNames[rc]; ok {
		return n
	}
	return strconv.Itoa(rc)
}
