package dnsflow

import (
	"dkebpf/collector/flow"

	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"dkebpf/collector/point"
)

var (
	client4 = netip.MustParseAddrPort("10.0.0.5:40000")
	server4 = netip.MustParseAddrPort("10.0.0.53:53")
	udp4    = tuple(client4, server4, protoUDP)
	tcp4    = tuple(client4, server4, protoTCP)
	wall0   = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
)

// Owner of the records built with FlagOwner.
const (
	testPid   = 1234
	testComm  = "curl"
	testNetns = 4026531840
	testMntns = 4026531841
)

func tuple(c, s netip.AddrPort, proto uint8) flow.Tuple {
	t := flow.Tuple{Sport: c.Port(), Dport: s.Port(), Proto: proto, Family: afInet6}
	if c.Addr().Is4() {
		t.Family = afInet
		ca, sa := c.Addr().As4(), s.Addr().As4()
		copy(t.Saddr[:], ca[:])
		copy(t.Daddr[:], sa[:])
	} else {
		t.Saddr, t.Daddr = c.Addr().As16(), s.Addr().As16()
	}
	return t
}

// ev builds a kernel record; FlagOwner records carry the test owner.
func ev(t flow.Tuple, cookie, ts uint64, flags uint8, payload []byte) *Event {
	e := &Event{T: t, Cookie: cookie, TsNs: ts, Flags: flags, Len: uint32(len(payload))}
	e.Cap = uint16(copy(e.Msg[:], payload))
	if flags&FlagOwner != 0 {
		e.Pid, e.Netns, e.Mntns = testPid, testNetns, testMntns
		copy(e.Comm[:], testComm)
	}
	return e
}

// rr is an answer record: A, AAAA (data is the address) or CNAME (data is the target).
type rr struct {
	name string
	typ  dnsmessage.Type
	ttl  uint32
	data string
}

func fqdn(n string) dnsmessage.Name {
	if !strings.HasSuffix(n, ".") {
		n += "."
	}
	return dnsmessage.MustNewName(n)
}

func dnsMsg(tb testing.TB, id uint16, resp bool, rcode dnsmessage.RCode, qname string, qtype dnsmessage.Type, answers ...rr) []byte {
	tb.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, Response: resp, RCode: rcode, RecursionDesired: true})
	b.EnableCompression()
	must := func(err error) {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
	}
	must(b.StartQuestions())
	must(b.Question(dnsmessage.Question{Name: fqdn(qname), Type: qtype, Class: dnsmessage.ClassINET}))
	must(b.StartAnswers())
	for _, a := range answers {
		h := dnsmessage.ResourceHeader{Name: fqdn(a.name), Class: dnsmessage.ClassINET, TTL: a.ttl}
		switch a.typ {
		case dnsmessage.TypeA:
			must(b.AResource(h, dnsmessage.AResource{A: netip.MustParseAddr(a.data).As4()}))
		case dnsmessage.TypeAAAA:
			must(b.AAAAResource(h, dnsmessage.AAAAResource{AAAA: netip.MustParseAddr(a.data).As16()}))
		case dnsmessage.TypeCNAME:
			must(b.CNAMEResource(h, dnsmessage.CNAMEResource{CNAME: fqdn(a.data)}))
		}
	}
	out, err := b.Finish()
	must(err)
	return out
}

func queryMsg(tb testing.TB, id uint16, qname string, qtype dnsmessage.Type) []byte {
	return dnsMsg(tb, id, false, dnsmessage.RCodeSuccess, qname, qtype)
}

func answerMsg(tb testing.TB, id uint16, qname string, qtype dnsmessage.Type, rcode dnsmessage.RCode, answers ...rr) []byte {
	return dnsMsg(tb, id, true, rcode, qname, qtype, answers...)
}

// manyA is an answer of n A records, longer than a capture when n > 30.
func manyA(tb testing.TB, id uint16, qname string, n int) []byte {
	var rrs []rr
	for i := range n {
		rrs = append(rrs, rr{qname, dnsmessage.TypeA, 300, fmt.Sprintf("192.0.2.%d", i%250+1)})
	}
	return answerMsg(tb, id, qname, dnsmessage.TypeA, dnsmessage.RCodeSuccess, rrs...)
}

// frame prefixes each message with its length, as DNS over TCP does.
func frame(msgs ...[]byte) []byte {
	var out []byte
	for _, m := range msgs {
		out = binary.BigEndian.AppendUint16(out, uint16(len(m)))
		out = append(out, m...)
	}
	return out
}

func newTestTracker(cfg Config) *Tracker {
	t := NewTracker(cfg)
	t.now = func() time.Time { return wall0 }
	return t
}

// summary renders the points that tests compare, one line each, sorted.
func summary(pts []point.Point) []string {
	var out []string
	for _, p := range pts {
		out = append(out, fmt.Sprintf("%s %s %s %s pid=%s rcode=%d count=%d latency=%d max=%d",
			p.Tags["transport"], p.Tags["qname"], p.Tags["qtype"], p.Tags["rcode_name"], p.Tags["pid"],
			p.Fields["rcode"], p.Fields["count"], p.Fields["latency"], p.Fields["latency_max"]))
	}
	slices.Sort(out)
	return out
}

func checkSummary(t *testing.T, got []point.Point, want ...string) {
	t.Helper()
	if s := summary(got); !slices.Equal(s, want) {
		t.Errorf("points:\n got %q\nwant %q", s, want)
	}
}

func netip4(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
