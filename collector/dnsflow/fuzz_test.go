package dnsflow

import (
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// FuzzParse feeds arbitrary bytes to the parser and, as UDP datagrams and TCP segments in both directions,
// to a Tracker: nothing may panic, and what parses keeps its invariants.
func FuzzParse(f *testing.F) {
	f.Add(queryMsg(f, 0x1234, "www.example.com", dnsmessage.TypeA))
	f.Add(answerMsg(f, 0x1234, "www.example.com", dnsmessage.TypeA, dnsmessage.RCodeSuccess,
		rr{"www.example.com", dnsmessage.TypeCNAME, 30, "edge.cdn.net"},
		rr{"edge.cdn.net", dnsmessage.TypeA, 20, "192.0.2.1"},
		rr{"edge.cdn.net", dnsmessage.TypeAAAA, 40, "2001:db8::1"}))
	f.Add(answerMsg(f, 9, "nope.example", dnsmessage.TypeAAAA, dnsmessage.RCodeNameError))
	f.Add(manyA(f, 7, "big.example.com", 60)[:MsgLen])
	f.Add(frame(queryMsg(f, 1, "a.example", dnsmessage.TypeA), queryMsg(f, 2, "a.example", dnsmessage.TypeAAAA)))
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := parse(b); err == nil {
			if m.question && (m.qname == "" || m.qtype == "") {
				t.Errorf("parsed %x with an empty name or type: %+v", b, m)
			}
			if !m.response && !m.question {
				t.Errorf("parsed a query without a question: %x", b)
			}
		}
		tr := newTestTracker(Config{MaxInFlight: 4, MaxStreams: 2, MaxNames: 4})
		for _, flags := range []uint8{FlagEgress | FlagOwner, 0} {
			tr.Add(ev(udp4, 1, 10, flags, b))
			half := len(b) / 2
			e := ev(tcp4, 2, 20, flags, b[:half])
			tr.Add(e)
			e = ev(tcp4, 2, 30, flags|FlagTCPFin, b[half:])
			e.Seq = uint32(half)
			tr.Add(e)
		}
		tr.Expire(1 << 40)
		for _, p := range tr.Flush(wall0) {
			if p.Fields["count"].(int64) < 1 {
				t.Errorf("point with count %v", p.Fields["count"])
			}
		}
	})
}
