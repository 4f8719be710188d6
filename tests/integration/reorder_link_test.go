package integration

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// reorderingLink joins two network namespaces through a TUN device in each, and this process carries the
// IP packets between them. Towards the client it swaps pairs of TCP segments inside response bodies: a
// link that reorders, with real TCP at both ends. (Loopback reorders only by chance, when a sender moves
// between CPUs; Debian's kernels have netem, this host's does not.)
type reorderingLink struct {
	client, server     *testNetns
	clientIP, serverIP string
	starts             bool         // swap segments that start a response too
	swaps              atomic.Int64 // pairs of segments delivered the other way round
}

// responseStart begins a segment that starts a response. Unless starts is set, such a segment is never
// swapped: one that arrives after the next loses its exchange by design (README, known limits).
var responseStart = []byte("HTTP/1.")

func newReorderingLink(t *testing.T, starts bool) *reorderingLink {
	t.Helper()
	l := &reorderingLink{client: newNetns(t, "rlc"), server: newNetns(t, "rls"), clientIP: "10.231.0.1",
		serverIP: "10.231.0.2", starts: starts}
	toServer := l.tun(t, l.client, l.clientIP, l.serverIP)
	toClient := l.tun(t, l.server, l.serverIP, l.clientIP)
	go l.relay(toServer, toClient, false)
	go l.relay(toClient, toServer, true)
	return l
}

// tun makes a TUN device in ns holding ip with a route to peer, and returns it opened.
func (l *reorderingLink) tun(t *testing.T, ns *testNetns, ip, peer string) *os.File {
	t.Helper()
	const dev = "dkreorder0"
	run(t, "ip", "-n", ns.name, "tuntap", "add", "dev", dev, "mode", "tun")
	run(t, "ip", "-n", ns.name, "addr", "add", ip, "peer", peer, "dev", dev)
	run(t, "ip", "-n", ns.name, "link", "set", dev, "up")
	var f *os.File
	// The device is found in the namespace of the thread that opens /dev/net/tun.
	must(t, ns.sockets(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return err
		}
		var req [unix.IFNAMSIZ + 64]byte
		copy(req[:], dev)
		*(*uint16)(unsafe.Pointer(&req[unix.IFNAMSIZ])) = unix.IFF_TUN | unix.IFF_NO_PI
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req[0]))); e != 0 {
			unix.Close(fd)
			return fmt.Errorf("TUNSETIFF %s: %w", dev, e)
		}
		f = os.NewFile(uintptr(fd), dev)
		return nil
	}))
	t.Cleanup(func() { f.Close() })
	return f
}

// relay copies IP packets from src to dst until src is closed. If it reorders, a TCP segment with a
// payload (one that does not start a response, unless l.starts) is held until the next such segment, which
// goes first; a held segment goes alone after 5 ms, or before any other packet.
func (l *reorderingLink) relay(src, dst *os.File, reorder bool) {
	pkts := make(chan []byte, 64)
	go func() {
		defer close(pkts)
		for {
			b := make([]byte, 65536)
			n, err := src.Read(b)
			if err != nil {
				return
			}
			pkts <- b[:n]
		}
	}()
	var held []byte
	var timeout <-chan time.Time
	for {
		select {
		case p, ok := <-pkts:
			if !ok {
				return
			}
			if !reorder || !l.swappable(p) {
				if held != nil {
					dst.Write(held)
					held = nil
				}
				dst.Write(p)
				continue
			}
			if held == nil {
				held, timeout = p, time.After(5*time.Millisecond)
				continue
			}
			dst.Write(p)
			dst.Write(held)
			held = nil
			l.swaps.Add(1)
		case <-timeout:
			if held != nil {
				dst.Write(held)
				held = nil
			}
		}
	}
}

// swappable: an IPv4 TCP segment with a payload that does not start with a response's status line,
// unless l.starts.
func (l *reorderingLink) swappable(p []byte) bool {
	if len(p) < 20 || p[0]>>4 != 4 || p[9] != unix.IPPROTO_TCP {
		return false
	}
	ihl := int(p[0]&0x0f) * 4
	if len(p) < ihl+20 {
		return false
	}
	payload := p[ihl+int(p[ihl+12]>>4)*4:]
	return len(payload) > 0 && (l.starts || !bytes.HasPrefix(payload, responseStart))
}

