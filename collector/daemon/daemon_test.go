package daemon

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestLimitsCheckMemoryAtOnceAndCPUOverTheWindow(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	tests := []struct {
		name    string
		limits  Limits
		samples []Usage
		want    string // substring of the error at the last sample; "" = none
	}{
		{"memory under", Limits{Mem: 100}, []Usage{{At: at(0), RSS: 100}}, ""},
		{"memory over", Limits{Mem: 100}, []Usage{{At: at(0), RSS: 101}}, "resident memory 101 bytes is over mem_limit 100"},
		{"cpu burst at start within a window", Limits{CPU: 0.5}, []Usage{{At: at(0)}, {At: at(3), CPU: 3 * time.Second}, {At: at(27), CPU: 3 * time.Second}}, ""},
		{"cpu burst averaged over the window", Limits{CPU: 0.5}, []Usage{{At: at(0)}, {At: at(3), CPU: 3 * time.Second}, {At: at(30), CPU: 3 * time.Second}}, ""},
		{"cpu over the window", Limits{CPU: 0.5}, []Usage{{At: at(0)}, {At: at(15), CPU: 10 * time.Second}, {At: at(30), CPU: 16 * time.Second}}, "0.53 cores used over the last 30s, over cpu_limit 0.5"},
		{"net under", Limits{Net: 1000}, []Usage{{At: at(0), Net: map[string][2]uint64{"eth0": {0, 0}}}, {At: at(3), Net: map[string][2]uint64{"eth0": {3000, 2000}}}}, ""},
		{"net sent over", Limits{Net: 1000}, []Usage{{At: at(0), Net: map[string][2]uint64{"eth0": {0, 0}}}, {At: at(3), Net: map[string][2]uint64{"eth0": {0, 3003}}}}, "eth0 sent 1001 bytes/s, over net_limit 1000"},
		{"net counters reset", Limits{Net: 1000}, []Usage{{At: at(0), Net: map[string][2]uint64{"eth0": {9000, 9000}}}, {At: at(3), Net: map[string][2]uint64{"eth0": {0, 0}, "veth1": {5000, 0}}}}, ""},
		{"old samples leave the window", Limits{CPU: 0.5}, []Usage{{At: at(0)}, {At: at(3), CPU: 20 * time.Second}, {At: at(33), CPU: 20 * time.Second}, {At: at(66), CPU: 21 * time.Second}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w window
			var err error
			for _, u := range tt.samples {
				if err = tt.limits.check(&w, u); err != nil {
					break
				}
			}
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("err = %v, want none", err)
			case tt.want != "" && (err == nil || !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("err = %v, want ErrLimit saying %q", err, tt.want)
			}
		})
	}
}

func TestReadUsageSeesThisProcess(t *testing.T) {
	u, err := ReadUsage()
	if err != nil {
		t.Fatal(err)
	}
	if u.RSS < 1<<20 || u.CPU <= 0 {
		t.Errorf("usage %+v: want some resident memory and CPU time", u)
	}
}

func TestPidFileRefusesALiveCollectorAndIsRemoved(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "datakit-ebpf.pid")
	remove, err := WritePidFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Errorf("pid file holds %q", b)
	}
	remove()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("pid file not removed: %v", err)
	}

	// A live process named datakit-ebpf (a copy of sleep under that name) holds the file: refused.
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	fake := filepath.Join(dir, "datakit-ebpf")
	b, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fake, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(fake, "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if err := os.WriteFile(path, []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := WritePidFile(path); !errors.Is(err, ErrRunning) {
		t.Errorf("err = %v, want ErrRunning", err)
	}
	// A stale file (a process of another name, or none) is overwritten.
	if err := os.WriteFile(path, []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := WritePidFile(path); err != nil {
		t.Errorf("stale pid file: %v", err)
	}
}

func TestLogOutputWritesTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "datakit-ebpf.log")
	w, closeFn, err := LogOutput(path)
	if err != nil {
		t.Fatal(err)
	}
	slog.New(slog.NewTextHandler(w, nil)).Info("hello file")
	closeFn()
	if b, _ := os.ReadFile(path); !strings.Contains(string(b), "hello file") {
		t.Errorf("log file holds %q", b)
	}
	if _, _, err := LogOutput("/proc/no/such/dir/x.log"); err == nil {
		t.Error("unwritable log path: want an error")
	}
}

func TestPprofServesProfiles(t *testing.T) {
	l := "127.0.0.1:" + strconv.Itoa(freePort(t))
	stop, err := ServePprof(l, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, err := http.Get("http://" + l + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), "goroutine profile") {
		t.Errorf("status %d body %.100q", resp.StatusCode, body)
	}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestParseNetDevLeavesLoopbackOut(t *testing.T) {
	got := parseNetDev(`Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 1296474   12345    0    0    0     0          0         0  1296474   12345    0    0    0     0       0          0
  eth0: 98765     321    0    0    0     0          0         0    4321      21    0    0    0     0       0          0
`)
	if len(got) != 1 || got["eth0"] != [2]uint64{98765, 4321} {
		t.Errorf("parseNetDev = %v, want eth0 only, 98765 received and 4321 sent", got)
	}
}
