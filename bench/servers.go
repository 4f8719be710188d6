package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/creack/pty"
)

// The workloads' servers, all on loopback and pinned to CPU 0.
const (
	httpAddr   = "127.0.0.1:18080"
	httpsAddr  = "127.0.0.1:18443"
	goTLSAddr  = "127.0.0.1:18444" // W6: bench/gotlsserver, Go's net/http over crypto/tls
	statusAddr = "127.0.0.1:18081" // nginx stub_status, apart so reading it does not touch the measured ports
	// dnsmasq on its own loopback address: integration tests run their own dnsmasq on 127.0.0.1:53 (and
	// dnsflow watches port 53 only), and netflow's server-side points are told apart by address.
	dnsIP   = "127.0.0.2"
	dnsAddr = dnsIP + ":53"
	dnsName = "www.bench.test."
)

type nginx struct {
	dir     string
	cmd     *exec.Cmd
	log     *os.File // access log, read for ground truth (every worker appends to it)
	asked   int64    // connections the bench opened to stub_status (nginx counts them as accepted too)
	workers int      // worker processes (their CPU is the master's tree's: treeCPU(pid))
}

func startNginx(dir string) (*nginx, error) { return startNginxWith(dir, 0) }

// startNginxWith is startNginx for conns concurrent connections (0: the main bench's one worker of 4096):
// the scale run's nginx also raises its file limit, keeps idle connections open for as long as a run lasts
// and, as one process holds at most perProcess() connections (RLIMIT_NOFILE's hard limit), runs
// processesFor(conns) workers, each with its own listening socket on the HTTP port (reuseport: the kernel
// spreads the connections over them by their addresses' hash). stub_status's counters are nginx's, not a
// worker's, and every worker appends whole lines to the one access log.
func startNginxWith(dir string, conns int) (*nginx, error) {
	workers, workerConns, mainExtra, httpExtra, listenExtra := 1, 4096, "", "", ""
	if conns > 0 {
		workers = processesFor(conns)
		perWorker := (conns + workers - 1) / workers
		var lim syscall.Rlimit
		syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
		// nginx closes idle keep-alive connections once fewer than 1/16 of its connections are free: an
		// eighth more, within the file limit (less room for its listening sockets, logs and channels).
		workerConns = perWorker + perWorker/8 + 1024
		if lim.Max < 1<<24 {
			workerConns = min(workerConns, int(lim.Max)-64)
		}
		mainExtra = fmt.Sprintf("\nworker_rlimit_nofile %d;", min(uint64(2*workerConns+1024), lim.Max))
		httpExtra = "\n\tkeepalive_timeout 600s;"
		listenExtra = " reuseport"
	}
	key, crt, err := selfSigned(dir)
	if err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`worker_processes %[10]d;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections %[7]d; }%[8]s
http {
	log_format bench '$status $request_length $bytes_sent $connection';
	access_log %[1]s/access.log bench;
	client_body_temp_path %[1]s/body; proxy_temp_path %[1]s/proxy; fastcgi_temp_path %[1]s/fcgi;
	uwsgi_temp_path %[1]s/uwsgi; scgi_temp_path %[1]s/scgi;
	keepalive_requests 10000000;%[9]s
	ssl_certificate %[2]s;
	ssl_certificate_key %[3]s;
	server {
		listen %[4]s%[11]s;
		listen %[5]s ssl;
		location /api { default_type application/json; return 200 '{"ok":true,"service":"bench"}'; }
	}
	server {
		listen %[6]s;
		access_log off;
		location /status { stub_status; }
	}
}
`, dir, crt, key, httpAddr, httpsAddr, statusAddr, workerConns, mainExtra, httpExtra, workers, listenExtra)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	n := &nginx{dir: dir, workers: workers, cmd: pinned(0, "nginx", "-c", path, "-e", filepath.Join(dir, "error.log"))}
	n.cmd.Stderr = os.Stderr
	if conns > 0 {
		// Should the bench die, its nginx stops (with its workers): the next run needs the ports.
		n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	}
	if err := n.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start nginx: %w", err)
	}
	if err := waitTCP(httpAddr, 5*time.Second); err != nil {
		return nil, fmt.Errorf("nginx: %w", err)
	}
	f, err := os.Open(filepath.Join(dir, "access.log"))
	if err != nil {
		return nil, err
	}
	n.log = f
	n.log.Seek(0, io.SeekEnd)
	return n, nil
}

