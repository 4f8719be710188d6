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
	"os"
	"path/filepath"
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
		{"401 then 200 (a token the parent does not know yet)", statusUntilUp(http.StatusUnauthorized)},
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

// agent is a fake parent that keeps the contract on X-Batch-Id: it stores a batch's lines with its id and
// answers 200 to an id it has, without storing again. hook, when set, runs before storing and may answer
// instead (handled true), or store and then fail the request (by returning after storing with handled false
// and hang set).
type agent struct {
	mu     sync.Mutex
	posts  []post // every write request, in order
	pings  int
	stored map[string]bool
	lines  map[string][]string // by input query: the lines stored, in order
	// answer decides the status of the n-th write (0-based) before it is stored; 0 = store and answer 200.
	answer func(n int, p post) (status int, header map[string]string)
	// hangAfterStore makes the n-th write store its lines, then hang until the client gives up.
	hangAfterStore func(n int) bool
	// up, when set, makes the ping answer 200 only while it returns true.
	up func() bool
}

type post struct {
	id, auth, query string
	body            string
}

func newAgent() *agent {
	return &agent{stored: map[string]bool{}, lines: map[string][]string{}}
}

func (a *agent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v1/ping" {
		a.mu.Lock()
		a.pings++
		a.mu.Unlock()
		if a.up != nil && !a.up() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, `{"content":{"version":"test"}}`)
		return
	}
	body, _ := io.ReadAll(r.Body)
	p := post{id: r.Header.Get(BatchIDHeader), auth: r.Header.Get("Authorization"), query: r.URL.RawQuery, body: string(body)}
	a.mu.Lock()
	n := len(a.posts)
	a.posts = append(a.posts, p)
	answer, hang := a.answer, a.hangAfterStore
	a.mu.Unlock()
	if answer != nil {
		if code, hdr := answer(n, p); code != 0 {
			for k, v := range hdr {
				w.Header().Set(k, v)
			}
			w.WriteHeader(code)
			return
		}
	}
	a.mu.Lock()
	if !a.stored[p.id] {
		a.stored[p.id] = true
		a.lines[p.query] = append(a.lines[p.query], strings.Split(p.body, "\n")...)
	}
	a.mu.Unlock()
	if hang != nil && hang(n) {
		<-r.Context().Done()
	}
}

func (a *agent) snapshot() (posts []post, lines map[string][]string, pings int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	lines = map[string][]string{}
	for k, v := range a.lines {
		lines[k] = slices.Clone(v)
	}
	return slices.Clone(a.posts), lines, a.pings
}

// balanced reports whether every point is accounted for: enqueued + Resumed = Sent + Rejected + Dropped +
// Queued + Spooled.
func balanced(st InputStats, enqueued int64) bool {
	return enqueued+st.Resumed == st.Sent+st.Rejected+st.Dropped+st.Queued+st.Spooled
}

func isBatchID(id string) bool {
	return len(id) == 32 && strings.Trim(id, "0123456789abcdef") == ""
}

func TestSenderRetryAfterATimeoutSendsTheSameBatchIDAndBody(t *testing.T) {
	ag := newAgent()
	ag.hangAfterStore = func(n int) bool { return n == 0 } // stored, but the answer never comes
	srv := httptest.NewServer(ag)
	defer srv.Close()

	cfg := testConfig(srv.URL)
	cfg.Timeout = 100 * time.Millisecond
	s := New(cfg)
	s.Enqueue("network", "a", lines("a", 1, 3))
	start(t, s)
	waitFor(t, "all sent", func() bool { return s.Stats()["a"].Sent == 3 })

	posts, stored, _ := ag.snapshot()
	if len(posts) != 3 {
		t.Fatalf("got %d posts, want 3 (the first batch twice, then the second): %+v", len(posts), posts)
	}
	if posts[0].id != posts[1].id || posts[0].body != posts[1].body {
		t.Errorf("retry sent id %q body %q, first try id %q body %q", posts[1].id, posts[1].body, posts[0].id, posts[0].body)
	}
	if !isBatchID(posts[0].id) || !isBatchID(posts[2].id) || posts[2].id == posts[0].id {
		t.Errorf("batch ids %q, %q: want two distinct 32-digit hex ids", posts[0].id, posts[2].id)
	}
	if want := strs(lines("a", 1, 3)); !slices.Equal(stored["input=a"], want) {
		t.Errorf("parent stored %q, want %q exactly once", stored["input=a"], want)
	}
	if st := s.Stats()["a"]; st != (InputStats{Sent: 3, Failed: 1}) {
		t.Errorf("stats = %+v, want 3 sent, 1 failed", st)
	}
}

