package integration

import (
	"cmp"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// httpflowConf turns on plain and OpenSSL HTTP capture.
const httpflowConf = `  l7net_enabled = ["httpflow", "httpflow-tls"]`

// exchangeKey is what httpflow aggregates exchanges by, less addresses and pid: who (direction and
// process_name) and what was asked and answered.
type exchangeKey struct {
	Direction, Process, Method, Path string
	Status                           int64
	Version                          string
}

func (k exchangeKey) String() string {
	return fmt.Sprintf("%s %s %s %s %d HTTP/%s", k.Direction, k.Process, k.Method, k.Path, k.Status, k.Version)
}

// exchangeSum is the summed count and byte fields of one key.
type exchangeSum struct{ Count, Written, Read int64 }

func (s exchangeSum) String() string {
	return fmt.Sprintf("count=%d bytes_written=%d bytes_read=%d", s.Count, s.Written, s.Read)
}

type exchanges map[exchangeKey]exchangeSum

func (e exchanges) add(k exchangeKey, s exchangeSum) {
	t := e[k]
	e[k] = exchangeSum{t.Count + s.Count, t.Written + s.Written, t.Read + s.Read}
}

// diff lists every key whose sums differ, sorted, as "key: want …, got …".
func (e exchanges) diff(got exchanges) []string {
	var out []string
	for k := range e {
		if got[k] != e[k] {
			out = append(out, fmt.Sprintf("%v: want %v, got %v", k, e[k], got[k]))
		}
	}
	for k := range got {
		if _, ok := e[k]; !ok {
			out = append(out, fmt.Sprintf("%v: want nothing, got %v", k, got[k]))
		}
	}
	slices.Sort(out)
	return out
}

// requestKey is the key of a request, less direction and process: the path is the target without its query.
func requestKey(method, target string, status int, version string) exchangeKey {
	path, _, _ := strings.Cut(target, "?")
	return exchangeKey{Method: method, Path: path, Status: int64(status), Version: version}
}

// sides are a request's keys on the client and on the server (process names).
func sides(k exchangeKey, client, server string) (out, in exchangeKey) {
	out, in = k, k
	out.Direction, out.Process = "outgoing", client
	in.Direction, in.Process = "incoming", server
	return out, in
}

func (e accessEntry) key() exchangeKey {
	return requestKey(e.Method, e.Target, e.Status, strings.TrimPrefix(e.Proto, "HTTP/"))
}

func (s sentRequest) key() exchangeKey { return requestKey(s.Method, s.Target, s.Status, s.Version) }

// expectedExchanges is the ground truth of the requests a server logged, on both sides: on the client
// bytes_written is the request message and bytes_read the response; the server's side is the mirror.
func expectedExchanges(log []accessEntry, server string) exchanges {
	want := exchanges{}
	for _, e := range log {
		out, in := sides(e.key(), e.Client, server)
		want.add(out, exchangeSum{1, e.ReqLen, e.Sent})
		want.add(in, exchangeSum{1, e.Sent, e.ReqLen})
	}
	return want
}

// checkGroundTruth fails the test when the workload's own accounts disagree: each client's requests
// against the server's log (per process, method, path, status, version), the Host every request carried,
// and each raw connection's byte tallies against the message sizes the server logged for it.
func checkGroundTruth(t *testing.T, run clientRun, log []accessEntry, port int) {
	t.Helper()
	clients, logged := map[exchangeKey]int64{}, map[exchangeKey]int64{}
	for _, s := range run.sent {
		out, _ := sides(s.key(), s.Process, "")
		clients[out]++
	}
	for _, e := range log {
		out, _ := sides(e.key(), e.Client, "")
		logged[out]++
	}
	var bad []string
	for k, n := range clients {
		if logged[k] != n {
			bad = append(bad, fmt.Sprintf("%v: clients sent %d, the server logged %d", k, n, logged[k]))
		}
	}
	for k, n := range logged {
		if _, ok := clients[k]; !ok {
			bad = append(bad, fmt.Sprintf("%v: clients sent 0, the server logged %d", k, n))
		}
	}
	host := fmt.Sprintf("127.0.0.1:%d", port)
	for _, e := range log {
		if e.Host != host {
			bad = append(bad, fmt.Sprintf("request %s %s carried Host %q, want %q", e.Method, e.Target, e.Host, host))
		}
	}
	for _, r := range run.raw {
		var n int
		var reqLen, sent int64
		conns := map[string]bool{}
		for _, e := range log {
			if e.RawConn == r.id {
				n, reqLen, sent = n+1, reqLen+e.ReqLen, sent+e.Sent
				conns[e.Conn] = true
			}
		}
		if n != r.requests || reqLen != r.wrote || sent != r.read || len(conns) != 1 {
			bad = append(bad, fmt.Sprintf("raw connection %q: wrote %d read %d in %d requests; the server logged %d requests of %d and %d bytes on %d connections",
				r.id, r.wrote, r.read, r.requests, n, reqLen, sent, len(conns)))
		}
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		t.Fatalf("workload ground truth is inconsistent (a harness problem, not the collector's):\n  %s", strings.Join(bad, "\n  "))
	}
}

// httpTruth is what the httpflow points of connections to one nginx port must add up to.
type httpTruth struct {
	port       int
	want       exchanges
	pids       map[string][]string           // process_name -> the pids that may carry it
	maxLatency map[exchangeKey]time.Duration // keys whose every exchange has a client-measured latency bound
	keep       func(exchangeKey) bool        // if set, only these keys are compared
	serverIP   string                        // the server's and the client's addresses; 127.0.0.1 if empty
	clientIP   string
	httpHost   string // the Host the requests carry; serverIP:port if empty
}

// loggedTruth waits for nginx to log every request of run on port, checks the workload's accounts agree,
// and returns the truth for both sides.
func loggedTruth(t *testing.T, n *nginxServer, port int, run clientRun) httpTruth {
	t.Helper()
	return serverTruth(t, run, n.waitLogged(t, port, len(run.sent)), port, "nginx", n.workerPIDs())
}

// serverTruth checks that the clients' and the server's accounts (log) agree and returns the truth for both
// sides, the server being process_name server with pids serverPIDs.
func serverTruth(t *testing.T, run clientRun, log []accessEntry, port int, server string, serverPIDs []string) httpTruth {
	t.Helper()
	checkGroundTruth(t, run, log, port)
	pids := map[string][]string{server: serverPIDs}
	for proc, p := range run.pids {
		pids[proc] = append(pids[proc], p...)
	}
	return httpTruth{port: port, want: expectedExchanges(log, server), pids: pids, maxLatency: latencyBounds(run.sent, server)}
}

// latencyBounds gives, for each key of either side whose every request has a MaxLatency, the largest: a
// point's mean latency cannot exceed it (the kernel's interval lies inside the client's).
func latencyBounds(sent []sentRequest, server string) map[exchangeKey]time.Duration {
	bounds, unbounded := map[exchangeKey]time.Duration{}, map[exchangeKey]bool{}
	for _, s := range sent {
		out, in := sides(s.key(), s.Process, server)
		for _, k := range []exchangeKey{out, in} {
			if s.MaxLatency == 0 {
				unbounded[k] = true
			}
			bounds[k] = max(bounds[k], s.MaxLatency)
		}
	}
	for k := range unbounded {
		delete(bounds, k)
	}
	return bounds
}

// onPort reports whether an httpflow point is one end of a connection to nginx's port: the client's
// (dst_port) or nginx's own (src_port; src is the local end).
func onPort(p lpPoint, port int) bool {
	ps := strconv.Itoa(port)
	return p.Tags["src_port"] == ps || p.Tags["dst_port"] == ps
}

func pointKey(p lpPoint) exchangeKey {
	method, _ := p.Fields["method"].(string)
	path, _ := p.Fields["path"].(string)
	version, _ := p.Fields["http_version"].(string)
	return exchangeKey{Direction: p.Tags["direction"], Process: p.Tags["process_name"], Method: method, Path: path,
		Status: intField(p, "status_code"), Version: version}
}

// observedExchanges sums the httpflow points of connections to port by key.
func observedExchanges(pts []lpPoint, port int, keep func(exchangeKey) bool) (exchanges, []lpPoint) {
	got := exchanges{}
	var mine []lpPoint
	for _, p := range pts {
		if !onPort(p, port) {
			continue
		}
		k := pointKey(p)
		if keep != nil && !keep(k) {
			continue
		}
		got.add(k, exchangeSum{intField(p, "count"), intField(p, "bytes_written"), intField(p, "bytes_read")})
		mine = append(mine, p)
	}
	return got, mine
}

// pointProblems lists what is wrong with an httpflow point on the truth's port besides its sums: addresses,
// ports (the client's ephemeral port is "*"), the Host header (tag http_host; host stays the machine's),
// pid, and the fields' types and values.
func pointProblems(p lpPoint, truth httpTruth) []string {
	var bad []string
	hostname, _ := os.Hostname()
	serverIP, clientIP := cmp.Or(truth.serverIP, "127.0.0.1"), cmp.Or(truth.clientIP, "127.0.0.1")
	want := map[string]string{"transport": "tcp", "family": "IPv4",
		"http_host": cmp.Or(truth.httpHost, fmt.Sprintf("%s:%d", serverIP, truth.port)), "host": hostname}
	switch p.Tags["direction"] {
	case "outgoing":
		want["src_ip"], want["dst_ip"] = clientIP, serverIP
		want["src_port"], want["dst_port"] = "*", strconv.Itoa(truth.port)
	case "incoming":
		want["src_ip"], want["dst_ip"] = serverIP, clientIP
		want["src_port"], want["dst_port"] = strconv.Itoa(truth.port), "*"
	default:
		bad = append(bad, fmt.Sprintf("direction=%q, want outgoing or incoming", p.Tags["direction"]))
	}
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if p.Tags[k] != want[k] {
			bad = append(bad, fmt.Sprintf("%s=%q, want %q", k, p.Tags[k], want[k]))
		}
	}
	if allowed := truth.pids[p.Tags["process_name"]]; !slices.Contains(allowed, p.Tags["pid"]) {
		bad = append(bad, fmt.Sprintf("pid=%q, want one of %v (process_name %q)", p.Tags["pid"], allowed, p.Tags["process_name"]))
	}
	for _, f := range []string{"method", "path", "http_version"} {
		if _, ok := p.Fields[f].(string); !ok {
			bad = append(bad, fmt.Sprintf("field %s=%#v, want a string", f, p.Fields[f]))
		}
	}
	if path, _ := p.Fields["path"].(string); strings.Contains(path, "?") || !strings.HasPrefix(path, "/") {
		bad = append(bad, fmt.Sprintf("path=%q, want an absolute path without query string", path))
	}
	if tr, ok := p.Fields["truncated"].(bool); !ok || tr {
		bad = append(bad, fmt.Sprintf("truncated=%#v, want false", p.Fields["truncated"]))
	}
	for _, f := range []string{"status_code", "latency", "count", "bytes_read", "bytes_written"} {
		if _, ok := p.Fields[f].(int64); !ok {
			if _, ok := p.Fields[f].(uint64); !ok {
				bad = append(bad, fmt.Sprintf("field %s=%#v, want an integer", f, p.Fields[f]))
			}
		}
	}
	latency := time.Duration(intField(p, "latency"))
	if latency <= 0 || intField(p, "count") <= 0 {
		bad = append(bad, fmt.Sprintf("latency=%v count=%v, want both > 0", p.Fields["latency"], p.Fields["count"]))
	}
	if bound, ok := truth.maxLatency[pointKey(p)]; ok && latency > bound {
		bad = append(bad, fmt.Sprintf("latency=%v, more than the %v the client measured from the start of its last request write to the end of the response", latency, bound))
	}
	return bad
}

