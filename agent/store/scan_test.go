package store

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// TestScanVisitsWhatQueryReturns: over many blocks, written in several writes and spanning hours, Scan visits
// exactly the points Query returns for the same range, tags and category, and stops when asked.
func TestScanVisitsWhatQueryReturns(t *testing.T) {
	s, _ := openTemp(t, Options{})
	for w := 0; w < 30; w++ {
		var pts []Point
		for i := 0; i < 500; i++ {
			at := t0.Add(time.Duration(w*500+i) * 2 * time.Second)
			port := []string{"80", "443", "53"}[i%3]
			pts = append(pts, pt("netflow", at, "dst_port", port))
		}
		pts = append(pts, pt("dnsflow", t0.Add(time.Duration(w)*time.Minute)))
		if err := s.Write(pts); err != nil {
			t.Fatal(err)
		}
	}
	defer func(n int) { scanTxBlocks = n }(scanTxBlocks)
	for _, txBlocks := range []int{256, 3, 1} {
		scanTxBlocks = txBlocks
		for _, q := range []Query{
			{Measurement: "netflow"},
			{Measurement: "netflow", Since: t0.Add(3 * time.Hour), Until: t0.Add(5*time.Hour + time.Second)},
			{Measurement: "netflow", Since: t0.Add(time.Hour), Tags: map[string]string{"dst_port": "443"}},
			{Measurement: "netflow", Category: "logging"},
			{Measurement: "dnsflow", Since: t0.Add(10 * time.Minute)},
			{Measurement: "nothing"},
		} {
			want, err := s.Query(q)
			if err != nil {
				t.Fatal(err)
			}
			var got []Point
			prev := int64(0)
			if err := s.Scan(q, nil, func(p *Point) error {
				if prev != 0 && p.Time.UnixNano() > prev+int64(blockMaxSpan) {
					t.Fatalf("%+v: point at %s after one at %s: blocks not newest first", q, p.Time, time.Unix(0, prev))
				}
				prev = p.Time.UnixNano()
				c := *p
				c.Tags, c.Fields = slices.Clone(p.Tags), slices.Clone(p.Fields)
				got = append(got, c)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			slices.SortStableFunc(got, func(a, b Point) int { return a.Time.Compare(b.Time) })
			if g, w := lines(t, got), lines(t, want); !slices.Equal(g, w) {
				t.Errorf("%+v, %d blocks a transaction: scan visited %d points, query returned %d", q, txBlocks, len(g), len(w))
			}

			// With keys: the same points, holding only those tags and fields (and the query's tags).
			var some []Point
			if err := s.Scan(q, []string{"note", "nothing"}, func(p *Point) error {
				c := *p
				c.Tags, c.Fields = slices.Clone(p.Tags), slices.Clone(p.Fields)
				some = append(some, c)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			slices.SortStableFunc(some, func(a, b Point) int { return a.Time.Compare(b.Time) })
			for i := range want {
				w := want[i]
				w.Tags = slices.DeleteFunc(slices.Clone(w.Tags), func(t Tag) bool { _, ok := q.Tags[t.Key]; return !ok })
				w.Fields = slices.DeleteFunc(slices.Clone(w.Fields), func(f Field) bool { return f.Key != "note" })
				want[i] = w
			}
			if g, w := lines(t, some), lines(t, want); !slices.Equal(g, w) {
				t.Errorf("%+v with keys: scan visited\n%q\nwant\n%q", q, g[:min(len(g), 2)], w[:min(len(w), 2)])
			}
		}
	}

	n := 0
	if err := s.Scan(Query{Measurement: "netflow"}, nil, func(*Point) error {
		if n++; n == 10 {
			return ErrStopScan
		}
		return nil
	}); err != nil || n != 10 {
		t.Errorf("ErrStopScan: %d points visited, err %v; want 10, nil", n, err)
	}
	boom := errors.New("boom")
	if err := s.Scan(Query{Measurement: "netflow"}, nil, func(*Point) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("callback error: got %v, want boom", err)
	}
}
