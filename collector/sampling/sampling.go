// Package sampling thins each category's points before they are sent, as DataKit's --sampling-rate and
// --sampling-rate-ptsperminute do: a fixed rate, or a rate recomputed every minute from the points the
// category produced in the last one. What it drops is counted by the caller.
package sampling

import (
	"time"

	"dkebpf/collector/point"
)

// Sampler keeps one point in n of each batch of a category, n = int(1/rate); n <= 1 keeps every point.
// It is not safe for concurrent use (the collector's loop is its only user).
type Sampler struct {
	rate      float64 // fixed; 0 = derived from perMinute
	perMinute int     // points a category may send per minute; 0 = no sampling by volume

	minute   time.Time          // start of the current minute
	produced map[string]int     // points each category produced this minute, before sampling
	rates    map[string]float64 // each category's rate, from the last minute's volume
}

// New returns a Sampler at a fixed rate (0.01..1), or, with rate 0, one holding each category to about
// perMinute points a minute; both 0: a Sampler that keeps everything.
func New(rate float64, perMinute int) *Sampler {
	return &Sampler{rate: rate, perMinute: perMinute, produced: map[string]int{}, rates: map[string]float64{}}
}

// Sample returns the points of one batch of a category to send.
func (s *Sampler) Sample(category string, pts []point.Point, now time.Time) []point.Point {
	rate := s.rate
	if rate == 0 && s.perMinute > 0 {
		rate = s.volumeRate(category, len(pts), now)
	}
	if rate <= 0 {
		return pts
	}
	n := int(1 / rate)
	if n <= 1 {
		return pts
	}
	kept := make([]point.Point, 0, (len(pts)+n-1)/n)
	for i := 0; i < len(pts); i += n {
		kept = append(kept, pts[i])
	}
	return kept
}

// volumeRate counts a batch and returns the category's rate: perMinute over what it produced in the last
// whole minute, clamped to 0.01..1 (above 0.99: 1), as DataKit computes it. The first minute keeps all.
func (s *Sampler) volumeRate(category string, n int, now time.Time) float64 {
	if s.minute.IsZero() {
		s.minute = now
	}
	if now.Sub(s.minute) >= time.Minute {
		for c, produced := range s.produced {
			r := float64(s.perMinute) / float64(produced)
			switch {
			case r > 0.99:
				r = 1
			case r < 0.01:
				r = 0.01
			}
			s.rates[c] = r
		}
		clear(s.produced)
		s.minute = now
	}
	s.produced[category] += n
	if r, ok := s.rates[category]; ok {
		return r
	}
	return 1
}
