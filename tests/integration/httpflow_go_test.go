package integration

// An httpflow test that needs no program but this one: a net/http server and its clients (net/http on
// keep-alive and fresh connections, and a raw pipelining socket) in this process, so it runs in the kernel
// matrix's minimal guests. Every connection on both ends counts its bytes; exchanges on a connection are
// sequential, so each message's size is a counter's delta, and that is the ground truth.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tallyConn adds what it reads and writes to cnt. A write is counted before it is made, so a peer that
// has the bytes always finds them counted; a short write takes back what was not written.
type tallyConn struct {
	net.Conn
	cnt *counted
}

func (c tallyConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.cnt.read.Add(int64(n))
	return n, err
}

func (c tallyConn) Write(b []byte) (int, error) {
	c.cnt.wrote.Add(int64(len(b)))
	n, err := c.Conn.Write(b)
	c.cnt.wrote.Add(int64(n - len(b)))
	return n, err
}

// tallyListener wraps every accepted connection in a tallyConn on one counter.
type tallyListener struct {
	net.Listener
	cnt      *counted
	accepted atomic.Int64
}

func (l *tallyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.accepted.Add(1)
	return tallyConn{c, l.cnt}, nil
}

// goLargeSize is /large's body; goChunks are the pieces /chunked flushes one by one.
const goLargeSize = 1 << 20

var goChunks = []int{100, 5000, 17, 40000, 3}

// goHTTPHandler serves the Go workload. Every handler reads the request body whole before answering, so
// a request is all on the wire before its response starts.
func goHTTPHandler() http.Handler {
	large := make([]byte, goLargeSize)
	rand.New(rand.NewSource(3)).Read(large)
	var dav sync.Map // PUT /dav/<name>: 201 when new, 204 when replaced; DELETE: 204, or 404 when absent
	mux := http.NewServeMux()
	handle := func(pattern string, h http.HandlerFunc) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
				return
			}
			h(w, r)
		})
	}
	text := func(w http.ResponseWriter, status int, body string) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(status)
		io.WriteString(w, body) // eaten by the server for HEAD
	}
	handle("/small", func(w http.ResponseWriter, r *http.Request) { text(w, http.StatusOK, "small body\n") })
	handle("/created", func(w http.ResponseWriter, r *http.Request) { text(w, http.StatusCreated, "created\n") })
	handle("/form", func(w http.ResponseWriter, r *http.Request) {
		text(w, http.StatusOK, fmt.Sprintf("got %d bytes\n", r.ContentLength))
	})
	handle("/empty", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	handle("/moved", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/small", http.StatusMovedPermanently)
	})
	handle("/missing", func(w http.ResponseWriter, r *http.Request) { text(w, http.StatusNotFound, "missing\n") })
	handle("/fail", func(w http.ResponseWriter, r *http.Request) { text(w, http.StatusInternalServerError, "failed\n") })
	handle("/chunked", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		for i, n := range goChunks {
			w.Write([]byte(strings.Repeat(string(rune('a'+i)), n)))
			w.(http.Flusher).Flush() // no Content-Length and a flush before the end: chunked
		}
	})
	handle("/large", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(large)))
		if r.Method != http.MethodHead {
			w.Write(large)
		}
	})
	handle("/dav/", func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodPut:
			if _, replaced := dav.Swap(r.URL.Path, true); replaced {
				w.WriteHeader(http.StatusNoContent)
			} else {
				text(w, http.StatusCreated, "created\n")
			}
		case http.MethodDelete:
			if _, ok := dav.LoadAndDelete(r.URL.Path); ok {
				w.WriteHeader(http.StatusNoContent)
			} else {
				text(w, http.StatusNotFound, "missing\n")
			}
		default:
			text(w, http.StatusMethodNotAllowed, "PUT or DELETE\n")
		}
	})
	return mux
}

// startGoHTTPServer serves goHTTPHandler on 127.0.0.1 (keep-alive on) with counted connections until the
// test ends.
func startGoHTTPServer(t *testing.T) (int, *tallyListener) {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	must(t, err)
	tl := &tallyListener{Listener: l, cnt: &counted{}}
	srv := &http.Server{Handler: goHTTPHandler(), ReadHeaderTimeout: time.Minute}
	go srv.Serve(tl)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().(*net.TCPAddr).Port, tl
}

// goExchange is one request by the client's account: what it asked, what it got, both message sizes as
// its connection counted them, and how long the exchange took from before the request's first write to
// after the response's last read.
type goExchange struct {
	method, target string
	status         int
	wrote, read    int64
	took           time.Duration
}

// goExchangesTruth is what both sides' points must add up to: the client writes the request and reads the
// response, the server the mirror; both ends are this process. Each key's latency is at most the longest
// exchange the client measured for it.
func goExchangesTruth(port int, comm string, ex []goExchange) httpTruth {
	truth := httpTruth{port: port, want: exchanges{}, maxLatency: map[exchangeKey]time.Duration{},
		pids: map[string][]string{comm: {strconv.Itoa(os.Getpid())}}}
	for _, e := range ex {
		out := requestKey(e.method, e.target, e.status, "1.1")
		out.Process = comm
		in := out
		out.Direction, in.Direction = "outgoing", "incoming"
		truth.want.add(out, exchangeSum{1, e.wrote, e.read})
		truth.want.add(in, exchangeSum{1, e.read, e.wrote})
		for _, k := range []exchangeKey{out, in} {
			truth.maxLatency[k] = max(truth.maxLatency[k], e.took)
		}
	}
	return truth
}

