package integration

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"dkebpf/tests/integration/gotls"
)

// h2Key is what an HTTP/2 httpflow point is compared by: its side, request, status and gRPC status.
type h2Key struct {
	Direction, Method, Path string
	Status, GRPC            int64 // GRPC: -1 when the point has no grpc_status
}

// h2Sum is what the points of one h2Key add up to: exchanges, and the bodies each side sent.
type h2Sum struct{ Count, ClientSent, ServerSent int64 }

// h2Truth is what both ends of a run counted, by key, from the server's account of each stream (the client
// checked its own against it).
type h2Truth map[h2Key]h2Sum

func (w h2Truth) add(method, route string, status, grpc int, reqBody, respBody int64) {
	for _, dir := range []string{"outgoing", "incoming"} {
		k := h2Key{dir, method, route, int64(status), int64(grpc)}
		s := w[k]
		w[k] = h2Sum{s.Count + 1, s.ClientSent + reqBody, s.ServerSent + respBody}
	}
}

// settleH2Flows polls the agent until the HTTP/2 httpflow points on port add up to want, waits two more
// intervals for late points, then reports every key that differs and every point of the wrong shape. procs
// names the process of each direction.
func settleH2Flows(t *testing.T, a *agent, what string, port int, procs map[string]string, want h2Truth) {
	t.Helper()
	observe := func() (h2Truth, []lpPoint) {
		got, mine := h2Truth{}, []lpPoint(nil)
		for _, p := range a.query("httpflow", "15m") {
			if !onPort(p, port) {
				continue
			}
			mine = append(mine, p)
			grpc := int64(-1)
			if _, ok := p.Fields["grpc_status"]; ok {
				grpc = intField(p, "grpc_status")
			}
			method, _ := p.Fields["method"].(string)
			path, _ := p.Fields["path"].(string)
			k := h2Key{p.Tags["direction"], method, path, intField(p, "status_code"), grpc}
			s := got[k]
			got[k] = h2Sum{s.Count + intField(p, "count"), s.ClientSent + intField(p, "client_sent"), s.ServerSent + intField(p, "server_sent")}
		}
		return got, mine
	}
	diff := func(got h2Truth) []string {
		var d []string
		for k, v := range want {
			if got[k] != v {
				d = append(d, fmt.Sprintf("%+v: got %+v, want %+v", k, got[k], v))
			}
		}
		for k, v := range got {
			if _, ok := want[k]; !ok {
				d = append(d, fmt.Sprintf("%+v: got %+v, want none", k, v))
			}
		}
		sort.Strings(d)
		return d
	}
	deadline := time.Now().Add(max(6*interval, 20*time.Second))
	got, _ := observe()
	for len(diff(got)) > 0 && time.Now().Before(deadline) {
		time.Sleep(interval / 4)
		got, _ = observe()
	}
	time.Sleep(2 * interval)
	got, mine := observe()
	t.Logf("%s: %d keys in %d httpflow points on port %d; ground truth %d keys", what, len(got), len(mine), port, len(want))
	if d := diff(got); len(d) > 0 {
		t.Errorf("%s: HTTP/2 httpflow sums per key differ from ground truth:\n  %s", what, strings.Join(d, "\n  "))
		logPoints(t, "httpflow points on port "+strconv.Itoa(port), mine)
	}
	for _, p := range mine {
		var bad []string
		if v, _ := p.Fields["http_version"].(string); v != "2" {
			bad = append(bad, fmt.Sprintf("http_version=%#v, want \"2\"", p.Fields["http_version"]))
		}
		if want := procs[p.Tags["direction"]]; p.Tags["process_name"] != want {
			bad = append(bad, fmt.Sprintf("process_name=%q, want %q", p.Tags["process_name"], want))
		}
		if p.Tags["http_host"] != "127.0.0.1:"+strconv.Itoa(port) {
			bad = append(bad, fmt.Sprintf("http_host=%q, want the request's :authority", p.Tags["http_host"]))
		}
		if intField(p, "latency") <= 0 {
			bad = append(bad, fmt.Sprintf("latency=%v, want > 0", p.Fields["latency"]))
		}
		if len(bad) > 0 {
			t.Errorf("%s: point %v %v: %s", what, p.Tags, p.Fields, strings.Join(bad, "; "))
		}
	}
}