func TestSenderWaitsWhatRetryAfterAsks(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		retryAfter string
		maxWait    time.Duration // Config.MaxRetryAfter
		min, max   time.Duration // between the two tries
	}{
		{"429 Retry-After 1", http.StatusTooManyRequests, "1", 0, 900 * time.Millisecond, 2 * time.Second},
		{"503 Retry-After 1", http.StatusServiceUnavailable, "1", 0, 900 * time.Millisecond, 2 * time.Second},
		{"503 Retry-After bounded", http.StatusServiceUnavailable, "3600", 50 * time.Millisecond, 40 * time.Millisecond, 900 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var times []time.Time
			ag := newAgent()
			ag.answer = func(n int, _ post) (int, map[string]string) {
				mu.Lock()
				times = append(times, time.Now())
				mu.Unlock()
				if n == 0 {
					return tt.status, map[string]string{"Retry-After": tt.retryAfter}
				}
				return 0, nil
			}
			srv := httptest.NewServer(ag)
			defer srv.Close()
			cfg := testConfig(srv.URL) // backoff 2 ms .. 10 ms: a wait of more is Retry-After's
			cfg.MaxRetryAfter = tt.maxWait
			s := New(cfg)
			s.Enqueue("network", "a", lines("a", 1, 1))
			start(t, s)
			waitFor(t, "sent", func() bool { return s.Stats()["a"].Sent == 1 })
			mu.Lock()
			defer mu.Unlock()
			if gap := times[1].Sub(times[0]); gap < tt.min || gap > tt.max {
				t.Errorf("retried after %v, want between %v and %v", gap, tt.min, tt.max)
			}
			if st := s.Stats()["a"]; st != (InputStats{Sent: 1, Failed: 1}) {
				t.Errorf("stats = %+v, want 1 sent, 1 failed", st)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"3", 3 * time.Second, true},
		{" 0 ", 0, true},
		{"-1", 0, false},
		{"soon", 0, false},
		{now.Add(7 * time.Second).Format(http.TimeFormat), 7 * time.Second, true},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0, true},
	}
	for _, tt := range tests {
		if got, ok := parseRetryAfter(tt.in, now); got != tt.want || ok != tt.ok {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestSenderNoticesTheParentIsBackWithinTwoSeconds(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // down: connection refused

	cfg := testConfig("http://" + addr)
	cfg.MinBackoff, cfg.MaxBackoff = 30*time.Second, 30*time.Second // the backoff has grown to its cap
	cfg.Token = "s3cret"
	s := New(cfg)
	s.Enqueue("network", "a", lines("a", 1, 1))
	start(t, s)
	waitFor(t, "a failed post", func() bool { return s.Stats()["a"].Failed == 1 })

	ag := newAgent()
	var auths sync.Map
	l, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auths.Store(r.URL.Path, r.Header.Get("Authorization"))
		ag.ServeHTTP(w, r)
	})}}
	srv.Start()
	defer srv.Close()
	up := time.Now()
	waitFor(t, "sent", func() bool { return s.Stats()["a"].Sent == 1 })
	if d := time.Since(up); d > 2*time.Second {
		t.Errorf("sent %v after the parent came back, want within 2 s", d)
	}
	_, _, pings := ag.snapshot()
	if pings == 0 {
		t.Error("no GET /v1/ping")
	}
	for _, path := range []string{"/v1/ping", "/v1/write/network"} {
		if v, _ := auths.Load(path); v != "Bearer s3cret" {
			t.Errorf("%s: Authorization %q, want Bearer s3cret", path, v)
		}
	}
}

func TestSenderKeepsItsBackoffWhenTheParentAnswers(t *testing.T) {
	ag := newAgent()
	ag.answer = func(int, post) (int, map[string]string) { return http.StatusInternalServerError, nil }
	srv := httptest.NewServer(ag)
	defer srv.Close()

	cfg := testConfig(srv.URL)
	cfg.MinBackoff, cfg.MaxBackoff = 30*time.Second, 30*time.Second
	s := New(cfg)
	s.probeEvery = 10 * time.Millisecond
	s.Enqueue("network", "a", lines("a", 1, 1))
	start(t, s)
	waitFor(t, "a failed post", func() bool { return s.Stats()["a"].Failed == 1 })
	time.Sleep(100 * time.Millisecond) // ten probe periods
	// The parent is up but failing: probing it would turn the 30 s backoff into a retry every period.
	if posts, _, pings := ag.snapshot(); len(posts) != 1 || pings != 0 {
		t.Errorf("got %d posts and %d pings during the backoff, want 1 post and no ping", len(posts), pings)
	}
}

