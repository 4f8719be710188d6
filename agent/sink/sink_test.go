package sink

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	lp "github.com/influxdata/line-protocol/v2/lineprotocol"

	"dkebpf/agent/store"
)

// engine is a fake time-series engine: it records the lines of the requests it accepts.
type engine struct {
	mu     sync.Mutex
	lines  []string
	urls   []string
	answer func(body string) int // 0: 204
}

func (e *engine) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rd := io.Reader(r.Body)
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			w.WriteHeader(400)
			return
		}
		rd = zr
	}
	b, _ := io.ReadAll(rd)
	body := string(b)
	code := http.StatusNoContent
	if e.answer != nil {
		if c := e.answer(body); c != 0 {
			code = c
		}
	}
	e.mu.Lock()
	e.urls = append(e.urls, r.URL.String())
	if code/100 == 2 {
		e.lines = append(e.lines, strings.Split(strings.TrimSuffix(body, "\n"), "\n")...)
	}
	e.mu.Unlock()
	w.WriteHeader(code)
}

func (e *engine) got() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.lines...)
}

func openStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "points.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

var t0 = time.Unix(1_700_000_000, 0)

// write stores n points numbered from first, each its own write, and returns their lines.
func write(t *testing.T, st *store.Store, category string, first, n int) []string {
	t.Helper()
	var out []string
	for i := first; i < first+n; i++ {
		p := store.Point{Category: category, Input: "test", Measurement: "m", Time: t0.Add(time.Duration(i) * time.Second),
			Tags: []store.Tag{{Key: "i", Value: fmt.Sprint(i)}}, Fields: []store.Field{{Key: "v", Value: lp.IntValue(int64(i))}}}
		if err := st.Write([]store.Point{p}); err != nil {
			t.Fatal(err)
		}
		b, _ := p.AppendLineProtocol(nil)
		out = append(out, string(b))
	}
	return out
}

func startSink(t *testing.T, cfg Config, st *store.Store) *Sink {
	t.Helper()
	if err := cfg.Check(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.SetSinks([]string{cfg.ID}); err != nil {
		t.Fatal(err)
	}
	s := New(cfg, st, log.New(io.Discard, "", 0))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestASinkDeliversEveryPointOnceInOrderAndOnlyItsCategories(t *testing.T) {
	e := &engine{}
	srv := httptest.NewServer(e)
	defer srv.Close()
	st := openStore(t)
	write(t, st, "network", 0, 3) // before the sink: not forwarded
	s := startSink(t, Config{Target: "influxdb", Host: strings.TrimPrefix(srv.URL, "http://"), Database: "db0", Categories: []string{"N"}}, st)
	want := write(t, st, "network", 3, 20)
	write(t, st, "logging", 100, 5) // not this sink's category
	want = append(want, write(t, st, "network", 23, 7)...)
	waitFor(t, "delivery", func() bool { return s.Stats().Sent == int64(len(want)) })
	time.Sleep(50 * time.Millisecond)
	if got := e.got(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("engine got %d lines:\n%s\nwant %d:\n%s", len(got), strings.Join(got, "\n"), len(want), strings.Join(want, "\n"))
	}
	if u := e.urls[0]; u != "/write?db=db0&precision=ns" {
		t.Errorf("url %q", u)
	}
	if stt, _ := st.Sink(s.ID()); stt.Cursor == 0 {
		t.Errorf("cursor not advanced")
	}
	if n, _, _ := st.Backlog(s.ID()); n != 0 {
		t.Errorf("backlog %d after delivery (the logging points count: they were skipped, so not pending)", n)
	}
}

func TestASinkRetriesAnEngineThatFailsAndLosesNothing(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	e := &engine{answer: func(string) int {
		if down.Load() {
			return http.StatusServiceUnavailable
		}
		return 0
	}}
	srv := httptest.NewServer(e)
	defer srv.Close()
	st := openStore(t)
	s := startSink(t, Config{Target: "victoriametrics", URL: srv.URL + "/write"}, st)
	want := write(t, st, "network", 0, 10)
	waitFor(t, "a failed request", func() bool { return s.Stats().Failed > 0 })
	if n, oldest, _ := st.Backlog(s.ID()); n != 10 || oldest != t0.UnixNano() {
		t.Errorf("backlog while the engine is down: %d points from %d, want 10 from %d", n, oldest, t0.UnixNano())
	}
	down.Store(false)
	waitFor(t, "delivery", func() bool { return s.Stats().Sent == 10 })
	if got := e.got(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("engine got %q, want %q", got, want)
	}
	if st := s.Stats(); st.Retried == 0 || st.Dropped != 0 {
		t.Errorf("stats %+v: want retried points, nothing dropped", st)
	}
}

func TestABadPointIsDroppedAloneAndTheOthersDelivered(t *testing.T) {
	e := &engine{answer: func(body string) int {
		if strings.Contains(body, "i=13 ") {
			return http.StatusBadRequest
		}
		return 0
	}}
	srv := httptest.NewServer(e)
	defer srv.Close()
	st := openStore(t)
	s := startSink(t, Config{Target: "influxdb2", URL: srv.URL + "/api/v2/write?org=o&bucket=b", Gzip: new(bool)}, st)
	var want []string
	for i, l := range write(t, st, "network", 0, 30) {
		if i != 13 {
			want = append(want, l)
		}
	}
	waitFor(t, "delivery", func() bool { return s.Stats().Sent == 29 && s.Stats().Dropped == 1 })
	if got := e.got(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("engine got %d lines, want the 29 good ones in order:\n%s", len(got), strings.Join(got, "\n"))
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Target: "graphite", Host: "h:1"}, "target:"},
		{Config{Target: "influxdb", Host: "h:1"}, "database:"},
		{Config{Target: "influxdb2", Host: "h:1", Org: "o"}, "org, bucket:"},
		{Config{Target: "victoriametrics"}, "host:"},
		{Config{Target: "victoriametrics", URL: "ftp://x"}, "url:"},
		{Config{Target: "victoriametrics", Host: "h:1", Timeout: "soon"}, "timeout:"},
		{Config{Target: "victoriametrics", Host: "h:1", Categories: []string{"Q"}}, "categories:"},
		{Config{Target: "victoriametrics", Host: "h:1", Precision: "s"}, "precision:"},
	} {
		err := tc.cfg.Check()
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want one starting %q", tc.cfg, err, tc.want)
		}
	}
	c := Config{Target: "victoriametrics", Host: "127.0.0.1:8428", Categories: []string{"N", "logging"}}
	if err := c.Check(); err != nil || c.ID != "victoriametrics-127.0.0.1:8428" || c.writeURL != "http://127.0.0.1:8428/write" ||
		!c.wants("network") || !c.wants("logging") || c.wants("metric") {
		t.Errorf("defaults: %+v, %v", c, err)
	}
}