// TestHTTPFlowHTTP2OverGoCryptoTLS: net/http's server and client in this process negotiate HTTP/2 over
// crypto/tls (ALPN), on one connection, with a known mix of methods, paths, statuses and body sizes: bodies
// that take many DATA frames and flow-control updates each way, and paths whose identifiers must become route
// templates. Every exchange is counted on both sides, bodies exact, against the server's account.
func TestHTTPFlowHTTP2OverGoCryptoTLS(t *testing.T) {
	a := startAgentProbingSelf(t)
	port, served := serveH2(t)
	_, err := gotls.H2Client("https://127.0.0.1:" + strconv.Itoa(port))
	must(t, err)
	settleH2Flows(t, a, "HTTP/2 over Go crypto/tls", port, bothSides(selfComm(t)), h2CallsTruth(t, served()))
}

// TestHTTPFlowHTTP2OverGoCryptoTLSSessionStarts: 40 HTTP/2 sessions over crypto/tls in this process, one GET
// each. A Go server writes its SETTINGS in one goroutine while another reads the client's preface, so both
// directions of a session start at once, on two threads; every session must be counted on both sides. (The
// probes once let the writer's thread skip the preface a second time, after the reader had walked it, and the
// server's side of that session was silently lost: seen once in 6.1-rt's matrix run.)
func TestHTTPFlowHTTP2OverGoCryptoTLSSessionStarts(t *testing.T) {
	a := startAgentProbingSelf(t)
	port, served := serveH2(t)
	const sessions = 40
	for range sessions { // a transport each: a session each
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
		resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Get("https://127.0.0.1:" + strconv.Itoa(port) + "/health")
		must(t, err)
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		tr.CloseIdleConnections()
		must(t, err)
		if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK {
			t.Fatalf("harness: %s %d, want HTTP/2 200", resp.Proto, resp.StatusCode)
		}
	}
	log := served()
	if len(log) != sessions {
		t.Fatalf("harness: the server served %d requests, the client made %d", len(log), sessions)
	}
	want := h2Truth{}
	for _, s := range log {
		want.add(s.method, s.path, s.status, -1, s.reqBody, s.respBody)
	}
	settleH2Flows(t, a, "HTTP/2 session starts over Go crypto/tls", port, bothSides(selfComm(t)), want)
}

// The same mix from the gotls program built stripped (-s -w): net/http's HTTP/2 client in a Go program that has
// only the runtime's own function table, against the server in this process.
func TestHTTPFlowHTTP2FromAStrippedGoProgram(t *testing.T) {
	a := startAgentProbingSelf(t)
	port, served := serveH2(t)
	client := buildGoTLS(t, "gotls-h2", true)
	_, reqs := runGoTLSProgram(t, a, client, "h2client", port)
	if len(reqs) != len(gotls.H2Calls) {
		t.Fatalf("harness: the client made %d requests, want %d", len(reqs), len(gotls.H2Calls))
	}
	settleH2Flows(t, a, "HTTP/2 from a stripped Go program", port,
		map[string]string{"outgoing": "gotls-h2", "incoming": selfComm(t)}, h2CallsTruth(t, served()))
}

// h2Served is one request as serveH2's handler saw it.
type h2Served struct {
	method, path      string
	status            int
	reqBody, respBody int64
}

// serveH2 serves HTTP/2 (only) over crypto/tls in this process, answering gotls.H2Calls: 404 for /missing, 204
// for a DELETE, 201 for a POST, 200 with 200 000 bytes for /big, else 200. served() is its log so far.
func serveH2(t *testing.T) (port int, served func() []h2Served) {
	var mu sync.Mutex
	var log []h2Served
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		status, size := http.StatusOK, 0
		switch {
		case r.URL.Path == "/missing":
			status = http.StatusNotFound
			size = 19
		case r.Method == http.MethodDelete:
			status = http.StatusNoContent
		case r.Method == http.MethodPost:
			status, size = http.StatusCreated, 10
		case r.URL.Path == "/big":
			size = 200_000
		default:
			size = 100 + len(r.URL.Path)
		}
		if r.ProtoMajor != 2 {
			status = http.StatusHTTPVersionNotSupported
		}
		w.WriteHeader(status)
		m, _ := w.Write(bytes.Repeat([]byte("x"), size))
		mu.Lock()
		log = append(log, h2Served{r.Method, r.URL.Path, status, n, int64(m)})
		mu.Unlock()
	})
	port = freePort(t)
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	must(t, err)
	srv := &http.Server{Handler: handler, TLSConfig: &tls.Config{Certificates: []tls.Certificate{goSelfSignedCert(t)}, NextProtos: []string{"h2"}}}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	return port, func() []h2Served {
		mu.Lock()
		defer mu.Unlock()
		return append([]h2Served(nil), log...)
	}
}

