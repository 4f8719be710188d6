package httpflow

// Stat indexes of hf_stats (enum hf_stat in probes/httpflow.h; the layout test checks them against the BTF).
const (
	StatRingLost     = iota // HF_STAT_RB_LOST
	StatConnFull            // HF_STAT_CONN_FULL
	StatPipelineFull        // HF_STAT_PIPELINE_FULL
	StatDesync              // HF_STAT_DESYNC
	StatUnanswered          // HF_STAT_UNANSWERED
	StatTLSHits             // HF_STAT_TLS_HITS
	StatTLSCalls            // HF_STAT_TLS_CALLS
	StatLost                // HF_STAT_LOST
	StatH2Lost              // HF_STAT_H2_LOST
	StatScratchFull         // HF_STAT_SCRATCH_FULL
	StatMax                 // HF_STAT_MAX
)