// selfSigned writes the servers' self-signed certificate and key to dir, once: nginx's HTTPS (W3) and the Go
// server (W6) share them, so both handshakes are the same RSA 2048 work.
func selfSigned(dir string) (key, crt string, err error) {
	key, crt = filepath.Join(dir, "key.pem"), filepath.Join(dir, "cert.pem")
	if _, err := os.Stat(crt); err == nil {
		return key, crt, nil
	}
	out, err := exec.Command("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
		"-subj", "/CN=localhost", "-keyout", key, "-out", crt).CombinedOutput()
	if err != nil {
		return "", "", fmt.Errorf("self-signed certificate: %v: %s", err, out)
	}
	return key, crt, nil
}

// accessLog is ground truth from nginx: requests completed and their sizes.
type accessLog struct {
	Requests      int64
	Connections   int64 // distinct $connection serials: connections that carried a request
	RequestBytes  int64 // $request_length: request line, headers and body as read
	ResponseBytes int64 // $bytes_sent
	Non2xx        int64
	Uniform       bool // every request had the same $request_length and the same $bytes_sent
}

// of is the ground truth of n of the log's requests, when they all weigh the same (else the whole log).
func (a accessLog) of(n int64) accessLog {
	if !a.Uniform || a.Requests == 0 || a.Non2xx > 0 {
		return a
	}
	return accessLog{Requests: n, Connections: a.Connections, Uniform: true,
		RequestBytes: a.RequestBytes / a.Requests * n, ResponseBytes: a.ResponseBytes / a.Requests * n}
}

// drainLog reads the access log lines written since the last call.
func (n *nginx) drainLog() accessLog {
	a := accessLog{Uniform: true}
	var rl0, bs0 int64
	conns := map[string]bool{}
	sc := bufio.NewScanner(n.log)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 4 {
			continue
		}
		a.Requests++
		conns[f[3]] = true
		if !strings.HasPrefix(f[0], "2") {
			a.Non2xx++
		}
		rl, _ := strconv.ParseInt(f[1], 10, 64)
		bs, _ := strconv.ParseInt(f[2], 10, 64)
		if a.Requests == 1 {
			rl0, bs0 = rl, bs
		}
		a.Uniform = a.Uniform && rl == rl0 && bs == bs0
		a.RequestBytes += rl
		a.ResponseBytes += bs
	}
	a.Connections = int64(len(conns))
	return a
}

// accepted returns nginx's count of accepted connections (stub_status), not counting the bench's own
// connections to stub_status (this one included): ground truth for tcp_established on the server side.
func (n *nginx) accepted() (int64, error) {
	accepted, _, err := n.status()
	return accepted, err
}

// settle waits until nginx holds no connection but the one asking (up to timeout): every request of the
// run is then answered and logged, before the collector stops.
func (n *nginx) settle(timeout time.Duration) error {
	return settleServer("nginx", n.status, httpAddr, timeout)
}

