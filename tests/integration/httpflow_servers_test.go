package integration

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// pythonSSLServer is an HTTPS server as a new user would write one with Python's ssl module (the host's
// libssl.so.3): a ThreadingHTTPServer whose listening socket is wrapped by SSLContext.wrap_socket, so
// the handshake runs in the accepting thread and a handler thread reads the request before it writes.
// It logs each request as an accessEntry, by its own account: the bytes of the request it read (line,
// headers, body) and of the response it wrote, each response in one write.
const pythonSSLServer = `
import http.server, json, ssl, sys, threading
port, log_path, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
lock = threading.Lock()

class Counting:
    def __init__(self, f):
        self.f, self.n = f, 0
    def readline(self, size=-1):
        b = self.f.readline(size)
        self.n += len(b)
        return b
    def read(self, size=-1):
        b = self.f.read(size)
        self.n += len(b)
        return b

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def setup(self):
        super().setup()
        self.rfile = Counting(self.rfile)
    def handle_one_request(self):
        self.rfile.n = 0
        super().handle_one_request()
    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        status = {"/missing": 404, "/fail": 500, "/empty": 204}.get(self.path.split("?")[0], 200)
        body = b"" if status == 204 else b"from python's ssl\n"
        head = "HTTP/1.1 %d %s\r\n" % (status, self.responses[status][0])
        if status != 204:
            head += "Content-Length: %d\r\n" % len(body)
        raw = (head + "\r\n").encode() + (b"" if self.command == "HEAD" else body)
        self.wfile.write(raw)
        entry = {"Client": self.headers.get("X-Truth-Client", "-"), "Method": self.command, "Target": self.path,
                 "Status": status, "ReqLen": self.rfile.n, "Sent": len(raw), "Proto": self.request_version,
                 "Host": self.headers.get("Host", ""), "Conn": "%s:%d" % self.client_address, "Port": port,
                 "RawConn": "-"}
        with lock, open(log_path, "a") as f:
            f.write(json.dumps(entry) + "\n")
    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = answer
    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
`

// rubySSLServer is an HTTPS server in Ruby's openssl library (the host's libssl.so.3): an SSLServer that
// does the handshake in the accepting thread, a thread per connection that reads the request first.
// It logs each request as pythonSSLServer does.
const rubySSLServer = `
require "socket"
require "openssl"
require "json"
port, log_path, cert, key = ARGV[0].to_i, ARGV[1], ARGV[2], ARGV[3]
ctx = OpenSSL::SSL::SSLContext.new
ctx.cert = OpenSSL::X509::Certificate.new(File.read(cert))
ctx.key = OpenSSL::PKey.read(File.read(key))
server = OpenSSL::SSL::SSLServer.new(TCPServer.new("127.0.0.1", port), ctx)
lock = Mutex.new
STATUS = { "/missing" => [404, "Not Found"], "/fail" => [500, "Internal Server Error"], "/empty" => [204, "No Content"] }
puts "ready"
STDOUT.flush
loop do
  begin
    conn = server.accept
  rescue OpenSSL::SSL::SSLError, SystemCallError
    next
  end
  Thread.new(conn) do |c|
    c.sync = true
    peer = c.io.peeraddr
    begin
      while (line = c.gets("\r\n"))
        n = line.bytesize
        method, target, proto = line.split(" ")
        headers = {}
        while (h = c.gets("\r\n"))
          n += h.bytesize
          break if h == "\r\n"
          k, v = h.split(":", 2)
          headers[k.downcase] = v.strip
        end
        len = headers["content-length"].to_i
        n += c.read(len).bytesize if len > 0
        status, reason = STATUS.fetch(target.split("?")[0], [200, "OK"])
        body = status == 204 ? "" : "from ruby's openssl\n"
        head = "HTTP/1.1 #{status} #{reason}\r\n"
        head += "Content-Length: #{body.bytesize}\r\n" if status != 204
        close = proto == "HTTP/1.0" ? headers["connection"]&.downcase != "keep-alive" : headers["connection"]&.downcase == "close"
        head += "Connection: close\r\n" if close
        raw = head + "\r\n" + (method == "HEAD" ? "" : body)
        c.write(raw)
        entry = { Client: headers["x-truth-client"] || "-", Method: method, Target: target, Status: status, ReqLen: n,
                  Sent: raw.bytesize, Proto: proto, Host: headers["host"] || "", Conn: "#{peer[3]}:#{peer[1]}", Port: port, RawConn: "-" }
        lock.synchronize { File.open(log_path, "a") { |f| f.puts(entry.to_json) } }
        break if close
      end
    rescue OpenSSL::SSL::SSLError, SystemCallError, IOError
    ensure
      c.close rescue nil
    end
  end
end
`