// goRequest is one request of the net/http mix and the status the server must answer.
type goRequest struct {
	method, target, body string
	status               int
}

// runGoHTTPClient sends reqs in order with client c and returns each exchange with its sizes: the deltas
// of cnt (the client's connections' counter) around the round trip, the response read whole and closed
// before the next request.
func runGoHTTPClient(t *testing.T, c *http.Client, cnt *counted, server string, reqs []goRequest) []goExchange {
	t.Helper()
	var out []goExchange
	for _, r := range reqs {
		var body io.Reader
		if r.body != "" {
			body = strings.NewReader(r.body)
		}
		req, err := http.NewRequest(r.method, "http://"+server+r.target, body)
		must(t, err)
		w0, r0, start := cnt.wrote.Load(), cnt.read.Load(), time.Now()
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("harness: %s %s: %v", r.method, r.target, err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		took := time.Since(start)
		if err != nil {
			t.Fatalf("harness: %s %s: reading the response: %v", r.method, r.target, err)
		}
		path, _, _ := strings.Cut(r.target, "?")
		switch {
		case resp.StatusCode != r.status || resp.Proto != "HTTP/1.1":
			t.Fatalf("harness: %s %s answered %s %d, want HTTP/1.1 %d", r.method, r.target, resp.Proto, resp.StatusCode, r.status)
		case path == "/chunked" && (!slices.Equal(resp.TransferEncoding, []string{"chunked"}) || resp.ContentLength != -1):
			t.Fatalf("harness: %s came with Transfer-Encoding %v, Content-Length %d, want chunked", r.target, resp.TransferEncoding, resp.ContentLength)
		case path == "/large" && (resp.ContentLength != goLargeSize || r.method == http.MethodGet && n != goLargeSize):
			t.Fatalf("harness: %s %s came with Content-Length %d and %d bytes, want %d", r.method, r.target, resp.ContentLength, n, goLargeSize)
		}
		out = append(out, goExchange{r.method, r.target, resp.StatusCode, cnt.wrote.Load() - w0, cnt.read.Load() - r0, took})
	}
	return out
}

// runGoPipelined writes three GETs in one write on a raw connection, then reads the three responses. A
// request's size is its formatted length; a response's is what the bufio.Reader consumed for it (bytes
// read from the connection less those still buffered).
func runGoPipelined(t *testing.T, port int, comm string, cnt *counted) []goExchange {
	t.Helper()
	nc, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
	must(t, err)
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(max(30*time.Second, 10*interval)))
	c := tallyConn{nc, cnt}
	br := bufio.NewReader(c)
	targets := []string{"/small?pipe=1", "/missing?pipe=2", "/moved?pipe=3"}
	statuses := []int{http.StatusOK, http.StatusNotFound, http.StatusMovedPermanently}
	var burst string
	var ex []goExchange
	for i, tg := range targets {
		req := rawRequest("GET", tg, port, comm, "", "", i == len(targets)-1)
		burst += req
		ex = append(ex, goExchange{method: "GET", target: tg, wrote: int64(len(req))})
	}
	start := time.Now()
	if n, err := c.Write([]byte(burst)); err != nil || n != len(burst) {
		t.Fatalf("harness: pipelined burst: wrote %d of %d bytes: %v", n, len(burst), err)
	}
	consumed := func() int64 { return cnt.read.Load() - int64(br.Buffered()) }
	for i := range ex {
		before := consumed()
		resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
		must(t, err)
		_, err = io.Copy(io.Discard, resp.Body)
		must(t, err)
		if resp.StatusCode != statuses[i] {
			t.Fatalf("harness: pipelined GET %s answered %d, want %d", ex[i].target, resp.StatusCode, statuses[i])
		}
		ex[i].status, ex[i].read, ex[i].took = resp.StatusCode, consumed()-before, time.Since(start)
	}
	readToClose(t, br)
	var wrote, read int64
	for _, e := range ex {
		wrote, read = wrote+e.wrote, read+e.read
	}
	if wrote != cnt.wrote.Load() || read != cnt.read.Load() {
		t.Fatalf("harness: pipelined connection wrote %d and read %d bytes, its exchanges add up to %d and %d",
			cnt.wrote.Load(), cnt.read.Load(), wrote, read)
	}
	return ex
}

// goClientTransport is a net/http transport whose connections count their bytes in cnt and dials.
func goClientTransport(cnt *counted, dials *atomic.Int64, keepAlive bool) *http.Transport {
	d := &net.Dialer{}
	return &http.Transport{
		DisableCompression: true,
		DisableKeepAlives:  !keepAlive,
		MaxConnsPerHost:    1,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			dials.Add(1)
			return tallyConn{c, cnt}, nil
		},
	}
}

