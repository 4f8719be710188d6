package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"dkebpf/agent/store"
	"dkebpf/inputs/external"
)

// clock is a settable time source for the server.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }
func newClock(t time.Time) *clock    { return &clock{t: t} }
func authGet(url, token string) *http.Request {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	return req
}

func getMonitor(t *testing.T, url, token string) Monitor {
	t.Helper()
	resp, err := http.DefaultClient.Do(authGet(url, token))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	var m Monitor
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestMonitorCountsCommittedPointsPerMeasurement(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "points.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	clk := newClock(now)
	const token = "tkn_0123456789abcdef0123456789abcdef"
	oldest := now.Add(-time.Hour)
	ts := httptest.NewServer(New(Options{Store: st, Version: "test", Now: clk.Now, Token: token, Listen: "127.0.0.1:9529",
		Externals: func() []external.State {
			return []external.State{{Name: "ebpf", Path: "/bin/sh", PID: 42, Starts: 3, LastExit: "exit status 1"}}
		},
		StoreStatus: func() StoreStatus { return StoreStatus{Path: "/x/points.db", UsedBytes: 1 << 20, MaxBytes: 512 << 20} },
		Sinks: func() []SinkStatus {
			return []SinkStatus{{ID: "vm", Target: "victoriametrics", SentPoints: 7, BacklogPoints: 3, BacklogOldest: oldest}}
		},
	}))
	defer ts.Close()
	write := func(path, body string, hdr ...string) {
		t.Helper()
		hdr = append(hdr, "Authorization", "Bearer "+token)
		if code, b := post(t, ts.URL+path, []byte(body), hdr...); code != http.StatusOK {
			t.Fatalf("POST %s: %d %s", path, code, b)
		}
	}

	write("/v1/write/metric", "cpu,host=a u=1\ncpu,host=b u=2\nmem free=1i\ncpu,host=c u=3\nmem free=2i\n")
	write("/v1/write/network?input=ebpf-net/netflow", "netflow bytes=1i\n")
	write("/v1/write/metric", "cpu u=4\n", BatchIDHeader, "b1")
	write("/v1/write/metric", "cpu u=4\n", BatchIDHeader, "b1") // a retry: stored once, counted once
	// Rejected bodies count nothing.
	if code, _ := post(t, ts.URL+"/v1/write/metric", []byte("cpu u=1\ncpu bad\n"), "Authorization", "Bearer "+token); code != http.StatusBadRequest {
		t.Fatalf("bad body: %d", code)
	}
	if code, _ := post(t, ts.URL+"/v1/write/metric", []byte("cpu u=1\n")); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d", code)
	}
	clk.Add(10 * time.Second)
	write("/v1/write/metric", "cpu u=5\ncpu u=6\n")
	clk.Add(2 * time.Second)
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/v1/lasterror", strings.NewReader(`{"input":"ebpf","source":"ebpf-net","err_content":"ring\nfull"}`))
	req.Header.Set("X-Token", token)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("lasterror: %v %v", resp, err)
	}
	req, _ = http.NewRequest(http.MethodPost, ts.URL+"/v1/lasterror", strings.NewReader(`{"input":"other","err_content":"boom"}`))
	req.Header.Set("X-Token", token)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("lasterror: %v %v", resp, err)
	}

	// The token rule holds for the monitor too.
	if code, _ := get(t, ts.URL+"/v1/monitor"); code != http.StatusUnauthorized {
		t.Errorf("GET /v1/monitor without a token: %d, want 401", code)
	}
	m := getMonitor(t, ts.URL+"/v1/monitor?window=5s", token)
	at := now.Add(12 * time.Second)
	wantM := []MeasurementStats{
		{Category: "metric", Measurement: "cpu", WindowPoints: 2, TotalPoints: 6, LastWritten: now.Add(10 * time.Second)},
		{Category: "metric", Measurement: "mem", WindowPoints: 0, TotalPoints: 2, LastWritten: now},
		{Category: "network", Measurement: "netflow", WindowPoints: 0, TotalPoints: 1, LastWritten: now},
	}
	if fmt.Sprint(m.Measurements) != fmt.Sprint(wantM) || m.MeasurementsOverflow {
		t.Errorf("measurements:\n got %v (overflow %v)\nwant %v", m.Measurements, m.MeasurementsOverflow, wantM)
	}
	if !m.Time.Equal(at) || m.WindowSeconds != 5 {
		t.Errorf("time %v window %d, want %v and 5", m.Time, m.WindowSeconds, at)
	}
	wantAgent := AgentStatus{Version: "test", Started: now, UptimeSeconds: 12, Listen: "127.0.0.1:9529",
		Store: StoreStatus{Path: "/x/points.db", UsedBytes: 1 << 20, MaxBytes: 512 << 20}}
	if fmt.Sprint(m.Agent) != fmt.Sprint(wantAgent) {
		t.Errorf("agent:\n got %+v\nwant %+v", m.Agent, wantAgent)
	}
	wantIn := []InputState{
		{Name: "ebpf", State: "running", PID: 42, Restarts: 2, LastExit: "exit status 1", LastError: "ring\nfull",
			LastErrorSource: "ebpf-net", LastErrorTime: at},
		{Name: "other", State: "reporting", LastError: "boom", LastErrorTime: at},
	}
	if fmt.Sprint(m.Inputs) != fmt.Sprint(wantIn) {
		t.Errorf("inputs:\n got %+v\nwant %+v", m.Inputs, wantIn)
	}
	if len(m.Sinks) != 1 || m.Sinks[0].SentPoints != 7 || m.Sinks[0].BacklogPoints != 3 || !m.Sinks[0].BacklogOldest.Equal(oldest) {
		t.Errorf("sinks: %+v", m.Sinks)
	}

	// The window slides: 60 s later nothing is recent, the totals stay.
	clk.Add(time.Minute)
	m = getMonitor(t, ts.URL+"/v1/monitor?window=60", token)
	if m.WindowSeconds != 60 || m.Measurements[0].WindowPoints != 0 || m.Measurements[0].TotalPoints != 6 {
		t.Errorf("a minute later: window %d, cpu %+v", m.WindowSeconds, m.Measurements[0])
	}
	for _, bad := range []string{"0s", "2m", "x", "-1"} {
		resp, err := http.DefaultClient.Do(authGet(ts.URL+"/v1/monitor?window="+bad, token))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("window=%s: %s, want 400", bad, resp.Status)
		}
	}
}

