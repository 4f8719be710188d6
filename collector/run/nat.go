package run

import (
	"log/slog"
	"net/netip"

	"dkebpf/collector/cli"
	"dkebpf/collector/conntrack"
	"dkebpf/collector/flow"
	"dkebpf/collector/k8s"
)

// openNAT opens the kernel's conntrack table, which names where DNAT sent an outgoing connection
// (dst_nat_ip/dst_nat_port: the pod behind a ClusterIP). The caller refreshes it at each flush. Without
// ebpf-net, or when conntrack cannot be read, it returns nils and the tags stay N/A.
func openNAT(cfg *cli.RunConfig, pods *k8s.Index, log *slog.Logger) (*conntrack.Table, flow.NAT) {
	if !cfg.Plugin("ebpf-net") {
		return nil, nil
	}
	t, err := conntrack.Open(log)
	if err == nil {
		err = t.Refresh()
	}
	if err != nil {
		log.Warn("dst_nat_ip off: the kernel's conntrack table cannot be read", "err", err)
		if t != nil {
			t.Close()
		}
		return nil, nil
	}
	if pods != nil {
		// A ClusterIP is worth a conntrack query even before a dump has seen it translated.
		t.SetVirtual(func(dst netip.AddrPort, _ uint8) bool { return pods.IsClusterIP(dst.Addr()) })
	}
	return t, func(proto uint8, src, dst netip.AddrPort) (netip.AddrPort, bool) {
		return t.Lookup(conntrack.Tuple{Proto: proto, Src: src, Dst: dst})
	}
}
