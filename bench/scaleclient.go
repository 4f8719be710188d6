package main

// The scale run's client side. One process may hold no more open files than RLIMIT_NOFILE's hard limit
// (20 000 here, and without CAP_SYS_RESOURCE it cannot be raised), so the keep-alive connections are held by
// child processes of the bench (`bench -scale-client`), at most perProcess() each. They inherit the bench's
// CPU (1) and autogroup; the parent counts their CPU as the load generator's. Each child reads commands on
// stdin and answers one line each on stdout:
//
//	open <second> <sources> <from> <to> <respLen>  opens connections from..to-1 of the run (connection i
//	                                               from 127.<second>.0.<1+i%sources>) → "opened" | "error …"
//	load <workers> <duration>                      requests round-robin over them → "done <ok> <failed>"
//	close                                          closes them all and exits (so does the end of stdin)

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// scaleClientArg, as the only argument, makes the bench a client child (handled before main: no flag).
const scaleClientArg = "-scale-client"

// scaleRequest is the keep-alive runs' request.
const scaleRequest = "GET /api HTTP/1.1\r\nHost: bench\r\n\r\n"

func init() {
	if len(os.Args) == 2 && os.Args[1] == scaleClientArg {
		os.Exit(scaleClient(os.Stdin, os.Stdout))
	}
}

// perProcess is the most connections one process holds: a client child, or an nginx worker. It is the
// hard RLIMIT_NOFILE less a tenth: room for the process's other files and, in nginx, for the free
// connections it keeps (it closes idle keep-alive connections once fewer than 1/16 of worker_connections
// are free) and for reuseport's uneven spread over the workers. 18 000 here.
func perProcess() int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Max > 1<<24 {
		return 1 << 24 * 9 / 10
	}
	return int(lim.Max) * 9 / 10
}

// processesFor is how many processes hold n connections, perProcess() at most each.
func processesFor(n int) int { return (n + perProcess() - 1) / perProcess() }

// scaleClient is a client child's main loop.
func scaleClient(in io.Reader, out io.Writer) int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	s := &connSet{req: []byte(scaleRequest)}
	defer s.close()
	reply := func(format string, a ...any) {
		fmt.Fprintln(out, strings.ReplaceAll(fmt.Sprintf(format, a...), "\n", " "))
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		var v []int
		for _, x := range f[min(1, len(f)):] {
			n, err := strconv.Atoi(x)
			if err != nil {
				break
			}
			v = append(v, n)
		}
		switch {
		case len(f) == 6 && len(v) == 5 && f[0] == "open":
			s.respLen = v[4]
			if err := s.open(byte(v[0]), v[1], v[2], v[3]); err != nil {
				reply("error %v", err)
			} else {
				reply("opened")
			}
		case len(f) == 3 && f[0] == "load":
			w, err1 := strconv.Atoi(f[1])
			d, err2 := time.ParseDuration(f[2])
			if err1 != nil || err2 != nil || w < 1 {
				reply("error bad command %q", sc.Text())
				continue
			}
			r := s.load(d, w)
			reply("done %d %d", r.Requests, r.Errors)
		case len(f) == 1 && f[0] == "close":
			return 0
		default:
			reply("error bad command %q", sc.Text())
		}
	}
	return 0
}

// connSet is one client child's connections.
type connSet struct {
	conns   []net.Conn
	req     []byte
	respLen int // nginx's answer is the same size every time (its Date header has a fixed width)
}

// open connects to nginx as connections from..to-1 of the run: connection i from 127.second.0.(1+i%sources).
func (s *connSet) open(second byte, sources, from, to int) error {
	n := to - from
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && uint64(n)+64 > lim.Cur {
		return fmt.Errorf("%d connections do not fit in RLIMIT_NOFILE %d", n, lim.Cur)
	}
	s.close()
	s.conns = make([]net.Conn, n)
	const dialers = 64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	deadline := time.Now().Add(10 * time.Minute)
	for g := 0; g < min(dialers, n); g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += dialers {
				src := &net.TCPAddr{IP: net.IPv4(127, second, 0, byte(1+(from+i)%sources))}
				c, err := (&net.Dialer{LocalAddr: src, Timeout: 10 * time.Second}).Dial("tcp", httpAddr)
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				c.SetDeadline(deadline)
				s.conns[i] = c
			}
		}()
	}
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		s.close()
		return fmt.Errorf("open %d connections: %w", n, err)
	}
	return nil
}

// load sends requests round-robin over the connections, workers at a time, for d. Each worker ends its
// request in flight before it stops, so every request of the run is answered.
func (s *connSet) load(d time.Duration, workers int) loadResult {
	n := len(s.conns)
	workers = min(workers, n)
	var stop atomic.Bool
	var ok, failed atomic.Int64
	timer := time.AfterFunc(d, func() { stop.Store(true) })
	defer timer.Stop()
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, s.respLen)
			var done, bad int64
			for i := w; !stop.Load(); {
				if c := s.conns[i]; c != nil {
					_, err := c.Write(s.req)
					if err == nil {
						_, err = io.ReadFull(c, buf)
					}
					if err == nil && bytes.HasPrefix(buf, []byte("HTTP/1.1 200 ")) {
						done++
					} else {
						bad++
						c.Close() // out of step: not used again
						s.conns[i] = nil
					}
				}
				if i += workers; i >= n {
					i = w
					if bad > 0 && s.allNil(w, workers) {
						break
					}
				}
			}
			ok.Add(done)
			failed.Add(bad)
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	return loadResult{Requests: ok.Load(), Errors: failed.Load(), Rate: float64(ok.Load()) / el}
}

