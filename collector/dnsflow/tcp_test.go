package dnsflow

import (
	"testing"

	"golang.org/x/net/dns/dnsmessage"

	"dkebpf/collector/flow"
)

// seg is one TCP segment of a test: its direction, its offset from the direction's first sequence number,
// its payload (the kernel captures min(len, MsgLen) of it) and its timestamp (0: the direction's default).
type seg struct {
	egress bool
	off    uint32
	data   []byte
	ts     uint64
	fin    bool
}

func TestTCPReassembly(t *testing.T) {
	q1 := queryMsg(t, 1, "a.example.com", dnsmessage.TypeA)
	q2 := queryMsg(t, 2, "a.example.com", dnsmessage.TypeAAAA)
	a1 := answerMsg(t, 1, "a.example.com", dnsmessage.TypeA, dnsmessage.RCodeSuccess, rr{"a.example.com", dnsmessage.TypeA, 300, "192.0.2.1"})
	a2 := answerMsg(t, 2, "a.example.com", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, rr{"a.example.com", dnsmessage.TypeAAAA, 300, "2001:db8::1"})
	big := manyA(t, 1, "a.example.com", 60) // longer than a capture
	fq1, fq2, fa1, fa2, fbig := frame(q1), frame(q2), frame(a1), frame(a2), frame(big)
	fq12, fa12 := frame(q1, q2), frame(a1, a2)
	ln := func(b []byte) uint32 { return uint32(len(b)) }
	const (
		okA    = "tcp a.example.com A NOERROR pid=1234 rcode=0 count=1 latency=300 max=300"
		okAAAA = "tcp a.example.com AAAA NOERROR pid=1234 rcode=0 count=1 latency=300 max=300"
	)
	for _, c := range []struct {
		name  string
		base  [2]uint32 // first sequence number: [0] received, [1] sent
		segs  []seg
		want  []string
		stats Stats
	}{
		{"length and message in one segment", [2]uint32{}, []seg{
			{egress: true, data: fq1}, {data: fa1},
		}, []string{okA}, Stats{Queries: 1, Answers: 1}},
		{"length and message in separate segments", [2]uint32{}, []seg{
			{egress: true, data: fq1[:2]}, {egress: true, off: 2, data: fq1[2:]}, {data: fa1[:2]}, {off: 2, data: fa1[2:]},
		}, []string{okA}, Stats{Queries: 1, Answers: 1}},
		{"a 1-byte length prefix split", [2]uint32{}, []seg{
			{egress: true, data: fq1[:1]}, {egress: true, off: 1, data: fq1[1:]}, {data: fa1[:1]}, {off: 1, data: fa1[1:]},
		}, []string{okA}, Stats{Queries: 1, Answers: 1}},
		{"two messages in one segment (pipelined A and AAAA)", [2]uint32{}, []seg{
			{egress: true, data: fq12}, {data: fa12},
		}, []string{okA, okAAAA}, Stats{Queries: 2, Answers: 2}},
		{"a message spanning two segments", [2]uint32{}, []seg{
			{egress: true, data: fq1[:9]}, {egress: true, off: 9, data: fq1[9:]}, {egress: true, off: ln(fq1), data: fq2},
			{data: fa12[:20]}, {off: 20, data: fa12[20:]},
		}, []string{okA, okAAAA}, Stats{Queries: 2, Answers: 2}},
		{"a message longer than the capture, over segments", [2]uint32{}, []seg{
			{egress: true, data: fq1}, {data: fbig[:700]}, {off: 700, data: fbig[700:]},
			{egress: true, off: ln(fq1), data: fq2}, {off: ln(fbig), data: fa2}, // the stream stays in step after it
		}, []string{okA, okAAAA}, Stats{Queries: 2, Answers: 2}},
		{"a retransmitted segment and a partial overlap", [2]uint32{}, []seg{
			{egress: true, data: fq1}, {egress: true, data: fq1, ts: tQuery + 50},
			{egress: true, off: 10, data: append(append([]byte{}, fq1[10:]...), fq2...)},
			{data: fa1}, {data: fa1}, {off: ln(fa1), data: fa2},
		}, []string{okA, okAAAA}, Stats{Queries: 2, Answers: 2}},
		{"a gap loses the stream", [2]uint32{}, []seg{
			{egress: true, data: fq1}, {egress: true, off: ln(fq1) + 5, data: fq2}, {egress: true, off: ln(fq1) + 5 + ln(fq2), data: fq2},
			{data: fa1},
		}, []string{okA}, Stats{Queries: 1, Answers: 1, TCPDesyncs: 1}},
		{"a length prefix beyond the capture loses the stream", [2]uint32{}, []seg{
			{egress: true, data: fq12},
			{data: append(append([]byte{}, fbig...), fa2...)}, // a2's prefix lies after the 512 captured bytes
		}, []string{okA}, Stats{Queries: 2, Answers: 1, TCPDesyncs: 1, InFlight: 1}},
		{"sequence numbers wrap", [2]uint32{0xfffffff0, 0xfffffffa}, []seg{
			{egress: true, data: fq1[:20]}, {egress: true, off: 20, data: fq1[20:]}, {data: fa1[:3]}, {off: 3, data: fa1[3:]},
		}, []string{okA}, Stats{Queries: 1, Answers: 1}},
		{"FIN ends the direction", [2]uint32{}, []seg{
			{egress: true, data: fq1, fin: true}, {egress: true, off: ln(fq1), data: fq2}, {data: fa1},
		}, []string{okA}, Stats{Queries: 1, Answers: 1}},
		{"an empty message is malformed, the next one parses", [2]uint32{}, []seg{
			{egress: true, data: append([]byte{0, 0}, fq1...)}, {data: fa1},
		}, []string{okA}, Stats{Queries: 1, Answers: 1, Malformed: 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr := newTestTracker(Config{})
			for _, s := range c.segs {
				flags, ts, d := uint8(0), uint64(tQuery+300), 0
				if s.egress {
					flags, ts, d = FlagEgress|FlagOwner, tQuery, 1
				}
				if s.fin {
					flags |= FlagTCPFin
				}
				if s.ts != 0 {
					ts = s.ts
				}
				e := ev(tcp4, 9, ts, flags, s.data)
				e.Seq = c.base[d] + s.off
				tr.Add(e)
			}
			checkSummary(t, tr.Flush(wall0), c.want...)
			if s := tr.Stats(); s != c.stats {
				t.Errorf("stats\n got %+v\nwant %+v", s, c.stats)
			}
		})
	}
}