// reorderedRun serves goHTTPHandler in the link's server namespace and sends reqs on one keep-alive
// connection from its client namespace, with an agent running httpflow; it returns the agent, the
// exchanges, the server's port and the collector's self point from before the workload.
func reorderedRun(t *testing.T, link *reorderingLink, reqs []goRequest) (*agent, []goExchange, int, lpPoint) {
	t.Helper()
	var l net.Listener
	must(t, link.server.sockets(func() (err error) {
		l, err = net.Listen("tcp4", link.serverIP+":0")
		return err
	}))
	srv := &tallyListener{Listener: l, cnt: &counted{}}
	hs := &http.Server{Handler: goHTTPHandler(), ReadHeaderTimeout: time.Minute}
	go hs.Serve(srv)
	t.Cleanup(func() { hs.Close() })
	port := l.Addr().(*net.TCPAddr).Port

	a := startAgent(t, `  l7net_enabled = ["httpflow"]`)
	self0, _ := latestSelfPoint(a)
	cli := &counted{}
	d := &net.Dialer{}
	transport := &http.Transport{DisableCompression: true, MaxConnsPerHost: 1,
		DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			err = link.client.sockets(func() error {
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			if err != nil {
				return nil, err
			}
			return tallyConn{c, cli}, nil
		}}
	c := &http.Client{Transport: transport, Timeout: max(30*time.Second, 10*interval),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	ex := runGoHTTPClient(t, c, cli, fmt.Sprintf("%s:%d", link.serverIP, port), reqs)
	transport.CloseIdleConnections()
	if n := srv.accepted.Load(); n != 1 {
		t.Fatalf("harness: the server accepted %d connections, want 1", n)
	}
	if link.swaps.Load() == 0 {
		t.Fatalf("harness: the link swapped no segments")
	}
	t.Logf("workload: %d exchanges, the link swapped %d pairs of segments towards the client", len(ex), link.swaps.Load())
	return a, ex, port, self0
}

// selfDelta is how much each of the collector's self-metric fields grew since before, once a self point
// newer than before is in.
func selfDelta(t *testing.T, a *agent, before lpPoint, fields ...string) map[string]int64 {
	t.Helper()
	var after lpPoint
	a.waitFor("a datakit_ebpf point after the workload", max(10*time.Second, 5*interval), func() bool {
		p, ok := latestSelfPoint(a)
		after = p
		return ok && p.Time.After(before.Time)
	})
	out := map[string]int64{}
	for _, f := range fields {
		out[f] = intField(after, f) - intField(before, f)
	}
	t.Logf("self metrics grew by %v", out)
	return out
}

// TestHTTPFlowCountsExactlyOverALinkThatReorders runs net/http between two namespaces over a link that
// delivers the client every other segment of a response body ahead of the one before it: Content-Length
// bodies (the gap is body, the late segment skipped) and chunked ones (gaps across chunk-size lines:
// counted by sequence number to the last chunk). Both sides' sums must be exact, and no exchange lost.
func TestHTTPFlowCountsExactlyOverALinkThatReorders(t *testing.T) {
	link := newReorderingLink(t, false)
	var reqs []goRequest
	for i := range 4 {
		reqs = append(reqs,
			goRequest{"GET", fmt.Sprintf("/chunked?round=%d", i), "", 200},
			goRequest{"GET", "/small", "", 200},
			goRequest{"GET", "/large", "", 200},
			goRequest{"PUT", "/dav/reorder.bin", strings.Repeat("r", 20000+i), 201 + min(i, 1)*3},
			goRequest{"GET", "/missing", "", 404})
	}
	a, ex, port, self0 := reorderedRun(t, link, reqs)
	truth := goExchangesTruth(port, selfComm(t), ex)
	truth.serverIP, truth.clientIP = link.serverIP, link.clientIP
	settleHTTPFlows(t, a, "over a link that reorders", truth)

	// The chunked responses' gaps were met (desyncs) and handled: nothing was dropped.
	d := selfDelta(t, a, self0, "httpflow_desyncs", "httpflow_exchanges_lost")
	if d["httpflow_desyncs"] == 0 {
		t.Errorf("harness: no gap across a chunk's framing (httpflow_desyncs did not move): the test proves nothing")
	}
	if d["httpflow_exchanges_lost"] != 0 {
		t.Errorf("httpflow_exchanges_lost +%d, want 0", d["httpflow_exchanges_lost"])
	}
}

// TestHTTPFlowNeverPairsAResponseWithTheWrongRequest swaps response starts too: a response whose status
// line arrives after its next segment is lost (the client's side cannot frame it), and the next response
// must be paired with its own request, not the lost one's. Each key's exchanges all have the same sizes,
// so a misattributed response shows in its bytes. The server's side is not reordered and stays exact.
func TestHTTPFlowNeverPairsAResponseWithTheWrongRequest(t *testing.T) {
	link := newReorderingLink(t, true)
	var reqs []goRequest
	for range 4 {
		reqs = append(reqs,
			goRequest{"GET", "/large", "", 200},
			goRequest{"GET", "/small", "", 200},
			goRequest{"GET", "/chunked", "", 200},
			goRequest{"GET", "/missing", "", 404})
	}
	a, ex, port, self0 := reorderedRun(t, link, reqs)
	truth := goExchangesTruth(port, selfComm(t), ex)
	truth.serverIP, truth.clientIP = link.serverIP, link.clientIP
	truth.keep = func(k exchangeKey) bool { return k.Direction == "incoming" }
	settleHTTPFlows(t, a, "over a link that reorders response starts, the server's side", truth)

	client := goExchangesTruth(port, selfComm(t), ex)
	got, _ := observedExchanges(a.query("httpflow", "15m"), port, func(k exchangeKey) bool { return k.Direction == "outgoing" })
	var reported int64
	for k, s := range got {
		w, ok := client.want[k]
		switch {
		case !ok:
			t.Errorf("client side: %v reported %v, no such exchange was made", k, s)
		case s.Count > w.Count || s.Count*w.Written != s.Written*w.Count || s.Count*w.Read != s.Read*w.Count:
			t.Errorf("client side: %v: %v, want a part of %v with the same sizes per exchange", k, s, w)
		}
		reported += s.Count
	}
	d := selfDelta(t, a, self0, "httpflow_exchanges_lost", "httpflow_unanswered")
	if lost := d["httpflow_exchanges_lost"] + d["httpflow_unanswered"]; reported+lost != int64(len(ex)) || lost == 0 {
		t.Errorf("client side: %d exchanges reported, %d lost and %d unanswered, want %d in all with some lost",
			reported, d["httpflow_exchanges_lost"], d["httpflow_unanswered"], len(ex))
	}
}
