package dnsflow

import (
	"encoding/binary"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"dkebpf/collector/flow"
	"dkebpf/collector/plugin/plugintest"
)

// fakeKernel is the dnsflow part of netflow's BPF object: packets in, as the kernel lays them out, and
// what it counted and waits on (struct df_key and df_query bytes).
type fakeKernel struct {
	events   plugintest.Ring
	stats    []uint64
	counts   []fakeCount
	inflight [][]byte
}

type fakeCount struct {
	key                    []byte
	count, sum, latencyMax uint64
}

func (k *fakeKernel) DrainDNS(fn func([]byte)) int { return k.events.Drain(fn) }
func (k *fakeKernel) DNSStats() []uint64           { return k.stats }
func (k *fakeKernel) DNSGraceTimeouts() uint64     { return 0 }

func (k *fakeKernel) DrainDNSCounts(fn func(key []byte, count, latencySum, latencyMax uint64)) error {
	for _, c := range k.counts {
		fn(c.key, c.count, c.sum, c.latencyMax)
	}
	k.counts = nil
	return nil
}

func (k *fakeKernel) ExpireDNS(cutoff uint64, fn func(query []byte)) (int, error) {
	var left [][]byte
	for _, q := range k.inflight {
		if binary.NativeEndian.Uint64(q) < cutoff {
			fn(q)
		} else {
			left = append(left, q)
		}
	}
	k.inflight = left
	return len(left), nil
}

// kernelKey lays out a struct df_key as the kernel counts a UDP query of the test owner to tp's server.
func kernelKey(t *testing.T, tp flow.Tuple, comm, qname string, qtype dnsmessage.Type, rcode int16) []byte {
	msg := queryMsg(t, 1, qname, qtype)
	name := msg[12 : len(msg)-4] // one question, no compression: the name's labels
	b := make([]byte, SizeKey)
	tp.Sport = 0 // the client's ephemeral port: 0 in the kernel's keys
	tb, err := binary.Append(nil, binary.NativeEndian, tp)
	if err != nil {
		t.Fatal(err)
	}
	copy(b, tb)
	n := binary.NativeEndian
	n.PutUint32(b[40:], testPid)
	n.PutUint32(b[44:], testMntns)
	n.PutUint32(b[48:], testNetns)
	n.PutUint16(b[52:], uint16(rcode))
	n.PutUint16(b[54:], uint16(qtype))
	n.PutUint16(b[56:], uint16(len(name)))
	copy(b[60:76], comm)
	copy(b[76:], name)
	return b
}

// TestKernelCountsBecomeTheSamePoints: what the kernel paired and counted (a key per flow, name, type and
// rcode, names in any letter case merged), what it still waited on past the timeout (unanswered), and the
// answers it hands over for names only, next to a query the collector paired itself.
func TestKernelCountsBecomeTheSamePoints(t *testing.T) {
	tp := tuple(netip.MustParseAddrPort("10.0.0.1:40000"), netip.MustParseAddrPort("10.0.0.53:53"), protoUDP)
	const timeout = 6 * time.Second
	now := uint64(100 * time.Second)
	expired := make([]byte, SizeQuery)
	binary.NativeEndian.PutUint64(expired, now-uint64(timeout)-1)
	copy(expired[8:], kernelKey(t, tp, testComm, "late.example", dnsmessage.TypeAAAA, 0))
	waiting := make([]byte, SizeQuery)
	binary.NativeEndian.PutUint64(waiting, now-uint64(time.Second))
	copy(waiting[8:], kernelKey(t, tp, testComm, "soon.example", dnsmessage.TypeA, 0))
	k := &fakeKernel{stats: []uint64{0, 7, 6, 1, 0, 0},
		counts: []fakeCount{
			{kernelKey(t, tp, testComm, "example.com", dnsmessage.TypeA, 0), 4, 4000, 1500},
			{kernelKey(t, tp, testComm, "EXAMPLE.com", dnsmessage.TypeA, 0), 1, 3000, 3000},
			{kernelKey(t, tp, testComm, "nx.example", dnsmessage.TypeA, 3), 1, 700, 700},
			{kernelKey(t, tp, testComm, "example.com", dnsmessage.TypeA, -1), 1, 0, 0},
			{kernelKey(t, tp, "datakit", "example.com", dnsmessage.TypeA, 0), 2, 10, 5},
		},
		inflight: [][]byte{expired, waiting}}
	names := ev(tp, 9, tAnswer, FlagNames, answerMsg(t, 7, "example.com", dnsmessage.TypeA, dnsmessage.RCodeSuccess,
		rr{"example.com", dnsmessage.TypeA, 300, "192.0.2.7"}))
	k.events = plugintest.Ring{plugintest.Raw(t, names)}
	p := NewPlugin(k, Config{Ports: []uint16{53}, Timeout: timeout}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	p.now = func() uint64 { return now }
	p.tr.now = func() time.Time { return wall0 }
	p.Drain()
	checkSummary(t, p.Flush(time.Unix(100, 0)),
		"udp example.com A NOERROR pid=1234 rcode=0 count=5 latency=1400 max=3000",
		"udp example.com A TIMEOUT pid=1234 rcode=-1 count=1 latency=0 max=0",
		"udp late.example AAAA TIMEOUT pid=1234 rcode=-1 count=1 latency=0 max=0",
		"udp nx.example A NXDOMAIN pid=1234 rcode=3 count=1 latency=700 max=700")
	if name, ok := p.Names().Lookup(netip.MustParseAddr("192.0.2.7"), wall0); !ok || name != "example.com" {
		t.Errorf("name cache: %q, %v; want example.com from the names-only answer", name, ok)
	}
	c := p.Counters()
	if c.Extra["queries"] != 7 || c.Extra["answers"] != 6 || c.Extra["timeouts"] != 2 || c.Extra["in_flight"] != 1 ||
		c.Extra["ignored"] != 2 || c.Extra["unmatched_answers"] != 0 {
		t.Errorf("counters %+v", c.Extra)
	}
}

func TestPluginPairsKernelPacketsIntoPoints(t *testing.T) {
	tp := tuple(netip.MustParseAddrPort("10.0.0.1:40000"), netip.MustParseAddrPort("10.0.0.53:53"), protoUDP)
	k := &fakeKernel{stats: []uint64{2}}
	for _, e := range []*Event{
		ev(tp, 9, tQuery, FlagEgress|FlagOwner, queryMsg(t, 1, "example.com", dnsmessage.TypeA)),
		ev(tp, 9, tAnswer, 0, answerMsg(t, 1, "example.com", dnsmessage.TypeA, dnsmessage.RCodeSuccess)),
	} {
		k.events = append(k.events, plugintest.Raw(t, e))
	}
	k.events = append(k.events, []byte("short"))
	p := NewPlugin(k, Config{Ports: []uint16{53}, Timeout: 6 * time.Second}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	p.now = func() uint64 { return tAnswer }
	p.Drain()
	checkSummary(t, p.Flush(time.Unix(100, 0)),
		"udp example.com A NOERROR pid=1234 rcode=0 count=1 latency=250000 max=250000") // tAnswer - tQuery
	c := p.Counters()
	if c.Events != 3 || c.DecodeErrors != 1 || c.Lost != 2 || c.Extra["queries"] != 1 || c.Extra["answers"] != 1 {
		t.Errorf("counters %+v", c)
	}
}