func TestTCPQueriesTakeTheConnectionsFirstOwner(t *testing.T) {
	tr := newTestTracker(Config{Owner: func(uint64) (flow.Proc, uint32, bool) { return flow.Proc{Pid: 99, Comm: "other"}, 1, true }})
	q := frame(queryMsg(t, 1, "example.com", dnsmessage.TypeA))
	// The owner is first seen on a received segment (say, the SYN-ACK's owner-context ACK); the query
	// itself is sent from softirq (a retransmit timer), without it.
	first := ev(tcp4, 5, tQuery, FlagOwner, nil)
	tr.Add(first)
	tr.Add(ev(tcp4, 5, tQuery, FlagEgress, q))
	tr.Add(ev(tcp4, 5, tQuery+300, 0, frame(answerMsg(t, 1, "example.com", dnsmessage.TypeA, dnsmessage.RCodeSuccess))))
	checkSummary(t, tr.Flush(wall0), "tcp example.com A NOERROR pid=1234 rcode=0 count=1 latency=300 max=300")
}

func TestTCPConnectionsAreBoundedAndForgottenWhenIdle(t *testing.T) {
	tr := newTestTracker(Config{MaxStreams: 2})
	q := frame(queryMsg(t, 1, "example.com", dnsmessage.TypeA))
	for cookie := range uint64(3) {
		tr.Add(ev(tcp4, cookie, tQuery+cookie, FlagEgress|FlagOwner, q))
	}
	if s := tr.Stats(); s.StreamsEvicted != 1 || len(tr.conns) != 2 || tr.conns[0] != nil {
		t.Errorf("after 3 connections: %d held (oldest held: %v), stats %+v; want 2, the oldest evicted", len(tr.conns), tr.conns[0] != nil, s)
	}
	tr.Expire(tQuery + 2 + uint64(DefaultTimeout) - 1)
	if len(tr.conns) != 1 {
		t.Errorf("%d connections after the first idle timeout, want 1", len(tr.conns))
	}
	tr.Expire(tQuery + 2 + uint64(DefaultTimeout))
	if len(tr.conns) != 0 {
		t.Errorf("%d connections after the last idle timeout, want 0", len(tr.conns))
	}
	// FIN in both directions forgets a connection at once.
	tr.Add(ev(tcp4, 7, tQuery, FlagEgress|FlagOwner|FlagTCPFin, q))
	tr.Add(ev(tcp4, 7, tQuery+1, FlagTCPFin, nil))
	if len(tr.conns) != 0 {
		t.Errorf("%d connections after FIN both ways, want 0", len(tr.conns))
	}
}
