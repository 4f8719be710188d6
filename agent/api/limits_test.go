package api

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"dkebpf/agent/store"
)

// blockingStore holds every Commit until release is closed.
type blockingStore struct {
	*store.Store
	entered chan struct{}
	release chan struct{}
}

func (b *blockingStore) Commit(batch *store.Batch) (bool, error) {
	b.entered <- struct{}{}
	<-b.release
	return b.Store.Commit(batch)
}

func TestWritesBeyondTheCapAreAnswered429WithRetryAfter(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "points.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	bs := &blockingStore{Store: st, entered: make(chan struct{}, MaxConcurrentWrites), release: make(chan struct{})}
	ts := httptest.NewServer(New(Options{Store: bs}))
	defer ts.Close()

	var wg sync.WaitGroup
	for i := 0; i < MaxConcurrentWrites; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if code, body := post(t, ts.URL+"/v1/write/metric", fmt.Appendf(nil, "m f=%di 1", i)); code != 200 {
				t.Errorf("held write: %d %s", code, body)
			}
		}()
	}
	for i := 0; i < MaxConcurrentWrites; i++ {
		<-bs.entered
	}
	resp, err := http.Post(ts.URL+"/v1/write/metric", "", strings.NewReader("m f=9i 1"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" {
		t.Errorf("write beyond the cap: %d, Retry-After %q; want 429 and 1", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	close(bs.release)
	wg.Wait()
	if got, _ := st.Query(store.Query{Measurement: "m"}); len(got) != MaxConcurrentWrites {
		t.Errorf("%d points stored, want %d", len(got), MaxConcurrentWrites)
	}
}

func TestAWriteRetriedWithItsBatchIDIsStoredOnce(t *testing.T) {
	ts, st := newServer(t)
	for i := 0; i < 3; i++ {
		if code, body := post(t, ts.URL+"/v1/write/metric", []byte("m f=1i 1\nm f=2i 2"), BatchIDHeader, "c1-42"); code != 200 {
			t.Fatalf("try %d: %d %s", i, code, body)
		}
	}
	if code, _ := post(t, ts.URL+"/v1/write/metric", []byte("m f=3i 3")); code != 200 {
		t.Fatal(code)
	}
	if got, _ := st.Query(store.Query{Measurement: "m"}); len(got) != 3 {
		t.Errorf("%d points stored, want 3 (the batch once, and a write without id)", len(got))
	}
}

func TestATokenIsRequiredWhenSet(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "points.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ts := httptest.NewServer(New(Options{Store: st, Token: "s3cret"}))
	defer ts.Close()

	for _, tc := range []struct {
		name string
		hdr  []string
		want int
	}{
		{"none", nil, 401},
		{"wrong", []string{"Authorization", "Bearer nope"}, 401},
		{"bearer", []string{"Authorization", "Bearer s3cret"}, 200},
		{"bearer lower case", []string{"Authorization", "bearer s3cret"}, 200},
		{"x-token", []string{"X-Token", "s3cret"}, 200},
	} {
		code, body := post(t, ts.URL+"/v1/write/metric", []byte("m f=1i 1"), tc.hdr...)
		if code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.want)
		}
		if code == 401 && errorCode(t, body) != "datakit.unauthorized" {
			t.Errorf("%s: body %s", tc.name, body)
		}
	}
	if code, _ := get(t, ts.URL+"/v1/query?measurement=m"); code != 401 {
		t.Errorf("query without token: %d, want 401", code)
	}
	if code, _ := get(t, ts.URL+"/v1/ping"); code != 200 {
		t.Errorf("ping without token: %d, want 200 (a health check)", code)
	}
}

func TestQueriesHaveADefaultAndAMaximumLimit(t *testing.T) {
	ts, st := newServer(t)
	var b strings.Builder
	for i := 1; i <= DefaultQueryLimit+5; i++ {
		fmt.Fprintf(&b, "m f=%di %d\n", i, now.Add(-time.Minute).UnixNano()+int64(i))
	}
	if code, body := post(t, ts.URL+"/v1/write/metric", []byte(b.String())); code != 200 {
		t.Fatal(code, body)
	}
	resp, err := http.Get(ts.URL + "/v1/query?measurement=m&since=1h")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := strings.Split(strings.TrimSpace(readAll(t, resp)), "\n")
	if len(lines) != DefaultQueryLimit || resp.Header.Get(TruncatedHeader) != fmt.Sprint(DefaultQueryLimit) {
		t.Errorf("%d lines, %s %q; want %d and the header", len(lines), TruncatedHeader, resp.Header.Get(TruncatedHeader), DefaultQueryLimit)
	}
	if !strings.HasPrefix(lines[0], "m f=6i ") {
		t.Errorf("first line %q, want the 6th point (the most recent %d)", lines[0], DefaultQueryLimit)
	}
	code, msg := get(t, ts.URL+fmt.Sprintf("/v1/query?measurement=m&limit=%d", MaxQueryLimit+1))
	if code != 400 || !strings.Contains(msg, fmt.Sprint(MaxQueryLimit)) {
		t.Errorf("limit past the maximum: %d %s", code, msg)
	}
	resp2, err := http.Get(ts.URL + "/v1/query?measurement=m&since=1h&limit=20000")
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	if n := strings.Count(readAll(t, resp2), "\n"); n != DefaultQueryLimit+5 || resp2.Header.Get(TruncatedHeader) != "" {
		t.Errorf("limit 20000: %d lines, truncated %q", n, resp2.Header.Get(TruncatedHeader))
	}
	_ = st
}

func TestLastErrorsAreBounded(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "points.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ts := httptest.NewServer(New(Options{Store: st, Log: discardLog()}))
	defer ts.Close()
	for i := 0; i < maxLastErrors+20; i++ {
		body := fmt.Sprintf(`{"input":"in%d","err_content":%q}`, i, strings.Repeat("x", 10000))
		if code, msg := post(t, ts.URL+"/v1/lasterror", []byte(body)); code != 200 {
			t.Fatal(code, msg)
		}
	}
	_, body := get(t, ts.URL+"/v1/lasterror")
	if n := strings.Count(body, `"input"`); n != maxLastErrors {
		t.Errorf("%d last errors kept, want %d", n, maxLastErrors)
	}
	if len(body) > maxLastErrors*(maxLastErrorLen+200) {
		t.Errorf("%d bytes of last errors", len(body))
	}
}

type panickyStore struct{ *store.Store }

func (panickyStore) Query(store.Query) ([]store.Point, error) { panic("boom") }

func TestAPanicInAHandlerIsA500(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "points.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ts := httptest.NewServer(New(Options{Store: panickyStore{st}, Log: discardLog()}))
	defer ts.Close()
	code, body := get(t, ts.URL+"/v1/query?measurement=m")
	if code != 500 || errorCode(t, body) != "datakit.internalError" {
		t.Errorf("%d %s", code, body)
	}
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	b := new(strings.Builder)
	if _, err := io.Copy(b, resp.Body); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func discardLog() *log.Logger { return log.New(io.Discard, "", 0) }
