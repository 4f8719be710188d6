package store

import (
	"bytes"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	lp "github.com/influxdata/line-protocol/v2/lineprotocol"
	bolt "go.etcd.io/bbolt"
)

// logBuffer collects a store's log lines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// randomText is n letters that compress as little as real values.
func randomText(rnd *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + rnd.IntN(26))
	}
	return string(b)
}

// fill writes batches of points of 1 KiB each, batch i at t0+i s, and returns the lines written by batch.
func fill(t *testing.T, s *Store, batches, perBatch int) [][]string {
	t.Helper()
	rnd := rand.New(rand.NewPCG(7, 8))
	var out [][]string
	for b := 0; b < batches; b++ {
		var ps []Point
		for i := 0; i < perBatch; i++ {
			p := pt("netflow", t0.Add(time.Duration(b)*time.Second+time.Duration(i)), "batch", fmt.Sprint(b))
			v, _ := lp.StringValue(randomText(rnd, 1024))
			p.Fields = append(p.Fields, Field{"pad", v})
			ps = append(ps, p)
		}
		if err := s.Write(ps); err != nil {
			t.Fatal(err)
		}
		out = append(out, lines(t, ps))
	}
	return out
}

func damagedFiles(t *testing.T, path string) []string {
	t.Helper()
	m, err := filepath.Glob(path + ".damaged-*")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestABlockDamagedOnDiskIsSetAsideAndTheRestRecovered(t *testing.T) {
	path := filepath.Join(t.TempDir(), "points.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	written := fill(t, s, 20, 10)
	if _, _, err := s.SetSinks([]string{"vm"}); err != nil { // at the end of the log: all 20 blocks delivered
		t.Fatal(err)
	}
	s.Close()

	// Flip one byte inside the pad of batch 7's first point: that block's checksum no longer matches.
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pad := strings.SplitN(strings.SplitN(written[7][0], `pad="`, 2)[1], `"`, 2)[0]
	at := bytes.Index(file, []byte(pad[:64]))
	if at < 0 {
		t.Fatal("pad of batch 7 not found in the file")
	}
	file[at+10] ^= 0x55
	if err := os.WriteFile(path, file, 0o600); err != nil {
		t.Fatal(err)
	}

	var logs logBuffer
	s, err = Open(path, Options{Log: log.New(&logs, "", 0)})
	if err != nil {
		t.Fatalf("open of a damaged store: %v", err)
	}
	defer s.Close()
	if len(damagedFiles(t, path)) != 1 {
		t.Errorf("damaged file not set aside: %v", damagedFiles(t, path))
	}
	if !strings.Contains(logs.String(), "recovered 190 points in 19 blocks; lost 10 points in 1 damaged blocks") {
		t.Errorf("log = %q, want what was recovered and lost", logs.String())
	}
	if s.Damaged() != 10 {
		t.Errorf("Damaged() = %d, want 10", s.Damaged())
	}
	got, err := s.Query(Query{Measurement: "netflow"})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for b, l := range written {
		if b != 7 {
			want = append(want, l...)
		}
	}
	if g := lines(t, got); strings.Join(g, "\n") != strings.Join(want, "\n") {
		t.Errorf("recovered %d points, want the %d of the intact batches exactly", len(g), len(want))
	}
	// It keeps accepting writes, after the recovered blocks.
	if err := s.Write([]Point{pt("netflow", t0.Add(time.Hour))}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Query(Query{Measurement: "netflow", Limit: 1}); len(got) != 1 || !got[0].Time.Equal(t0.Add(time.Hour)) {
		t.Errorf("write after repair not found: %v", lines(t, got))
	}
	// The sink's cursor came across, and the new write is after it: pending, alone.
	if st, _ := s.Sink("vm"); st.Cursor != 20 {
		t.Errorf("sink cursor %d after repair, want 20", st.Cursor)
	}
	if p, err := s.Pending("vm", 100, nil); err != nil || len(p.Points) != 1 || !p.Points[0].Time.Equal(t0.Add(time.Hour)) {
		t.Errorf("pending after repair: %v, %v; want the one point written since", lines(t, p.Points), err)
	}
}

func TestPagesDamagedUnderARunningStoreNeverPanicAQuery(t *testing.T) {
	path := filepath.Join(t.TempDir(), "points.db")
	var logs logBuffer
	s, err := Open(path, Options{Log: log.New(&logs, "", 0)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	written := fill(t, s, 200, 10)

	// Garbage over a run of pages in the middle of the file, through the file: the store's mapping sees it.
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	rnd := rand.New(rand.NewPCG(3, 4))
	junk := make([]byte, 16<<10)
	for i := range junk {
		junk[i] = byte(rnd.IntN(256))
	}
	if _, err := f.WriteAt(junk, st.Size()/2/4096*4096); err != nil {
		t.Fatal(err)
	}
	f.Close()

	// The first query meets the damage: an error or fewer points, never a panic; the store repairs itself.
	first, _ := s.Query(Query{Measurement: "netflow"})
	if len(damagedFiles(t, path)) != 1 {
		t.Fatalf("damaged file not set aside; log: %s", logs.String())
	}
	got, err := s.Query(Query{Measurement: "netflow"})
	if err != nil {
		t.Fatalf("query after repair: %v", err)
	}
	all := map[string]bool{}
	for _, b := range written {
		for _, l := range b {
			all[l] = true
		}
	}
	seen := map[string]bool{}
	for _, l := range lines(t, got) {
		if !all[l] || seen[l] {
			t.Fatalf("recovered a point that was not written, or twice: %.80s", l)
		}
		seen[l] = true
	}
	lost := 2000 - len(got)
	if lost == 0 || lost > 100 || int64(lost) != s.Damaged() {
		t.Errorf("lost %d of 2000 points to 16 KiB of damage, %d reported (first query returned %d)", lost, s.Damaged(), len(first))
	}
	if !strings.Contains(logs.String(), "set aside as") {
		t.Errorf("log = %q", logs.String())
	}
	if err := s.Write([]Point{pt("netflow", t0.Add(time.Hour))}); err != nil {
		t.Fatalf("write after repair: %v", err)
	}
	t.Logf("lost %d of 2000 points; log: %s", lost, logs.String())
}

func TestBothMetaPagesDamagedAreReadPageByPage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "points.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	fill(t, s, 2, 2)
	s.Close()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xAB}, 2*4096), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()

	if _, err := Open(path, Options{ReadOnly: true}); err == nil || !strings.Contains(err.Error(), "start the agent") {
		t.Errorf("read-only open of a damaged store: err = %v, want advice", err)
	}
	var logs logBuffer
	s, err = Open(path, Options{Log: log.New(&logs, "", 0)})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer s.Close()
	if len(damagedFiles(t, path)) != 1 || !strings.Contains(logs.String(), "recovered 4 points in 2 blocks; lost what no intact page held (read page by page") {
		t.Errorf("log = %q", logs.String())
	}
	if got, _ := s.Query(Query{Measurement: "netflow"}); len(got) != 4 {
		t.Errorf("%d points recovered, want 4", len(got))
	}
	if err := s.Write([]Point{pt("netflow", t0)}); err != nil {
		t.Fatal(err)
	}
}

func TestARetriedBatchIsStoredOnce(t *testing.T) {
	s, path := openTemp(t, Options{})
	commit := func(id string) bool {
		b := NewBatch(id)
		p := pt("netflow", t0)
		if err := b.Add(&p); err != nil {
			t.Fatal(err)
		}
		dup, err := s.Commit(b)
		if err != nil {
			t.Fatal(err)
		}
		return dup
	}
	if commit("b1") || !commit("b1") || commit("b2") {
		t.Error("want b1 new, b1 duplicate, b2 new")
	}
	s.Close()
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !commit("b1") {
		t.Error("b1 after reopen: want duplicate")
	}
	if got, _ := s.Query(Query{Measurement: "netflow"}); len(got) != 2 {
		t.Errorf("%d points stored, want 2", len(got))
	}
	// A day later the id is forgotten.
	if _, err := s.Retain(time.Now().Add(batchIDTTL + time.Minute)); err != nil {
		t.Fatal(err)
	}
	if commit("b1") {
		t.Error("b1 a day later: want new")
	}
}

func TestWritesNeverTakeTheDataPastMaxSize(t *testing.T) {
	const maxSize = 4 << 20
	s, path := openTemp(t, Options{MaxSize: maxSize, MaxAge: 1000 * time.Hour})
	var peak int64
	for round := 0; round < 6; round++ {
		fill(t, s, 40, 100) // 4 MiB of pads a round
		used, err := s.UsedSize()
		if err != nil {
			t.Fatal(err)
		}
		if used > maxSize {
			t.Errorf("round %d: %d bytes in use, bound %d", round, used, maxSize)
		}
		// The pages written so far (bbolt's high water mark): freed pages are reused, so it stays near the
		// bound. The file itself may be longer: bbolt extends it ahead of use (to its mapping's size while
		// that is under 16 MiB, then 16 MiB at a time).
		_ = s.view(func(tx *bolt.Tx) error { peak = max(peak, tx.Size()); return nil })
	}
	if peak > maxSize*11/10 {
		t.Errorf("pages in use grew to %d bytes for a bound of %d", peak, maxSize)
	}
	if s.Evicted() == 0 {
		t.Error("nothing evicted")
	}
	st, _ := os.Stat(path)
	t.Logf("high water %d bytes, file %d bytes, %d points evicted", peak, st.Size(), s.Evicted())
}

func TestAManyTagLineDecodesInLinearTime(t *testing.T) {
	var b strings.Builder
	b.WriteString("m")
	for i := 0; i < 80000; i++ {
		fmt.Fprintf(&b, ",t%d=v", i)
	}
	b.WriteString(" f=1i 1\n")
	start := time.Now()
	dec := lp.NewDecoderWithBytes([]byte(b.String()))
	dec.Next()
	p, err := DecodeLine(dec)
	if err != nil || len(p.Tags) != 80000 {
		t.Fatalf("decode: %d tags, %v", len(p.Tags), err)
	}
	// Quadratic took 16 s; this takes milliseconds. The bound is loose on purpose (a busy CI machine).
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("decode of 80 000 tags took %v", d)
	}
	dup := []byte("m,a=1,b=2,a=3 f=1i 1\n")
	dec = lp.NewDecoderWithBytes(dup)
	dec.Next()
	if _, err := DecodeLine(dec); err == nil || !strings.Contains(err.Error(), `duplicate tag "a"`) {
		t.Errorf("err = %v, want duplicate tag", err)
	}
}