func TestSenderSendsTheTokenOnEveryRequest(t *testing.T) {
	var mu sync.Mutex
	got := map[string]string{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got[r.URL.Path] = r.Header.Get("Authorization")
		mu.Unlock()
		io.Copy(io.Discard, r.Body)
	}))
	defer srv.Close()

	for _, token := range []string{"", "t0k"} {
		clear(got)
		cfg := testConfig(srv.URL)
		cfg.Token = token
		s := New(cfg)
		if err := s.PostLastError(context.Background(), "ebpf", "boom"); err != nil {
			t.Fatal(err)
		}
		if !s.ping(context.Background()) {
			t.Fatal("ping failed")
		}
		s.Enqueue("network", "a", lines("a", 1, 1))
		stop := start(t, s)
		waitFor(t, "sent", func() bool { return s.Stats()["a"].Sent == 1 })
		stop()
		want := ""
		if token != "" {
			want = "Bearer " + token
		}
		mu.Lock()
		for _, path := range []string{"/v1/lasterror", "/v1/ping", "/v1/write/network"} {
			if v, ok := got[path]; !ok || v != want {
				t.Errorf("token %q: %s Authorization = %q (seen %v), want %q", token, path, v, ok, want)
			}
		}
		mu.Unlock()
	}
}

// spoolFiles lists the files of dir.
func spoolFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// runUntilStopped runs s against a parent that never answers 2xx until Failed shows, then stops it.
func runUntilStopped(t *testing.T, s *Sender, input string) {
	t.Helper()
	stop := start(t, s)
	waitFor(t, "a failed post", func() bool { return s.Stats()[input].Failed >= 1 })
	stop()
}

func TestSenderSpoolsOnShutdownAndResumesFirstWithTheSameIDs(t *testing.T) {
	dir := t.TempDir()
	ag := newAgent()
	var down atomic.Bool
	down.Store(true)
	// The first batch is stored but its answer is lost (the parent dies mid-request); then it answers 503.
	ag.hangAfterStore = func(n int) bool { return n == 0 }
	ag.answer = func(n int, _ post) (int, map[string]string) {
		if n > 0 && down.Load() {
			return http.StatusServiceUnavailable, nil
		}
		return 0, nil
	}
	srv := httptest.NewServer(ag)
	defer srv.Close()

	cfg := testConfig(srv.URL)
	cfg.Timeout = 100 * time.Millisecond
	cfg.SpoolDir = filepath.Join(dir, "spool") // created when needed
	s := New(cfg)
	s.flushTimeout = 50 * time.Millisecond
	s.Enqueue("network", "a", lines("a", 1, 5))
	s.Enqueue("logging", "b", lines("b", 1, 1))
	runUntilStopped(t, s, "a")
	st := s.Stats()
	if st["a"].Spooled != 5 || st["b"].Spooled != 1 || st["a"].Dropped != 0 || st["a"].Queued != 0 {
		t.Fatalf("stats after shutdown = %+v, want everything spooled", st)
	}
	if !balanced(st["a"], 5) || !balanced(st["b"], 1) {
		t.Errorf("stats do not balance: %+v", st)
	}
	files := spoolFiles(t, cfg.SpoolDir)
	if len(files) != 1 || !strings.HasSuffix(files[0], ".spool") {
		t.Fatalf("spool holds %q, want one segment", files)
	}
	posts, _, _ := ag.snapshot()
	firstID := posts[0].id

	// The next run, the parent is back: the spool goes first, oldest first, then what was enqueued since.
	down.Store(false)
	s2 := New(cfg)
	s2.Enqueue("network", "a", lines("a", 6, 6))
	start(t, s2)
	waitFor(t, "all sent", func() bool { return s2.Stats()["a"].Sent == 6 && s2.Stats()["b"].Sent == 1 })
	posts, stored, _ := ag.snapshot()
	if want := strs(lines("a", 1, 6)); !slices.Equal(stored["input=a"], want) {
		t.Errorf("parent stored %q, want %q (each once, in order)", stored["input=a"], want)
	}
	if want := strs(lines("b", 1, 1)); !slices.Equal(stored["input=b"], want) {
		t.Errorf("parent stored %q, want %q", stored["input=b"], want)
	}
	var resent []post
	for _, p := range posts {
		if p.id == firstID {
			resent = append(resent, p)
		}
	}
	if len(resent) < 2 || resent[len(resent)-1].body != "a v=1i\na v=2i" {
		t.Errorf("first batch sent as %+v, want it resent from the spool with its id and body", resent)
	}
	if last := posts[len(posts)-1]; last.body != "a v=6i" {
		t.Errorf("last post %q, want the line enqueued after the restart", last.body)
	}
	want := map[string]InputStats{"a": {Sent: 6, Resumed: 5}, "b": {Sent: 1, Resumed: 1}}
	if got := s2.Stats(); !mapsEqual(got, want) {
		t.Errorf("stats = %+v, want %+v", got, want)
	}
	if files := spoolFiles(t, cfg.SpoolDir); len(files) != 0 {
		t.Errorf("spool holds %q after everything was sent, want nothing", files)
	}
}