// tlsServer is an HTTPS server that logs each request as an accessEntry (JSON lines): its process name,
// and its command line given its port, log, certificate and key.
type tlsServer struct {
	name string
	argv func(t *testing.T, port int, log, cert, key string) []string
}

var (
	pythonSSL = tlsServer{"python3", func(_ *testing.T, port int, log, cert, key string) []string {
		return []string{"/usr/bin/python3", "-c", pythonSSLServer, strconv.Itoa(port), log, cert, key}
	}}
	rubySSL = tlsServer{"ruby", func(_ *testing.T, port int, log, cert, key string) []string {
		return []string{"/usr/bin/ruby", "-e", rubySSLServer, strconv.Itoa(port), log, cert, key}
	}}
	// The threaded C server (testdata/tls_server.c), its handshake in the accepting thread or in the
	// connection's own.
	cHandshakeInAcceptor = tlsServer{"tls_server", func(t *testing.T, port int, log, cert, key string) []string {
		return []string{buildTLSServer(t), strconv.Itoa(port), log, cert, key, "accept"}
	}}
	cHandshakeInWorker = tlsServer{"tls_server", func(t *testing.T, port int, log, cert, key string) []string {
		return []string{buildTLSServer(t), strconv.Itoa(port), log, cert, key, "worker"}
	}}
	// The same with OpenSSL linked in from Debian's libssl.a: it maps no libssl.
	cOpenSSLLinkedIn = tlsServer{"tls_server", func(t *testing.T, port int, log, cert, key string) []string {
		return []string{buildTLSServer(t, "-Wl,-Bstatic", "-lssl", "-lcrypto", "-Wl,-Bdynamic", "-ldl"), strconv.Itoa(port), log, cert, key, "accept"}
	}}
	// The same on BoringSSL (Debian's android-libboringssl: libssl.so.0, no SSL_read_ex/SSL_write_ex).
	cBoringSSL = tlsServer{"tls_server", func(t *testing.T, port int, log, cert, key string) []string {
		return []string{buildTLSServer(t, "-I"+boringSSLInclude, "-L"+boringSSLLib, "-Wl,-rpath,"+boringSSLLib, "-lssl", "-lcrypto"),
			strconv.Itoa(port), log, cert, key, "accept"}
	}}
)

// Where Debian's BoringSSL (android-libboringssl-dev) keeps its headers and libraries.
const (
	boringSSLInclude = "/usr/include/android"
	boringSSLLib     = "/usr/lib/x86_64-linux-gnu/android"
)

// buildTLSServer compiles testdata/tls_server.c against the host's libssl, or with the link options given.
func buildTLSServer(t *testing.T, link ...string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "tls_server")
	if len(link) == 0 {
		link = []string{"-lssl", "-lcrypto"}
	}
	args := append(append([]string{"-O2", "-Wall", "-o", bin, "testdata/tls_server.c"}, link...), "-lpthread")
	if out, err := exec.Command("cc", args...).CombinedOutput(); err != nil {
		t.Fatalf("build tls_server.c: %v\n%s", err, out)
	}
	return bin
}

