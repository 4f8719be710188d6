package flow

import (
	"net/netip"
	"testing"
)

func TestSetNATOnlyForOutgoingConnectionsDNATed(t *testing.T) {
	vip, pod := netip.MustParseAddrPort("10.96.0.10:80"), netip.MustParseAddrPort("10.244.2.2:8080")
	var asked []string
	nat := func(proto uint8, src, dst netip.AddrPort) (netip.AddrPort, bool) {
		asked = append(asked, src.String()+">"+dst.String())
		return pod, proto == ProtoTCP && dst == vip
	}
	tup := Tuple{Family: 2, Proto: ProtoTCP, Sport: 40000, Dport: 80, Saddr: [16]byte{10, 244, 1, 2}, Daddr: [16]byte{10, 96, 0, 10}}
	out := NewKey(tup, DirOut, 32768, Proc{}, 1)
	out.SetNAT(tup, nat)
	if tags := out.Tags(); tags["dst_nat_ip"] != "10.244.2.2" || tags["dst_nat_port"] != "8080" || tags["src_port"] != "*" {
		t.Errorf("outgoing to a ClusterIP: %v", tags)
	}
	if len(asked) != 1 || asked[0] != "10.244.1.2:40000>10.96.0.10:80" {
		t.Errorf("asked conntrack %v: want the client's real port, not *", asked)
	}
	in := NewKey(tup, DirIn, 32768, Proc{}, 1)
	in.SetNAT(tup, nat)
	udp := tup
	udp.Proto = ProtoUDP
	u := NewKey(udp, DirOut, 32768, Proc{}, 1)
	u.SetNAT(udp, nat)
	for _, k := range []Key{in, u} {
		if tags := k.Tags(); tags["dst_nat_ip"] != "N/A" || tags["dst_nat_port"] != "N/A" {
			t.Errorf("%s %s: dst_nat %s:%s, want N/A", k.Direction, k.Transport, tags["dst_nat_ip"], tags["dst_nat_port"])
		}
	}
	if len(asked) != 2 {
		t.Errorf("asked %d times, want 2 (never for an incoming connection)", len(asked))
	}
}
