package dnsflow

// Stat indexes of df_stats (enum df_stat in probes/dnsflow.h; the layout test checks them against the BTF).
const (
	StatRingLost     = iota // DF_STAT_RB_LOST
	StatQueries             // DF_STAT_QUERIES: UDP queries tracked in the kernel
	StatAnswers             // DF_STAT_ANSWERS: answers paired with them in the kernel
	StatRetried             // DF_STAT_RETRIED: queries replaced by a retry with the same ID (unanswered)
	StatInFlightFull        // DF_STAT_INFLIGHT_FULL: queries not tracked, df_inflight full
	StatAggFull             // DF_STAT_AGG_FULL: finished queries not counted, df_agg full
	StatMax                 // DF_STAT_MAX
)
