package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// peer is another tool that Debian packages, measured like the collector on the workload it competes on:
// a configuration of that workload's shuffled order, started pinned to CPU 1 before the load, attached
// before it starts, stopped after it, its output written to a file (writing it is part of its cost).
type peer struct {
	Name, Workload string
	Pkg            string // Debian package, for its version in the report
	// args returns its command line (an error: the tool or what it probes was not found).
	args func() ([]string, error)
	// seen counts what the tool reported in its output; Saw says what that is, per request of the load.
	seen func(out []byte) int64
	Saw  string
}

var peers = []peer{
	{Name: "tcplife", Workload: "W2", Pkg: "libbpf-tools", args: tool("tcplife"), seen: linesAfter(1),
		Saw: "lines (a socket's life; each request is its own connection)"},
	{Name: "tcpstates", Workload: "W2", Pkg: "libbpf-tools", args: tool("tcpstates"), seen: linesAfter(1),
		Saw: "lines (a socket's state change)"},
	{Name: "bpftrace-ssl", Workload: "W3", Pkg: "bpftrace", args: sslCount, seen: bpftraceCounts,
		Saw: "uprobe hits (SSL_read/SSL_write entry and return, nginx's and wrk's libssl: the trap floor)"},
	// The W4 client builds its own DNS queries (no libc resolver): gethostlatency's uprobes on libc's
	// getaddrinfo/gethostbyname see none of them; it is measured for its cost.
	{Name: "gethostlatency", Workload: "W4", Pkg: "libbpf-tools", args: tool("gethostlatency"), seen: linesAfter(1),
		Saw: "lookups (none expected: the client does not resolve through libc)"},
	{Name: "bashreadline", Workload: "W5", Pkg: "libbpf-tools", args: tool("bashreadline"), seen: linesAfter(1),
		Saw: "lines (bash's readline returns, every shell's)"},
}

var (
	// peerDir holds the peers' output files: the bench's temporary directory.
	peerDir = os.TempDir()
	// peersLeftOut says, for the report, which peers did not load here and why.
	peersLeftOut []string
)

func peerNamed(name string) (peer, bool) {
	i := slices.IndexFunc(peers, func(p peer) bool { return p.Name == name })
	if i < 0 {
		return peer{}, false
	}
	return peers[i], true
}

// loadPeers tries each peer of the workloads ws once (start, attach, stop) and returns the names of those
// that load, by workload. One that does not is left out with a line saying why: this kernel has no kprobes
// and no fentry, which some tools need.
func loadPeers(ws []workload, dir string) map[string][]string {
	peerDir = dir
	loaded := map[string][]string{}
	for _, p := range peers {
		if !slices.ContainsFunc(ws, func(w workload) bool { return w.ID == p.Workload }) {
			continue
		}
		pr, err := p.start()
		if err == nil {
			_, err = pr.stop()
		}
		if err != nil {
			peersLeftOut = append(peersLeftOut, fmt.Sprintf("%s (%s, %s) did not load here, left out: %v", p.Name, p.Workload, p.version(), err))
			fmt.Println("peer " + peersLeftOut[len(peersLeftOut)-1])
			continue
		}
		fmt.Printf("peer %s (%s) runs on %s\n", p.Name, p.version(), p.Workload)
		loaded[p.Workload] = append(loaded[p.Workload], p.Name)
	}
	return loaded
}

// tool runs a libbpf-tools binary (Debian installs them in /usr/sbin).
func tool(name string) func() ([]string, error) {
	return func() ([]string, error) {
		path, err := exec.LookPath(name)
		if err != nil {
			if _, serr := os.Stat("/usr/sbin/" + name); serr != nil {
				return nil, fmt.Errorf("%s not installed (scripts/install-bench-deps.sh): %w", name, err)
			}
			path = "/usr/sbin/" + name
		}
		return []string{path}, nil
	}
}

// sslCount is bpftrace counting the uprobes of the SSL functions nginx and wrk call, on their libssl
// (found with ldd, as the dynamic loader finds it), entry and return: what the trap alone costs.
func sslCount() ([]string, error) {
	var libs []string
	for _, bin := range []string{"nginx", "wrk"} {
		path, err := exec.LookPath(bin)
		if err != nil {
			return nil, err
		}
		out, err := exec.Command("ldd", path).Output()
		if err != nil {
			return nil, fmt.Errorf("ldd %s: %w", path, err)
		}
		for _, l := range strings.Split(string(out), "\n") {
			// "libssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x...)"
			if f := strings.Fields(l); len(f) >= 3 && strings.HasPrefix(f[0], "libssl.so") && f[1] == "=>" {
				lib, err := filepath.EvalSymlinks(f[2])
				if err != nil {
					return nil, err
				}
				if !slices.Contains(libs, lib) {
					libs = append(libs, lib)
				}
			}
		}
	}
	if len(libs) == 0 {
		return nil, fmt.Errorf("nginx and wrk link no libssl")
	}
	var probes []string
	for _, lib := range libs {
		for _, fn := range []string{"SSL_read", "SSL_write"} {
			probes = append(probes, "uprobe:"+lib+":"+fn, "uretprobe:"+lib+":"+fn)
		}
	}
	return []string{"bpftrace", "-e", strings.Join(probes, ",") + " { @[probe] = count(); }"}, nil
}