func TestSenderSpoolSurvivesRestartsWhileTheParentIsDown(t *testing.T) {
	ag := newAgent()
	var down atomic.Bool
	down.Store(true)
	ag.answer = func(int, post) (int, map[string]string) {
		if down.Load() {
			return http.StatusServiceUnavailable, nil
		}
		return 0, nil
	}
	srv := httptest.NewServer(ag)
	defer srv.Close()
	cfg := testConfig(srv.URL)
	cfg.SpoolDir = t.TempDir()

	for run := range 3 { // each run adds two lines and finds the parent down
		s := New(cfg)
		s.flushTimeout = 20 * time.Millisecond
		s.Enqueue("network", "a", lines("a", 2*run+1, 2*run+2))
		runUntilStopped(t, s, "a")
		st := s.Stats()["a"]
		if st.Spooled != int64(2*run+2) || st.Resumed != int64(2*run) || st.Dropped != 0 || !balanced(st, 2) {
			t.Fatalf("run %d: stats = %+v, want %d spooled", run, st, 2*run+2)
		}
		if files := spoolFiles(t, cfg.SpoolDir); len(files) != 1 {
			t.Fatalf("run %d: spool holds %q, want one segment", run, files)
		}
	}
	down.Store(false)
	s := New(cfg)
	start(t, s)
	waitFor(t, "all sent", func() bool { return s.Stats()["a"].Sent == 6 })
	if _, stored, _ := ag.snapshot(); !slices.Equal(stored["input=a"], strs(lines("a", 1, 6))) {
		t.Errorf("parent stored %q", stored["input=a"])
	}
}

func TestSenderSpoolBeyondItsBoundDropsTheOldest(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()

	var logs bytes.Buffer
	cfg := testConfig(srv.URL)
	cfg.SpoolDir = t.TempDir()
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	// One batch of two lines is a header of about 130 bytes and a body of 13: room for two batches.
	cfg.SpoolMaxBytes = 2 * int64(len(encodeHeader(newBatchID(), "network", "a", 2, []byte("a v=1i\na v=2i")))+14)
	s := New(cfg)
	s.flushTimeout = 20 * time.Millisecond
	s.Enqueue("network", "a", lines("a", 1, 8))
	runUntilStopped(t, s, "a")
	if st := s.Stats()["a"]; st.Spooled != 4 || st.Dropped != 4 || !balanced(st, 8) {
		t.Errorf("stats = %+v, want 4 spooled, 4 dropped", st)
	}
	if n := strings.Count(logs.String(), "spool full"); n != 1 {
		t.Errorf("spool full logged %d times, want once:\n%s", n, logs.String())
	}

	ag := newAgent()
	srv2 := httptest.NewServer(ag)
	defer srv2.Close()
	cfg.BaseURL = srv2.URL
	s2 := New(cfg)
	start(t, s2)
	waitFor(t, "sent", func() bool { return s2.Stats()["a"].Sent == 4 })
	if _, stored, _ := ag.snapshot(); !slices.Equal(stored["input=a"], strs(lines("a", 5, 8))) {
		t.Errorf("parent stored %q, want the newest 4 lines", stored["input=a"])
	}
}