// settleHTTPFlows polls the agent until the httpflow points on the truth's port add up to it (or a
// deadline passes), waits two more intervals for late points, then reports every key whose sums differ
// and every point with wrong tags or fields.
func settleHTTPFlows(t *testing.T, a *agent, what string, truth httpTruth) {
	t.Helper()
	observe := func() (exchanges, []lpPoint, []lpPoint) {
		all := a.query("httpflow", "15m")
		got, mine := observedExchanges(all, truth.port, truth.keep)
		return got, mine, all
	}
	want := truth.want
	if truth.keep != nil {
		want = exchanges{}
		for k, v := range truth.want {
			if truth.keep(k) {
				want[k] = v
			}
		}
	}
	deadline := time.Now().Add(max(6*interval, 20*time.Second))
	got, _, _ := observe()
	for len(want.diff(got)) > 0 && time.Now().Before(deadline) {
		time.Sleep(interval / 4)
		got, _, _ = observe()
	}
	time.Sleep(2 * interval)
	got, mine, all := observe()
	var sum exchangeSum
	for _, s := range want {
		sum = exchangeSum{sum.Count + s.Count, sum.Written + s.Written, sum.Read + s.Read}
	}
	t.Logf("%s: %d keys in %d httpflow points on port %d; ground truth %d keys, %v", what, len(got), len(mine), truth.port, len(want), sum)
	if d := want.diff(got); len(d) > 0 {
		t.Errorf("%s: httpflow sums per key (direction process method path status version) differ from ground truth:\n  %s",
			what, strings.Join(d, "\n  "))
		logPoints(t, "httpflow points on port "+strconv.Itoa(truth.port), mine)
		var others []lpPoint
		for _, p := range all {
			if !onPort(p, truth.port) {
				others = append(others, p)
			}
		}
		logPoints(t, "other httpflow points", others)
	}
	for _, p := range mine {
		if bad := pointProblems(p, truth); len(bad) > 0 {
			t.Errorf("%s: point %v %v: %s", what, p.Tags, p.Fields, strings.Join(bad, "; "))
		}
	}
}

