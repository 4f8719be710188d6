// Command hookcost measures what each fallback BPF hook of the collector costs against the preferred one,
// from the kernel's own per-program statistics (kernel.bpf_stats_enabled, bpftool prog show: run_cnt and
// run_time_ns).
//
// It runs the same loopback workload under three modes of DKEBPF_REFUSE_HOOKS:
//
//	preferred  unset
//	raw        tp_btf/*,iter/*
//	deepest    tp_btf/*,raw_tp/inet_sock_set_state,raw_tp/sock_send_length,raw_tp/sock_recv_length,
//	           raw_tp/sched_process_exec,kprobe/*,iter/*
//
// For each mode it starts "datakit-ebpf run --enabled ebpf-net,ebpf-bash --interval 1s", posting to a
// local HTTP server that answers 200, holds -idle idle TCP connections open (for the per-interval live
// read), and, between two snapshots of every collector program's counters, runs -conns short TCP
// connections (1000 bytes each way), -udp datagrams of 100 bytes answered by the server, -execs runs of
// /bin/true, then sleeps 3 s (3 intervals). It prints runs, total ms and ns per run of each program, the
// collector's CPU time over the same window, and a summary comparing the hooks that do the same job.
//
// Run it as root from the repository root, after make build:
//
//	go build -o /tmp/hookcost ./bench/hookcost && sudo /tmp/hookcost [-conns 20000] [-udp 20000] [-idle 1000] [-execs 200]
//
// Only the collector's programs are counted (those it holds a file descriptor of), but their hooks see
// every packet, socket state change and exec on the host, including other jobs' and the collector's own
// posts: on a busy host the numbers are noisy.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type mode struct{ name, refuse string }

var modes = []mode{
	{"preferred", ""},
	{"raw", "tp_btf/*,iter/*"},
	{"deepest", "tp_btf/*,raw_tp/inet_sock_set_state,raw_tp/sock_send_length,raw_tp/sock_recv_length," +
		"raw_tp/sched_process_exec,kprobe/*,iter/*"},
}

const (
	statsSysctl = "/proc/sys/kernel/bpf_stats_enabled"
	payload     = 1000 // bytes each way per short TCP connection
	datagram    = 100  // bytes per UDP datagram
	settle      = 3 * time.Second
	userHZ      = 100 // clock ticks per second of /proc/<pid>/stat (fixed by the kernel ABI)
)

var (
	collectorPath = flag.String("collector", "externals/datakit-ebpf", "collector binary")
	nConns        = flag.Int("conns", 20000, "short TCP connections per mode")
	nUDP          = flag.Int("udp", 20000, "UDP datagrams (each answered) per mode")
	nIdle         = flag.Int("idle", 1000, "idle TCP connections held open during each mode")
	nExecs        = flag.Int("execs", 200, "execs of /bin/true per mode")
)

// cleanups run at exit, on a fatal error or an interrupt, last first.
var (
	cleanupMu sync.Mutex
	cleanups  []func()
)

func atExit(f func()) {
	cleanupMu.Lock()
	cleanups = append(cleanups, f)
	cleanupMu.Unlock()
}

func runCleanups() {
	cleanupMu.Lock()
	defer cleanupMu.Unlock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	cleanups = nil
}

func fatalf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "hookcost: "+format+"\n", a...)
	runCleanups()
	os.Exit(1)
}

// prog is one BPF program's counters, as bpftool reports them.
type prog struct {
	ID        int    `json:"id"`
	Type      string `json:"type"`
	Name      string `json:"name"`
	RunTimeNs uint64 `json:"run_time_ns"`
	RunCnt    uint64 `json:"run_cnt"`
}

func snapshot() map[int]prog {
	out, err := exec.Command("bpftool", "-j", "prog", "show").Output()
	if err != nil {
		fatalf("bpftool prog show: %v", err)
	}
	var ps []prog
	if err := json.Unmarshal(out, &ps); err != nil {
		fatalf("bpftool prog show: %v", err)
	}
	m := make(map[int]prog, len(ps))
	for _, p := range ps {
		m[p.ID] = p
	}
	return m
}

