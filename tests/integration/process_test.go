package integration

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
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
	bin := procwork(t)
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
	// The failed exits by kind: three exit 3, one SIGTERM.
	fails := map[string]int64{}
	for _, p := range a.query("process_exit_failed", "1h", "process_name:dkprocwork") {
		fails[p.Tags["exit_code"]+"/"+p.Tags["signal"]] += intField(p, "count")
	}
	if want := map[string]int64{"3/N/A": 3, "N/A/SIGTERM": 1}; fmt.Sprint(fails) != fmt.Sprint(want) {
		t.Errorf("process_exit_failed of dkprocwork: %v, want %v (exit_code/signal: count)", fails, want)
	}
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

// procwork is the workload of testdata/procwork.c, built here (the kernel matrix's guest has no compiler: the
// host built it, and DKEBPF_PROCWORK names it).
func procwork(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("DKEBPF_PROCWORK"); bin != "" {
		return bin
	}
	bin := filepath.Join(t.TempDir(), "dkprocwork")
	if out, err := exec.Command("cc", "-O2", "-Wall", "-o", bin, filepath.Join(repoRoot, "tests", "integration", "testdata", "procwork.c"), "-lpthread").CombinedOutput(); err != nil {
		t.Fatalf("build procwork.c: %v\n%s", err, out)
	}
	return bin
}

// TestProcessReportsOOMKill: the workload allocates in a memory cgroup of 32 MiB this test makes (cgroup v2,
// or v1's memory controller where the host keeps it there) until the OOM killer ends it. Exactly one oom_kill
// names it (pid, name, cgroup), as many as the cgroup's own oom_kill count, with the resident set the kernel's
// log gives.
// libbpf-tools' oomkill is not run beside it: it needs a kprobe (oom_kill_process), which this host lacks.
func TestProcessReportsOOMKill(t *testing.T) {
	bin := procwork(t)
	const limit = 32 << 20
	cg := newMemoryCgroup(t, limit)
	a := startAgentWith(t, pluginsConf(t, "", `"ebpf-process"`))

	cmd := exec.Command(bin, "oom")
	stdin, err := cmd.StdinPipe()
	must(t, err)
	must(t, cmd.Start())
	cg.add(t, cmd.Process.Pid)
	_, err = stdin.Write([]byte("go\n"))
	must(t, err)
	err = cmd.Wait()
	if st, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !st.Signaled() || st.Signal() != syscall.SIGKILL {
		t.Fatalf("workload: %v, want killed by SIGKILL", err)
	}
	if n := cg.oomKills(t); n != 1 {
		t.Fatalf("harness: the cgroup counts %d OOM kills, want 1", n)
	}
	a.waitFor("an oom_kill point", 10*interval+30*time.Second, func() bool { return len(a.query("oom_kill", "1h")) > 0 })
	time.Sleep(2*interval + time.Second) // nothing more comes
	pts := a.query("oom_kill", "1h")
	if len(pts) != 1 {
		a.logCounters()
		t.Fatalf("%d oom_kill points, want 1: %v", len(pts), pts)
	}
	p := pts[0]
	t.Logf("oom_kill: %v %v", p.Tags, p.Fields)
	if p.Tags["process_name"] != "dkprocwork" || intField(p, "pid") != int64(cmd.Process.Pid) || p.Tags["cgroup"] != cg.path {
		t.Errorf("oom_kill names %s pid %d in %s; want dkprocwork pid %d in %s", p.Tags["process_name"], intField(p, "pid"), p.Tags["cgroup"], cmd.Process.Pid, cg.path)
	}
	// Its resident set is the kernel's own account of it, in its "Killed process" line.
	if rss, want := intField(p, "rss_bytes"), kernelKilledRSS(t, cmd.Process.Pid); rss != want {
		t.Errorf("oom_kill rss_bytes=%d; the kernel's log says %d (anon-rss + file-rss + shmem-rss)", rss, want)
	}
	var killed int64
	for _, p := range a.query("process_exit_failed", "1h", "process_name:dkprocwork", "signal:SIGKILL") {
		killed += intField(p, "count")
	}
	if killed != 1 {
		t.Errorf("process_exit_failed: %d of dkprocwork killed by SIGKILL, want 1", killed)
	}
	if self, ok := latestSelfPoint(a); !ok || intField(self, "oom_events_received") != 1 {
		t.Errorf("datakit_ebpf: oom_events_received=%v, want 1", self.Fields["oom_events_received"])
	}
}

