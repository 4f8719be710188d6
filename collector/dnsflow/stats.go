package dnsflow

// Stat indexes of df_stats (enum df_stat in probes/dnsflow.h; the layout test checks them against the BTF).
const (
	StatRingLost = iota // DF_STAT_RB_LOST
	StatMax             // DF_STAT_MAX
)
