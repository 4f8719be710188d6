package integration

// The httpflow workload: an nginx serving HTTP and HTTPS on loopback, clients that each keep their own
// account of what they asked (curl, python3, this Go binary, raw sockets, openssl s_client in a chroot),
// and nginx's access log giving the exact size of every request and response message.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// truthHeader names the client in every request (the value is the process_name its points must carry);
// nginx logs it, so each access-log line is attributed to the client that sent it.
const truthHeader = "X-Truth-Client"

// connHeader tags the requests of one raw connection, so its log lines can be checked against the bytes
// the raw client wrote and read.
const connHeader = "X-Truth-Conn"

// nginxServer is an nginx master with one worker, serving http://127.0.0.1:httpPort and
// https://127.0.0.1:httpsPort (self-signed) from its own prefix.
type nginxServer struct {
	dir                 string
	httpPort, httpsPort int
	cmd                 *exec.Cmd
	stderr              *bytes.Buffer
	done                chan struct{}
}

// nginxConf: exact statuses per location; HTTPS offers HTTP/2 (ALPN), and h2.log is the account of the HTTP/2
// tests (bodies: $content_length and $body_bytes_sent); requests with a body go only to /created, /form and /dav/, which read it
// whole before answering, so $request_length counts it. /chunked.txt is a static text file gzip'd on the fly, so an
// HTTP/1.1 client asking for gzip gets it chunked; /dav/ takes PUT uploads (201 new, 204 replaced);
// sendfile is on as in Debian's shipped nginx.conf.
const nginxConf = `daemon off;
master_process on;
worker_processes 1;
user root;
error_log stderr notice;
pid {{dir}}/nginx.pid;
events { worker_connections 1024; }
http {
  log_format truth '$http_x_truth_client\t$request_method\t$request_uri\t$status\t$request_length\t$bytes_sent\t$server_protocol\t$server_port\t$http_host\t$connection\t$connection_requests\t$http_x_truth_conn';
  access_log {{dir}}/access.log truth;
  log_format h2 '$server_protocol\t$request_method\t$request_uri\t$status\t$content_length\t$body_bytes_sent';
  access_log {{dir}}/h2.log h2;
  client_body_temp_path {{dir}}/tmp/body;
  proxy_temp_path {{dir}}/tmp/proxy;
  fastcgi_temp_path {{dir}}/tmp/fastcgi;
  uwsgi_temp_path {{dir}}/tmp/uwsgi;
  scgi_temp_path {{dir}}/tmp/scgi;
  keepalive_requests 10000;
  keepalive_timeout 120s;
  sendfile on;
  types { text/plain txt; application/octet-stream bin; }
  default_type text/plain;
  server {
    listen 127.0.0.1:{{http}};
    listen 127.0.0.1:{{https}} ssl http2;
    ssl_certificate {{dir}}/cert.pem;
    ssl_certificate_key {{dir}}/key.pem;
    root {{dir}}/www;
    location = /small.txt {}
    location = /large.bin {}
    location = /chunked.txt { gzip on; gzip_types text/plain; gzip_min_length 0; }
    location /dav/ { dav_methods PUT; client_max_body_size 4m; }
    location = /created { proxy_pass http://unix:{{dir}}/upstream.sock:/; }
    location = /form { proxy_pass http://unix:{{dir}}/upstream.sock:/; }
    location = /empty { return 204; }
    location = /moved { return 301 /small.txt; }
    location = /missing { return 404 "missing\n"; }
    location = /fail { return 500 "failed\n"; }
    location = /warmup { return 200 "warm\n"; }
    location = /long-lived { return 200 "long\n"; }
  }
  # /created's upstream, on a unix socket (no TCP of its own): proxying makes nginx read a request body
  # whole before it answers (a "return" answers at once and discards the body, unlogged if it comes late).
  server {
    listen unix:{{dir}}/upstream.sock;
    access_log off;
    location / { return 201 "created\n"; }
  }
}
`

