package sender

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// request is what the recording server saw.
type request struct {
	path, rawQuery, contentType string
	lines                       []string
	status                      int // the answer
}

// recorder is a fake parent datakit that records requests and answers with status(body).
type recorder struct {
	mu     sync.Mutex
	reqs   []request
	status func(lines []string) (int, string)
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	lines := strings.Split(string(body), "\n")
	code, msg := http.StatusOK, ""
	if r.status != nil {
		code, msg = r.status(lines)
	}
	r.mu.Lock()
	r.reqs = append(r.reqs, request{req.URL.Path, req.URL.RawQuery, req.Header.Get("Content-Type"), lines, code})
	r.mu.Unlock()
	w.WriteHeader(code)
	io.WriteString(w, msg)
}

func (r *recorder) requests() []request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.reqs)
}

// accepted returns the lines of the 200-answered requests, by input query.
func (r *recorder) accepted() map[string][]string {
	out := make(map[string][]string)
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, req := range r.reqs {
		if req.status == http.StatusOK {
			out[req.rawQuery] = append(out[req.rawQuery], req.lines...)
		}
	}
	return out
}

func testConfig(baseURL string) Config {
	return Config{
		BaseURL:    baseURL,
		BatchSize:  2,
		Timeout:    time.Second,
		MinBackoff: 2 * time.Millisecond,
		MaxBackoff: 10 * time.Millisecond,
		Logger:     slog.New(slog.DiscardHandler),
	}
}

// start runs s until the test ends and returns a function that stops it and waits.
func start(t *testing.T, s *Sender) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	stop = func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
	}
	t.Cleanup(func() { cancel(); <-done })
	return stop
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func lines(prefix string, from, to int) [][]byte {
	var out [][]byte
	for i := from; i <= to; i++ {
		out = append(out, fmt.Appendf(nil, "%s v=%di\n", prefix, i))
	}
	return out
}

func strs(b [][]byte) []string {
	var out []string
	for _, l := range b {
		out = append(out, strings.TrimSuffix(string(l), "\n"))
	}
	return out
}

func TestSenderBatchesBySizeAndEscapesInput(t *testing.T) {
	rec := &recorder{}
	srv := httptest.NewServer(rec)
	defer srv.Close()

	s := New(testConfig(srv.URL + "/"))
	s.Enqueue("network", "ebpf-net/netflow", lines("netflow", 1, 5))
	s.Enqueue("logging", "ebpf-bash", [][]byte{[]byte("bash cmd=\"ls\""), []byte("\n")}) // empty lines are skipped
	start(t, s)
	waitFor(t, "all sent", func() bool { return s.Stats()["ebpf-net/netflow"].Sent == 5 && s.Stats()["ebpf-bash"].Sent == 1 })

	want := []request{
		{"/v1/write/network", "input=ebpf-net%2Fnetflow", "text/plain; charset=utf-8", []string{"netflow v=1i", "netflow v=2i"}, 200},
		{"/v1/write/network", "input=ebpf-net%2Fnetflow", "text/plain; charset=utf-8", []string{"netflow v=3i", "netflow v=4i"}, 200},
		{"/v1/write/network", "input=ebpf-net%2Fnetflow", "text/plain; charset=utf-8", []string{"netflow v=5i"}, 200},
		{"/v1/write/logging", "input=ebpf-bash", "text/plain; charset=utf-8", []string{`bash cmd="ls"`}, 200},
	}
	got := rec.requests()
	if len(got) != len(want) {
		t.Fatalf("got %d requests %+v, want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i].path != want[i].path || got[i].rawQuery != want[i].rawQuery || got[i].contentType != want[i].contentType ||
			!slices.Equal(got[i].lines, want[i].lines) || got[i].status != want[i].status {
			t.Errorf("request %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if st := s.Stats()["ebpf-net/netflow"]; st != (InputStats{Sent: 5}) {
		t.Errorf("stats = %+v", st)
	}

	// Fresh data after an idle period is sent without a poll delay.
	s.Enqueue("network", "ebpf-net/netflow", lines("netflow", 6, 6))
	waitFor(t, "fresh line sent", func() bool { return s.Stats()["ebpf-net/netflow"].Sent == 6 })
}

func TestSenderRetriesUntilTheParentIsBackWithoutLossOrDuplicates(t *testing.T) {
	tests := []struct {
		name string
		// down makes the parent unavailable and returns the base URL and a function that brings it back.
		down func(t *testing.T, rec *recorder) (string, func())
	}{
		{"connection refused", func(t *testing.T, rec *recorder) (string, func()) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := l.Addr().String()
			l.Close()
			return "http://" + addr, func() {
				l, err := net.Listen("tcp", addr)
				if err != nil {
					t.Fatalf("listen again on %s: %v", addr, err)
				}
				srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: rec}}
				srv.Start()
				t.Cleanup(srv.Close)
			}
		}},
		{"503 then 200", statusUntilUp(http.StatusServiceUnavailable)},
		{"429 then 200", statusUntilUp(http.StatusTooManyRequests)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			url, up := tt.down(t, rec)
			s := New(testConfig(url))
			start(t, s)

			s.Enqueue("network", "a", lines("a", 1, 3))
			s.Enqueue("logging", "b", lines("b", 1, 2))
			waitFor(t, "failed attempts", func() bool { return s.Stats()["a"].Failed >= 3 })
			s.Enqueue("network", "a", lines("a", 4, 5))
			s.Enqueue("logging", "b", lines("b", 3, 3))
			up()
			waitFor(t, "all sent", func() bool { return s.Stats()["a"].Sent == 5 && s.Stats()["b"].Sent == 3 })

			got := rec.accepted()
			if want := strs(lines("a", 1, 5)); !slices.Equal(got["input=a"], want) {
				t.Errorf("input a received %q, want %q", got["input=a"], want)
			}
			if want := strs(lines("b", 1, 3)); !slices.Equal(got["input=b"], want) {
				t.Errorf("input b received %q, want %q", got["input=b"], want)
			}
			st := s.Stats()
			if st["a"].Dropped != 0 || st["a"].Rejected != 0 || st["a"].Queued != 0 || st["b"].Queued != 0 {
				t.Errorf("stats = %+v", st)
			}
		})
	}
}