// start runs the server with a fresh self-signed certificate until the test ends and returns its port,
// its pid, its log and its executable.
func (s tlsServer) start(t *testing.T) (port, pid int, log, exe string) {
	t.Helper()
	dir := t.TempDir()
	cert, key := selfSignedCert(t, dir)
	log = filepath.Join(dir, "access.jsonl")
	port = freePort(t)
	argv := s.argv(t, port, log, cert, key)
	cmd := exec.Command(argv[0], argv[1:]...)
	stdout, err := cmd.StdoutPipe()
	must(t, err)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	must(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ready := make([]byte, len("ready\n"))
	if _, err := io.ReadFull(stdout, ready); err != nil || string(ready) != "ready\n" {
		t.Fatalf("%s did not start (%q, %v):\n%s", s.name, ready, err, stderr.String())
	}
	return port, cmd.Process.Pid, log, argv[0]
}

// waitServerLog reads a server's JSON-lines log until it holds want requests.
func waitServerLog(t *testing.T, path string, want int) []accessEntry {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var log []accessEntry
		b, err := os.ReadFile(path)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if line == "" {
				continue
			}
			var e accessEntry
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatalf("server log line %q: %v", line, err)
			}
			log = append(log, e)
		}
		if len(log) >= want || time.Now().After(deadline) {
			if len(log) != want {
				t.Fatalf("server logged %d requests, clients sent %d", len(log), want)
			}
			return log
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Python's ssl server lost the first exchange of every connection on its side: its handler thread reads
// the request first, and the response, held back by Nagle until the client's delayed ACK of the session
// tickets, left from softirq, so the packet path never tied the session to its socket. The socket
// send/receive tracepoints tie it (tp_btf, and raw where a kernel refuses tp_btf). Every OpenSSL server
// must be exact on both sides whichever thread did the handshake: Python's, Ruby's, and a threaded C server with
// its handshake in the accepting thread and in the connection's own, and with OpenSSL linked in (no libssl
// mapped: found by its symbols). Clients: curl with one request per
// connection, then python3's keep-alive and one-shot mix.
func TestHTTPFlowCapturesOpenSSLServersOnBothSides(t *testing.T) {
	inBothTieModes(t, func(t *testing.T, a *agent) {
		for _, server := range []struct {
			what string
			tlsServer
		}{
			{"python ssl server", pythonSSL},
			{"ruby openssl server", rubySSL},
			{"C server, handshake in the accepting thread", cHandshakeInAcceptor},
			{"C server, handshake in the connection's thread", cHandshakeInWorker},
			{"C server, OpenSSL linked in", cOpenSSLLinkedIn},
			{"C server, BoringSSL", cBoringSSL},
		} {
			t.Run(server.what, func(t *testing.T) {
				port, serverPID, log, exe := server.start(t)
				if lib := mappedLibSSL(t, serverPID); lib != hostLibSSL {
					// Started after the collector, with OpenSSL linked in or another libssl than the host's
					// (which was probed at start): probed once a rescan or its exec finds it.
					probed := cmp.Or(lib, exe)
					a.waitFor(probed+" probed", max(30*time.Second, 10*interval), func() bool {
						for _, line := range strings.Split(a.log.String(), "\n") {
							if strings.Contains(line, "probing OpenSSL") && strings.Contains(line, probed) {
								return true
							}
						}
						return false
					})
				}
				var run clientRun
				url := func(target string) string { return "https://127.0.0.1:" + strconv.Itoa(port) + target }
				for _, target := range []string{"/one", "/two?secret=1", "/missing"} {
					run.merge(runCurl(t, "1.1", url(target)))
				}
				run.merge(runPython(t, "https", port))
				run.merge(runBoringSSLClient(t, port, "/three", "/missing"))
				truth := serverTruth(t, run, waitServerLog(t, log, len(run.sent)), port, server.name, []string{strconv.Itoa(serverPID)})
				settleHTTPFlows(t, a, server.what, truth)
			})
		}
	})
}

// hostLibSSL is the host's libssl, which the collector probes at start.
const hostLibSSL = "/usr/lib/x86_64-linux-gnu/libssl.so.3"

// mappedLibSSL is the path of the libssl the process maps, or "".
func mappedLibSSL(t *testing.T, pid int) string {
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	must(t, err)
	for _, line := range strings.Split(string(maps), "\n") {
		if i := strings.Index(line, " /"); i > 0 && strings.HasPrefix(filepath.Base(line[i+1:]), "libssl.so") {
			return line[i+1:]
		}
	}
	return ""
}

// runBoringSSLClient sends a GET of each target, each on its own connection, with BoringSSL's own client
// (bssl-tool client, from Debian's android-boringssl), which sends what it reads from its standard input.
func runBoringSSLClient(t *testing.T, port int, targets ...string) clientRun {
	t.Helper()
	var run clientRun
	for _, target := range targets {
		cmd := exec.Command("bssl-tool", "client", "-connect", "127.0.0.1:"+strconv.Itoa(port))
		cmd.Stdin = strings.NewReader("GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1:" + strconv.Itoa(port) + "\r\n" +
			truthHeader + ": bssl-tool\r\nConnection: close\r\n\r\n")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("bssl-tool client %s: %v\n%s", target, err, stderr.String())
		}
		var status int
		if _, err := fmt.Sscanf(string(out), "HTTP/1.1 %d ", &status); err != nil {
			t.Fatalf("bssl-tool client %s: no status line in %q (%v)", target, out, err)
		}
		run.record(cmd.Process.Pid, sentRequest{Process: "bssl-tool", Method: "GET", Target: target, Status: status, Version: "1.1"})
	}
	return run
}

// inBothTieModes runs f against a collector that ties TLS sessions to their sockets through the tp_btf
// socket tracepoints, then against one made to fall back to their raw_tp.
func inBothTieModes(t *testing.T, f func(t *testing.T, a *agent)) {
	for _, mode := range []struct{ name, refuse string }{
		{"tp_btf", ""},
		{"raw_tp", "tp_btf/sock_send_length,tp_btf/sock_recv_length"},
	} {
		t.Run(mode.name, func(t *testing.T) {
			a := startAgent(t, httpflowConf+"\n  envs = [\"DKEBPF_REFUSE_HOOKS="+mode.refuse+"\"]")
			f(t, a)
			if mode.refuse != "" && !strings.Contains(a.log.String(), "raw_tp/sock_send_length attached") {
				t.Errorf("the collector did not fall back to raw_tp/sock_send_length:\n%s", a.log.String())
			}
		})
	}
}

