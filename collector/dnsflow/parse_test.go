package dnsflow

import (
	"net/netip"
	"slices"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

func TestParseReadsHeaderQuestionAndAnswerChain(t *testing.T) {
	b := answerMsg(t, 0x1234, "WWW.Example.COM", dnsmessage.TypeA, dnsmessage.RCodeSuccess,
		rr{"www.example.com", dnsmessage.TypeCNAME, 30, "edge.cdn.net"},
		rr{"edge.cdn.net", dnsmessage.TypeA, 20, "192.0.2.1"},
		rr{"edge.cdn.net", dnsmessage.TypeAAAA, 40, "2001:db8::1"})
	m, err := parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if m.id != 0x1234 || !m.response || m.rcode != 0 || !m.question || m.qname != "www.example.com" || m.qtype != "A" {
		t.Errorf("header/question: %+v", m)
	}
	if !slices.Equal(m.cnames, []string{"edge.cdn.net"}) {
		t.Errorf("cnames %q", m.cnames)
	}
	want := []answerAddr{{"edge.cdn.net", netip.MustParseAddr("192.0.2.1"), 20}, {"edge.cdn.net", netip.MustParseAddr("2001:db8::1"), 40}}
	if !slices.Equal(m.addrs, want) {
		t.Errorf("addrs %v, want %v", m.addrs, want)
	}
}

func TestParseKeepsHeaderAndQuestionOfACutCapture(t *testing.T) {
	b := manyA(t, 7, "big.example.com", 60)
	if len(b) <= MsgLen {
		t.Fatalf("answer has %d bytes, want more than a capture", len(b))
	}
	m, err := parse(b[:MsgLen])
	if err != nil {
		t.Fatal(err)
	}
	if m.id != 7 || m.qname != "big.example.com" || m.qtype != "A" {
		t.Errorf("header/question: %+v", m)
	}
	// 12 header + 21 question bytes, then 16 bytes per compressed A record.
	if got, want := len(m.addrs), (MsgLen-12-21)/16; got != want {
		t.Errorf("%d addresses from the cut capture, want %d", got, want)
	}
}

func TestParseNamesTypesAndRcodes(t *testing.T) {
	for _, c := range []struct {
		name      string
		qname     string
		qtype     dnsmessage.Type
		wantName  string
		wantType  string
		rcode     dnsmessage.RCode
		wantRcode string
	}{
		{"lower-cased", "MiXeD.Example.ORG", dnsmessage.TypeAAAA, "mixed.example.org", "AAAA", dnsmessage.RCodeSuccess, "NOERROR"},
		{"root", ".", dnsmessage.TypeNS, ".", "NS", dnsmessage.RCodeSuccess, "NOERROR"},
		{"txt", "_dmarc.example.com", dnsmessage.TypeTXT, "_dmarc.example.com", "TXT", dnsmessage.RCodeNameError, "NXDOMAIN"},
		{"unknown type", "x.example", dnsmessage.Type(65280), "x.example", "65280", dnsmessage.RCodeServerFailure, "SERVFAIL"},
		{"any", "x.example", dnsmessage.TypeALL, "x.example", "ANY", dnsmessage.RCodeNotImplemented, "NOTIMP"},
		{"https type", "x.example", dnsmessage.TypeHTTPS, "x.example", "HTTPS", dnsmessage.RCodeRefused, "REFUSED"},
		{"odd bytes escaped", "a b\x01é.example", dnsmessage.TypeA, `a\032b\001\195\169.example`, "A", dnsmessage.RCode(11), "11"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, err := parse(answerMsg(t, 1, c.qname, c.qtype, c.rcode))
			if err != nil {
				t.Fatal(err)
			}
			if m.qname != c.wantName || m.qtype != c.wantType || rcodeName(m.rcode) != c.wantRcode {
				t.Errorf("got %q %q %q, want %q %q %q", m.qname, m.qtype, rcodeName(m.rcode), c.wantName, c.wantType, c.wantRcode)
			}
		})
	}
	if rcodeName(-1) != "TIMEOUT" {
		t.Errorf("rcodeName(-1) = %q", rcodeName(-1))
	}
}

func TestParseRejectsWhatHasNoHeaderOrQuestion(t *testing.T) {
	q := queryMsg(t, 9, "example.com", dnsmessage.TypeA)
	noQuestion := []byte{0, 9, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0} // a query header with QDCOUNT 0
	answerNoQuestion := []byte{0, 9, 0x81, 0x85, 0, 0, 0, 0, 0, 0, 0, 0}
	for _, c := range []struct {
		name string
		b    []byte
		ok   bool
	}{
		{"empty", nil, false},
		{"short header", q[:11], false},
		{"header only, question announced", q[:12], false},
		{"question cut", q[:len(q)-3], false},
		{"query without question", noQuestion, false},
		{"answer without question (REFUSED)", answerNoQuestion, true},
		{"whole query", q, true},
		{"label with a dot", []byte{0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 'a', '.', 'b', 0, 0, 1, 0, 1}, false},
		{"pointer loop", []byte{0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := parse(c.b)
			if (err == nil) != c.ok {
				t.Errorf("parse error %v, want ok=%v", err, c.ok)
			}
		})
	}
}