// statusUntilUp returns a parent that answers code until it is brought up.
func statusUntilUp(code int) func(t *testing.T, rec *recorder) (string, func()) {
	return func(t *testing.T, rec *recorder) (string, func()) {
		var isUp atomic.Bool
		rec.status = func([]string) (int, string) {
			if isUp.Load() {
				return http.StatusOK, ""
			}
			return code, `{"error_code":"datakit.busy"}`
		}
		srv := httptest.NewServer(rec)
		t.Cleanup(srv.Close)
		return srv.URL, func() { isUp.Store(true) }
	}
}

func TestSenderOverflowDropsOldestLines(t *testing.T) {
	rec := &recorder{}
	srv := httptest.NewServer(rec)
	defer srv.Close()

	cfg := testConfig(srv.URL)
	cfg.MaxBufferedPoints = 3
	s := New(cfg)
	s.Enqueue("network", "a", lines("a", 1, 2))
	s.Enqueue("network", "b", lines("b", 1, 2))
	s.Enqueue("network", "a", lines("a", 3, 3)) // 5 lines: a1 and a2 are the oldest
	want := map[string]InputStats{"a": {Dropped: 2, Queued: 1}, "b": {Queued: 2}}
	if got := s.Stats(); !mapsEqual(got, want) {
		t.Fatalf("stats after overflow = %+v, want %+v", got, want)
	}

	start(t, s)
	waitFor(t, "all sent", func() bool { return s.Stats()["a"].Sent == 1 && s.Stats()["b"].Sent == 2 })
	got := rec.accepted()
	if !slices.Equal(got["input=a"], []string{"a v=3i"}) || !slices.Equal(got["input=b"], strs(lines("b", 1, 2))) {
		t.Errorf("received %q", got)
	}
}

func TestSenderOverflowKeepsTheBatchBeingPosted(t *testing.T) {
	release := make(chan struct{})
	var posts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if posts.Add(1) == 1 {
			<-release
		}
		io.Copy(io.Discard, r.Body)
	}))
	defer srv.Close()
	defer close(release)

	cfg := testConfig(srv.URL)
	cfg.MaxBufferedPoints = 3
	s := New(cfg)
	start(t, s)
	s.Enqueue("network", "a", lines("a", 1, 2)) // posted, held by the server
	waitFor(t, "first post", func() bool { return posts.Load() == 1 })
	s.Enqueue("network", "a", lines("a", 3, 5)) // a3 and a4 must go, not a1 and a2
	if st := s.Stats()["a"]; st.Dropped != 2 || st.Queued != 3 {
		t.Errorf("stats = %+v, want 2 dropped, 3 queued", st)
	}
	release <- struct{}{}
	waitFor(t, "all sent", func() bool { return s.Stats()["a"].Sent == 3 })
}

