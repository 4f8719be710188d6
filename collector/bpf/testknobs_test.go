package bpf

import "testing"

func TestParseSizesReadsTheTestKnobs(t *testing.T) {
	got, err := parseSizes(ringBytesEnv, "df_events=4096, nf_events=8192,")
	if err != nil || len(got) != 2 || got["df_events"] != 4096 || got["nf_events"] != 8192 {
		t.Fatalf("got %v, %v", got, err)
	}
	for _, bad := range []string{"df_events", "=4096", "df_events=x", "df_events=0", "df_events=-1"} {
		if _, err := parseSizes(ringBytesEnv, bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	for n, ok := range map[uint32]bool{4096: true, 8192: true, 1 << 20: true, 2048: false, 12288: false, 4097: false} {
		if err := checkRingBytes(n, 4096); (err == nil) != ok {
			t.Errorf("%d: %v", n, err)
		}
	}
}
