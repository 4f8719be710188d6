package integration

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
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

// startPythonSSLServer runs pythonSSLServer with Debian's /usr/bin/python3 until the test ends and returns
// its port, its pid and its log.
func startPythonSSLServer(t *testing.T) (port, pid int, log string) {
	t.Helper()
	dir := t.TempDir()
	key, cert, log := filepath.Join(dir, "key.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "access.jsonl")
	if out, err := exec.Command("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
		"-days", "1", "-keyout", key, "-out", cert).CombinedOutput(); err != nil {
		t.Fatalf("openssl req: %v\n%s", err, out)
	}
	port = freePort(t)
	cmd := exec.Command("/usr/bin/python3", "-c", pythonSSLServer, strconv.Itoa(port), log, cert, key)
	stdout, err := cmd.StdoutPipe()
	must(t, err)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	must(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ready := make([]byte, len("ready\n"))
	if _, err := stdout.Read(ready); err != nil || string(ready) != "ready\n" {
		t.Fatalf("python ssl server did not start (%q, %v):\n%s", ready, err, stderr.String())
	}
	return port, cmd.Process.Pid, log
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
// send/receive tracepoints tie it (tp_btf, and raw where a kernel refuses tp_btf). curl with one request
// per connection, then python3's keep-alive and one-shot mix: exact on both sides.
func TestHTTPFlowCapturesPythonSSLServerOnBothSides(t *testing.T) {
	for _, mode := range []struct{ name, refuse string }{
		{"tp_btf", ""},
		{"raw_tp", "tp_btf/sock_send_length,tp_btf/sock_recv_length"},
	} {
		t.Run(mode.name, func(t *testing.T) {
			port, serverPID, log := startPythonSSLServer(t)
			a := startAgent(t, httpflowConf+"\n  envs = [\"DKEBPF_REFUSE_HOOKS="+mode.refuse+"\"]")
			var run clientRun
			url := func(target string) string { return "https://127.0.0.1:" + strconv.Itoa(port) + target }
			for _, target := range []string{"/one", "/two?secret=1", "/missing"} {
				run.merge(runCurl(t, "1.1", url(target)))
			}
			run.merge(runPython(t, "https", port))
			truth := serverTruth(t, run, waitServerLog(t, log, len(run.sent)), port, "python3", []string{strconv.Itoa(serverPID)})
			settleHTTPFlows(t, a, "python ssl server", truth)
			if mode.refuse != "" && !strings.Contains(a.log.String(), "raw_tp/sock_send_length attached") {
				t.Errorf("the collector did not fall back to raw_tp/sock_send_length:\n%s", a.log.String())
			}
		})
	}
}
