package integration

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// processTotals sums the process_task points of one process name, and reads the zombies of the latest.
func (a *agent) processTotals(name string) (sums map[string]int64, lastZombies int64, points int) {
	sums = map[string]int64{}
	var last lpPoint
	pts := a.query("process_task", "1h", "process_name:"+name)
	for _, p := range pts {
		for _, f := range []string{"forks", "threads", "execs", "exits", "thread_exits", "exits_failed"} {
			v, _ := p.Fields[f].(int64)
			sums[f] += v
		}
		if p.Time.After(last.Time) {
			last = p
		}
	}
	lastZombies, _ = last.Fields["zombies"].(int64)
	return sums, lastZombies, len(pts)
}

func sameTotals(got, want map[string]int64) bool {
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// waitProcessTotals waits until the sums of name's points are want and its latest point has zombies;
// it fails with what it saw last.
func (a *agent) waitProcessTotals(name, what string, want map[string]int64, zombies int64) {
	a.t.Helper()
	deadline := time.Now().Add(10*interval + 30*time.Second)
	for {
		sums, z, n := a.processTotals(name)
		if sameTotals(sums, want) && z == zombies {
			return
		}
		if time.Now().After(deadline) {
			a.logCounters()
			a.t.Fatalf("%s: %d points sum to %v with %d zombies last; want %v and %d zombies", what, n, sums, z, want, zombies)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// The workload (testdata/procwork.c) does known numbers of forks, threads, execs and exits, some failing,
// and holds one zombie: every count of process_task equals them, the zombie is seen while it is held and
// not after it is reaped.
func TestProcessCountsEveryForkThreadExecAndExit(t *testing.T) {
	bin := os.Getenv("DKEBPF_PROCWORK") // the kernel matrix's guest has no compiler: the host built it
	if bin == "" {
		bin = filepath.Join(t.TempDir(), "dkprocwork")
		if out, err := exec.Command("cc", "-O2", "-Wall", "-o", bin, filepath.Join(repoRoot, "tests", "integration", "testdata", "procwork.c"), "-lpthread").CombinedOutput(); err != nil {
			t.Fatalf("build procwork.c: %v\n%s", err, out)
		}
	}
	a := startAgentWith(t, pluginsConf(t, "", `"ebpf-process"`))
	// The peers Debian packages (libbpf-tools), where installed: each prints a line per event.
	exits, execs := startPeer(t, "exitsnoop"), startPeer(t, "execsnoop")

	cmd := exec.Command(bin)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	must(t, err)
	stdout, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("workload: %q, %v\n%s", line, err, stderr.String())
	}
	// Held: 14 children forked, 2 of them exec'd, all exited (4 failing), 5 threads; the last child a zombie.
	held := map[string]int64{"forks": 14, "threads": 5, "execs": 3, "exits": 14, "thread_exits": 5, "exits_failed": 4}
	a.waitProcessTotals("dkprocwork", "the zombie held", held, 1)
	must(t, stdin.Close())
	if err := cmd.Wait(); err != nil {
		t.Fatalf("workload: %v\n%s", err, stderr.String())
	}
	done := map[string]int64{"forks": 14, "threads": 5, "execs": 3, "exits": 15, "thread_exits": 5, "exits_failed": 4}
	a.waitProcessTotals("dkprocwork", "the workload ended", done, 0)
	// The peers saw the same: exitsnoop a line per process exit (status or signal in its last column),
	// execsnoop a line per exec (its return value in the fourth).
	if lines := exits.stop(t, "dkprocwork"); lines != nil {
		failed := 0
		for _, l := range lines {
			if f := strings.Fields(l); f[len(f)-1] != "0" {
				failed++
			}
		}
		t.Logf("exitsnoop: %d exits, %d failed", len(lines), failed)
		if len(lines) != int(done["exits"]) || failed != int(done["exits_failed"]) {
			t.Errorf("exitsnoop: %d exits, %d failed; we count %d and %d", len(lines), failed, done["exits"], done["exits_failed"])
		}
	}
	if lines := execs.stop(t, "dkprocwork"); lines != nil {
		t.Logf("execsnoop: %d execs", len(lines))
		if len(lines) != int(done["execs"]) {
			t.Errorf("execsnoop: %d execs, we count %d:\n%s", len(lines), done["execs"], strings.Join(lines, "\n"))
		}
	}
	// Nothing more is counted later: two more intervals, the same sums.
	_, _, n := a.processTotals("dkprocwork")
	time.Sleep(2*interval + time.Second)
	sums, zombies, m := a.processTotals("dkprocwork")
	if !sameTotals(sums, done) || zombies != 0 || m != n {
		t.Fatalf("after the end: %v, zombies %d, %d points (were %d); want %v", sums, zombies, m, n, done)
	}
}

// peer is a libbpf-tools program running beside the collector.
type peer struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
}

// startPeer runs a libbpf-tools program with its output line-buffered, and waits for its header (printed
// once its programs are attached). A peer that is not installed (the kernel matrix's guests) is nil; one
// installed that does not attach fails the test.
func startPeer(t *testing.T, name string) *peer {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Logf("peer %s: not installed here, not compared", name)
		return nil
	}
	p := &peer{name: name, out: &syncBuffer{}}
	p.cmd = exec.Command("stdbuf", "-oL", path)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	must(t, p.cmd.Start())
	t.Cleanup(func() { p.cmd.Process.Kill(); p.cmd.Wait() })
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.out.String(), "PCOMM") {
		if time.Now().After(deadline) {
			t.Fatalf("peer %s did not start:\n%s", name, p.out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return p
}

// stop interrupts the peer (it exits cleanly on SIGINT) and returns its lines for process comm.
func (p *peer) stop(t *testing.T, comm string) []string {
	t.Helper()
	if p == nil {
		return nil
	}
	must(t, p.cmd.Process.Signal(os.Interrupt))
	p.cmd.Wait()
	lines := []string{}
	for _, l := range strings.Split(p.out.String(), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == comm {
			lines = append(lines, l)
		}
	}
	return lines
}
