package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/creack/pty"
)

// The workloads' servers, all on loopback and pinned to CPU 0.
const (
	httpAddr   = "127.0.0.1:18080"
	httpsAddr  = "127.0.0.1:18443"
	statusAddr = "127.0.0.1:18081" // nginx stub_status, apart so reading it does not touch the measured ports
	dnsAddr    = "127.0.0.1:53"
	dnsName    = "www.bench.test."
)

type nginx struct {
	dir string
	cmd *exec.Cmd
	log *os.File // access log, read for ground truth
}

func startNginx(dir string) (*nginx, error) {
	key, crt := filepath.Join(dir, "key.pem"), filepath.Join(dir, "cert.pem")
	out, err := exec.Command("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
		"-subj", "/CN=localhost", "-keyout", key, "-out", crt).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("self-signed certificate: %v: %s", err, out)
	}
	conf := fmt.Sprintf(`worker_processes 1;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
	log_format bench '$status $request_length $bytes_sent $connection';
	access_log %[1]s/access.log bench;
	client_body_temp_path %[1]s/body; proxy_temp_path %[1]s/proxy; fastcgi_temp_path %[1]s/fcgi;
	uwsgi_temp_path %[1]s/uwsgi; scgi_temp_path %[1]s/scgi;
	keepalive_requests 10000000;
	ssl_certificate %[2]s;
	ssl_certificate_key %[3]s;
	server {
		listen %[4]s;
		listen %[5]s ssl;
		location /api { default_type application/json; return 200 '{"ok":true,"service":"bench"}'; }
	}
	server {
		listen %[6]s;
		access_log off;
		location /status { stub_status; }
	}
}
`, dir, crt, key, httpAddr, httpsAddr, statusAddr)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	n := &nginx{dir: dir, cmd: pinned(0, "nginx", "-c", path, "-e", filepath.Join(dir, "error.log"))}
	n.cmd.Stderr = os.Stderr
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

// accessLog is ground truth from nginx: requests completed and their sizes.
type accessLog struct {
	Requests      int64
	Connections   int64 // distinct $connection serials: connections that carried a request
	RequestBytes  int64 // $request_length: request line, headers and body as read
	ResponseBytes int64 // $bytes_sent
	Non2xx        int64
}

// drainLog reads the access log lines written since the last call.
func (n *nginx) drainLog() accessLog {
	var a accessLog
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
		a.RequestBytes += rl
		a.ResponseBytes += bs
	}
	a.Connections = int64(len(conns))
	return a
}

// accepted returns nginx's count of accepted connections (stub_status), not counting the connection
// that asks: ground truth for tcp_established on the server side.
func (n *nginx) accepted() (int64, error) {
	c, err := net.Dial("tcp", statusAddr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /status HTTP/1.0\r\nHost: bench\r\n\r\n")
	body, err := io.ReadAll(c)
	if err != nil {
		return 0, err
	}
	// "...\nserver accepts handled requests\n 12 12 40 \n..."
	lines := strings.Split(string(body), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "server accepts") && i+1 < len(lines) {
			f := strings.Fields(lines[i+1])
			if len(f) >= 1 {
				v, err := strconv.ParseInt(f[0], 10, 64)
				return v - 1, err
			}
		}
	}
	return 0, fmt.Errorf("unexpected stub_status answer %q", body)
}

func (n *nginx) pid() int { return n.cmd.Process.Pid }

func (n *nginx) stop() { stopProcess(n.cmd, 15, 5*time.Second) }

type dnsmasq struct{ cmd *exec.Cmd }

func startDnsmasq() (*dnsmasq, error) {
	d := &dnsmasq{cmd: pinned(0, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--user=root",
		"--listen-address=127.0.0.1", "--bind-interfaces", "--port=53", "--no-resolv", "--no-hosts",
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