func TestSenderDropsRejectedBatchesAndLogsEachMessageOnce(t *testing.T) {
	rec := &recorder{status: func(lines []string) (int, string) {
		if strings.HasPrefix(lines[0], "bad") {
			return http.StatusBadRequest, `{"error_code":"datakit.invalidLinePoint","message":"bad point"}`
		}
		return http.StatusOK, ""
	}}
	srv := httptest.NewServer(rec)
	defer srv.Close()

	var logs bytes.Buffer
	cfg := testConfig(srv.URL)
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s := New(cfg)
	s.Enqueue("network", "a", [][]byte{[]byte("bad 1"), []byte("bad 2"), []byte("bad 3"), []byte("bad 4"), []byte("ok v=1i")})
	start(t, s)
	waitFor(t, "done", func() bool { return s.Stats()["a"].Queued == 0 })

	if st := s.Stats()["a"]; st != (InputStats{Sent: 1, Rejected: 4}) {
		t.Errorf("stats = %+v, want 1 sent, 4 rejected", st)
	}
	if n := len(rec.requests()); n != 3 {
		t.Errorf("got %d requests, want 3 (rejected batches are not retried)", n)
	}
	if n := strings.Count(logs.String(), "datakit.invalidLinePoint"); n != 1 {
		t.Errorf("rejection logged %d times, want once:\n%s", n, logs.String())
	}
}

func TestSenderFlushesOnShutdown(t *testing.T) {
	rec := &recorder{}
	srv := httptest.NewServer(rec)
	defer srv.Close()

	s := New(testConfig(srv.URL))
	stop := start(t, s)
	stop()
	// Nothing was queued when the context was cancelled; lines queued now are dropped.
	s.Enqueue("network", "a", lines("a", 1, 1))
	if st := s.Stats()["a"]; st != (InputStats{Dropped: 1}) {
		t.Errorf("stats after Run returned = %+v", st)
	}

	s = New(testConfig(srv.URL))
	s.Enqueue("network", "b", lines("b", 1, 5))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.Run(ctx) // already cancelled: only the final flush runs
	if st := s.Stats()["b"]; st != (InputStats{Sent: 5}) {
		t.Errorf("stats after final flush = %+v, want all 5 sent", st)
	}
}

func TestSenderShutdownIsBoundedWhenTheParentHangs(t *testing.T) {
	hang := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(hang)

	cfg := testConfig(srv.URL)
	cfg.Timeout = 100 * time.Millisecond // an in-flight POST is bounded by its own timeout, not cancelled
	s := New(cfg)
	s.flushTimeout = 50 * time.Millisecond
	stop := start(t, s)
	s.Enqueue("network", "a", lines("a", 1, 5))
	t0 := time.Now()
	stop()
	if d := time.Since(t0); d > time.Second {
		t.Errorf("Run took %v to return", d)
	}
	if st := s.Stats()["a"]; st.Dropped != 5 || st.Queued != 0 || st.Sent != 0 {
		t.Errorf("stats = %+v, want all 5 dropped", st)
	}
}

func TestSenderShutdownDuringAPostDoesNotSendItTwice(t *testing.T) {
	rec := &recorder{}
	inFlight := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inFlight <- struct{}{}
		time.Sleep(100 * time.Millisecond) // the parent stores the batch, then answers
		rec.ServeHTTP(w, r)
	}))
	defer srv.Close()

	s := New(testConfig(srv.URL))
	stop := start(t, s)
	s.Enqueue("network", "a", lines("a", 1, 2))
	<-inFlight
	stop() // shutdown while the parent is handling the batch
	if got := rec.accepted()["input=a"]; len(got) != 2 {
		t.Errorf("parent stored %d lines, want the batch exactly once: %q", len(got), got)
	}
	if st := s.Stats()["a"]; st != (InputStats{Sent: 2}) {
		t.Errorf("stats = %+v, want 2 sent", st)
	}
}

func TestPostLastError(t *testing.T) {
	var got struct {
		path, contentType string
		body              map[string]string
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.path, got.contentType = r.URL.Path, r.Header.Get("Content-Type")
		json.NewDecoder(r.Body).Decode(&got.body)
		if got.body["err_content"] == "" {
			w.WriteHeader(http.StatusBadRequest)
		}
	}))
	defer srv.Close()

	s := New(testConfig(srv.URL))
	if err := s.PostLastError(context.Background(), "ebpf", `load "netflow": permission denied`); err != nil {
		t.Fatalf("PostLastError: %v", err)
	}
	want := map[string]string{"input": "ebpf", "source": "", "err_content": `load "netflow": permission denied`}
	if got.path != "/v1/lasterror" || got.contentType != "application/json" || !mapsEqual(got.body, want) {
		t.Errorf("got %+v", got)
	}
	if err := s.PostLastError(context.Background(), "ebpf", ""); err == nil {
		t.Error("PostLastError got no error for a 400")
	}
}

func mapsEqual[V comparable](a, b map[string]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
