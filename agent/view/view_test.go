package view

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	lp "github.com/influxdata/line-protocol/v2/lineprotocol"

	"dkebpf/agent/store"
)

var now = time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)

func openStore(t testing.TB, maxSize int64) *store.Store {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "points.db"), store.Options{MaxSize: maxSize})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// point builds a point from "k=v" tags and fields given as key, value pairs.
func point(cat, meas string, at time.Time, tags []string, fields ...any) store.Point {
	p := store.Point{Category: cat, Input: "test", Measurement: meas, Time: at}
	for _, kv := range tags {
		k, v, _ := strings.Cut(kv, "=")
		p.Tags = append(p.Tags, store.Tag{Key: k, Value: v})
	}
	for i := 0; i+1 < len(fields); i += 2 {
		v, ok := lp.NewValue(fields[i+1])
		if !ok {
			panic(fields[i+1])
		}
		p.Fields = append(p.Fields, store.Field{Key: fields[i].(string), Value: v})
	}
	return p
}

func get(t *testing.T, h http.Handler, path string, out any, hdr ...string) *http.Response {
	t.Helper()
	r := httptest.NewRequest("GET", path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if out != nil {
		if w.Code != 200 {
			t.Fatalf("GET %s: %d %s", path, w.Code, w.Body)
		}
		if err := json.Unmarshal(w.Body.Bytes(), out); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
	}
	return w.Result()
}

func TestAnswersAggregateWhatWasStored(t *testing.T) {
	st := openStore(t, 0)
	at := now.Add(-10 * time.Minute)
	pts := []store.Point{
		point("network", "netflow", at, []string{"process_name=nginx", "dst_ip=10.0.0.2", "dst_port=443", "dst_domain=example.com"}, "bytes_read", int64(100), "bytes_written", int64(1000)),
		point("network", "netflow", at.Add(time.Minute), []string{"process_name=nginx", "dst_ip=10.0.0.2", "dst_port=443"}, "bytes_read", int64(5), "bytes_written", int64(7)),
		point("network", "netflow", at, []string{"process_name=curl", "dst_ip=::1", "dst_port=80"}, "bytes_read", int64(50), "bytes_written", int64(1)),
		point("network", "netflow", now.Add(-2*time.Hour), []string{"process_name=old"}, "bytes_read", int64(1<<40), "bytes_written", int64(0)),
		point("network", "httpflow", at, []string{"direction=incoming", "http_host=api.local"}, "path", "/users", "status_code", int64(200), "count", int64(3), "latency", int64(2e6)),
		point("network", "httpflow", at.Add(time.Minute), []string{"direction=incoming", "http_host=api.local"}, "path", "/users", "status_code", int64(503), "count", int64(1), "latency", int64(10e6)),
		point("network", "httpflow", at, []string{"direction=outgoing", "server_ip=10.0.0.9", "server_port=8080"}, "path", "/", "status_code", int64(404), "count", int64(2), "latency", int64(1e6)),
		point("network", "dnsflow", at, []string{"qname=example.com", "rcode_name=NOERROR"}, "rcode", int64(0), "count", int64(4), "latency", int64(1e6), "latency_max", int64(3e6)),
		point("network", "dnsflow", at, []string{"qname=example.com", "rcode_name=TIMEOUT"}, "rcode", int64(-1), "count", int64(2), "latency", int64(0), "latency_max", int64(0)),
		point("network", "dnsflow", at, []string{"qname=nx.example", "rcode_name=NXDOMAIN"}, "rcode", int64(3), "count", int64(1), "latency", int64(5e6), "latency_max", int64(5e6)),
		point("logging", "bash", at, nil, "user", "root", "pid", "42", "cmd", "ls -l"),
		point("logging", "bash", at.Add(time.Second), nil, "user", "root", "pid", "42", "cmd", "make test"),
		point("logging", "bash", at.Add(2*time.Second), nil, "user", "alice", "pid", "7", "cmd", "vim"),
		point("metric", "datakit_ebpf", at, []string{"host=h"}, "uptime_seconds", int64(60), "netflow_events_lost", int64(3), "hooks_refused", int64(1), "parts_fallback", int64(2), "parts_off", int64(0)),
		point("metric", "datakit_ebpf", at.Add(time.Minute), []string{"host=h"}, "uptime_seconds", int64(120), "netflow_events_lost", int64(10), "hooks_refused", int64(1), "parts_fallback", int64(2), "parts_off", int64(0)),
		point("metric", "datakit_ebpf", at.Add(2*time.Minute), []string{"host=h"}, "uptime_seconds", int64(5), "netflow_events_lost", int64(4), "hooks_refused", int64(1), "parts_fallback", int64(2), "parts_off", int64(1)),
		point("metric", "datakit", at, []string{"sink=vm", "sink_target=victoriametrics"}, "sink_points_sent", int64(9), "sink_points_dropped", int64(1)),
	}
	if err := st.Write(pts); err != nil {
		t.Fatal(err)
	}
	h := New(Options{Store: st, Now: func() time.Time { return now }})

	var nf NetflowAnswer
	get(t, h, "/view/api/netflow?range=1h", &nf)
	if nf.TotalBytes != 1163 || nf.Scanned != 3 || nf.Truncated {
		t.Errorf("netflow: total %d scanned %d truncated %v; want 1163, 3, false", nf.TotalBytes, nf.Scanned, nf.Truncated)
	}
	if r := nf.ByProcess[0]; r.Key != "nginx" || r.Bytes != 1112 || r.BytesRead != 105 || r.BytesWritten != 1007 {
		t.Errorf("netflow top process %+v", r)
	}
	if r := nf.ByRemote[1]; r.Key != "[::1]:80" || r.Bytes != 51 {
		t.Errorf("netflow second remote %+v", r)
	}
	if len(nf.ByDomain) != 1 || nf.ByDomain[0].Bytes != 1100 {
		t.Errorf("netflow by domain %+v", nf.ByDomain)
	}
	total := 0.0
	for _, s := range nf.Chart.Series {
		for _, v := range s.Values {
			total += v
		}
	}
	if total != 1163 || len(nf.Chart.T) != Buckets || nf.StepSeconds != 30 {
		t.Errorf("netflow chart: total %v, %d buckets of %d s", total, len(nf.Chart.T), nf.StepSeconds)
	}
	get(t, h, "/view/api/netflow?range=7d", &nf)
	if nf.TotalBytes != 1163+1<<40 {
		t.Errorf("netflow 7d total %d", nf.TotalBytes)
	}

	var hf HTTPAnswer
	get(t, h, "/view/api/httpflow?range=15m", &hf)
	if hf.Requests != 6 || len(hf.Endpoints) != 2 {
		t.Fatalf("httpflow: %d requests, %d endpoints", hf.Requests, len(hf.Endpoints))
	}
	if e := hf.Endpoints[0]; e.Host != "api.local" || e.Path != "/users" || e.Count != 4 || e.Status != [5]int64{3, 0, 0, 1, 0} ||
		e.LatencyMs != 4 || e.LatencyMax != 10 {
		t.Errorf("httpflow endpoint %+v", e)
	}
	if e := hf.Endpoints[1]; e.Host != "10.0.0.9:8080" || e.Status[2] != 2 {
		t.Errorf("httpflow endpoint without http_host %+v", e)
	}

	var df DNSAnswer
	get(t, h, "/view/api/dnsflow", &df)
	if e := df.Names[0]; e.Name != "example.com" || e.Count != 6 || e.Timeouts != 2 || e.LatencyMs != 1 || e.LatencyMax != 3 ||
		e.Rcodes["NOERROR"] != 4 || e.Rcodes["TIMEOUT"] != 2 {
		t.Errorf("dnsflow name %+v", e)
	}

	var ba BashAnswer
	get(t, h, "/view/api/bash", &ba)
	if len(ba.Users) != 2 || ba.Users[0].User != "alice" || ba.Users[1].Last[0].Cmd != "make test" || ba.Users[1].Commands != 2 {
		t.Errorf("bash %+v", ba.Users)
	}

	var ha HealthAnswer
	get(t, h, "/view/api/health", &ha)
	// 3 -> 10 is 7 lost, then a restart to 4 counts 4: 11 in the range; the first point's 3 may predate it.
	if len(ha.Counters) != 1 || ha.Counters[0] != (HealthField{"netflow_events_lost", 4, 11}) || ha.HooksRefused != 1 ||
		ha.PartsFallback != 2 || ha.PartsOff != 1 || ha.UptimeSeconds != 5 {
		t.Errorf("health %+v", ha)
	}
	if len(ha.Sinks) != 1 || ha.Sinks[0].Fields["sink_points_dropped"] != 1 {
		t.Errorf("health sinks %+v", ha.Sinks)
	}

	if w := get(t, h, "/view/api/netflow?range=2d", nil); w.StatusCode != 400 {
		t.Errorf("bad range: %d", w.StatusCode)
	}
	if w := get(t, h, "/", nil); w.StatusCode != http.StatusFound || w.Header.Get("Location") != "/view/" {
		t.Errorf("/: %d %s", w.StatusCode, w.Header.Get("Location"))
	}
	if w := get(t, h, "/view/", nil); w.StatusCode != 200 || !strings.Contains(w.Header.Get("Content-Type"), "text/html") {
		t.Errorf("/view/: %d %s", w.StatusCode, w.Header.Get("Content-Type"))
	}
	for _, a := range []string{"/view/uPlot.iife.min.js", "/view/view.js", "/view/uPlot.min.css"} {
		if w := get(t, h, a, nil); w.StatusCode != 200 {
			t.Errorf("%s: %d", a, w.StatusCode)
		}
	}
}

func TestScanCapCutsTheRangeAndSaysSo(t *testing.T) {
	st := openStore(t, 0)
	var pts []store.Point
	for i := 0; i < 1000; i++ {
		pts = append(pts, point("network", "netflow", now.Add(-time.Duration(i)*time.Second), []string{"process_name=p"}, "bytes_read", int64(1), "bytes_written", int64(0)))
	}
	if err := st.Write(pts); err != nil {
		t.Fatal(err)
	}
	h := New(Options{Store: st, Now: func() time.Time { return now }, MaxScan: 100})
	var nf NetflowAnswer
	get(t, h, "/view/api/netflow?range=1h", &nf)
	if !nf.Truncated || nf.Scanned != 100 || nf.TotalBytes != 100 || nf.CoveredSince == 0 {
		t.Errorf("capped: truncated %v scanned %d total %d covered since %d", nf.Truncated, nf.Scanned, nf.TotalBytes, nf.CoveredSince)
	}
}

func TestTokenIsNeededOnceAsQueryThenByCookie(t *testing.T) {
	st := openStore(t, 0)
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	h := Mount(api, Options{Store: st, Token: "s3cret"})
	if w := get(t, h, "/view/", nil); w.StatusCode != 401 {
		t.Errorf("no token: %d", w.StatusCode)
	}
	if w := get(t, h, "/view/api/netflow", nil); w.StatusCode != 401 {
		t.Errorf("api without token: %d", w.StatusCode)
	}
	if w := get(t, h, "/view/?token=wrong", nil); w.StatusCode != 401 || len(w.Cookies()) != 0 {
		t.Errorf("wrong token: %d %v", w.StatusCode, w.Cookies())
	}
	w := get(t, h, "/view/?token=s3cret", nil)
	if w.StatusCode != http.StatusSeeOther || w.Header.Get("Location") != "/view/" || len(w.Cookies()) != 1 {
		t.Fatalf("token: %d %q %v", w.StatusCode, w.Header.Get("Location"), w.Cookies())
	}
	c := w.Cookies()[0]
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || strings.Contains(c.Value, "s3cret") {
		t.Errorf("cookie %+v", c)
	}
	if w := get(t, h, "/view/api/netflow", nil, "Cookie", c.Name+"="+c.Value); w.StatusCode != 200 {
		t.Errorf("with cookie: %d", w.StatusCode)
	}
	if w := get(t, h, "/view/api/netflow", nil, "Cookie", c.Name+"=x"); w.StatusCode != 401 {
		t.Errorf("with a wrong cookie: %d", w.StatusCode)
	}
	if w := get(t, h, "/view/api/netflow", nil, "Authorization", "Bearer s3cret"); w.StatusCode != 200 {
		t.Errorf("with bearer: %d", w.StatusCode)
	}
	if w := get(t, h, "/v1/query", nil, "Cookie", c.Name+"="+c.Value); w.StatusCode != http.StatusTeapot {
		t.Errorf("the API is not the page's: %d", w.StatusCode)
	}
	if w := get(t, h, "/", nil); w.StatusCode != http.StatusFound {
		t.Errorf("/: %d", w.StatusCode)
	}
}

func TestAPIsAnswerSumsTheCatalogue(t *testing.T) {
	st := openStore(t, 0)
	at := now.Add(-10 * time.Minute)
	ep := func(at time.Time, count, s2, s5 int64, lat, p99, first, last int64) store.Point {
		return point("network", "api_endpoint", at, []string{"api_host=api.stripe.com", "service=stripe", "method=POST", "route=/v1/charges", "check=POST /v1/charges"},
			"count", count, "status_2xx", s2, "status_5xx", s5, "latency_mean", lat, "latency_p99", p99, "first_seen", first, "last_seen", last)
	}
	pts := []store.Point{
		ep(at, 3, 3, 0, int64(2e6), int64(3e6), at.Add(-time.Hour).UnixMilli(), at.UnixMilli()),
		ep(at.Add(time.Minute), 1, 0, 1, int64(10e6), int64(10e6), at.Add(-time.Hour).UnixMilli(), at.Add(time.Minute).UnixMilli()),
		point("network", "api_endpoint", at, []string{"api_host=api.vendor.example", "service=N/A", "method=GET", "route=/v2/items/{id}"},
			"count", int64(1), "status_2xx", int64(1), "latency_mean", int64(1e6), "latency_p99", int64(1e6), "first_seen", at.UnixMilli(), "last_seen", at.UnixMilli()),
	}
	if err := st.Write(pts); err != nil {
		t.Fatal(err)
	}
	h := New(Options{Store: st, Now: func() time.Time { return now }})
	var a APIAnswer
	get(t, h, "/view/api/apis?range=15m", &a)
	if a.Calls != 5 || len(a.Endpoints) != 2 {
		t.Fatalf("apis: %d calls, %d endpoints", a.Calls, len(a.Endpoints))
	}
	e := a.Endpoints[0]
	if e.Host != "api.stripe.com" || e.Service != "stripe" || e.Method != "POST" || e.Route != "/v1/charges" || e.Count != 4 ||
		e.Status != [5]int64{3, 0, 0, 1, 0} || e.ErrorRate != 0.25 || e.LatencyMs != 4 || e.P99Max != 10 ||
		e.FirstSeen != at.Add(-time.Hour).Unix() || e.LastSeen != at.Add(time.Minute).Unix() {
		t.Errorf("apis endpoint %+v", e)
	}
}
