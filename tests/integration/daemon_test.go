package integration

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// --pidfile, --log and --pprof-port do what they say: a collector started beside the agent's own.
func TestCollectorWritesItsPidFileAndLogAndServesPprof(t *testing.T) {
	a := startAgent(t, "")
	dir := t.TempDir()
	pidFile, logFile := filepath.Join(dir, "datakit-ebpf.pid"), filepath.Join(dir, "datakit-ebpf.log")
	pprofPort := freePort(t)
	collector := func() *exec.Cmd {
		return exec.Command(filepath.Join(repoRoot, "externals", "datakit-ebpf"), "run", "--datakit-apiserver", a.addr,
			"--enabled", "ebpf-net", "--interval", interval.String(), "--pidfile", pidFile, "--log", logFile,
			"--pprof-port", strconv.Itoa(pprofPort), "--tags", "suite=daemon")
	}
	c := collector()
	out := &syncBuffer{}
	c.Stdout, c.Stderr = out, out
	must(t, c.Start())
	exited := make(chan error, 1)
	go func() { exited <- c.Wait() }()
	defer c.Process.Kill()

	a.waitFor("the collector's log line in --log", firstPointTimeout, func() bool {
		b, _ := os.ReadFile(logFile)
		return strings.Contains(string(b), "collector running")
	})
	if b, _ := os.ReadFile(pidFile); strings.TrimSpace(string(b)) != strconv.Itoa(c.Process.Pid) {
		t.Errorf("pid file holds %q, want %d", b, c.Process.Pid)
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/goroutine?debug=1", pprofPort))
	if err != nil {
		t.Fatalf("pprof: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "goroutine profile") {
		t.Errorf("pprof: status %d, body %.200q", resp.StatusCode, body)
	}

	// A second collector with the same pid file is refused, as DataKit's is.
	second, err := collector().CombinedOutput()
	if err == nil || !strings.Contains(string(second), "ebpf still running") {
		t.Errorf("second collector: err %v, output %q; want it refused with \"ebpf still running\"", err, second)
	}

	must(t, c.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("collector exit after SIGTERM: %v\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("collector did not stop within 30s of SIGTERM")
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("pid file left after an orderly exit: %v", err)
	}
}

// mem_limit and cpu_limit in ebpf.conf reach the collector, which exits saying which limit it passed; the
// agent restarts it.
func TestCollectorPastItsLimitsExitsSayingWhy(t *testing.T) {
	for _, tc := range []struct {
		key, want string
		load      func(t *testing.T)
	}{
		{`mem_limit = "1MiB"`, "over mem_limit 1048576 bytes", nil},
		{`cpu_limit = "0.001"`, "over cpu_limit 0.001", nil},
		{`net_limit = "1KiB/s"`, "over net_limit 1024 bytes/s", trafficOffLoopback},
	} {
		t.Run(tc.key, func(t *testing.T) {
			t.Parallel()
			if tc.load != nil {
				tc.load(t)
			}
			a := launchAgent(t, ebpfConf("  "+tc.key))
			a.waitFor("the collector to exit past its limit and be restarted", 90*time.Second, func() bool {
				return strings.Contains(a.log.String(), tc.want) && a.collector().Starts >= 2
			})
			if !strings.Contains(a.log.String(), "resource limit exceeded") {
				t.Errorf("agent log lacks \"resource limit exceeded\":\n%s", a.log.String())
			}
		})
	}
}

// sampling_rate reaches the collector, which sends one netflow point in int(1/rate) of each interval's and
// counts the others in netflow_points_sampled_out.
func TestSamplingRateThinsPointsAndCountsWhatItDrops(t *testing.T) {
	a := startAgent(t, `  sampling_rate = "0.5"`)
	for i := 0; i < 10; i++ { // ten flows with ten server ports: twenty series (both sides) in an interval or two
		tcpRound(t)
	}
	var self lpPoint
	a.waitFor("netflow points sampled out", 30*time.Second, func() bool {
		var ok bool
		self, ok = latestSelfPoint(a)
		return ok && intField(self, "netflow_points_sampled_out") >= 10
	})
	// Each interval keeps the first of every two points: never fewer sent than dropped, and at most one
	// more per interval.
	sent, dropped := intField(self, "netflow_points_sent")+intField(self, "netflow_points_queued"), intField(self, "netflow_points_sampled_out")
	intervals := intField(self, "uptime_seconds")/int64(interval.Seconds()) + 1
	if sent < dropped || sent > dropped+intervals {
		t.Errorf("netflow points sent %d, sampled out %d over %d intervals: want dropped <= sent <= dropped+intervals", sent, dropped, intervals)
	}
}

// trafficOffLoopback sends 64 KiB/s from this namespace over a veth pair into a namespace of the test's own,
// until the test ends: traffic on an interface that is not lo.
func trafficOffLoopback(t *testing.T) {
	routedNetns(t, "net", "10.231.77.2", "10.231.77.1")
	c, err := net.ListenPacket("udp4", ":0") // unconnected: the peer's port unreachable errors do not stop writes
	must(t, err)
	to := &net.UDPAddr{IP: net.IPv4(10, 231, 77, 2), Port: 9}
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop); c.Close() })
	go func() {
		buf := make([]byte, 1024)
		for tick := time.NewTicker(time.Second / 64); ; {
			select {
			case <-stop:
				tick.Stop()
				return
			case <-tick.C:
				c.WriteTo(buf, to) // the peer has no listener: the datagrams still leave through the veth
			}
		}
	}()
}
