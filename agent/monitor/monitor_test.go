package monitor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"dkebpf/agent/api"
)

var t0 = time.Date(2026, 12, 4, 13, 0, 0, 0, time.UTC)

func sample() *api.Monitor {
	return &api.Monitor{
		Time: t0, WindowSeconds: 5,
		Agent: api.AgentStatus{Version: "1.2.3", Started: t0.Add(-3723 * time.Second), UptimeSeconds: 3723, Listen: "localhost:9529",
			Store: api.StoreStatus{Path: "/opt/dk/data/points.db", UsedBytes: 3 << 20, MaxBytes: 512 << 20, EvictedPoints: 4, DamagedPoints: 1}},
		Inputs: []api.InputState{
			{Name: "ebpf", State: "restarting", Restarts: 2, LastExit: "exit status 1",
				LastError: "attach tracepoint sock/inet_sock_set_state:\npermission denied", LastErrorTime: t0.Add(-90 * time.Second)},
		},
		Measurements: []api.MeasurementStats{
			{Category: "metric", Measurement: "cpu", WindowPoints: 3, TotalPoints: 120, LastWritten: t0.Add(-2 * time.Second)},
			{Category: "network", Measurement: "netflow", WindowPoints: 0, TotalPoints: 5000, LastWritten: t0.Add(-time.Minute)},
			{Category: "*", Measurement: api.OtherMeasurement, Other: true, WindowPoints: 1, TotalPoints: 9, LastWritten: t0},
		},
		MeasurementsOverflow: true,
		Sinks: []api.SinkStatus{
			{ID: "vm", Target: "victoriametrics", SentPoints: 5100, FailedRequests: 2, RetriedPoints: 10, BacklogPoints: 25,
				BacklogOldest: t0.Add(-30 * time.Second)},
			{ID: "influx", Target: "influxdb", Error: "store: no sink \"influx\""},
		},
	}
}

// rows returns the frame's lines with runs of spaces made one, so that a test names cells, not column widths.
func rows(frame string) []string {
	var out []string
	space := regexp.MustCompile(` {2,}`)
	for _, l := range strings.Split(frame, "\n") {
		out = append(out, strings.TrimSpace(space.ReplaceAllString(l, " ")))
	}
	return out
}

func hasRow(t *testing.T, frame, want string) {
	t.Helper()
	for _, r := range rows(frame) {
		if r == want {
			return
		}
	}
	t.Errorf("no row %q in frame:\n%s", want, frame)
}

func TestRenderShowsEveryPart(t *testing.T) {
	var buf bytes.Buffer
	Render(&buf, Frame{Base: "http://127.0.0.1:9529", Refresh: 5 * time.Second, Now: t0, M: sample(), Answered: t0})
	frame := buf.String()
	if strings.Contains(frame, "\x1b") || strings.Contains(frame, "Ctrl-C") {
		t.Errorf("a --once frame has escapes or the quit hint:\n%s", frame)
	}
	for _, want := range []string{
		"datakit monitor: agent at http://127.0.0.1:9529, 2026-12-04 13:00:00 UTC, refresh 5s",
		"AGENT",
		"version 1.2.3",
		"uptime 1h2m3s (since 2026-12-04 11:57:57 UTC)",
		"listen localhost:9529",
		"store /opt/dk/data/points.db: 3.0 MiB of 512.0 MiB used (0.6%); points evicted 4, damaged 1",
		"INPUTS",
		"NAME STATE RESTARTS PID LAST EXIT LAST ERROR WHEN",
		"ebpf restarting 2 - exit status 1 attach tracepoint sock/inet_sock_set_state: permission de... 1m30s ago",
		"POINTS WRITTEN (last 5s, since start)",
		"CATEGORY MEASUREMENT LAST 5s TOTAL LAST WRITTEN",
		"metric cpu 3 120 2s ago",
		"network netflow 0 5000 1m0s ago",
		"* (other) 1 9 0s ago",
		"(all) 4 5129",
		"more than 1000 measurements: the points of the rest are counted together as (other)",
		"SINKS",
		"ID TARGET SENT FAILED REQS RETRIED DROPPED LOST BACKLOG OLDEST",
		"vm victoriametrics 5100 2 10 0 0 25 30s ago",
		"influx influxdb 0 0 0 0 0 0 -",
		`sink influx: store: no sink "influx"`,
	} {
		hasRow(t, frame, want)
	}
}