// TestHTTPFlowGoClientAndServer runs net/http on both ends in this process (no external program): ~20
// requests on one keep-alive connection (every status class, HEAD, POST and PUT bodies up to 100 KiB, a
// chunked response, a 1 MiB body, query strings), a few on fresh connections, and a raw pipelined burst.
// Both sides' points, keyed by (direction, process_name, method, path, status, version), must add up
// exactly to the message sizes the connections counted.
func TestHTTPFlowGoClientAndServer(t *testing.T) {
	port, srv := startGoHTTPServer(t) // listening before the collector starts
	a := startAgent(t, `  l7net_enabled = ["httpflow"]`)
	comm := selfComm(t)
	timeout := max(30*time.Second, 10*interval)

	cli, dials := &counted{}, &atomic.Int64{}
	keepAlive := goClientTransport(cli, dials, true)
	defer keepAlive.CloseIdleConnections()
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c := &http.Client{Transport: keepAlive, Timeout: timeout, CheckRedirect: noRedirect}
	server := fmt.Sprintf("127.0.0.1:%d", port)
	ex := runGoHTTPClient(t, c, cli, server, []goRequest{
		{"GET", "/small", "", 200},
		{"GET", "/small?x=1&secret=2", "", 200},
		{"HEAD", "/small", "", 200},
		{"GET", "/empty", "", 204},
		{"GET", "/moved", "", 301},
		{"GET", "/missing", "", 404},
		{"GET", "/fail", "", 500},
		{"POST", "/created", "name=value&x=1", 201},
		{"PUT", "/dav/go.bin", strings.Repeat("g", 100<<10), 201},
		{"PUT", "/dav/go.bin?rev=2", strings.Repeat("h", 1000), 204},
		{"GET", "/chunked", "", 200},
		{"GET", "/small", "", 200}, // found only if the chunked response's end was
		{"GET", "/large", "", 200},
		{"GET", "/small?after=large", "", 200},
		{"POST", "/form?id=7", "a=1&b=2", 200},
		{"DELETE", "/dav/go.bin", "", 204},
		{"GET", "/missing?q=go", "", 404},
		{"HEAD", "/large", "", 200}, // a Content-Length of 1 MiB and no body
		{"POST", "/fail", "", 500},
		{"GET", "/small", "", 200},
		{"POST", "/created?step=2", "k=v", 201},
	})
	keepAlive.CloseIdleConnections()
	if n := dials.Load(); n != 1 {
		t.Fatalf("harness: the keep-alive client dialed %d connections, want 1", n)
	}

	fresh := goClientTransport(cli, dials, false)
	c = &http.Client{Transport: fresh, Timeout: timeout, CheckRedirect: noRedirect}
	freshReqs := []goRequest{
		{"GET", "/small?fresh=1", "", 200},
		{"POST", "/created", "fresh=1", 201},
		{"GET", "/chunked", "", 200},
		{"HEAD", "/small", "", 200},
	}
	ex = append(ex, runGoHTTPClient(t, c, cli, server, freshReqs)...)
	if n := dials.Load(); n != int64(1+len(freshReqs)) {
		t.Fatalf("harness: the clients dialed %d connections, want %d", n, 1+len(freshReqs))
	}

	raw := &counted{}
	ex = append(ex, runGoPipelined(t, port, comm, raw)...)

	// The server counted the same bytes on its connections (written before the client could read them,
	// read before it answered; a moment's grace for its goroutines).
	wantWrote, wantRead := cli.read.Load()+raw.read.Load(), cli.wrote.Load()+raw.wrote.Load()
	deadline := time.Now().Add(5 * time.Second)
	for (srv.cnt.wrote.Load() != wantWrote || srv.cnt.read.Load() != wantRead) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if srv.cnt.wrote.Load() != wantWrote || srv.cnt.read.Load() != wantRead || srv.accepted.Load() != dials.Load()+1 {
		t.Fatalf("harness: the server wrote %d and read %d bytes on %d connections; the clients read %d and wrote %d on %d",
			srv.cnt.wrote.Load(), srv.cnt.read.Load(), srv.accepted.Load(), wantWrote, wantRead, dials.Load()+1)
	}
	var sumExchanges exchangeSum
	for _, e := range ex {
		sumExchanges = exchangeSum{sumExchanges.Count + 1, sumExchanges.Written + e.wrote, sumExchanges.Read + e.read}
	}
	if sumExchanges.Written != wantRead || sumExchanges.Read != wantWrote {
		t.Fatalf("harness: the exchanges add up to %v, the connections wrote %d and read %d", sumExchanges, wantRead, wantWrote)
	}
	t.Logf("workload: %d exchanges on %d connections, client side %v", len(ex), srv.accepted.Load(), sumExchanges)

	// Wait as long as a slow guest may need for the sums to match, then let settleHTTPFlows check for late
	// points and every point's tags and fields.
	truth := goExchangesTruth(port, comm, ex)
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(interval / 4) {
		if got, _ := observedExchanges(a.query("httpflow", "15m"), port, nil); len(truth.want.diff(got)) == 0 {
			break
		}
	}
	settleHTTPFlows(t, a, "Go client and server", truth)
}