// kernelKilledRSS reads the OOM killer's line about pid in the kernel's log ("Killed process <pid> (comm)
// total-vm:…kB, anon-rss:…kB, file-rss:…kB, shmem-rss:…kB, …") and returns the resident set it gives, in bytes.
func kernelKilledRSS(t *testing.T, pid int) int64 {
	t.Helper()
	fd, err := syscall.Open("/dev/kmsg", syscall.O_RDONLY|syscall.O_NONBLOCK, 0) // not os.Open: no poller
	must(t, err)
	defer syscall.Close(fd)
	buf := make([]byte, 8192)
	for {
		n, err := syscall.Read(fd, buf) // one record per read
		if err == syscall.EPIPE {
			continue // overwritten before we read it
		}
		if err == syscall.EAGAIN {
			t.Fatalf("harness: no \"Killed process %d\" line in the kernel's log", pid)
		}
		must(t, err)
		_, msg, _ := strings.Cut(string(buf[:n]), ";")
		if !strings.Contains(msg, fmt.Sprintf("Killed process %d (", pid)) {
			continue
		}
		var rss int64
		for _, f := range []string{"anon-rss:", "file-rss:", "shmem-rss:"} {
			_, v, ok := strings.Cut(msg, f)
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.Fields(strings.ReplaceAll(v, ",", " "))[0], "kB"), 10, 64)
			if !ok || err != nil {
				t.Fatalf("harness: no %s in %q", f, msg)
			}
			rss += kb << 10
		}
		t.Logf("kernel: %s", strings.TrimSpace(msg))
		return rss
	}
}

// memoryCgroup is a memory cgroup a test made, removed at its end.
type memoryCgroup struct {
	dir, path string // its directory, and its path from its hierarchy's root
	v1        bool
}

// newMemoryCgroup makes a memory cgroup limited to limit bytes without swap: in the cgroup v2 hierarchy if
// it has the memory controller, else in v1's memory hierarchy.
func newMemoryCgroup(t *testing.T, limit int64) *memoryCgroup {
	t.Helper()
	name := fmt.Sprintf("dkoom-%d", os.Getpid())
	c := &memoryCgroup{path: "/" + name}
	write := func(file, v string) {
		t.Helper()
		must(t, os.WriteFile(filepath.Join(c.dir, file), []byte(v), 0o644))
	}
	if b, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers"); err == nil && strings.Contains(" "+strings.TrimSpace(string(b))+" ", " memory ") {
		must(t, os.WriteFile("/sys/fs/cgroup/cgroup.subtree_control", []byte("+memory"), 0o644))
		c.dir = filepath.Join("/sys/fs/cgroup", name)
	} else if _, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err == nil {
		c.dir, c.v1 = filepath.Join("/sys/fs/cgroup/memory", name), true
	} else {
		t.Fatal("harness: no memory controller in /sys/fs/cgroup (v2) nor in /sys/fs/cgroup/memory (v1)")
	}
	must(t, os.Mkdir(c.dir, 0o755))
	t.Cleanup(func() { os.Remove(c.dir) })
	if c.v1 {
		write("memory.limit_in_bytes", strconv.FormatInt(limit, 10))
		if _, err := os.Stat(filepath.Join(c.dir, "memory.memsw.limit_in_bytes")); err == nil {
			write("memory.memsw.limit_in_bytes", strconv.FormatInt(limit, 10))
		}
	} else {
		write("memory.max", strconv.FormatInt(limit, 10))
		if _, err := os.Stat(filepath.Join(c.dir, "memory.swap.max")); err == nil {
			write("memory.swap.max", "0")
		}
	}
	return c
}

func (c *memoryCgroup) add(t *testing.T, pid int) {
	t.Helper()
	must(t, os.WriteFile(filepath.Join(c.dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644))
}

// oomKills is the cgroup's own count of OOM kills (v2 memory.events, v1 memory.oom_control).
func (c *memoryCgroup) oomKills(t *testing.T) int64 {
	t.Helper()
	file := "memory.events"
	if c.v1 {
		file = "memory.oom_control"
	}
	b, err := os.ReadFile(filepath.Join(c.dir, file))
	must(t, err)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "oom_kill "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			must(t, err)
			return n
		}
	}
	t.Fatalf("harness: no oom_kill line in %s:\n%s", file, b)
	return 0
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
	// libbpf-tools attach classic tracepoints, which need tracefs: a fresh boot may not have mounted it (the
	// collector mounts it only when it needs it).
	if _, err := os.Stat("/sys/kernel/tracing/events"); err != nil {
		if out, err := exec.Command("mount", "-t", "tracefs", "tracefs", "/sys/kernel/tracing").CombinedOutput(); err != nil {
			t.Fatalf("peer %s: mount tracefs: %v\n%s", name, err, out)
		}
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
