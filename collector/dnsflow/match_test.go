package dnsflow

import (
	"maps"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

const (
	tQuery  = 1_000_000_000 // ns, CLOCK_MONOTONIC
	tAnswer = 1_000_250_000
)

func TestUDPQueryAndAnswerMakeOnePointWithExactLatency(t *testing.T) {
	tr := newTestTracker(Config{})
	tr.Add(ev(udp4, 1, tQuery, FlagEgress|FlagOwner, queryMsg(t, 0xabcd, "Example.COM", dnsmessage.TypeA)))
	tr.Add(ev(udp4, 1, tAnswer, 0, answerMsg(t, 0xabcd, "example.com", dnsmessage.TypeA, dnsmessage.RCodeSuccess,
		rr{"example.com", dnsmessage.TypeA, 300, "93.184.216.34"})))
	pts := tr.Flush(wall0)
	if len(pts) != 1 {
		t.Fatalf("%d points, want 1", len(pts))
	}
	p := pts[0]
	wantTags := map[string]string{
		"family": "IPv4", "direction": "outgoing", "transport": "udp",
		"src_ip": "10.0.0.5", "dst_ip": "10.0.0.53", "src_ip_type": "private", "dst_ip_type": "private",
		"src_port": "*", "dst_port": "53",
		"client_ip": "10.0.0.5", "client_port": "*", "server_ip": "10.0.0.53", "server_port": "53", "conn_side": "client",
		"pid": "1234", "process_name": "curl", "netns": "4026531840",
		"qname": "example.com", "qtype": "A", "rcode_name": "NOERROR",
	}
	wantFields := map[string]any{"rcode": int64(0), "count": int64(1), "latency": int64(250_000), "latency_max": int64(250_000)}
	if p.Name != "dnsflow" || !p.Time.Equal(wall0) || !maps.Equal(p.Tags, wantTags) || !maps.Equal(p.Fields, wantFields) {
		t.Errorf("point:\n got %s %v %v %v\nwant dnsflow %v %v %v", p.Name, p.Time, p.Tags, p.Fields, wall0, wantTags, wantFields)
	}
	if s := tr.Stats(); s != (Stats{Queries: 1, Answers: 1}) {
		t.Errorf("stats %+v", s)
	}
	if pts := tr.Flush(wall0.Add(time.Second)); len(pts) != 0 {
		t.Errorf("second flush: %d points, want 0", len(pts))
	}
}

func TestQueriesAggregatePerNameTypeAndRcode(t *testing.T) {
	type step struct {
		ts      uint64
		egress  bool
		id      uint16
		qtype   dnsmessage.Type
		rcode   dnsmessage.RCode
		qname   string
		expire  uint64 // Expire(expire) instead of a packet
		flushed []string
	}
	a, aaaa := dnsmessage.TypeA, dnsmessage.TypeAAAA
	for _, c := range []struct {
		name  string
		steps []step
		want  []string
		stats Stats
	}{
		{"A and AAAA with different IDs are two queries", []step{
			{ts: 100, egress: true, id: 1, qtype: a}, {ts: 110, egress: true, id: 2, qtype: aaaa},
			{ts: 400, id: 2, qtype: aaaa}, {ts: 600, id: 1, qtype: a},
		}, []string{
			"udp example.com A NOERROR pid=1234 rcode=0 count=1 latency=500 max=500",
			"udp example.com AAAA NOERROR pid=1234 rcode=0 count=1 latency=290 max=290",
		}, Stats{Queries: 2, Answers: 2}},
		{"same name twice aggregates mean and max", []step{
			{ts: 100, egress: true, id: 1, qtype: a}, {ts: 200, id: 1, qtype: a},
			{ts: 1000, egress: true, id: 2, qtype: a}, {ts: 1300, id: 2, qtype: a},
		}, []string{"udp example.com A NOERROR pid=1234 rcode=0 count=2 latency=200 max=300"}, Stats{Queries: 2, Answers: 2}},
		{"a retry with the same key reports the first unanswered", []step{
			{ts: 100, egress: true, id: 7, qtype: a}, {ts: 5_100, egress: true, id: 7, qtype: a}, {ts: 5_400, id: 7, qtype: a},
		}, []string{
			"udp example.com A NOERROR pid=1234 rcode=0 count=1 latency=300 max=300",
			"udp example.com A TIMEOUT pid=1234 rcode=-1 count=1 latency=0 max=0",
		}, Stats{Queries: 2, Answers: 1, Timeouts: 1}},
		{"NXDOMAIN has rcode 3", []step{
			{ts: 100, egress: true, id: 3, qtype: a, qname: "nope.example"}, {ts: 170, id: 3, qtype: a, qname: "nope.example", rcode: dnsmessage.RCodeNameError},
		}, []string{"udp nope.example A NXDOMAIN pid=1234 rcode=3 count=1 latency=70 max=70"}, Stats{Queries: 1, Answers: 1}},
		{"an answer without a query is counted, not reported", []step{
			{ts: 100, id: 4, qtype: a},
		}, nil, Stats{UnmatchedAnswers: 1}},
		{"an answer with another ID does not match", []step{
			{ts: 100, egress: true, id: 5, qtype: a}, {ts: 200, id: 6, qtype: a},
		}, nil, Stats{Queries: 1, UnmatchedAnswers: 1, InFlight: 1}},
		{"a timeout is reported after Expire, not before", []step{
			{ts: tQuery, egress: true, id: 8, qtype: a},
			{expire: tQuery + uint64(DefaultTimeout) - 1, flushed: nil},
			{expire: tQuery + uint64(DefaultTimeout), flushed: []string{"udp example.com A TIMEOUT pid=1234 rcode=-1 count=1 latency=0 max=0"}},
			{ts: tQuery + uint64(DefaultTimeout) + 5, id: 8, qtype: a}, // too late: unmatched
		}, nil, Stats{Queries: 1, Timeouts: 1, UnmatchedAnswers: 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr := newTestTracker(Config{})
			for _, s := range c.steps {
				if s.expire != 0 {
					tr.Expire(s.expire)
					checkSummary(t, tr.Flush(wall0), s.flushed...)
					continue
				}
				qname := s.qname
				if qname == "" {
					qname = "example.com"
				}
				if s.egress {
					tr.Add(ev(udp4, 1, s.ts, FlagEgress|FlagOwner, queryMsg(t, s.id, qname, s.qtype)))
				} else {
					tr.Add(ev(udp4, 1, s.ts, 0, answerMsg(t, s.id, qname, s.qtype, s.rcode)))
				}
			}
			checkSummary(t, tr.Flush(wall0), c.want...)
			if s := tr.Stats(); s != c.stats {
				t.Errorf("stats\n got %+v\nwant %+v", s, c.stats)
			}
		})
	}
}

func TestExpireVisitsQueriesInArrivalOrder(t *testing.T) {
	tr := newTestTracker(Config{Timeout: time.Microsecond})
	for i := range uint16(5) {
		tr.Add(ev(udp4, 1, uint64(i)*1000, FlagEgress|FlagOwner, queryMsg(t, i, "example.com", dnsmessage.TypeA)))
	}
	tr.Add(ev(udp4, 1, 2500, 0, answerMsg(t, 2, "example.com", dnsmessage.TypeA, dnsmessage.RCodeSuccess))) // answered: leaves the FIFO
	tr.Expire(3000)                                                                                         // queries sent at 0, 1000 (and 2000, answered) are 1 µs old
	if s := tr.Stats(); s.Timeouts != 2 || s.InFlight != 2 {
		t.Errorf("after Expire(3000): %+v, want 2 timeouts and 2 in flight", s)
	}
	tr.Expire(1 << 40)
	if s := tr.Stats(); s.Timeouts != 4 || s.InFlight != 0 {
		t.Errorf("after Expire(all): %+v, want 4 timeouts and 0 in flight", s)
	}
}

func TestInFlightEvictionDropsTheOldestUnreported(t *testing.T) {
	tr := newTestTracker(Config{MaxInFlight: 2})
	for i := range uint16(3) {
		tr.Add(ev(udp4, 1, 100+uint64(i), FlagEgress|FlagOwner, queryMsg(t, i, "example.com", dnsmessage.TypeA)))
	}
	tr.Add(ev(udp4, 1, 500, 0, answerMsg(t, 0, "example.com", dnsmessage.TypeA, dnsmessage.RCodeSuccess))) // the evicted one
	tr.Add(ev(udp4, 1, 500, 0, answerMsg(t, 2, "example.com", dnsmessage.TypeA, dnsmessage.RCodeSuccess)))
	tr.Expire(1 << 40)
	checkSummary(t, tr.Flush(wall0),
		"udp example.com A NOERROR pid=1234 rcode=0 count=1 latency=398 max=398",
		"udp example.com A TIMEOUT pid=1234 rcode=-1 count=1 latency=0 max=0")
	want := Stats{Queries: 3, Answers: 1, Timeouts: 1, UnmatchedAnswers: 1, InFlightEvicted: 1}
	if s := tr.Stats(); s != want {
		t.Errorf("stats\n got %+v\nwant %+v", s, want)
	}
}

func TestQueriesOfDifferentSocketsOrServersDoNotMatch(t *testing.T) {
	tr := newTestTracker(Config{})
	other := tuple(client4, netip4("10.0.0.54:53"), protoUDP)
	tr.Add(ev(udp4, 1, 100, FlagEgress|FlagOwner, queryMsg(t, 1, "example.com", dnsmessage.TypeA)))
	tr.Add(ev(udp4, 2, 200, 0, answerMsg(t, 1, "example.com", dnsmessage.TypeA, dnsmessage.RCodeSuccess)))  // other socket
	tr.Add(ev(other, 1, 200, 0, answerMsg(t, 1, "example.com", dnsmessage.TypeA, dnsmessage.RCodeSuccess))) // other server
	tcp := tcp4
	tr.Add(ev(tcp, 1, 200, 0, frame(answerMsg(t, 1, "example.com", dnsmessage.TypeA, dnsmessage.RCodeSuccess)))) // other transport
	if s := tr.Stats(); s.UnmatchedAnswers != 3 || s.InFlight != 1 {
		t.Errorf("stats %+v, want 3 unmatched answers and the query in flight", s)
	}
}

func TestRecordsThatAreNotAClientsExchangeAreCounted(t *testing.T) {
	q := queryMsg(t, 1, "example.com", dnsmessage.TypeA)
	ans := answerMsg(t, 1, "example.com", dnsmessage.TypeA, dnsmessage.RCodeSuccess)
	badProto, badFamily := udp4, udp4
	badProto.Proto = 1
	badFamily.Family = 1
	for _, c := range []struct {
		name string
		e    *Event
		want Stats
	}{
		{"garbage payload", ev(udp4, 1, 1, FlagEgress, []byte("GET / HTTP/1.1\r\n")), Stats{Malformed: 1}},
		{"empty payload", ev(udp4, 1, 1, FlagEgress, nil), Stats{Malformed: 1}},
		{"cut question", ev(udp4, 1, 1, FlagEgress, q[:len(q)-2]), Stats{Malformed: 1}},
		{"not UDP or TCP", ev(badProto, 1, 1, FlagEgress, q), Stats{Malformed: 1}},
		{"unknown family", ev(badFamily, 1, 1, FlagEgress, q), Stats{Malformed: 1}},
		{"an answer sent", ev(udp4, 1, 1, FlagEgress, ans), Stats{Ignored: 1}},
		{"a query received", ev(udp4, 1, 1, 0, q), Stats{Ignored: 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr := newTestTracker(Config{})
			tr.Add(c.e)
			if s := tr.Stats(); s != c.want {
				t.Errorf("stats %+v, want %+v", s, c.want)
			}
		})
	}
}
