package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	lp "github.com/influxdata/line-protocol/v2/lineprotocol"

	"dkebpf/agent/api"
	"dkebpf/agent/store"
)

func runCLI(args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestHelpExitsZeroWithUsage(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"run", "--help"}, {"query", "--help"}, {"install", "--help"}} {
		code, stdout, stderr := runCLI(args...)
		if code != 0 || !strings.Contains(stdout+stderr, "usage") && !strings.Contains(stdout+stderr, "--dir") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want 0 and the usage", args, code, stdout, stderr)
		}
	}
}

func TestBadFlagsExitNonZeroWithMessage(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"query"}, "want exactly one MEASUREMENT"},
		{[]string{"query", "netflow", "--since", "yesterday"}, `since: invalid time "yesterday"`},
		{[]string{"query", "netflow", "--tag", "novalue"}, `--tag "novalue": want key=value`},
		{[]string{"query", "netflow", "--category", "nope"}, `category: invalid "nope"`},
		{[]string{"query", "netflow", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"install"}, "want --ebpf"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"run", "extra"}, `unexpected argument "extra"`},
	}
	for _, tc := range tests {
		code, _, stderr := runCLI(tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
}

func TestVersion(t *testing.T) {
	if code, out, _ := runCLI("version"); code != 0 || !strings.HasPrefix(out, "datakit ") {
		t.Errorf("version: %d %q", code, out)
	}
}

func TestQueryReadsTheStoreWhenNoAgentRuns(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "conf.d"), 0o755)
	// Port 1 on loopback: nothing answers, so query opens the store itself.
	os.WriteFile(filepath.Join(dir, "conf.d/datakit.conf"), []byte("[http_api]\nlisten = \"127.0.0.1:1\"\n"), 0o644)
	st, err := store.Open(filepath.Join(dir, "data/points.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Second)
	var points []store.Point
	for i, host := range []string{"a", "b", "a"} {
		points = append(points, store.Point{Category: "network", Input: "ebpf-net/netflow", Measurement: "netflow",
			Tags: []store.Tag{{Key: "host", Value: host}}, Fields: []store.Field{{Key: "n", Value: lp.IntValue(int64(i))}},
			Time: now.Add(time.Duration(i-3) * time.Second)})
	}
	points = append(points, store.Point{Category: "network", Measurement: "netflow",
		Tags: []store.Tag{{Key: "host", Value: "a"}}, Fields: []store.Field{{Key: "n", Value: lp.IntValue(99)}}, Time: now.Add(-time.Hour)})
	if err := st.Write(points); err != nil {
		t.Fatal(err)
	}
	st.Close()

	code, out, stderr := runCLI("query", "netflow", "--dir", dir, "--tag", "host=a")
	want := "netflow,host=a n=0i " + itoa(now.Add(-3*time.Second)) + "\n" +
		"netflow,host=a n=2i " + itoa(now.Add(-time.Second)) + "\n"
	if code != 0 || out != want {
		t.Errorf("exit %d stderr %q\nout  %q\nwant %q", code, stderr, out, want)
	}
	code, out, _ = runCLI("query", "netflow", "--dir", dir, "--since", "2h", "--limit", "1")
	if code != 0 || !strings.HasPrefix(out, "netflow,host=a n=2i") || strings.Count(out, "\n") != 1 {
		t.Errorf("limit: exit %d out %q", code, out)
	}
}

func itoa(t time.Time) string { return strconv.FormatInt(t.UnixNano(), 10) }

func TestInstallCopiesAtomicallyAndReportsSameFile(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "build", "datakit-ebpf")
	os.MkdirAll(filepath.Dir(src), 0o755)
	os.WriteFile(src, []byte("#!/bin/sh\n"), 0o644)

	msg, err := copyExecutable(src, filepath.Join(dir, "externals", "datakit-ebpf"))
	if err != nil || !strings.HasPrefix(msg, "installed ") {
		t.Fatalf("copy: %q %v", msg, err)
	}
	fi, err := os.Stat(filepath.Join(dir, "externals", "datakit-ebpf"))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("installed file: %v %v", fi, err)
	}
	dst := filepath.Join(dir, "externals", "datakit-ebpf")
	if msg, err := copyExecutable(dst, dst); err != nil || !strings.Contains(msg, "same file") {
		t.Errorf("same file: %q %v", msg, err)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "externals"))
	if len(entries) != 1 {
		t.Errorf("externals/ holds %d entries, want only datakit-ebpf (no temp files)", len(entries))
	}

	code, _, stderr := runCLI("install", "--ebpf", "--dir", t.TempDir())
	if code != 1 || !strings.Contains(stderr, "run `make build` first") {
		t.Errorf("missing build: exit %d stderr %q", code, stderr)
	}
}

// The agent speaks to the collector through the options table only: it links no collector code.
func TestAgentLinksNoCollectorPackage(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "dkebpf/collector") {
			t.Errorf("datakit imports %s", pkg)
		}
	}
}

func TestMonitorOncePrintsOneFrameOfTheAgentOfDir(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "points.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const token = "tkn_0123456789abcdef0123456789abcdef"
	ts := httptest.NewServer(api.New(api.Options{Store: st, Version: "test", Token: token}))
	defer ts.Close()
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/v1/write/metric", strings.NewReader("cpu u=1\ncpu u=2\nmem f=1i\n"))
	req.Header.Set("X-Token", token)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("write: %v %v", resp, err)
	}
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "conf.d"), 0o755)
	conf := "[http_api]\nlisten = \"" + strings.TrimPrefix(ts.URL, "http://") + "\"\ntoken = \"" + token + "\"\n"
	os.WriteFile(filepath.Join(dir, "conf.d/datakit.conf"), []byte(conf), 0o644)

	code, out, stderr := runCLI("monitor", "--once", "--dir", dir)
	if code != 0 || strings.Contains(out, "\x1b") {
		t.Fatalf("exit %d, stderr %q, out %q", code, stderr, out)
	}
	var cpu, mem bool
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		cpu = cpu || len(f) >= 4 && f[0] == "metric" && f[1] == "cpu" && f[2] == "2" && f[3] == "2"
		mem = mem || len(f) >= 4 && f[0] == "metric" && f[1] == "mem" && f[2] == "1" && f[3] == "1"
	}
	if !cpu || !mem || !strings.Contains(out, "version  test") {
		t.Errorf("frame lacks the agent or the rows of cpu (2 points) and mem (1):\n%s", out)
	}

	// No agent answering: --once fails and says where it looked.
	os.WriteFile(filepath.Join(dir, "conf.d/datakit.conf"), []byte("[http_api]\nlisten = \"127.0.0.1:1\"\n"), 0o644)
	code, out, stderr = runCLI("monitor", "--once", "--dir", dir)
	if code != 1 || out != "" || !strings.Contains(stderr, "datakit monitor: agent at http://127.0.0.1:1") {
		t.Errorf("unreachable: exit %d, out %q, stderr %q", code, out, stderr)
	}
	code, _, stderr = runCLI("monitor", "--refresh", "10ms", "--dir", dir)
	if code != 2 || !strings.Contains(stderr, "want at least 1s") {
		t.Errorf("--refresh 10ms: exit %d, stderr %q", code, stderr)
	}
	if code, out, _ := runCLI("monitor", "--help"); code != 0 || !strings.Contains(out, "datakit monitor") {
		t.Errorf("monitor --help: exit %d, out %q", code, out)
	}
}