// selfSignedCert writes a fresh self-signed certificate for localhost and its key into dir, as cert.pem and
// key.pem, and returns their paths.
func selfSignedCert(t *testing.T, dir string) (cert, key string) {
	t.Helper()
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if out, err := exec.Command("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
		"-days", "1", "-keyout", key, "-out", cert).CombinedOutput(); err != nil {
		t.Fatalf("openssl req: %v\n%s", err, out)
	}
	return cert, key
}

// startNginx writes a prefix (config, self-signed certificate, content) in a temp dir and runs nginx on it
// until the test ends.
func startNginx(t *testing.T) *nginxServer {
	t.Helper()
	n := &nginxServer{dir: t.TempDir(), httpPort: freePort(t), httpsPort: freePort(t), stderr: &bytes.Buffer{}, done: make(chan struct{})}
	for _, d := range []string{"www/dav", "tmp"} {
		must(t, os.MkdirAll(filepath.Join(n.dir, d), 0o755))
	}
	selfSignedCert(t, n.dir)
	rng := rand.New(rand.NewSource(1))
	large := make([]byte, 1<<20)
	rng.Read(large)
	words := []string{"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"}
	var text strings.Builder
	for text.Len() < 256<<10 {
		text.WriteString(words[rng.Intn(len(words))])
		text.WriteByte(" \n"[rng.Intn(2)])
	}
	for name, body := range map[string][]byte{"small.txt": []byte("small file\n"), "large.bin": large, "chunked.txt": []byte(text.String())} {
		must(t, os.WriteFile(filepath.Join(n.dir, "www", name), body, 0o644))
	}
	conf := strings.NewReplacer("{{dir}}", n.dir, "{{http}}", strconv.Itoa(n.httpPort), "{{https}}", strconv.Itoa(n.httpsPort)).Replace(nginxConf)
	must(t, os.WriteFile(filepath.Join(n.dir, "nginx.conf"), []byte(conf), 0o644))

	n.cmd = exec.Command("nginx", "-p", n.dir, "-c", filepath.Join(n.dir, "nginx.conf"), "-e", "stderr")
	n.cmd.Stdout, n.cmd.Stderr = n.stderr, n.stderr
	must(t, n.cmd.Start())
	go func() { n.cmd.Wait(); close(n.done) }()
	t.Cleanup(func() {
		n.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.done:
		case <-time.After(5 * time.Second):
			n.cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("nginx output:\n%s", n.stderr.String())
		}
	})
	// Ready when the worker exists: its listening sockets are inherited from the master, which binds
	// before forking. No probe connection is made, so the access log holds only the clients' requests.
	deadline := time.Now().Add(10 * time.Second)
	for len(n.workerPIDs()) == 0 {
		select {
		case <-n.done:
			t.Fatalf("nginx exited: %s", n.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx worker did not start: %s", n.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return n
}

// workerPIDs are the pids of the master's children (the processes that serve, hence the server-side pid tag).
func (n *nginxServer) workerPIDs() []string {
	var pids []string
	master := strconv.Itoa(n.cmd.Process.Pid)
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after its closing parenthesis.
		rest := string(b[bytes.LastIndexByte(b, ')')+1:])
		if f := strings.Fields(rest); len(f) > 1 && f[1] == master {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

func (n *nginxServer) url(scheme, target string) string {
	port := n.httpPort
	if scheme == "https" {
		port = n.httpsPort
	}
	return fmt.Sprintf("%s://127.0.0.1:%d%s", scheme, port, target)
}

// accessEntry is one line of nginx's access log: one request as the server saw it.
type accessEntry struct {
	Client, Method, Target string
	Status                 int
	ReqLen, Sent           int64 // the whole request message ($request_length) and response ($bytes_sent)
	Proto, Host, Conn      string
	Port, ConnRequests     int
	RawConn                string // X-Truth-Conn, "-" when absent
}

func (n *nginxServer) accessLog(t *testing.T, port int) []accessEntry {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.dir, "access.log"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []accessEntry
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != 12 {
			t.Fatalf("access log line %q: %d fields, want 12", line, len(f))
		}
		num := func(s string) int64 {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				t.Fatalf("access log line %q: %v", line, err)
			}
			return v
		}
		e := accessEntry{Client: f[0], Method: f[1], Target: f[2], Status: int(num(f[3])), ReqLen: num(f[4]), Sent: num(f[5]),
			Proto: f[6], Port: int(num(f[7])), Host: f[8], Conn: f[9], ConnRequests: int(num(f[10])), RawConn: f[11]}
		if e.Port == port {
			out = append(out, e)
		}
	}
	return out
}

// waitLogged waits until nginx has logged at least want requests on port (it logs after sending the
// response, so a client can be done a moment before the line is written).
func (n *nginxServer) waitLogged(t *testing.T, port, want int) []accessEntry {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		log := n.accessLog(t, port)
		if len(log) >= want || time.Now().After(deadline) {
			return log
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sentRequest is one request by its client's own account: what it asked and the status it got back.
type sentRequest struct {
	Process, Method, Target string
	Status                  int
	Version                 string        // of the request: "1.1" or "1.0"
	MaxLatency              time.Duration // if set: from the start of the request's last write to the response's end
}

// rawConnTally is what a raw-socket client wrote and read on one connection, in total.
type rawConnTally struct {
	id          string // its X-Truth-Conn value
	requests    int
	wrote, read int64
}

// clientRun is a client mix's ground truth: every request sent, the pids that sent them (by
// process_name), and the raw connections' byte tallies.
type clientRun struct {
	sent []sentRequest
	pids map[string][]string
	raw  []rawConnTally
}

func (r *clientRun) record(pid int, reqs ...sentRequest) {
	for _, s := range reqs {
		r.addPID(s.Process, strconv.Itoa(pid))
	}
	r.sent = append(r.sent, reqs...)
}

func (r *clientRun) addPID(process, pid string) {
	if r.pids == nil {
		r.pids = map[string][]string{}
	}
	if !slices.Contains(r.pids[process], pid) {
		r.pids[process] = append(r.pids[process], pid)
	}
}

func (r *clientRun) merge(o clientRun) {
	for proc, pids := range o.pids {
		for _, p := range pids {
			r.addPID(proc, p)
		}
	}
	r.sent = append(r.sent, o.sent...)
	r.raw = append(r.raw, o.raw...)
}

// runCurl runs one curl process over the given URLs (one connection, reused, unless options say
// otherwise) and returns each transfer by curl's own account.
func runCurl(t *testing.T, version string, args ...string) clientRun {
	t.Helper()
	argv := []string{"-s", "-k", "-H", truthHeader + ": curl", "-w", `%{method} %{url_effective} %{response_code}\n`}
	if version == "1.0" {
		argv = append(argv, "--http1.0")
	} else {
		argv = append(argv, "--http1.1")
	}
	for _, a := range args {
		if strings.HasPrefix(a, "http://") || strings.HasPrefix(a, "https://") {
			argv = append(argv, "-o", "/dev/null")
		}
		argv = append(argv, a)
	}
	cmd := exec.Command("curl", argv...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("curl %q: %v\n%s", argv, err, stderr.String())
	}
	var run clientRun
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			t.Fatalf("curl -w line %q", line)
		}
		status, _ := strconv.Atoi(f[2])
		u, err := url.Parse(f[1])
		must(t, err)
		run.record(cmd.Process.Pid, sentRequest{Process: "curl", Method: f[0], Target: u.RequestURI(), Status: status, Version: version})
	}
	return run
}

// pythonClient: one http.client keep-alive connection (every method DataKit knows, a large upload, a
// HEAD, a 204), then urllib on fresh connections (a 404 as HTTPError, a gzip'd chunked response).
// It prints [method, target, status] per request. TLS is OpenSSL through _ssl (SSL_read_ex/SSL_write_ex).
const pythonClient = `
import http.client, json, ssl, sys, urllib.error, urllib.request
scheme, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
ctx = ssl._create_unverified_context() if scheme == "https" else None
hdr = {"X-Truth-Client": "python3"}
out = []
c = http.client.HTTPSConnection(host, port, context=ctx) if ctx else http.client.HTTPConnection(host, port)
for method, target, body in [
    ("GET", "/small.txt", None),
    ("GET", "/small.txt?token=abc&page=2", None),
    ("POST", "/created", b"a=1&b=2"),
    ("PUT", "/dav/python.bin", b"p" * 200000),
    ("PUT", "/dav/python.bin", b"q" * 1000),
    ("PATCH", "/created?op=patch", b"{}"),
    ("DELETE", "/missing", None),
    ("OPTIONS", "/created", None),
    ("HEAD", "/small.txt", None),
    ("GET", "/fail", None),
    ("GET", "/empty", None),
    ("GET", "/large.bin", None),
]:
    c.request(method, target, body=body, headers=hdr)
    r = c.getresponse()
    r.read()
    out.append([method, target, r.status])
c.close()
for target, extra in [("/small.txt", {}), ("/missing?secret=s3cr3t", {}), ("/chunked.txt", {"Accept-Encoding": "gzip"})]:
    req = urllib.request.Request("%s://%s:%d%s" % (scheme, host, port, target), headers=dict(hdr, **extra))
    try:
        with urllib.request.urlopen(req, context=ctx) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        e.read()
        status = e.code
    out.append(["GET", target, status])
print(json.dumps(out))
`

// runPython runs pythonClient with Debian's /usr/bin/python3 (its _ssl links the system libssl.so.3).
func runPython(t *testing.T, scheme string, port int) clientRun {
	t.Helper()
	cmd := exec.Command("/usr/bin/python3", "-c", pythonClient, scheme, "127.0.0.1", strconv.Itoa(port))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python3 client: %v\n%s", err, stderr.String())
	}
	var reqs [][]any
	if err := json.Unmarshal(out, &reqs); err != nil {
		t.Fatalf("python3 client output %q: %v", out, err)
	}
	var run clientRun
	for _, r := range reqs {
		run.record(cmd.Process.Pid, sentRequest{Process: "python3", Method: r[0].(string), Target: r[1].(string), Status: int(r[2].(float64)), Version: "1.1"})
	}
	return run
}

// runGoClient sends a keep-alive sequence with net/http (plain HTTP only: Go's crypto/tls is not
// OpenSSL). The gzip'd /chunked.txt sits mid-sequence, so the requests after it depend on its end being
// found; the harness fails if it did not come chunked.
func runGoClient(t *testing.T, n *nginxServer) clientRun {
	t.Helper()
	comm := selfComm(t)
	tr := &http.Transport{DisableCompression: true, MaxConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var run clientRun
	for _, r := range []struct{ method, target, body string }{
		{"GET", "/small.txt", ""},
		{"GET", "/small.txt", ""},
		{"GET", "/created?id=7", ""},
		{"GET", "/chunked.txt", ""},
		{"GET", "/small.txt", ""},
		{"GET", "/empty", ""},
		{"GET", "/moved", ""},
		{"POST", "/fail", ""},
		{"POST", "/created", "payload=1"},
		{"PUT", "/dav/go.bin", strings.Repeat("g", 100000)},
		{"GET", "/large.bin", ""},
		{"GET", "/missing?q=go", ""},
		{"DELETE", "/created", ""},
	} {
		var body io.Reader
		if r.body != "" {
			body = strings.NewReader(r.body)
		}
		req, err := http.NewRequest(r.method, n.url("http", r.target), body)
		must(t, err)
		req.Header.Set(truthHeader, comm)
		if r.target == "/chunked.txt" {
			req.Header.Set("Accept-Encoding", "gzip")
		}
		resp, err := c.Do(req)
		must(t, err)
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		must(t, err)
		if r.target == "/chunked.txt" && !slices.Equal(resp.TransferEncoding, []string{"chunked"}) {
			t.Fatalf("harness: %s came with Transfer-Encoding %v, want chunked", r.target, resp.TransferEncoding)
		}
		run.record(os.Getpid(), sentRequest{Process: comm, Method: r.method, Target: r.target, Status: resp.StatusCode, Version: "1.1"})
	}
	return run
}

// countingConn counts the bytes read and written on a connection.
type countingConn struct {
	net.Conn
	wrote, read int64
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.read += int64(n)
	return n, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.wrote += int64(n)
	return n, err
}

// rawRequest formats a request with the truth headers; the last request of a connection closes it.
func rawRequest(method, target string, port int, comm, connID, body string, last bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s: %s\r\n", method, target, port, truthHeader, comm)
	if connID != "" {
		fmt.Fprintf(&b, "%s: %s\r\n", connHeader, connID)
	}
	if body != "" {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	}
	if last {
		b.WriteString("Connection: close\r\n")
	}
	b.WriteString("\r\n")
	b.WriteString(body)
	return b.String()
}

// readRawResponses reads one response per method from br and returns their statuses.
func readRawResponses(t *testing.T, br *bufio.Reader, methods ...string) []int {
	t.Helper()
	var statuses []int
	for _, m := range methods {
		resp, err := http.ReadResponse(br, &http.Request{Method: m})
		must(t, err)
		_, err = io.Copy(io.Discard, resp.Body)
		must(t, err)
		statuses = append(statuses, resp.StatusCode)
	}
	return statuses
}

// readToClose reads until nginx closes (the last request asked it to), so the read tally is complete and
// nothing was sent beyond the responses.
func readToClose(t *testing.T, br *bufio.Reader) {
	t.Helper()
	if rest, err := io.ReadAll(br); len(rest) != 0 || err != nil {
		t.Fatalf("harness: after the responses: %d more bytes %q, %v", len(rest), rest, err)
	}
}

func dialCounting(t *testing.T, port int) (*countingConn, *bufio.Reader) {
	t.Helper()
	nc, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
	must(t, err)
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	c := &countingConn{Conn: nc}
	return c, bufio.NewReader(c)
}

// runPipelined writes three GET requests in one write(2) and then reads the three responses.
func runPipelined(t *testing.T, port int) clientRun {
	t.Helper()
	comm := selfComm(t)
	c, br := dialCounting(t, port)
	defer c.Close() // at once: nginx logs a closing connection's last request only once the client has closed too
	targets := []string{"/small.txt", "/missing?q=1", "/created"}
	var burst string
	for i, tg := range targets {
		burst += rawRequest("GET", tg, port, comm, "pipelined", "", i == len(targets)-1)
	}
	_, err := c.Write([]byte(burst))
	must(t, err)
	statuses := readRawResponses(t, br, "GET", "GET", "GET")
	readToClose(t, br)
	var run clientRun
	for i, tg := range targets {
		run.record(os.Getpid(), sentRequest{Process: comm, Method: "GET", Target: tg, Status: statuses[i], Version: "1.1"})
	}
	run.raw = append(run.raw, rawConnTally{id: "pipelined", requests: len(targets), wrote: c.wrote, read: c.read})
	return run
}

// runSplitPost sends one POST /form in three writes (request line and Host, the other headers, the body)
// with pauses so nginx reads them apart, then an ordinary GET on the same connection. The POST's latency
// is bounded by what the client measured from its last write to the end of the response.
func runSplitPost(t *testing.T, port int) clientRun {
	t.Helper()
	comm := selfComm(t)
	c, br := dialCounting(t, port)
	defer c.Close()
	post := rawRequest("POST", "/form?split=1", port, comm, "split", "hello world", false)
	head, body, _ := strings.Cut(post, "\r\n\r\n")
	line1End := strings.Index(head, "\r\n") + 2
	line2End := line1End + strings.Index(head[line1End:], "\r\n") + 2
	for _, part := range []string{head[:line2End], head[line2End:] + "\r\n\r\n"} {
		_, err := c.Write([]byte(part))
		must(t, err)
		time.Sleep(50 * time.Millisecond)
	}
	lastWrite := time.Now()
	_, err := c.Write([]byte(body))
	must(t, err)
	statuses := readRawResponses(t, br, "POST")
	bound := time.Since(lastWrite)
	_, err = c.Write([]byte(rawRequest("GET", "/small.txt", port, comm, "split", "", true)))
	must(t, err)
	statuses = append(statuses, readRawResponses(t, br, "GET")...)
	readToClose(t, br)
	var run clientRun
	run.record(os.Getpid(),
		sentRequest{Process: comm, Method: "POST", Target: "/form?split=1", Status: statuses[0], Version: "1.1", MaxLatency: bound},
		sentRequest{Process: comm, Method: "GET", Target: "/small.txt", Status: statuses[1], Version: "1.1"})
	run.raw = append(run.raw, rawConnTally{id: "split", requests: 2, wrote: c.wrote, read: c.read})
	return run
}

// runPlainMix is the plain-HTTP client mix: curl on one keep-alive connection and on fresh ones (HEAD,
// POST, an HTTP/1.0 request, an upload with Expect: 100-continue, a chunked response followed by another
// request), python3, the Go client, the pipelined burst and the split POST.
func runPlainMix(t *testing.T, n *nginxServer) clientRun {
	t.Helper()
	var run clientRun
	u := func(target string) string { return n.url("http", target) }
	upload := filepath.Join(t.TempDir(), "upload.bin")
	must(t, os.WriteFile(upload, bytes.Repeat([]byte("u"), 300000), 0o644))
	run.merge(runCurl(t, "1.1", u("/small.txt"), u("/small.txt?x=1&secret=2"), u("/created"), u("/empty"), u("/moved"),
		u("/missing"), u("/fail"), u("/large.bin"), u("/small.txt")))
	run.merge(runCurl(t, "1.1", "--compressed", u("/chunked.txt"), u("/small.txt")))
	run.merge(runCurl(t, "1.1", u("/small.txt")))
	run.merge(runCurl(t, "1.1", u("/small.txt?fresh=2")))
	run.merge(runCurl(t, "1.1", "-I", u("/small.txt")))
	run.merge(runCurl(t, "1.1", "--data-binary", "name=value&x=1", u("/created")))
	run.merge(runCurl(t, "1.0", u("/missing?secret=3")))
	run.merge(runCurl(t, "1.1", "-T", upload, u("/dav/curl.bin")))
	run.merge(runPython(t, "http", n.httpPort))
	run.merge(runGoClient(t, n))
	run.merge(runPipelined(t, n.httpPort))
	run.merge(runSplitPost(t, n.httpPort))
	return run
}

// runTLSMix is the HTTPS client mix through OpenSSL: curl (SSL_read/SSL_write) on one keep-alive
// connection and on fresh ones, and python3 (SSL_read_ex/SSL_write_ex). Every process here starts when
// this is called, i.e. after whatever collector is already running.
func runTLSMix(t *testing.T, n *nginxServer) clientRun {
	t.Helper()
	var run clientRun
	u := func(target string) string { return n.url("https", target) }
	run.merge(runCurl(t, "1.1", u("/small.txt"), u("/small.txt?x=1&secret=2"), u("/created"), u("/empty"), u("/moved"),
		u("/missing"), u("/fail"), u("/large.bin"), u("/small.txt")))
	run.merge(runCurl(t, "1.1", "--compressed", u("/chunked.txt"), u("/small.txt")))
	run.merge(runCurl(t, "1.1", u("/small.txt?fresh=1")))
	run.merge(runCurl(t, "1.1", "-I", u("/small.txt")))
	run.merge(runCurl(t, "1.1", "--data-binary", "name=value&x=1", u("/created")))
	run.merge(runPython(t, "https", n.httpsPort))
	return run
}

// buildOpenSSLRoot copies the openssl binary and the libraries ldd lists into a fresh directory tree: a
// root whose libssl.so.3 is another file (inode) than the host's.
func buildOpenSSLRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	bin, err := exec.LookPath("openssl")
	must(t, err)
	out, err := exec.Command("ldd", bin).Output()
	must(t, err)
	files := []string{bin}
	for _, m := range regexp.MustCompile(`(/\S+) \(0x`).FindAllStringSubmatch(string(out), -1) {
		files = append(files, m[1]) // "libssl.so.3 => /lib/.../libssl.so.3 (0x…)" and the loader's own line
	}
	for _, f := range files {
		src, err := os.ReadFile(f) // follows symlinks: the copy is a plain file
		must(t, err)
		dst := filepath.Join(root, f)
		if f == bin {
			dst = filepath.Join(root, "usr/bin/openssl")
		}
		must(t, os.MkdirAll(filepath.Dir(dst), 0o755))
		must(t, os.WriteFile(dst, src, 0o755))
	}
	must(t, os.Mkdir(filepath.Join(root, ".oldroot"), 0o755)) // for pivot_root
	return root
}

// rootLayout is how a long-lived openssl is put under another root; the command runs
// `/usr/bin/openssl <args>` there.
type rootLayout struct {
	name    string
	command func(t *testing.T, root string, args []string) []string
}

// rootLayouts are the shapes of "another root" a collector meets, by what /proc/<pid>/maps then shows us:
//   - chroot: chroot(2) into a copy in our mount namespace; maps shows the copy's full path, openable as is.
//   - container: its own mount namespace and pivot_root into the copy, as container runtimes do; maps shows
//     /lib/x86_64-linux-gnu/libssl.so.3, which on our side is the host's file: only /proc/<pid>/root/… is it.
//   - chroot in a private mount: its own mount namespace, a tmpfs holding the copy, chroot into it; maps shows a
//     path that names nothing on our side (only /proc/<pid>/map_files/… reaches the file).
var rootLayouts = []rootLayout{
	{"chroot", func(t *testing.T, root string, args []string) []string {
		return append([]string{"chroot", root, "/usr/bin/openssl"}, args...)
	}},
	{"container", func(t *testing.T, root string, args []string) []string {
		script := `mount --bind "$0" "$0" && cd "$0" && pivot_root . .oldroot && exec /usr/bin/openssl "$@"`
		return append([]string{"unshare", "--mount", "--propagation", "private", "sh", "-c", script, root}, args...)
	}},
	{"chroot in a private mount", func(t *testing.T, root string, args []string) []string {
		script := `src=$0 mnt=$1; shift; mount -t tmpfs tmpfs "$mnt" && cp -a "$src"/. "$mnt"/ && exec chroot "$mnt" /usr/bin/openssl "$@"`
		return append([]string{"unshare", "--mount", "--propagation", "private", "sh", "-c", script, root, t.TempDir()}, args...)
	}},
}

// besideProcess runs `/usr/bin/openssl <args>` in the mount namespace and root of process pid, as
// `docker exec` does: it maps the same libssl file as pid.
func besideProcess(pid int) func(t *testing.T, root string, args []string) []string {
	return func(t *testing.T, root string, args []string) []string {
		return append([]string{"nsenter", "-t", strconv.Itoa(pid), "-m", "-r", "/usr/bin/openssl"}, args...)
	}
}

// hostOpenSSL runs the host's openssl.
func hostOpenSSL(t *testing.T, root string, args []string) []string {
	return append([]string{"openssl"}, args...)
}

// sClient is an `openssl s_client` connected to an HTTPS port, driven through its stdin and stdout: each
// request is written when the test says, and its response read back whole. Its pid is the launcher's
// (chroot, unshare, sh and nsenter all exec in place).
type sClient struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	stderr *bytes.Buffer
	port   int
	sent   []sentRequest
	done   chan struct{}
}

