package integration

import (
	"strings"
	"testing"
)

// A kernel that refuses some programs at load (forced here with DKEBPF_REFUSE_HOOKS, which hands them to
// the kernel in a form it refuses): the parts with a fallback take it (raw tracepoints, nf_live) and stay
// exact, with the process of every flow, the part without one (httpflow-tls' uprobes) is off and says
// why, and the collector's health point counts both.
func TestRefusedProgramsDegradeOnlyTheirPart(t *testing.T) {
	const refuse = "iter/bpf_map_elem,tp_btf/inet_sock_set_state,tp_btf/sock_send_length,uprobe/SSL_write"
	a := startAgent(t, `  l7net_enabled = ["httpflow", "httpflow-tls"]
  envs = ["DKEBPF_REFUSE_HOOKS=`+refuse+`"]`)

	t.Run("TCP", func(t *testing.T) { checkTCPFlows(t, a, "tcp4", "127.0.0.1", "IPv4") })
	t.Run("UDP", func(t *testing.T) { checkUDPFlows(t, a, "udp6", "::1", "IPv6") })

	self, ok := latestSelfPoint(a)
	if !ok {
		t.Fatal("no datakit_ebpf point")
	}
	// Three programs refused, four where the kernel has sock_send_length (6.3+); tls off; tcp and udp on
	// their fallbacks (raw_tp owners on 6.3+, kprobes before).
	if intField(self, "hooks_refused") < 3 || intField(self, "parts_off") != 1 || intField(self, "parts_fallback") != 2 {
		t.Errorf("datakit_ebpf: hooks_refused=%d parts_off=%d parts_fallback=%d, want >= 3, 1, 2",
			intField(self, "hooks_refused"), intField(self, "parts_off"), intField(self, "parts_fallback"))
	}
	log := a.log.String()
	for _, want := range []string{
		"netflow/tcp: on (fallback); hooks: raw_tp/inet_sock_set_state attached, raw_tp(nf_live, run by the collector) loaded",
		"fallback for tp_btf/inet_sock_set_state (refused by the kernel: ",
		"netflow/tls: OFF, uprobe/SSL_write: refused",
		"httpflow-tls disabled: its uprobe programs (netflow/tls) are off",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("the collector's log lacks %q", want)
		}
	}
	if n := strings.Count(log, "collector running"); n != 1 {
		t.Errorf("the collector started %d times, want once (a refused hook must not crash it)", n)
	}
}