// progIDs are the programs a process holds a descriptor of (program and link descriptors).
func progIDs(pid int) map[int]bool {
	ids := map[int]bool{}
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fdinfo/*", pid))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "prog_id:"); ok {
				if id, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
					ids[id] = true
				}
			}
		}
	}
	return ids
}

// cpuMs is a process's user+system CPU time in ms.
func cpuMs(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		fatalf("collector CPU: %v", err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]) // f[0] is field 3 (state)
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) * 1000 / userHZ
}

// collector is one running datakit-ebpf.
type collector struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	log  bytes.Buffer
	done chan struct{} // closed when stderr ends
}

func (c *collector) logText() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.log.String()
}

func startCollector(refuse, apiserver string) *collector {
	c := &collector{done: make(chan struct{})}
	c.cmd = exec.Command(*collectorPath, "run", "--enabled", "ebpf-net,ebpf-bash", "--interval", "1s",
		"--datakit-apiserver", apiserver)
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "DKEBPF_REFUSE_HOOKS=") {
			c.cmd.Env = append(c.cmd.Env, e)
		}
	}
	if refuse != "" {
		c.cmd.Env = append(c.cmd.Env, "DKEBPF_REFUSE_HOOKS="+refuse)
	}
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		fatalf("collector: %v", err)
	}
	if err := c.cmd.Start(); err != nil {
		fatalf("collector: %v", err)
	}
	running := make(chan struct{})
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		signalled := false
		for sc.Scan() {
			c.mu.Lock()
			c.log.WriteString(sc.Text() + "\n")
			c.mu.Unlock()
			if !signalled && strings.Contains(sc.Text(), "collector running") {
				signalled = true
				close(running)
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	select {
	case <-running:
	case <-c.done:
		c.stop()
		fatalf("collector exited before running:\n%s", c.logText())
	case <-time.After(30 * time.Second):
		c.stop()
		fatalf("collector not running after 30s:\n%s", c.logText())
	}
	return c
}

// stop sends SIGTERM and waits (SIGKILL after 30 s).
func (c *collector) stop() {
	if c.cmd.ProcessState != nil {
		return
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		fmt.Fprintln(os.Stderr, "hookcost: collector ignored SIGTERM for 30s, killing it")
		c.cmd.Process.Kill()
	}
	if err := c.cmd.Wait(); err != nil {
		fmt.Fprintf(os.Stderr, "hookcost: collector exit: %v\n", err)
	}
}

// apiServer answers 200 to everything, so the collector's posts succeed.
func apiServer() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatalf("api server: %v", err)
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
	}))
	return ln.Addr().String()
}

// idleConns opens n TCP connections to a local server that holds its ends; close releases both sides.
func idleConns(n int) (close func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatalf("idle listener: %v", err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			fatalf("idle connection %d: %v", i, err)
		}
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	return func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		conns = nil
		mu.Unlock()
	}
}

// tcpEcho serves the short connections: it reads payload bytes, echoes them and closes first (so the
// TIME_WAIT is the server's and the client's ephemeral ports are free again at once).
func tcpEcho() (addr string, close func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatalf("echo listener: %v", err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, payload)
				if _, err := io.ReadFull(c, buf); err == nil {
					c.Write(buf)
				}
			}()
		}
	}()
	return ln.Addr().String(), func() { ln.Close() }
}

func shortConns(addr string, n int) {
	buf := make([]byte, payload)
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			fatalf("short connection %d: %v", i, err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(buf); err != nil {
			fatalf("short connection %d: write: %v", i, err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			fatalf("short connection %d: read: %v", i, err)
		}
		io.Copy(io.Discard, c) // until the server's FIN
		c.Close()
	}
}

// udpEcho answers every datagram with itself.
func udpEcho() (addr string, close func()) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		fatalf("udp server: %v", err)
	}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	return pc.LocalAddr().String(), func() { pc.Close() }
}

// udpRoundTrips sends n datagrams from a connected client, each waiting for its answer; it returns how
// many answers did not come within a second.
func udpRoundTrips(addr string, n int) (lost int) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		fatalf("udp client: %v", err)
	}
	defer c.Close()
	out, in := make([]byte, datagram), make([]byte, 2048)
	for i := 0; i < n; i++ {
		if _, err := c.Write(out); err != nil {
			fatalf("udp send %d: %v", i, err)
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(in); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				lost++
				continue
			}
			fatalf("udp receive %d: %v", i, err)
		}
	}
	return lost
}

func execs(n int) {
	for i := 0; i < n; i++ {
		if err := exec.Command("/bin/true").Run(); err != nil {
			fatalf("exec %d of /bin/true: %v", i, err)
		}
	}
}

// stat is one program's cost over a mode's workload window.
type stat struct {
	typ      string
	runs, ns uint64
	programs int // programs of this name (normally 1)
}

type result struct {
	mode    string
	progs   map[string]*stat // by name
	cpuMs   float64
	wall    time.Duration
	udpLost int
}

func runMode(m mode, apiserver string) result {
	idleClose := idleConns(*nIdle)
	defer idleClose()
	tcpAddr, tcpClose := tcpEcho()
	defer tcpClose()
	udpAddr, udpClose := udpEcho()
	defer udpClose()

	c := startCollector(m.refuse, apiserver)
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			c.stop()
		}
	}
	atExit(stop)
	defer stop()
	pid := c.cmd.Process.Pid

	ids := progIDs(pid)
	before, cpu0, t0 := snapshot(), cpuMs(pid), time.Now()

	shortConns(tcpAddr, *nConns)
	lost := udpRoundTrips(udpAddr, *nUDP)
	execs(*nExecs)
	time.Sleep(settle)

	after, cpu1, wall := snapshot(), cpuMs(pid), time.Since(t0)
	for id := range progIDs(pid) {
		ids[id] = true
	}
	if len(ids) == 0 {
		fatalf("%s: no BPF program found in the collector's descriptors", m.name)
	}

	r := result{mode: m.name, progs: map[string]*stat{}, cpuMs: cpu1 - cpu0, wall: wall, udpLost: lost}
	for id := range ids {
		a, ok := after[id]
		if !ok {
			continue
		}
		b := before[id] // zero if loaded during the window
		s := r.progs[a.Name]
		if s == nil {
			s = &stat{typ: a.Type}
			r.progs[a.Name] = s
		}
		s.programs++
		s.runs += a.RunCnt - b.RunCnt
		s.ns += a.RunTimeNs - b.RunTimeNs
	}
	return r
}

func enableStats() {
	old, err := os.ReadFile(statsSysctl)
	if err != nil {
		fatalf("%v", err)
	}
	if err := os.WriteFile(statsSysctl, []byte("1"), 0); err != nil {
		fatalf("enable BPF stats (run as root): %v", err)
	}
	atExit(func() {
		if err := os.WriteFile(statsSysctl, bytes.TrimSpace(old), 0); err != nil {
			fmt.Fprintf(os.Stderr, "hookcost: restore %s: %v\n", statsSysctl, err)
		}
	})
}

func nsPerRun(s *stat) string {
	if s == nil || s.runs == 0 {
		return "-"
	}
	return strconv.FormatUint(s.ns/s.runs, 10)
}

// lookup finds a program by its source name; the kernel keeps 15 characters of it (bpftool may show the
// full name from BTF).
func lookup(r result, name string) *stat {
	if s, ok := r.progs[name]; ok {
		return s
	}
	if len(name) > 15 {
		return r.progs[name[:15]]
	}
	return nil
}

func printTable(results []result) {
	fmt.Printf("%-10s %-18s %-15s %10s %10s %9s\n", "mode", "program", "type", "runs", "total_ms", "ns/run")
	for _, r := range results {
		names := make([]string, 0, len(r.progs))
		for n := range r.progs {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			s := r.progs[n]
			label := n
			if s.programs > 1 {
				label = fmt.Sprintf("%s(x%d)", n, s.programs)
			}
			fmt.Printf("%-10s %-18s %-15s %10d %10.2f %9s\n", r.mode, label, s.typ, s.runs,
				float64(s.ns)/1e6, nsPerRun(s))
		}
	}
	fmt.Printf("\n%-10s %16s %10s %10s\n", "mode", "collector_cpu_ms", "window_s", "udp_lost")
	for _, r := range results {
		fmt.Printf("%-10s %16.0f %10.1f %10d\n", r.mode, r.cpuMs, r.wall.Seconds(), r.udpLost)
	}
}

// compare prints each program's ns/run in every mode that loaded it.
func compare(results []result, title string, names ...string) {
	fmt.Printf("\n%s\n", title)
	for _, n := range names {
		var parts []string
		for _, r := range results {
			s := lookup(r, n)
			switch {
			case s == nil:
			case s.runs == 0:
				parts = append(parts, fmt.Sprintf("%s: loaded, 0 runs", r.mode))
			default:
				parts = append(parts, fmt.Sprintf("%s: %s ns/run (%d runs)", r.mode, nsPerRun(s), s.runs))
			}
		}
		if len(parts) == 0 {
			parts = append(parts, "absent in every mode (not loaded)")
			if n == "nf_iter" {
				parts[0] += ": the kernel refused iter/bpf_map_elem; nf_live does the live read instead"
			}
		}
		fmt.Printf("  %-16s %s\n", n, strings.Join(parts, "; "))
	}
}

func summary(results []result) {
	fmt.Println("\nSummary (like for like; ns/run from the kernel's run_time_ns/run_cnt)")
	compare(results, "TCP state change (tp_btf > raw_tp > tracepoint):", "nf_state", "nf_state_raw", "nf_state_tp")
	compare(results, "UDP socket owner (tp_btf > raw_tp > learnt at cgroup_skb egress):",
		"nf_udp_send", "nf_udp_recv", "nf_udp_send_raw", "nf_udp_recv_raw", "nf_skb_egress", "nf_skb_ingress")
	var base *stat
	if len(results) > 0 {
		base = lookup(results[0], "nf_skb_egress")
	}
	if base != nil && base.runs > 0 {
		for _, r := range results[1:] {
			if s := lookup(r, "nf_skb_egress"); s != nil && s.runs > 0 {
				fmt.Printf("  nf_skb_egress %s vs %s: %+d ns/run (every packet, TCP included)\n", r.mode,
					results[0].mode, int64(s.ns/s.runs)-int64(base.ns/base.runs))
			}
		}
	}
	compare(results, "Exec (tp_btf > raw_tp > tracepoint):", "bash_exec", "bash_exec_raw", "bash_exec_tp")
	compare(results, "Live read of tracked TCP connections (iter/bpf_map_elem > raw_tp run by the collector, "+
		"up to 12 connections per run):", "nf_iter", "nf_live")
	compare(results, "Seeding at start (outside the window: expect 0 runs):", "nf_seed", "nf_seed_walk")
}

func main() {
	flag.Parse()
	if _, err := os.Stat(*collectorPath); err != nil {
		fatalf("collector binary: %v (run from the repository root after make build, or pass -collector)", err)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fatalf("interrupted by %v", s)
	}()
	enableStats()
	apiserver := apiServer()

	var results []result
	for _, m := range modes {
		fmt.Fprintf(os.Stderr, "hookcost: mode %s (DKEBPF_REFUSE_HOOKS=%q)\n", m.name, m.refuse)
		results = append(results, runMode(m, apiserver))
	}
	runCleanups()

	fmt.Printf("workload per mode: %d idle TCP connections held, %d short TCP connections (%d bytes each way), "+
		"%d UDP round trips (%d bytes), %d execs of /bin/true, %v of intervals\n\n",
		*nIdle, *nConns, payload, *nUDP, datagram, *nExecs, settle)
	printTable(results)
	summary(results)
}