func startSClient(t *testing.T, launch func(t *testing.T, root string, args []string) []string, root string, port int) *sClient {
	t.Helper()
	argv := launch(t, root, []string{"s_client", "-connect", fmt.Sprintf("127.0.0.1:%d", port), "-quiet", "-nocommands"})
	cmd := exec.Command(argv[0], argv[1:]...)
	s := &sClient{cmd: cmd, stderr: &bytes.Buffer{}, port: port, done: make(chan struct{})}
	var err error
	s.in, err = cmd.StdinPipe()
	must(t, err)
	// Our own pipe, not StdoutPipe: Wait closes a StdoutPipe when the process exits, and s_client exits as
	// soon as nginx closes the connection, maybe before the last response has been read from the pipe.
	stdout, w, err := os.Pipe()
	must(t, err)
	t.Cleanup(func() { stdout.Close() })
	s.out = bufio.NewReader(stdout)
	cmd.Stdout, cmd.Stderr = w, s.stderr
	err = cmd.Start()
	w.Close()
	must(t, err)
	go func() { cmd.Wait(); close(s.done) }()
	watchdog := time.AfterFunc(2*time.Minute, func() { cmd.Process.Kill() })
	t.Cleanup(func() {
		watchdog.Stop()
		cmd.Process.Kill()
		<-s.done
	})
	return s
}