// settleServer waits until a server (its status: accepted and active connections) holds none and their
// sockets are gone from addr (up to timeout).
func settleServer(name string, status func() (int64, int64, error), addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		_, active, err := status()
		if err != nil {
			return err
		}
		if active == 0 {
			// The server has closed them, but a socket ends (its close record) at the peer's last ACK:
			// under load some are still in LAST_ACK here.
			return socketsGone(addr, deadline)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s still holds %d connections after %s", name, active, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// socketsGone waits until no TCP socket bound to addr's port is between ESTABLISHED and CLOSE (LISTEN
// and TIME_WAIT are not sockets the collector follows), as /proc/net/tcp and tcp6 say.
func socketsGone(addr string, deadline time.Time) error {
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	local := fmt.Sprintf(":%04X ", port)
	for {
		left := 0
		for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
			b, _ := os.ReadFile(f)
			for _, line := range strings.Split(string(b), "\n") {
				fields := strings.Fields(line)
				// sl local_address rem_address st ...: states 06 TIME_WAIT, 07 CLOSE, 0A LISTEN
				if len(fields) > 3 && strings.HasSuffix(fields[1]+" ", local) && fields[3] != "06" && fields[3] != "07" && fields[3] != "0A" {
					left++
				}
			}
		}
		if left == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d sockets of port %d still open", left, port)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// status reads stub_status: connections accepted, less the bench's to stub_status, and active, less the
// one asking.
func (n *nginx) status() (accepted, active int64, err error) {
	n.asked++
	c, err := net.Dial("tcp", statusAddr)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /status HTTP/1.0\r\nHost: bench\r\n\r\n")
	body, err := io.ReadAll(c)
	if err != nil {
		return 0, 0, err
	}
	// "Active connections: 1 \nserver accepts handled requests\n 12 12 40 \n..."
	lines := strings.Split(string(body), "\n")
	active = -1
	for i, l := range lines {
		if v, ok := strings.CutPrefix(l, "Active connections:"); ok {
			if active, err = strconv.ParseInt(strings.TrimSpace(v), 10, 64); err != nil {
				return 0, 0, fmt.Errorf("stub_status active connections %q: %w", v, err)
			}
			active--
		}
		if strings.HasPrefix(l, "server accepts") && i+1 < len(lines) && active >= 0 {
			if f := strings.Fields(lines[i+1]); len(f) >= 1 {
				v, err := strconv.ParseInt(f[0], 10, 64)
				return v - n.asked, active, err
			}
		}
	}
	return 0, 0, fmt.Errorf("unexpected stub_status answer %q", body)
}

func (n *nginx) pid() int { return n.cmd.Process.Pid }

func (n *nginx) stop() { stopProcess(n.cmd, 15, 5*time.Second) }

// goTLS is W6's server: bench/gotlsserver, Go's net/http over crypto/tls, built by the bench into build/ and
// driven over its stdin and stdout (status, drain: see its doc), so that asking it for the truth touches
// no socket.
type goTLS struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

// goTLSBinary is where the bench builds bench/gotlsserver, under the repository's root.
const goTLSBinary = "build/bench-gotlsserver"

// startGoTLS builds bench/gotlsserver (with the go command, when there is one: the build cache makes it
// quick) and starts it on goTLSAddr, pinned to CPU 0 as nginx is, with the certificate of nginx's HTTPS.
func startGoTLS(root, dir string) (*goTLS, error) {
	bin := filepath.Join(root, goTLSBinary)
	if gobin, err := exec.LookPath("go"); err == nil {
		b := exec.Command(gobin, "build", "-o", bin, "./bench/gotlsserver")
		b.Dir = root
		if out, err := b.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build ./bench/gotlsserver: %v: %s", err, out)
		}
	} else if _, serr := os.Stat(bin); serr != nil {
		return nil, fmt.Errorf("%s missing and no go command to build it (go build -o %s ./bench/gotlsserver): %w", bin, goTLSBinary, err)
	}
	key, crt, err := selfSigned(dir)
	if err != nil {
		return nil, err
	}
	g := &goTLS{cmd: pinned(0, bin, "-addr", goTLSAddr, "-cert", crt, "-key", key)}
	g.cmd.Stderr = os.Stderr
	// Should the bench die, its server stops: the next run needs the port.
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if g.in, err = g.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := g.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	g.out = bufio.NewReader(stdout)
	if err := g.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	ready := make(chan error, 1)
	go func() {
		line, err := g.out.ReadString('\n')
		if err == nil && line != "ready\n" {
			err = fmt.Errorf("said %q", line)
		}
		ready <- err
	}()
	select {
	case err = <-ready:
	case <-time.After(10 * time.Second):
		err = fmt.Errorf("not ready after 10s")
	}
	if err != nil {
		g.stop()
		return nil, fmt.Errorf("go tls server: %w", err)
	}
	return g, nil
}

// ask sends one command and decodes its one-line answer into v.
func (g *goTLS) ask(cmd string, v any) error {
	if _, err := io.WriteString(g.in, cmd+"\n"); err != nil {
		return fmt.Errorf("go tls server %s: %w", cmd, err)
	}
	line, err := g.out.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("go tls server %s: %w", cmd, err)
	}
	return json.Unmarshal(line, v)
}

// status returns the connections the server accepted since it started, and those it holds now.
func (g *goTLS) status() (accepted, active int64, err error) {
	var st struct{ Accepted, Active int64 }
	err = g.ask("status", &st)
	return st.Accepted, st.Active, err
}

// drain returns the exchanges the server completed since the last drain, by its own account.
func (g *goTLS) drain() (accessLog, error) {
	var a accessLog
	err := g.ask("drain", &a)
	return a, err
}

// settle waits until the server holds no connection and their sockets are gone (up to timeout): every
// exchange of the run is then complete and counted, before the collector stops.
func (g *goTLS) settle(timeout time.Duration) error {
	return settleServer("go tls server", g.status, goTLSAddr, timeout)
}

func (g *goTLS) pid() int { return g.cmd.Process.Pid }

func (g *goTLS) stop() {
	if g.in != nil {
		g.in.Close() // it exits at the end of its stdin
	}
	stopProcess(g.cmd, 15, 5*time.Second)
}

type dnsmasq struct{ cmd *exec.Cmd }

func startDnsmasq() (*dnsmasq, error) {
	d := &dnsmasq{cmd: pinned(0, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--user=root",
		"--listen-address="+dnsIP, "--bind-interfaces", "--port=53", "--no-resolv", "--no-hosts",
		"--pid-file=", "--cache-size=1000", "--address=/bench.test/10.9.9.9")}
	var errb bytes.Buffer
	d.cmd.Stderr = &errb
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start dnsmasq: %w", err)
	}
	time.Sleep(300 * time.Millisecond)
	if d.cmd.ProcessState != nil || !alive(d.cmd.Process.Pid) {
		return nil, fmt.Errorf("dnsmasq exited: %s", errb.String())
	}
	if _, err := dnsQuery(dnsAddr); err != nil {
		return nil, fmt.Errorf("dnsmasq does not answer on %s: %v (%s)", dnsAddr, err, errb.String())
	}
	return d, nil
}

