package netflow

// Stat indexes of nf_stats (enum nf_stat in probes/netflow.h; the layout test checks them against the BTF).
const (
	StatRingLost  = iota // NF_STAT_RB_LOST
	StatSockFull         // NF_STAT_SOCK_FULL
	StatUDPFull          // NF_STAT_UDP_FULL
	StatSockStale        // NF_STAT_SOCK_STALE
	StatMax              // NF_STAT_MAX
)