func logPoints(t *testing.T, what string, pts []lpPoint) {
	t.Helper()
	const most = 60
	t.Logf("%s (%d):", what, len(pts))
	for i, p := range pts {
		if i == most {
			t.Logf("  … %d more", len(pts)-most)
			break
		}
		t.Logf("  %v %v", p.Tags, p.Fields)
	}
}

func TestHTTPFlowCountsEveryPlainExchangeOnBothSides(t *testing.T) {
	n := startNginx(t) // serving before the collector starts
	a := startAgent(t, httpflowConf)
	run := runPlainMix(t, n)
	settleHTTPFlows(t, a, "plain HTTP", loggedTruth(t, n, n.httpPort, run))
}

func TestHTTPFlowCapturesOpenSSLOnBothSides(t *testing.T) {
	before := startNginx(t) // libssl mapped before the collector starts
	a := startAgent(t, httpflowConf)
	after := startNginx(t) // libssl mapped after
	for _, tc := range []struct {
		name string
		n    *nginxServer
	}{{"server started before the collector", before}, {"server started after the collector", after}} {
		t.Run(tc.name, func(t *testing.T) {
			// Every client process (curl, python3) starts here, after the collector: its libssl is mapped later.
			run := runTLSMix(t, tc.n)
			settleHTTPFlows(t, a, "HTTPS", loggedTruth(t, tc.n, tc.n.httpsPort, run))
		})
	}
}