// linesAfter counts the output lines after the tool's header lines.
func linesAfter(header int) func([]byte) int64 {
	return func(out []byte) int64 { return max(0, int64(bytes.Count(out, []byte("\n"))-header)) }
}

// bpftraceMap is a line of a map bpftrace prints when it exits: "@[uprobe:/…/libssl.so.3:SSL_read]: 1234".
var bpftraceMap = regexp.MustCompile(`(?m)^@.*: (\d+)$`)

func bpftraceCounts(out []byte) int64 {
	var n int64
	for _, m := range bpftraceMap.FindAllSubmatch(out, -1) {
		v, _ := strconv.ParseInt(string(m[1]), 10, 64)
		n += v
	}
	return n
}

func (p peer) version() string {
	out, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", p.Pkg).Output()
	if err != nil || len(out) == 0 {
		return p.Pkg + " (version unknown)"
	}
	return p.Pkg + " " + string(out)
}

// peerRun is a running peer.
type peerRun struct {
	cmd       *exec.Cmd
	out, errs *os.File
	seen      func([]byte) int64
	name      string
}

// peerAttach is how long a peer may take to attach (bpftrace compiles its program first).
const peerAttach = 30 * time.Second

// start runs p and returns once it is attached: once it waits for events in its event loop. Its header
// cannot say so: written to a file, its output is block-buffered and appears only when it exits.
func (p peer) start() (*peerRun, error) {
	args, err := p.args()
	if err != nil {
		return nil, err
	}
	pr := &peerRun{name: p.Name, seen: p.seen}
	if pr.out, err = os.CreateTemp(peerDir, "peer-"+p.Name+"-*.out"); err != nil {
		return nil, err
	}
	if pr.errs, err = os.CreateTemp(peerDir, "peer-"+p.Name+"-*.err"); err != nil {
		pr.remove()
		return nil, err
	}
	pr.cmd = pinned(1, args[0], args[1:]...)
	pr.cmd.Stdout, pr.cmd.Stderr = pr.out, pr.errs
	if err := pr.cmd.Start(); err != nil {
		pr.remove()
		return nil, fmt.Errorf("start %s: %w", p.Name, err)
	}
	for deadline := time.Now().Add(peerAttach); ; time.Sleep(20 * time.Millisecond) {
		if exited(pr.pid()) {
			pr.cmd.Wait()
			defer pr.remove()
			return nil, fmt.Errorf("%s exited (%v): %s", p.Name, pr.cmd.ProcessState, pr.stderr())
		}
		// Both libbpf-tools and bpftrace enter epoll_wait once every probe is attached.
		if w, _ := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", pr.pid())); bytes.Contains(w, []byte("epoll")) {
			return pr, nil
		}
		if time.Now().After(deadline) {
			msg := pr.stderr()
			pr.stop()
			return nil, fmt.Errorf("%s not attached within %v: %s", p.Name, peerAttach, msg)
		}
	}
}

func (pr *peerRun) pid() int { return pr.cmd.Process.Pid }

// stop ends the peer (SIGINT: it prints what it has and exits) and returns the count of what it saw.
func (pr *peerRun) stop() (int64, error) {
	if pr.cmd.ProcessState != nil {
		return 0, nil // stopped already
	}
	defer pr.remove()
	stopProcess(pr.cmd, 2, 10*time.Second)
	if !pr.cmd.ProcessState.Success() {
		return 0, fmt.Errorf("%s: %v: %s", pr.name, pr.cmd.ProcessState, pr.stderr())
	}
	out, err := os.ReadFile(pr.out.Name())
	if err != nil {
		return 0, err
	}
	return pr.seen(out), nil
}

// stderr is the end of the peer's error output, on one line.
func (pr *peerRun) stderr() string {
	b, _ := os.ReadFile(pr.errs.Name())
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > 300 {
		s = "…" + s[len(s)-300:]
	}
	return s
}

func (pr *peerRun) remove() {
	for _, f := range []*os.File{pr.out, pr.errs} {
		if f != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}
}

// exited reports whether pid has exited (a zombie: not reaped yet) or is gone.
func exited(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	return len(f) == 0 || f[0] == "Z" || f[0] == "X"
}

// oursSaw is what config all counts of what the workload's peers see, per request: to set beside theirs.
var oursSaw = map[string]struct {
	n    func(run) int64
	what string
}{
	"W3": {func(r run) int64 { return r.TLSHits }, "uprobe hits (httpflow-tls, every libssl function it probes)"},
	"W4": {func(r run) int64 { return r.DNSQueries }, "DNS queries (dnsflow, every process's)"},
	"W5": {func(r run) int64 { return r.BashLines }, "lines (ebpf-bash, every shell's)"},
}