// h2CallsTruth checks the server's log against gotls.H2Calls and returns it as the truth of both sides.
func h2CallsTruth(t *testing.T, log []h2Served) h2Truth {
	t.Helper()
	calls := gotls.H2Calls
	if len(log) != len(calls) {
		t.Fatalf("harness: the server served %d requests, the client made %d", len(log), len(calls))
	}
	routes := map[string]string{"/users/1": "/users/{id}", "/users/22": "/users/{id}", "/users/333": "/users/{id}",
		"/orders/3f2b8c1e-9a4d-4c1b-8e7f-0a1b2c3d4e5f": "/orders/{uuid}", "/orders/7d9e0f12-3456-4789-abcd-ef0123456789": "/orders/{uuid}",
		"/items/42": "/items/{id}", "/missing": "/missing", "/big": "/big", "/health": "/health"}
	want := h2Truth{}
	for i, s := range log {
		if c := calls[i]; int64(c.Body) != s.reqBody || !strings.HasPrefix(c.Target, s.path) {
			t.Fatalf("harness: call %d sent %s with %d bytes, the server read %s with %d", i, c.Target, c.Body, s.path, s.reqBody)
		}
		want.add(s.method, routes[s.path], s.status, -1, s.reqBody, s.respBody)
	}
	return want
}

// bothSides: one process on both sides.
func bothSides(process string) map[string]string {
	return map[string]string{"outgoing": process, "incoming": process}
}

// TestHTTPFlowHTTP2OverOpenSSL: curl (libcurl's nghttp2 over the host's libssl) against nginx's HTTP/2
// (OpenSSL): several sessions, a 1 MiB body in many DATA frames, HEAD, 204, 404, and a POST with a body.
// Exact on both sides against nginx's log, which the clients' own accounts match.
func TestHTTPFlowHTTP2OverOpenSSL(t *testing.T) {
	n := startNginx(t)
	a := startAgent(t, httpflowConf)
	base := "https://127.0.0.1:" + strconv.Itoa(n.httpsPort)
	var client []h2Transfer
	curl := func(args ...string) {
		argv := []string{"-s", "-k", "--http2", "-w", `%{http_version} %{method} %{url_effective} %{response_code} %{size_upload} %{size_download}\n`}
		for _, a := range args {
			if strings.HasPrefix(a, "https://") {
				argv = append(argv, "-o", "/dev/null") // one per URL
			}
			argv = append(argv, a)
		}
		out, err := exec.Command("curl", argv...).Output()
		if err != nil {
			t.Fatalf("curl %v: %v", args, err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			var v, method, url string
			var tr h2Transfer
			if _, err := fmt.Sscan(line, &v, &method, &url, &tr.status, &tr.reqBody, &tr.respBody); err != nil || v != "2" {
				t.Fatalf("harness: curl printed %q (%v), want an HTTP/2 transfer", line, err)
			}
			tr.method, tr.uri = method, strings.TrimPrefix(url, base)
			client = append(client, tr)
		}
	}
	curl(base+"/small.txt", base+"/large.bin", base+"/missing", base+"/empty", base+"/small.txt?secret=1", base+"/large.bin")
	curl("-d", "k=v", base+"/created")
	curl("-I", base+"/small.txt")
	served := n.waitH2Logged(t, len(client))
	if fmt.Sprint(served) != fmt.Sprint(client) {
		t.Fatalf("harness: nginx's account %v differs from curl's %v", served, client)
	}
	want := h2Truth{}
	for _, s := range served {
		path, _, _ := strings.Cut(s.uri, "?")
		want.add(s.method, path, s.status, -1, s.reqBody, s.respBody)
	}
	settleH2Flows(t, a, "HTTP/2 over OpenSSL", n.httpsPort, map[string]string{"outgoing": "curl", "incoming": "nginx"}, want)
}

// h2Transfer is one HTTP/2 exchange by curl's or nginx's account.
type h2Transfer struct {
	method, uri       string
	status            int
	reqBody, respBody int64
}

// waitH2Logged waits until nginx's h2.log holds want HTTP/2 requests and returns them.
func (n *nginxServer) waitH2Logged(t *testing.T, want int) []h2Transfer {
	t.Helper()
	var out []h2Transfer
	for deadline := time.Now().Add(5 * time.Second); len(out) < want && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		b, err := os.ReadFile(filepath.Join(n.dir, "h2.log"))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		out = nil
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			f := strings.Split(line, "\t")
			if len(f) != 6 || f[0] != "HTTP/2.0" {
				continue
			}
			tr := h2Transfer{method: f[1], uri: f[2]}
			tr.status, _ = strconv.Atoi(f[3])
			tr.reqBody, _ = strconv.ParseInt(f[4], 10, 64) // "-" without a body: 0
			tr.respBody, _ = strconv.ParseInt(f[5], 10, 64)
			out = append(out, tr)
		}
	}
	return out
}