func TestHTTPFlowIgnoresNonHTTPStreams(t *testing.T) {
	n := startNginx(t)
	a := startAgent(t, httpflowConf)
	echoPort := runEchoStream(t)
	// HTTP after the echo stream, counted exactly: once it is reported, so is anything the echo produced.
	run := runPipelined(t, n.httpPort)
	settleHTTPFlows(t, a, "HTTP after the echo stream", loggedTruth(t, n, n.httpPort, run))
	var echo []lpPoint
	for _, p := range a.query("httpflow", "15m") {
		if onPort(p, echoPort) {
			echo = append(echo, p)
		}
	}
	if len(echo) > 0 {
		t.Errorf("a raw echo stream on port %d produced %d httpflow points, want none", echoPort, len(echo))
		logPoints(t, "echo points", echo)
	}
}

// TestHTTPFlowCapturesOpenSSLUnderAnotherRoot runs openssl s_client under a copy of its files (see
// rootLayouts), so its libssl.so.3 is another file than the host's, started after the collector. A
// long-lived s_client keeps that library mapped until the collector finds it; one-shot s_clients beside it
// (same mount namespace and root) ask until one is reported. Then a known batch, which must add up
// exactly: one-shots on TLS sessions that start after that, and two requests from the long-lived s_client
// on its session that started before.
func TestHTTPFlowCapturesOpenSSLUnderAnotherRoot(t *testing.T) {
	a := startAgent(t, httpflowConf)
	for _, layout := range rootLayouts {
		t.Run(layout.name, func(t *testing.T) {
			n := startNginx(t)
			long := startSClient(t, layout.command, buildOpenSSLRoot(t), n.httpsPort)
			lib := mappedLibssl(t, long.pid())
			t.Logf("s_client %d maps %s", long.pid(), lib)
			var run clientRun
			oneShot := func(reqs ...[3]string) {
				s := startSClient(t, besideProcess(long.pid()), "", n.httpsPort)
				for i, r := range reqs {
					s.do(t, r[0], r[1], r[2], i == len(reqs)-1)
				}
				run.merge(s.finish(t))
			}
			if inode(t, fmt.Sprintf("/proc/%d/root/lib/x86_64-linux-gnu/libssl.so.3", long.pid())) == inode(t, "/lib/x86_64-linux-gnu/libssl.so.3") {
				t.Fatalf("harness: s_client %d maps the host's libssl", long.pid())
			}

			started := time.Now()
			for deadline := started.Add(max(30*time.Second, 10*interval)); !reportedFrom(a, n.httpsPort, "openssl"); {
				if time.Now().After(deadline) {
					t.Fatalf("no httpflow point from the openssl under another root after %s of requests (process %d, maps %s)",
						time.Since(started).Round(time.Second), long.pid(), lib)
				}
				oneShot([3]string{"GET", "/warmup", ""})
				time.Sleep(500 * time.Millisecond)
			}
			t.Logf("first exchange of an openssl under another root reported after %s", time.Since(started).Round(100*time.Millisecond))

			oneShot([3]string{"GET", "/small.txt", ""}, [3]string{"GET", "/small.txt?secret=1", ""}, [3]string{"POST", "/created", "k=v"},
				[3]string{"GET", "/missing", ""}, [3]string{"HEAD", "/small.txt", ""}, [3]string{"GET", "/fail", ""})
			oneShot([3]string{"GET", "/large.bin", ""})
			oneShot([3]string{"GET", "/empty", ""}, [3]string{"GET", "/moved", ""})
			// And from the long-lived process itself, on its session that began before its library was found.
			long.do(t, "GET", "/long-lived", "", false)
			long.do(t, "GET", "/long-lived", "", false)
			run.merge(long.account())

			truth := loggedTruth(t, n, n.httpsPort, run)
			truth.keep = func(k exchangeKey) bool { return k.Path != "/warmup" }
			settleHTTPFlows(t, a, "openssl under another root", truth)
		})
	}
}