func TestSenderSkipsDamagedSpoolFiles(t *testing.T) {
	dir := t.TempDir()
	mk := func(id, input string, ls ...string) spoolItem {
		return memItem(&batch{id: id, category: "network", input: input, points: len(ls), body: []byte(strings.Join(ls, "\n"))})
	}
	id := func(c byte) string { return strings.Repeat(string(c), 32) }
	// Segment 1: a good record, a record whose body is damaged, a good record.
	p1, _, err := writeSegment(dir, 1, []spoolItem{mk(id('1'), "a", "a v=1i"), mk(id('2'), "a", "a v=2i", "a v=3i"), mk(id('3'), "a", "a v=4i")})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(p1)
	i := bytes.Index(data, []byte("a v=2i"))
	data[i+4] = '9'
	os.WriteFile(p1, data, 0o600)
	// Segment 2: a good record, then one cut in its body (a kill -9 mid-write of the .tmp).
	p2, _, err := writeSegment(dir, 2, []spoolItem{mk(id('4'), "b", "b v=1i"), mk(id('5'), "b", "b v=2i", "b v=3i")})
	if err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(p2)
	os.Remove(p2)
	os.WriteFile(p2+".tmp", data[:len(data)-5], 0o600)
	// Segment 3: garbage. Segment 4: empty. Segment 5: a copy of segment 1's first record (a crash after
	// writing a new segment, before deleting the old ones): the same batch, sent once.
	os.WriteFile(filepath.Join(dir, "00000000000000000003.spool"), []byte("\x00\x01garbage"), 0o600)
	os.WriteFile(filepath.Join(dir, "00000000000000000004.spool"), nil, 0o600)
	if _, _, err := writeSegment(dir, 5, []spoolItem{mk(id('1'), "a", "a v=1i")}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not ours"), 0o600)

	ag := newAgent()
	srv := httptest.NewServer(ag)
	defer srv.Close()
	cfg := testConfig(srv.URL)
	cfg.SpoolDir = dir
	s := New(cfg)
	start(t, s)
	waitFor(t, "sent", func() bool { return s.Stats()["a"].Sent == 2 && s.Stats()["b"].Sent == 1 })
	_, stored, _ := ag.snapshot()
	if !slices.Equal(stored["input=a"], []string{"a v=1i", "a v=4i"}) || !slices.Equal(stored["input=b"], []string{"b v=1i"}) {
		t.Errorf("parent stored %q", stored)
	}
	want := map[string]InputStats{"a": {Sent: 2, Dropped: 2, Resumed: 4}, "b": {Sent: 1, Dropped: 2, Resumed: 3}}
	if got := s.Stats(); !mapsEqual(got, want) {
		t.Errorf("stats = %+v, want %+v", got, want)
	}
	if n := s.SpoolCorrupt(); n != 3 { // the damaged body, the cut record, the garbage
		t.Errorf("SpoolCorrupt = %d, want 3", n)
	}
	if files := spoolFiles(t, dir); !slices.Equal(files, []string{"notes.txt"}) {
		t.Errorf("spool holds %q, want only the file that is not ours", files)
	}
}

func TestSenderWithoutASpoolDropsAndCountsAtShutdown(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	s := New(testConfig(srv.URL))
	s.flushTimeout = 20 * time.Millisecond
	s.Enqueue("network", "a", lines("a", 1, 3))
	runUntilStopped(t, s, "a")
	if st := s.Stats()["a"]; st.Dropped != 3 || st.Spooled != 0 || st.Queued != 0 || !balanced(st, 3) {
		t.Errorf("stats = %+v, want 3 dropped", st)
	}
}

func TestSenderShutdownDuringAHungPostSpoolsWithinTheFlushWindow(t *testing.T) {
	ag := newAgent()
	ag.hangAfterStore = func(int) bool { return true } // stores, never answers
	srv := httptest.NewServer(ag)
	defer srv.Close()

	cfg := testConfig(srv.URL)
	cfg.Timeout = 10 * time.Second // the default: longer than the agent's SIGTERM-to-SIGKILL grace
	cfg.SpoolDir = t.TempDir()
	s := New(cfg)
	s.flushTimeout = 100 * time.Millisecond
	stop := start(t, s)
	s.Enqueue("network", "a", lines("a", 1, 3))
	waitFor(t, "a post in flight", func() bool { posts, _, _ := ag.snapshot(); return len(posts) == 1 })
	t0 := time.Now()
	stop()
	if d := time.Since(t0); d > time.Second {
		t.Errorf("Run took %v to return after cancel, want about the flush window", d)
	}
	if st := s.Stats()["a"]; st.Spooled != 3 || st.Dropped != 0 || !balanced(st, 3) {
		t.Errorf("stats = %+v, want 3 spooled", st)
	}

	// The next run resends the cut batch with its id: the parent, which stored it, does not store it again.
	ag.mu.Lock()
	ag.hangAfterStore = nil
	ag.mu.Unlock()
	s2 := New(cfg)
	start(t, s2)
	waitFor(t, "sent", func() bool { return s2.Stats()["a"].Sent == 3 })
	if _, stored, _ := ag.snapshot(); !slices.Equal(stored["input=a"], strs(lines("a", 1, 3))) {
		t.Errorf("parent stored %q, want each line once", stored["input=a"])
	}
}

func TestSenderSpillsToTheSpoolWhileTheParentIsDownAndSendsEachLineOnceInOrder(t *testing.T) {
	ag := newAgent()
	var down atomic.Bool
	down.Store(true)
	ag.answer = func(int, post) (int, map[string]string) {
		if down.Load() {
			return http.StatusServiceUnavailable, nil
		}
		return 0, nil
	}
	srv := httptest.NewServer(ag)
	defer srv.Close()
	cfg := testConfig(srv.URL)
	cfg.SpoolDir = t.TempDir()
	cfg.MaxBufferedPoints = 10 // spills past 5 lines; would drop past 10 without a spool
	s := New(cfg)
	start(t, s)

	// 100 lines, ten times what memory holds, enqueued while the parent is down.
	for i := 1; i <= 100; i += 2 {
		s.Enqueue("network", "a", lines("a", i, i+1))
		waitFor(t, "a spill", func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.total <= 5 })
	}
	st := s.Stats()["a"]
	if st.Dropped != 0 || st.Queued != 100 || st.Spilled < 90 || !balanced(st, 100) {
		t.Fatalf("while down: stats = %+v, want all 100 queued, at least 90 spilled, none dropped", st)
	}
	if files := spoolFiles(t, cfg.SpoolDir); len(files) == 0 {
		t.Fatalf("nothing in the spool")
	}
	down.Store(false)
	waitFor(t, "all sent", func() bool { return s.Stats()["a"].Sent == 100 })
	if _, stored, _ := ag.snapshot(); !slices.Equal(stored["input=a"], strs(lines("a", 1, 100))) {
		t.Errorf("parent stored %q, want a v=1i..a v=100i, each once, in order", stored["input=a"])
	}
	if st := s.Stats()["a"]; st.Queued != 0 || st.Dropped != 0 || !balanced(st, 100) {
		t.Errorf("after: stats = %+v", st)
	}
	if files := spoolFiles(t, cfg.SpoolDir); len(files) != 0 {
		t.Errorf("spool holds %q after everything was sent", files)
	}
}

