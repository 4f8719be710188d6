package store

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	lp "github.com/influxdata/line-protocol/v2/lineprotocol"
)

func TestASinkForwardsWhatIsStoredAfterItWasAddedOnceEachInOrder(t *testing.T) {
	s, _ := openTemp(t, Options{})
	write := func(from, to int) {
		t.Helper()
		var ps []Point
		for i := from; i <= to; i++ {
			ps = append(ps, pt("netflow", t0.Add(time.Duration(i)*time.Second), "i", string(rune('a'+i))))
		}
		if err := s.Write(ps); err != nil {
			t.Fatal(err)
		}
	}
	write(0, 2) // before the sink: not its to forward
	if added, removed, err := s.SetSinks([]string{"vm"}); err != nil || !slices.Equal(added, []string{"vm"}) || removed != nil {
		t.Fatalf("SetSinks: added %v removed %v err %v", added, removed, err)
	}
	write(3, 4)
	write(5, 5)
	got := func(maxPoints int) Pending {
		t.Helper()
		p, err := s.Pending("vm", maxPoints, nil)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := got(1) // whole blocks: the first block holds 2 points
	if len(p.Points) != 2 || !p.Points[0].Time.Equal(t0.Add(3*time.Second)) {
		t.Fatalf("first pending %v, want the block of points 3 and 4", lines(t, p.Points))
	}
	if again := got(1); again.Through != p.Through || len(again.Points) != 2 {
		t.Errorf("pending moved without Advance: %+v", again)
	}
	if err := s.Advance("vm", p.Through); err != nil {
		t.Fatal(err)
	}
	if n, oldest, _ := s.Backlog("vm"); n != 1 || oldest != t0.Add(5*time.Second).UnixNano() {
		t.Errorf("backlog %d points from %d, want 1 from point 5", n, oldest)
	}
	p = got(100)
	if len(p.Points) != 1 || !p.Points[0].Time.Equal(t0.Add(5*time.Second)) {
		t.Fatalf("second pending %v, want point 5", lines(t, p.Points))
	}
	if err := s.Advance("vm", p.Through); err != nil {
		t.Fatal(err)
	}
	if p = got(100); len(p.Points) != 0 {
		t.Errorf("pending after all delivered: %v", lines(t, p.Points))
	}
	if err := s.Advance("vm", 1); err != nil { // never back
		t.Fatal(err)
	}
	if st, _ := s.Sink("vm"); st.Cursor != p.Through {
		t.Errorf("cursor %d after advancing back to 1, want %d", st.Cursor, p.Through)
	}
	// A sink no longer configured is forgotten; one added again starts afresh.
	if _, removed, _ := s.SetSinks([]string{"influx"}); !slices.Equal(removed, []string{"vm"}) {
		t.Errorf("removed %v, want vm", removed)
	}
	if _, err := s.Pending("vm", 1, nil); err == nil {
		t.Errorf("Pending of a removed sink: no error")
	}
}

func TestPendingSkipsBlocksOfOtherCategories(t *testing.T) {
	s, _ := openTemp(t, Options{})
	s.SetSinks([]string{"logs"})
	n := pt("netflow", t0)
	l := pt("bash", t0)
	l.Category, l.Input = "logging", "ebpf-bash"
	if err := s.Write([]Point{n, l, n}); err != nil {
		t.Fatal(err)
	}
	p, err := s.Pending("logs", 100, func(c string) bool { return c == "logging" })
	if err != nil || len(p.Points) != 1 || p.Points[0].Measurement != "bash" {
		t.Fatalf("pending %v, %v: want the bash point only", lines(t, p.Points), err)
	}
	s.Advance("logs", p.Through)
	if p, _ = s.Pending("logs", 100, nil); len(p.Points) != 0 {
		t.Errorf("the skipped blocks are still pending: %v", lines(t, p.Points))
	}
}

func TestRetentionByAgeWaitsForEverySinkButTheSizeBoundDoesNotAndCountsTheLoss(t *testing.T) {
	s, path := openTemp(t, Options{MaxAge: time.Hour})
	s.SetSinks([]string{"fast", "slow"})
	now := t0.Add(10 * time.Hour)
	if err := s.Write([]Point{pt("netflow", now.Add(-3*time.Hour)), pt("dnsflow", now.Add(-2*time.Hour))}); err != nil {
		t.Fatal(err)
	}
	p, _ := s.Pending("fast", 100, nil)
	s.Advance("fast", p.Through)
	if st, _ := s.Retain(now); st.Expired != 0 {
		t.Fatalf("expired %d points that sink slow has not delivered", st.Expired)
	}
	p, _ = s.Pending("slow", 1, nil) // the first block only (dnsflow: a write's blocks go by measurement)
	s.Advance("slow", p.Through)
	if st, _ := s.Retain(now); st.Expired != 1 {
		t.Fatalf("expired %d points, want the 1 delivered everywhere", st.Expired)
	}
	if got, _ := s.Query(Query{Measurement: "netflow"}); len(got) != 1 {
		t.Errorf("netflow: %d points, want the undelivered one kept", len(got))
	}

	// The size bound: fill the store past it while "slow" delivers nothing; the evicted points it had
	// not delivered are its loss, exactly; "fast" delivers everything and loses nothing.
	s.Close()
	const maxSize = 1 << 20
	s, err := Open(path, Options{MaxSize: maxSize, MaxAge: 1000 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rnd := rand.New(rand.NewPCG(3, 4))
	written := 0
	for batch := 0; batch < 30; batch++ {
		var ps []Point
		for i := 0; i < 100; i++ {
			p := pt("netflow", now.Add(time.Duration(written)*time.Millisecond))
			b := make([]byte, 900)
			for j := range b {
				b[j] = byte('a' + rnd.IntN(26))
			}
			v, _ := lp.StringValue(string(b))
			p.Fields = append(p.Fields, Field{"pad", v})
			ps = append(ps, p)
			written++
		}
		if err := s.Write(ps); err != nil {
			t.Fatal(err)
		}
		for {
			p, _ := s.Pending("fast", 1000, nil)
			if len(p.Points) == 0 {
				break
			}
			s.Advance("fast", p.Through)
		}
	}
	if s.Evicted() == 0 {
		t.Fatalf("nothing evicted: the test must pass the bound")
	}
	slow, _ := s.Sink("slow")
	fast, _ := s.Sink("fast")
	var left int
	for {
		p, _ := s.Pending("slow", 1000, nil)
		if len(p.Points) == 0 {
			break
		}
		left += len(p.Points)
		s.Advance("slow", p.Through)
	}
	// slow had one netflow point pending before, plus everything written since.
	if int(slow.Lost)+left != written+1 || fast.Lost != 0 {
		t.Errorf("slow: lost %d + delivered %d != %d; fast lost %d", slow.Lost, left, written+1, fast.Lost)
	}
}