func (s *connSet) allNil(w, step int) bool {
	for i := w; i < len(s.conns); i += step {
		if s.conns[i] != nil {
			return false
		}
	}
	return true
}

func (s *connSet) close() {
	for _, c := range s.conns {
		if c != nil {
			c.Close()
		}
	}
	s.conns = nil
}

// clientSet is the keep-alive generator, seen from the bench: N connections opened first, held by
// processesFor(N) client children, then requests round-robin over them, scaleWorkers in flight in all.
type clientSet struct {
	respLen int
	gen     int // runs so far (from a random start): each run takes fresh source addresses, so no port is in TIME_WAIT
	procs   []*clientProc
	pids    []int // the children of the last run, kept after they exit (netflow's points name them)
}

type clientProc struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
	n    int
	load int // requests in flight
}

// ask sends one command and reads the child's answer ("error …" is an error).
func (p *clientProc) ask(cmd string) (string, error) {
	if cmd != "" {
		if _, err := fmt.Fprintln(p.in, cmd); err != nil {
			return "", fmt.Errorf("client %d: %s: %w", p.cmd.Process.Pid, cmd, err)
		}
	}
	if !p.out.Scan() {
		return "", fmt.Errorf("client %d exited (%v)", p.cmd.Process.Pid, p.out.Err())
	}
	l := p.out.Text()
	if e, ok := strings.CutPrefix(l, "error "); ok {
		return "", fmt.Errorf("client %d: %s", p.cmd.Process.Pid, e)
	}
	return l, nil
}

// open starts the run's children, has them connect n times to nginx from 127.<20+run>.0.x (at most
// connsPerSource per address), and waits until nginx holds them all.
func (s *clientSet) open(n int, ng *nginx) error {
	s.close()
	if s.gen == 0 {
		// A bench run just before this one left its sources' ports in TIME_WAIT: start elsewhere.
		s.gen = rand.IntN(200)
	}
	s.gen++
	second := 20 + s.gen%200
	sources := (n + connsPerSource - 1) / connsPerSource
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	k := processesFor(n)
	s.pids = nil
	for i := 0; i < k; i++ {
		cmd := exec.Command(exe, scaleClientArg)
		// The children die with the bench (and, should the signal miss, at the end of their stdin).
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			s.close()
			return err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			s.close()
			return err
		}
		if err := cmd.Start(); err != nil {
			s.close()
			return fmt.Errorf("start a client process: %w", err)
		}
		p := &clientProc{cmd: cmd, in: in, out: bufio.NewScanner(out), n: n*(i+1)/k - n*i/k, load: scaleWorkers / k}
		if i < scaleWorkers%k {
			p.load++
		}
		p.load = max(1, p.load)
		s.procs = append(s.procs, p)
		s.pids = append(s.pids, cmd.Process.Pid)
		// One child dials at a time, as a single generator would: the connect burst is no steeper with
		// more children.
		if _, err := p.ask(fmt.Sprintf("open %d %d %d %d %d", second, sources, n*i/k, n*(i+1)/k, s.respLen)); err != nil {
			s.close()
			return err
		}
	}
	for t := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		_, active, err := ng.status()
		if err != nil {
			return err
		}
		if active >= int64(n) {
			return nil
		}
		if time.Since(t) > 60*time.Second {
			return fmt.Errorf("nginx holds %d of %d connections after 60 s", active, n)
		}
	}
}

// load runs the children's loads at once for d. It returns their sum and the CPU seconds the children
// used meanwhile (the load generator's: the bench's own is counted by measureWith).
func (s *clientSet) load(d time.Duration) (loadResult, float64) {
	cpu0 := 0.0
	for _, p := range s.procs {
		cpu0 += procCPU(p.cmd.Process.Pid, false)
	}
	start := time.Now()
	for _, p := range s.procs {
		fmt.Fprintf(p.in, "load %d %s\n", p.load, d)
	}
	var r loadResult
	for _, p := range s.procs {
		l, err := p.ask("")
		var ok, failed int64
		if err == nil {
			_, err = fmt.Sscanf(l, "done %d %d", &ok, &failed)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: scale:", err)
			failed = int64(p.n) // its connections are lost to the run
		}
		r.Requests += ok
		r.Errors += failed
	}
	el := time.Since(start).Seconds()
	cpu := 0.0
	for _, p := range s.procs {
		cpu += procCPU(p.cmd.Process.Pid, false)
	}
	r.Rate = float64(r.Requests) / el
	return r, cpu - cpu0
}

// isOpen says whether the children of a run still hold its connections.
func (s *clientSet) isOpen() bool { return len(s.procs) > 0 }

// close has every child close its connections and exit, one after the other (as a single generator
// would: the burst of closes is no steeper with more children).
func (s *clientSet) close() {
	for _, p := range s.procs {
		fmt.Fprintln(p.in, "close")
		p.in.Close()
		stopProcess(p.cmd, 0, 30*time.Second) // signal 0: none, wait for it to exit (killed after 30 s)
	}
	s.procs = nil
}
