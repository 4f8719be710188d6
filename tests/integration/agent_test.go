package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestAPIRejectsMalformedBodyAndStoresNoneOfIt(t *testing.T) {
	a := startAgent(t, "")
	bad := "apitest,k=good value=1i\napitest,k=bad value=\n"
	code, body := a.post("/v1/write/network?input=itest", bad)
	if code != 400 {
		t.Fatalf("malformed body: status %d, want 400 (%s)", code, body)
	}
	var e struct {
		ErrorCode string `json:"error_code"`
		Message   string `json:"message"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.ErrorCode != "datakit.invalidLinePoint" {
		t.Errorf("error body %q, want error_code datakit.invalidLinePoint", body)
	}
	if pts := a.query("apitest", "1h"); len(pts) != 0 {
		t.Errorf("the good line of a rejected body was stored: %v", pts)
	}

	code, body = a.post("/v1/write/network?input=itest", "apitest,k=good value=42i\n")
	if code != 200 || body != "" {
		t.Fatalf("good body: status %d body %q, want 200 and empty", code, body)
	}
	pts := a.query("apitest", "1h", "k:good")
	if len(pts) != 1 || intField(pts[0], "value") != 42 {
		t.Errorf("good point not queryable: %v", pts)
	}
}

func TestCollectorKilledIsRestartedAndReportsAgain(t *testing.T) {
	a := startAgent(t, "")
	before := a.collector()
	if before.PID == 0 {
		t.Fatalf("collector not running: %+v", before)
	}
	must(t, syscall.Kill(before.PID, syscall.SIGKILL))
	a.waitFor("the collector to be restarted", 30*time.Second, func() bool {
		s := a.collector()
		return s.PID != 0 && s.PID != before.PID && s.Starts == before.Starts+1
	})
	restarted := time.Now()
	// The new collector's first self-metric point, then fresh traffic counted exactly.
	a.waitFor("a point from the restarted collector", 20*time.Second, func() bool {
		for _, p := range a.query("datakit_ebpf", "1m") {
			if p.Time.After(restarted) {
				return true
			}
		}
		return false
	})
	port, wrote, read := tcpRound(t)
	pid := strconv.Itoa(os.Getpid())
	settle(t, a, "traffic after restart", totals{written: wrote, read: read, established: 1, closed: 1}, func() flowSum {
		return sumFlows(a.query("netflow", "5m", "pid:"+pid, "direction:outgoing", "dst_port:"+strconv.Itoa(port)))
	})
	if !strings.Contains(a.collector().LastExit, "killed") {
		t.Errorf("last exit %q, want the SIGKILL recorded", a.collector().LastExit)
	}
}

func TestBadConfigIsRefusedNamingFileAndKey(t *testing.T) {
	for _, tc := range []struct {
		name, conf string
		want       []string
	}{
		{"unknown plugin", `[[inputs.ebpf]]
  enabled_plugins = ["ebpf-net", "ebpf-bogus"]
`, []string{"conf.d/host/ebpf.conf", "enabled_plugins", "ebpf-bogus", "ebpf-bash"}},
		{"malformed interval", `[[inputs.ebpf]]
  interval = "ten seconds"
`, []string{"conf.d/host/ebpf.conf", "interval", "ten seconds"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeInstallDir(t, "127.0.0.1:0", tc.conf)
			cmd := exec.Command(filepath.Join(repoRoot, "datakit"), "run", "--dir", dir)
			done := make(chan struct{})
			var out []byte
			var err error
			go func() { out, err = cmd.CombinedOutput(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				t.Fatal("agent started with a bad config instead of refusing it")
			}
			if err == nil {
				t.Errorf("agent exited 0 with a bad config; output:\n%s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("error output lacks %q:\n%s", w, out)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, "data", "points.db")); err == nil {
				t.Errorf("store was created although the config was refused")
			}
		})
	}
}
