package store

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	lp "github.com/influxdata/line-protocol/v2/lineprotocol"
)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func pt(meas string, at time.Time, tags ...string) Point {
	p := Point{Category: "network", Input: "ebpf-net/netflow", Measurement: meas, Time: at}
	for i := 0; i+1 < len(tags); i += 2 {
		p.Tags = append(p.Tags, Tag{tags[i], tags[i+1]})
	}
	s, _ := lp.StringValue("a \"quoted\" value")
	p.Fields = []Field{{"bytes_read", lp.IntValue(42)}, {"note", s}}
	return p
}

func openTemp(t *testing.T, opts Options) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data", "points.db")
	s, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func lines(t *testing.T, ps []Point) []string {
	t.Helper()
	var out []string
	for i := range ps {
		b, err := ps[i].AppendLineProtocol(nil)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

func TestWriteThenQueryByTimeRangeTagsAndCategory(t *testing.T) {
	s, _ := openTemp(t, Options{})
	points := []Point{
		pt("netflow", t0.Add(2*time.Second), "dst_port", "80", "host", "h1"),
		pt("netflow", t0, "dst_port", "443", "host", "h1"),
		pt("netflow", t0.Add(time.Second), "dst_port", "80", "host", "h2"),
		pt("dnsflow", t0, "host", "h1"),
	}
	points[3].Category = "logging"
	if err := s.Write(points); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		q    Query
		want []time.Duration // offsets from t0, in order
	}{
		{"all oldest first", Query{Measurement: "netflow"}, []time.Duration{0, time.Second, 2 * time.Second}},
		{"since inclusive", Query{Measurement: "netflow", Since: t0.Add(time.Second)}, []time.Duration{time.Second, 2 * time.Second}},
		{"until inclusive", Query{Measurement: "netflow", Until: t0.Add(time.Second)}, []time.Duration{0, time.Second}},
		{"tag filter", Query{Measurement: "netflow", Tags: map[string]string{"dst_port": "80"}}, []time.Duration{time.Second, 2 * time.Second}},
		{"all tags must match", Query{Measurement: "netflow", Tags: map[string]string{"dst_port": "80", "host": "h1"}}, []time.Duration{2 * time.Second}},
		{"absent tag", Query{Measurement: "netflow", Tags: map[string]string{"nope": "x"}}, nil},
		{"limit keeps most recent", Query{Measurement: "netflow", Limit: 2}, []time.Duration{time.Second, 2 * time.Second}},
		{"limit within range", Query{Measurement: "netflow", Until: t0.Add(time.Second), Limit: 1}, []time.Duration{time.Second}},
		{"category", Query{Measurement: "dnsflow", Category: "network"}, nil},
		{"unknown measurement", Query{Measurement: "nope"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Query(tc.q)
			if err != nil {
				t.Fatal(err)
			}
			var offs []time.Duration
			for _, p := range got {
				offs = append(offs, p.Time.Sub(t0))
			}
			if fmt.Sprint(offs) != fmt.Sprint(tc.want) {
				t.Errorf("times = %v, want %v", offs, tc.want)
			}
		})
	}

	got, _ := s.Query(Query{Measurement: "netflow", Limit: 1})
	want := fmt.Sprintf(`netflow,dst_port=80,host=h1 bytes_read=42i,note="a \"quoted\" value" %d`, t0.Add(2*time.Second).UnixNano())
	if l := lines(t, got); len(l) != 1 || l[0] != want {
		t.Errorf("line = %q, want %q", l, want)
	}
	if got[0].Category != "network" || got[0].Input != "ebpf-net/netflow" {
		t.Errorf("category/input = %q/%q", got[0].Category, got[0].Input)
	}
}

func TestPointsSurviveCloseAndReopenReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "points.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Write([]Point{pt("netflow", t0, "host", "h1")}); err != nil {
		t.Fatal(err)
	}
	// While open read-write, a read-only open is refused, not blocked.
	if _, err := Open(path, Options{ReadOnly: true}); !errors.Is(err, ErrLocked) {
		t.Errorf("read-only open while locked: err = %v, want ErrLocked", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	ro, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	got, err := ro.Query(Query{Measurement: "netflow"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !got[0].Time.Equal(t0) {
		t.Errorf("after reopen got %v", lines(t, got))
	}
	if err := ro.Write([]Point{pt("netflow", t0)}); err == nil {
		t.Error("write to read-only store succeeded")
	}
}

func TestReadOnlyOpenOfMissingStoreFails(t *testing.T) {
	_, err := Open(filepath.Join(t.TempDir(), "none.db"), Options{ReadOnly: true})
	if err == nil || !strings.Contains(err.Error(), "none.db") {
		t.Errorf("err = %v, want an error naming the file", err)
	}
}

func TestRetentionDeletesPointsOlderThanMaxAge(t *testing.T) {
	s, _ := openTemp(t, Options{MaxAge: time.Hour})
	now := t0.Add(10 * time.Hour)
	err := s.Write([]Point{
		pt("netflow", now.Add(-3*time.Hour)),
		pt("netflow", now.Add(-61*time.Minute)),
		pt("dnsflow", now.Add(-2*time.Hour)),
		pt("netflow", now.Add(-59*time.Minute)),
		pt("dnsflow", now),
	})
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.Retain(now)
	if err != nil {
		t.Fatal(err)
	}
	if st.Expired != 3 || st.Evicted != 0 {
		t.Errorf("stats = %+v, want 3 expired", st)
	}
	for meas, want := range map[string]int{"netflow": 1, "dnsflow": 1} {
		got, _ := s.Query(Query{Measurement: meas})
		if len(got) != want {
			t.Errorf("%s: %d points left, want %d", meas, len(got), want)
		}
	}
}

func TestRetentionEvictsOldestPointsAcrossMeasurementsOverMaxSize(t *testing.T) {
	const maxSize = 1 << 20
	big, path := openTemp(t, Options{MaxAge: 1000 * time.Hour})
	s := big // filled past maxSize, then reopened with it
	rnd := rand.New(rand.NewPCG(1, 2))
	pad := func() string { // compresses as little as a real value
		b := make([]byte, 900)
		for i := range b {
			b[i] = byte('a' + rnd.IntN(26))
		}
		return string(b)
	}
	n := 0
	for batch := 0; batch < 30; batch++ {
		var ps []Point
		for i := 0; i < 100; i++ {
			meas := []string{"netflow", "dnsflow"}[n%2]
			p := pt(meas, t0.Add(time.Duration(n)*time.Second))
			v, _ := lp.StringValue(pad())
			p.Fields = append(p.Fields, Field{"pad", v})
			ps = append(ps, p)
			n++
		}
		if err := s.Write(ps); err != nil {
			t.Fatal(err)
		}
	}
	before, _ := s.UsedSize()
	if before <= maxSize {
		t.Fatalf("used %d bytes, test needs more than %d", before, maxSize)
	}
	big.Close()
	s, err := Open(path, Options{MaxSize: maxSize, MaxAge: 1000 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, err := s.Retain(t0.Add(time.Duration(n) * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if st.Evicted == 0 || st.UsedSize > maxSize*9/10 {
		t.Fatalf("stats = %+v (before %d bytes), want eviction under 90%% of %d", st, before, maxSize)
	}
	// The survivors are the newest points: blocks are evicted in the order they
	// were written, and each batch holds one block of each measurement.
	var oldest time.Time
	total := 0
	for _, meas := range []string{"netflow", "dnsflow"} {
		got, _ := s.Query(Query{Measurement: meas})
		total += len(got)
		if len(got) > 0 && (oldest.IsZero() || got[0].Time.Before(oldest)) {
			oldest = got[0].Time
		}
	}
	if total+st.Evicted != n {
		t.Errorf("%d left + %d evicted != %d written", total, st.Evicted, n)
	}
	if st.Evicted%50 != 0 {
		t.Errorf("%d points evicted, want whole blocks of 50", st.Evicted)
	}
	batch := st.Evicted / 100 // whole batches evicted; a half batch means its netflow block went
	wantOldest := t0.Add(time.Duration(batch*100) * time.Second)
	if st.Evicted%100 != 0 {
		wantOldest = wantOldest.Add(time.Second)
	}
	if !oldest.Equal(wantOldest) {
		t.Errorf("oldest survivor %v, want %v", oldest, wantOldest)
	}
}

func TestAMeasurementThatWouldReadBackAsACommentIsRefused(t *testing.T) {
	for _, m := range []string{"", "#m"} {
		if err := NewBatch("").Add(&Point{Measurement: m, Fields: []Field{{"f", lp.IntValue(1)}}, Time: t0}); err == nil {
			t.Errorf("measurement %q accepted", m)
		}
	}
}
