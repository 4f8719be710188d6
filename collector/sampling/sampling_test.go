package sampling

import (
	"testing"
	"time"

	"dkebpf/collector/point"
)

func batch(n int) []point.Point {
	pts := make([]point.Point, n)
	for i := range pts {
		pts[i] = point.Point{Name: "netflow", Fields: map[string]any{"i": int64(i)}}
	}
	return pts
}

func indexes(pts []point.Point) []int64 {
	var out []int64
	for _, p := range pts {
		out = append(out, p.Fields["i"].(int64))
	}
	return out
}

func TestFixedRateKeepsOnePointInIntOfOneOverRate(t *testing.T) {
	now := time.Unix(0, 0)
	for _, tc := range []struct {
		rate float64
		want int
	}{{0.5, 5}, {0.3, 4}, {0.01, 1}, {0.6, 10}, {1, 10}, {0, 10}} {
		if got := New(tc.rate, 0).Sample("network", batch(10), now); len(got) != tc.want {
			t.Errorf("rate %v: kept %d of 10 (%v), want %d", tc.rate, len(got), indexes(got), tc.want)
		}
	}
	if got := indexes(New(0.3, 0).Sample("network", batch(10), now)); len(got) != 4 || got[1] != 3 || got[3] != 9 {
		t.Errorf("rate 0.3 kept %v, want every third from the first", got)
	}
}

func TestPointsPerMinuteFollowsTheLastMinutesVolumePerCategory(t *testing.T) {
	s := New(0, 100)
	t0 := time.Unix(1000, 0)
	if got := s.Sample("network", batch(400), t0); len(got) != 400 {
		t.Errorf("first minute kept %d, want all 400", len(got))
	}
	s.Sample("logging", batch(50), t0.Add(10*time.Second))
	// 400 network points last minute for 100 a minute: rate 0.25, one in four; logging is under its budget.
	if got := s.Sample("network", batch(400), t0.Add(time.Minute)); len(got) != 100 {
		t.Errorf("second minute kept %d network points, want 100", len(got))
	}
	if got := s.Sample("logging", batch(50), t0.Add(time.Minute+time.Second)); len(got) != 50 {
		t.Errorf("second minute kept %d logging points, want all 50", len(got))
	}
}