func TestRenderEmptyAndUnreachable(t *testing.T) {
	var buf bytes.Buffer
	Render(&buf, Frame{Base: "http://x", Refresh: time.Second, Now: t0, M: &api.Monitor{Time: t0, WindowSeconds: 1}, Answered: t0})
	for _, want := range []string{"(no supervised input, no error reported)", "(none yet)", "(none configured)"} {
		hasRow(t, buf.String(), want)
	}

	buf.Reset()
	Render(&buf, Frame{Base: "http://x", Refresh: 5 * time.Second, Live: true, Now: t0.Add(20 * time.Second), M: sample(), Answered: t0,
		Err: errors.New("agent at http://x: connection refused")})
	hasRow(t, buf.String(), "AGENT UNREACHABLE: agent at http://x: connection refused")
	hasRow(t, buf.String(), "retrying every 5s; below is its last answer, from 20s ago")
	hasRow(t, buf.String(), "metric cpu 3 120 2s ago") // the last answer stays on screen
}

func TestRunOnceFetchesWithTokenAndWindow(t *testing.T) {
	var gotAuth, gotWindow string
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth, gotWindow = r.Header.Get("Authorization"), r.URL.Query().Get("window")
		json.NewEncoder(w).Encode(sample())
	}))
	defer ts.Close()
	var out bytes.Buffer
	err := Run(context.Background(), Options{Base: ts.URL, Token: "tok", Refresh: 90 * time.Second, Once: true, Out: &out})
	if err != nil {
		t.Fatal(err)
	}
	if gotAuth != "Bearer tok" || gotWindow != "1m0s" {
		t.Errorf("request: auth %q window %q; want the token and the window capped at 1m", gotAuth, gotWindow)
	}
	hasRow(t, out.String(), "metric cpu 3 120 2s ago")
}

func TestRunOnceFailsWhenTheAgentDoesNotAnswer(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"error_code":"datakit.unauthorized","message":"this API needs a token"}`))
	}))
	var out bytes.Buffer
	err := Run(context.Background(), Options{Base: ts.URL, Once: true, Out: &out})
	if err == nil || !strings.Contains(err.Error(), "401 Unauthorized: this API needs a token") || out.Len() != 0 {
		t.Errorf("401: err %v, out %q", err, out.String())
	}
	ts.Close()
	err = Run(context.Background(), Options{Base: ts.URL, Once: true, Out: &out})
	if err == nil || !strings.Contains(err.Error(), "agent at "+ts.URL) {
		t.Errorf("closed server: err %v", err)
	}
}

func TestRunRedrawsInPlaceOnATerminalUntilCancelled(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(sample())
	}))
	defer ts.Close()
	ctx, cancel := context.WithCancel(context.Background())
	out := &frames{n: 2, done: cancel}
	if err := Run(ctx, Options{Base: ts.URL, Refresh: time.Second, Terminal: true, Out: out}); err != nil {
		t.Fatal(err)
	}
	s := out.buf.String()
	if strings.Count(s, ansiHome) != 2 || strings.Count(s, ansiClearDown) != 2 || !strings.Contains(s, "metric  ") ||
		!strings.Contains(s, "(Ctrl-C quits)"+ansiClearLine+"\n") {
		t.Errorf("terminal output: %q", s)
	}
}

// frames records writes and cancels after n.
type frames struct {
	buf  bytes.Buffer
	n    int
	done func()
}

func (f *frames) Write(p []byte) (int, error) {
	if f.n--; f.n == 0 {
		f.done()
	}
	return f.buf.Write(p)
}