func TestSenderSpillBeyondTheSpoolBoundDropsTheOldestAndShutdownKeepsTheRest(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	cfg := testConfig(srv.URL)
	cfg.SpoolDir = t.TempDir()
	cfg.MaxBufferedPoints = 4
	// Room for two batches of two lines.
	cfg.SpoolMaxBytes = 2 * int64(len(encodeHeader(newBatchID(), "network", "a", 2, []byte("a v=1i\na v=2i")))+14)
	s := New(cfg)
	s.flushTimeout = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	for i := 1; i <= 12; i += 3 {
		s.Enqueue("network", "a", lines("a", i, i+2))
		waitFor(t, "a spill", func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.total <= 2 })
	}
	cancel()
	<-done
	st := s.Stats()["a"]
	if st.Dropped == 0 || st.Spooled == 0 || st.Queued != 0 || !balanced(st, 12) {
		t.Fatalf("stats = %+v, want the oldest dropped, the rest spooled", st)
	}
	if files := spoolFiles(t, cfg.SpoolDir); len(files) != 1 {
		t.Errorf("spool holds %q after shutdown, want one segment (the spilled ones merged into it)", files)
	}
	// The next run resumes exactly what was counted spooled, the newest lines.
	ag := newAgent()
	srv2 := httptest.NewServer(ag)
	defer srv2.Close()
	cfg.BaseURL = srv2.URL
	s2 := New(cfg)
	start(t, s2)
	waitFor(t, "sent", func() bool { return s2.Stats()["a"].Sent == st.Spooled })
	if _, stored, _ := ag.snapshot(); !slices.Equal(stored["input=a"], strs(lines("a", 12-int(st.Spooled)+1, 12))) {
		t.Errorf("parent stored %q, want the newest %d lines", stored["input=a"], st.Spooled)
	}
}