func (s *sClient) pid() int { return s.cmd.Process.Pid }

// do sends one request and reads its response; last asks nginx to close the connection.
func (s *sClient) do(t *testing.T, method, target, body string, last bool) {
	t.Helper()
	_, err := io.WriteString(s.in, rawRequest(method, target, s.port, "openssl", "", body, last))
	must(t, err)
	resp, err := http.ReadResponse(s.out, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("s_client %s %s: %v; stderr:\n%s", method, target, err, s.stderr.String())
	}
	_, err = io.Copy(io.Discard, resp.Body)
	must(t, err)
	s.sent = append(s.sent, sentRequest{Process: "openssl", Method: method, Target: target, Status: resp.StatusCode, Version: "1.1"})
}

// finish waits for s_client to exit after nginx closed the connection, and returns its account.
func (s *sClient) finish(t *testing.T) clientRun {
	t.Helper()
	s.in.Close()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("s_client did not exit after the connection closed; stderr:\n%s", s.stderr.String())
	}
	return s.account()
}

// account is the requests this s_client has sent so far.
func (s *sClient) account() clientRun {
	var run clientRun
	run.record(s.pid(), s.sent...)
	return run
}

// runEchoStream runs a raw echo server and one client exchanging non-HTTP bytes (a text line, binary
// noise, and a line that looks like a status line but answers no request); it returns the server's port.
func runEchoStream(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	must(t, err)
	defer l.Close()
	served := make(chan struct{})
	go func() {
		defer close(served)
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	c, err := net.Dial("tcp4", l.Addr().String())
	must(t, err)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	noise := make([]byte, 4096)
	rand.New(rand.NewSource(2)).Read(noise)
	for _, msg := range [][]byte{[]byte("hello\n"), noise, []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), []byte("hello again\n")} {
		_, err := c.Write(msg)
		must(t, err)
		back := make([]byte, len(msg))
		_, err = io.ReadFull(c, back)
		must(t, err)
		if !bytes.Equal(back, msg) {
			t.Fatalf("echo returned %q, want %q", back, msg)
		}
	}
	c.Close()
	<-served
	return l.Addr().(*net.TCPAddr).Port
}