// reportedFrom reports whether any outgoing httpflow point of process_name to port has reached the agent.
func reportedFrom(a *agent, port int, process string) bool {
	for _, p := range a.query("httpflow", "15m", "process_name:"+process, "direction:outgoing") {
		if onPort(p, port) {
			return true
		}
	}
	return false
}

// mappedLibssl is the libssl path in a process's /proc/<pid>/maps (as the kernel renders it for us).
func mappedLibssl(t *testing.T, pid int) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
		must(t, err)
		for _, line := range strings.Split(string(maps), "\n") {
			if f := strings.Fields(line); len(f) == 6 && strings.Contains(filepath.Base(f[5]), "libssl.so") {
				return f[5]
			}
		}
		time.Sleep(20 * time.Millisecond) // the launcher has not exec'd openssl yet
	}
	t.Fatalf("process %d maps no libssl", pid)
	return ""
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	must(t, syscall.Stat(path, &st))
	return st.Ino
}

// TestHTTPFlowWorkloadGroundTruthIsConsistent runs every client mix with no collector and checks the
// harness itself: each client's account matches nginx's log, raw connections' bytes match the logged
// message sizes, the pipelined burst shares one connection, /chunked.txt comes chunked, and openssl runs
// under every root layout.
func TestHTTPFlowWorkloadGroundTruthIsConsistent(t *testing.T) {
	n := startNginx(t)
	plain := runPlainMix(t, n)
	checkGroundTruth(t, plain, n.waitLogged(t, n.httpPort, len(plain.sent)), n.httpPort)

	tls := runTLSMix(t, n)
	for _, layout := range rootLayouts {
		long := startSClient(t, layout.command, buildOpenSSLRoot(t), n.httpsPort)
		s := startSClient(t, besideProcess(long.pid()), "", n.httpsPort)
		s.do(t, "GET", "/small.txt?secret=1", "", false)
		s.do(t, "POST", "/created", "k=v", false)
		s.do(t, "HEAD", "/small.txt", "", true)
		tls.merge(s.finish(t))
		t.Logf("%s: openssl maps %s", layout.name, mappedLibssl(t, long.pid()))
		if inode(t, fmt.Sprintf("/proc/%d/root/lib/x86_64-linux-gnu/libssl.so.3", long.pid())) == inode(t, "/lib/x86_64-linux-gnu/libssl.so.3") {
			t.Errorf("%s: openssl maps the host's libssl", layout.name)
		}
		long.do(t, "GET", "/long-lived", "", true)
		tls.merge(long.finish(t))
	}
	checkGroundTruth(t, tls, n.waitLogged(t, n.httpsPort, len(tls.sent)), n.httpsPort)
	t.Logf("plain: %d requests, HTTPS: %d requests", len(plain.sent), len(tls.sent))
}