func TestMonitorCountsKeysPastTheBoundTogether(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "points.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := New(Options{Store: st, Now: func() time.Time { return now }})
	for i := range MaxMonitorMeasurements + 5 {
		var w writeCounts
		w.add(fmt.Sprintf("m%04d", i))
		w.add(fmt.Sprintf("m%04d", i))
		s.counted("metric", &w)
	}
	var w writeCounts
	w.add("m0000") // a key already counted stays apart
	s.counted("metric", &w)

	m := s.MonitorStatus(time.Minute)
	if len(m.Measurements) != MaxMonitorMeasurements+1 || !m.MeasurementsOverflow {
		t.Fatalf("%d entries, overflow %v; want %d and true", len(m.Measurements), m.MeasurementsOverflow, MaxMonitorMeasurements+1)
	}
	if first := m.Measurements[0]; first.Measurement != "m0000" || first.TotalPoints != 3 {
		t.Errorf("first: %+v", first)
	}
	other := m.Measurements[len(m.Measurements)-1]
	if !other.Other || other.Measurement != OtherMeasurement || other.TotalPoints != 10 || other.WindowPoints != 10 {
		t.Errorf("other: %+v, want 10 points of 5 keys", other)
	}
}

func TestWriteCountsRunsAndInterleaved(t *testing.T) {
	var w writeCounts
	for _, m := range strings.Fields("a a b a c c c b") {
		w.add(m)
	}
	w.flush()
	if fmt.Sprint(w.m) != "map[a:3 b:2 c:3]" {
		t.Errorf("counts %v", w.m)
	}
}
