package dnsflow

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"dkebpf/collector/plugin/plugintest"
)

// fakeKernel is the dnsflow part of netflow's BPF object: packets in, as the kernel lays them out.
type fakeKernel struct {
	events plugintest.Ring
	stats  []uint64
}

func (k *fakeKernel) DrainDNS(fn func([]byte)) int { return k.events.Drain(fn) }
func (k *fakeKernel) DNSStats() []uint64           { return k.stats }

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