// tlsProxy is a TLS-terminating proxy in front of nginx's plain port that forwards the bytes as they are,
// so nginx's log is the truth of both of its sides: the clients' TLS connections to it, and its own plain
// connections to nginx. It runs as process name, from a config made of its port, nginx's, the directory
// of a certificate (cert.pem), key (key.pem) and both (both.pem).
type tlsProxy struct {
	name   string
	config string
	argv   func(dir string) []string
}

var tlsProxies = []tlsProxy{
	// stunnel: a thread per connection; it connects to nginx once the handshake is done.
	{"stunnel4", `foreground = yes
pid =
[https]
accept = 127.0.0.1:{{port}}
connect = 127.0.0.1:{{backend}}
cert = {{dir}}/cert.pem
key = {{dir}}/key.pem
`, func(dir string) []string { return []string{"/usr/bin/stunnel4", filepath.Join(dir, "proxy.conf")} }},
	// HAProxy: TLS through its own BIO (like curl's), one event loop per thread, TCP mode.
	{"haproxy", `global
  nbthread 2
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend tls
  bind 127.0.0.1:{{port}} ssl crt {{dir}}/both.pem
  default_backend nginx
backend nginx
  server nginx 127.0.0.1:{{backend}}
`, func(dir string) []string {
		return []string{"/usr/sbin/haproxy", "-db", "-f", filepath.Join(dir, "proxy.conf")}
	}},
}

// start runs the proxy in front of backend until the test ends and returns its port and pid.
func (p tlsProxy) start(t *testing.T, backend int) (port, pid int) {
	t.Helper()
	dir := t.TempDir()
	cert, key := selfSignedCert(t, dir)
	c, err := os.ReadFile(cert)
	must(t, err)
	k, err := os.ReadFile(key)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, "both.pem"), append(c, k...), 0o600))
	port = freePort(t)
	conf := strings.NewReplacer("{{port}}", strconv.Itoa(port), "{{backend}}", strconv.Itoa(backend), "{{dir}}", dir).Replace(p.config)
	must(t, os.WriteFile(filepath.Join(dir, "proxy.conf"), []byte(conf), 0o644))
	argv := p.argv(dir)
	cmd := exec.Command(argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	must(t, cmd.Start())
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s output:\n%s", p.name, out.String())
		}
	})
	// Listening: the kernel lists the port (no probe connection: it would be one more for the proxy).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		ss, _ := exec.Command("ss", "-Hltn", fmt.Sprintf("sport = :%d", port)).Output()
		if len(bytes.TrimSpace(ss)) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is not listening on %d:\n%s", p.name, port, out.String())
		}
	}
	return port, cmd.Process.Pid
}

// TLS-terminating proxies are OpenSSL servers too, and plain HTTP clients of what they front: each request
// is an exchange on both sides of both of its connections, exact against nginx's log.
func TestHTTPFlowCapturesOpenSSLProxiesOnBothSides(t *testing.T) {
	inBothTieModes(t, func(t *testing.T, a *agent) {
		for _, p := range tlsProxies {
			t.Run(p.name, func(t *testing.T) {
				n := startNginx(t)
				port, pid := p.start(t, n.httpPort)
				var run clientRun
				url := func(target string) string { return "https://127.0.0.1:" + strconv.Itoa(port) + target }
				for _, target := range []string{"/small.txt", "/large.bin?secret=1", "/missing"} {
					run.merge(runCurl(t, "1.1", url(target)))
				}
				run.merge(runPython(t, "https", port))
				log := n.waitLogged(t, n.httpPort, len(run.sent))
				pids := []string{strconv.Itoa(pid)}
				settleHTTPFlows(t, a, p.name+": the clients' TLS side", serverTruth(t, run, log, port, p.name, pids))
				plain := slices.Clone(log)
				for i := range plain {
					plain[i].Client = p.name
				}
				settleHTTPFlows(t, a, p.name+": its plain side to nginx", httpTruth{port: n.httpPort, want: expectedExchanges(plain, "nginx"),
					pids: map[string][]string{p.name: pids, "nginx": n.workerPIDs()}, httpHost: "127.0.0.1:" + strconv.Itoa(port)})
			})
		}
	})
}