func (d *dnsmasq) pid() int { return d.cmd.Process.Pid }
func (d *dnsmasq) stop()    { stopProcess(d.cmd, 15, 5*time.Second) }

// shell is an interactive bash on a pty: each line typed goes through readline and runs a program.
type shell struct {
	cmd *exec.Cmd
	pty *os.File
	buf []byte
}

const prompt = "@@BENCH@@ "

func startShell() (*shell, error) {
	cmd := pinned(0, "bash", "--norc", "--noprofile", "-i")
	cmd.Env = append(os.Environ(), "PS1="+prompt, "HISTFILE=/dev/null", "TERM=dumb")
	f, err := pty.Start(cmd)
	if err != nil {
		return nil, fmt.Errorf("start bash on a pty: %w", err)
	}
	s := &shell{cmd: cmd, pty: f, buf: make([]byte, 4096)}
	if err := s.waitPrompt(5 * time.Second); err != nil {
		return nil, err
	}
	return s, nil
}

// run types one command line and waits for the next prompt.
func (s *shell) run(line string) error {
	if _, err := s.pty.WriteString(line + "\n"); err != nil {
		return err
	}
	return s.waitPrompt(5 * time.Second)
}

func (s *shell) waitPrompt(timeout time.Duration) error {
	s.pty.SetReadDeadline(time.Now().Add(timeout))
	var seen []byte
	for {
		n, err := s.pty.Read(s.buf)
		if err != nil {
			return fmt.Errorf("bash: waiting for the prompt: %w (got %q)", err, seen)
		}
		seen = append(seen, s.buf[:n]...)
		if bytes.HasSuffix(bytes.TrimRight(seen, "\x00"), []byte(prompt)) {
			return nil
		}
		if len(seen) > 1<<16 {
			seen = seen[len(seen)-len(prompt):]
		}
	}
}

func (s *shell) pid() int { return s.cmd.Process.Pid }

func (s *shell) stop() {
	s.pty.WriteString("exit\n")
	stopProcess(s.cmd, 1, 2*time.Second)
	s.pty.Close()
}

func alive(pid int) bool { _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); return err == nil }
