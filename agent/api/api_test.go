package api

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"dkebpf/agent/store"
	"dkebpf/inputs/external"
)

var now = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func newServer(t *testing.T) (*httptest.Server, *store.Store) {
	t.Helper()
	return newServerWith(t, nil)
}

func newServerWith(t *testing.T, globalTags map[string]string) (*httptest.Server, *store.Store) {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "points.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s := New(Options{
		Store: st, Version: "test",
		Now:        func() time.Time { return now },
		Externals:  func() []external.State { return []external.State{{Name: "ebpf", PID: 42, Starts: 1}} },
		GlobalTags: globalTags,
	})
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return ts, st
}

func post(t *testing.T, url string, body []byte, hdr ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func errorCode(t *testing.T, body string) string {
	t.Helper()
	var e struct {
		Code    string `json:"error_code"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Message == "" {
		t.Fatalf("body %q is not DataKit's JSON error: %v", body, err)
	}
	return e.Code
}

func TestWriteRejectsBadBodiesAndStoresNothing(t *testing.T) {
	ts, st := newServer(t)
	tests := []struct {
		name, path, body, code string
	}{
		{"one bad line among good", "/v1/write/network", "netflow,host=a bytes=1i 1700000000000000000\nnetflow,host=a bytes= 1700000000000000001\n", "datakit.invalidLinePoint"},
		{"no fields", "/v1/write/network", "netflow,host=a\n", "datakit.invalidLinePoint"},
		{"bad timestamp", "/v1/write/network", "netflow bytes=1i 12x\n", "datakit.invalidLinePoint"},
		{"empty", "/v1/write/network", "", "datakit.emptyBody"},
		{"blank lines", "/v1/write/network", "\n\n", "datakit.emptyBody"},
		{"unknown category", "/v1/write/bogus", "netflow bytes=1i\n", "datakit.invalidCategory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body := post(t, ts.URL+tc.path, []byte(tc.body))
			if status != http.StatusBadRequest {
				t.Errorf("status = %d, want 400", status)
			}
			if code := errorCode(t, body); code != tc.code {
				t.Errorf("error_code = %q, want %q", code, tc.code)
			}
		})
	}
	got, _ := st.Query(store.Query{Measurement: "netflow"})
	if len(got) != 0 {
		t.Errorf("%d points stored from rejected bodies", len(got))
	}
}

func TestGoodWriteIsStoredAndQueryable(t *testing.T) {
	ts, st := newServer(t)
	body := "netflow,host=a,dst_port=80 bytes_read=10i,status=\"ok\" 1700000000000000000\n" +
		"netflow,host=b,dst_port=80 bytes_read=20i 1700000001000000000\n" +
		"netflow,host=a,dst_port=443 bytes_read=30i\n"
	status, resp := post(t, ts.URL+"/v1/write/network?input=ebpf-net%2Fnetflow", []byte(body))
	if status != http.StatusOK || resp != "" {
		t.Fatalf("status %d body %q, want 200 with empty body", status, resp)
	}
	pts, _ := st.Query(store.Query{Measurement: "netflow"})
	if len(pts) != 3 {
		t.Fatalf("stored %d points, want 3", len(pts))
	}
	if pts[0].Category != "network" || pts[0].Input != "ebpf-net/netflow" {
		t.Errorf("category/input = %q/%q", pts[0].Category, pts[0].Input)
	}
	if !pts[2].Time.Equal(now) {
		t.Errorf("point without timestamp got %v, want receive time %v", pts[2].Time, now)
	}

	status, out := get(t, ts.URL+"/v1/query?measurement=netflow&since=1000000h&tag=host:a&tag=dst_port:80")
	want := "netflow,dst_port=80,host=a bytes_read=10i,status=\"ok\" 1700000000000000000\n"
	if status != http.StatusOK || out != want {
		t.Errorf("query = %d %q, want %q", status, out, want)
	}
	_, out = get(t, ts.URL+"/v1/query?measurement=netflow&since=1000000h&limit=1")
	if !strings.HasPrefix(out, "netflow,dst_port=443,host=a") || strings.Count(out, "\n") != 1 {
		t.Errorf("limit=1 query = %q, want the newest point", out)
	}
	status, out = get(t, ts.URL+"/v1/query?measurement=netflow&since=abc")
	if status != http.StatusBadRequest || errorCode(t, out) != "datakit.invalidQuery" {
		t.Errorf("bad since: %d %s", status, out)
	}
}

func TestGzipBodyAndDefaultInput(t *testing.T) {
	ts, st := newServer(t)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write([]byte("bash,host=a cmd=\"ls\" 1700000000000000000\n"))
	zw.Close()
	status, _ := post(t, ts.URL+"/v1/write/logging", buf.Bytes(), "Content-Encoding", "gzip")
	if status != http.StatusOK {
		t.Fatalf("status = %d, want 200", status)
	}
	pts, _ := st.Query(store.Query{Measurement: "bash"})
	if len(pts) != 1 || pts[0].Input != "logging" || pts[0].Category != "logging" {
		t.Errorf("points = %+v, want one with input defaulting to the category", pts)
	}
}

func TestTimestampPrecision(t *testing.T) {
	want := time.Unix(1700000000, 0)
	tests := []struct{ query, ts string }{
		{"", "1700000000"},          // auto: seconds
		{"", "1700000000000"},       // auto: ms
		{"", "1700000000000000"},    // auto: us
		{"", "1700000000000000000"}, // ns
		{"?precision=s", "1700000000"},
		{"?precision=ms", "1700000000000"},
		{"?precision=u", "1700000000000000"},
		{"?precision=n", "1700000000000000000"},
		{"?precision=m", "28333333"},
	}
	for _, tc := range tests {
		t.Run(tc.query+tc.ts, func(t *testing.T) {
			ts, st := newServer(t)
			path := "/v1/write/metric" + tc.query
			if status, body := post(t, ts.URL+path, []byte("m f=1i "+tc.ts)); status != http.StatusOK {
				t.Fatalf("status %d: %s", status, body)
			}
			pts, _ := st.Query(store.Query{Measurement: "m"})
			w := want
			if tc.query == "?precision=m" {
				w = time.Unix(28333333*60, 0)
			}
			if len(pts) != 1 || !pts[0].Time.Equal(w) {
				t.Errorf("time = %v, want %v", pts, w)
			}
		})
	}
}

func TestLastErrorPingAndExternals(t *testing.T) {
	ts, _ := newServer(t)
	status, body := post(t, ts.URL+"/v1/lasterror", []byte(`{"input":"ebpf","source":"","err_content":"boom"}`))
	if status != http.StatusOK {
		t.Errorf("lasterror: %d %s", status, body)
	}
	status, body = post(t, ts.URL+"/v1/lasterror", []byte(`{"input":"ebpf"}`))
	if status != http.StatusBadRequest {
		t.Errorf("lasterror without err_content: %d %s", status, body)
	}
	_, body = get(t, ts.URL+"/v1/lasterror")
	if !strings.Contains(body, `"err_content":"boom"`) {
		t.Errorf("GET lasterror = %s", body)
	}
	_, body = get(t, ts.URL+"/v1/ping")
	if !strings.Contains(body, `"content":{"store_damaged_points":0,"store_evicted_points":0,"uptime":"0s","version":"test"}`) {
		t.Errorf("ping = %s", body)
	}
	_, body = get(t, ts.URL+"/v1/externals")
	if !strings.Contains(body, `"name":"ebpf","path":"","pid":42,"starts":1,"last_exit":""`) {
		t.Errorf("externals = %s", body)
	}
}

func TestGlobalHostTagsAreAddedWhereAPointLacksThem(t *testing.T) {
	ts, _ := newServerWith(t, map[string]string{"cluster": "prod", "host": "node1"})
	body := "netflow,dst_port=80 bytes_read=10i 1700000000000000000\n" +
		"netflow,host=pod-a,dst_port=81 bytes_read=20i 1700000001000000000\n"
	if status, resp := post(t, ts.URL+"/v1/write/network", []byte(body)); status != http.StatusOK {
		t.Fatalf("status %d %s", status, resp)
	}
	if status, resp := post(t, ts.URL+"/v1/write/network?ignore_global_host_tags=true", []byte("netflow,dst_port=82 bytes_read=30i 1700000002000000000\n")); status != http.StatusOK {
		t.Fatalf("status %d %s", status, resp)
	}
	_, out := get(t, ts.URL+"/v1/query?measurement=netflow&since=1000000h")
	want := "netflow,cluster=prod,dst_port=80,host=node1 bytes_read=10i 1700000000000000000\n" +
		"netflow,cluster=prod,dst_port=81,host=pod-a bytes_read=20i 1700000001000000000\n" +
		"netflow,dst_port=82 bytes_read=30i 1700000002000000000\n"
	if out != want {
		t.Errorf("stored\n%s\nwant\n%s", out, want)
	}
}
