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
	swaps              atomic.Int64 // pairs of segments delivered the other way round
}

// A segment whose payload starts a response is never swapped: a segment ahead of a response's start line
// or headers loses the exchange by design (README, known limits).
var responseStart = []byte("HTTP/1.")

func newReorderingLink(t *testing.T) *reorderingLink {
	t.Helper()
	l := &reorderingLink{client: newNetns(t, "rlc"), server: newNetns(t, "rls"), clientIP: "10.231.0.1", serverIP: "10.231.0.2"}
	toServer := l.tun(t, l.client, l.clientIP, l.serverIP)
	toClient := l.tun(t, l.server, l.serverIP, l.clientIP)
	go relay(toServer, toClient, nil)
	go relay(toClient, toServer, &l.swaps)
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

// relay copies IP packets from src to dst until src is closed. With swaps set, a TCP segment with a
// payload that does not start a response is held until the next such segment, which goes first; a held
// segment goes alone after 5 ms, or before any other packet.
func relay(src, dst *os.File, swaps *atomic.Int64) {
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
			if swaps == nil || !swappable(p) {
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
			swaps.Add(1)
		case <-timeout:
			if held != nil {
				dst.Write(held)
				held = nil
			}
		}
	}
}

// swappable: an IPv4 TCP segment with a payload that does not start with a response's status line.
func swappable(p []byte) bool {
	if len(p) < 20 || p[0]>>4 != 4 || p[9] != unix.IPPROTO_TCP {
		return false
	}
	ihl := int(p[0]&0x0f) * 4
	if len(p) < ihl+20 {
		return false
	}
	payload := p[ihl+int(p[ihl+12]>>4)*4:]
	return len(payload) > 0 && !bytes.HasPrefix(payload, responseStart)
}

// TestHTTPFlowCountsExactlyOverALinkThatReorders runs net/http between two namespaces over a link that
// delivers the client every other segment of a response body ahead of the one before it: Content-Length
// bodies (the gap is body, the late segment skipped) and chunked ones (gaps across chunk-size lines:
// counted by sequence number to the last chunk). Both sides' sums must be exact, and no exchange lost.
func TestHTTPFlowCountsExactlyOverALinkThatReorders(t *testing.T) {
	link := newReorderingLink(t)
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
	comm := selfComm(t)
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
	defer transport.CloseIdleConnections()
	c := &http.Client{Transport: transport, Timeout: max(30*time.Second, 10*interval),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var reqs []goRequest
	for i := range 4 {
		reqs = append(reqs,
			goRequest{"GET", fmt.Sprintf("/chunked?round=%d", i), "", 200},
			goRequest{"GET", "/small", "", 200},
			goRequest{"GET", "/large", "", 200},
			goRequest{"PUT", "/dav/reorder.bin", strings.Repeat("r", 20000+i), 201 + min(i, 1)*3},
			goRequest{"GET", "/missing", "", 404})
	}
	ex := runGoHTTPClient(t, c, cli, fmt.Sprintf("%s:%d", link.serverIP, port), reqs)
	transport.CloseIdleConnections()
	if n := srv.accepted.Load(); n != 1 {
		t.Fatalf("harness: the server accepted %d connections, want 1", n)
	}
	if link.swaps.Load() == 0 {
		t.Fatalf("harness: the link swapped no segments")
	}
	t.Logf("workload: %d exchanges, the link swapped %d pairs of segments towards the client", len(ex), link.swaps.Load())

	truth := goExchangesTruth(port, comm, ex)
	truth.serverIP, truth.clientIP = link.serverIP, link.clientIP
	settleHTTPFlows(t, a, "over a link that reorders", truth)

	// The chunked responses' gaps were met (desyncs) and handled: nothing was dropped.
	self1, ok := latestSelfPoint(a)
	if !ok || !self1.Time.After(self0.Time) {
		t.Fatalf("no datakit_ebpf point after the workload")
	}
	desyncs := intField(self1, "httpflow_desyncs") - intField(self0, "httpflow_desyncs")
	lost := intField(self1, "httpflow_exchanges_lost") - intField(self0, "httpflow_exchanges_lost")
	t.Logf("httpflow_desyncs +%d, httpflow_exchanges_lost +%d", desyncs, lost)
	if desyncs == 0 {
		t.Errorf("harness: no gap across a chunk's framing (httpflow_desyncs did not move): the test proves nothing")
	}
	if lost != 0 {
		t.Errorf("httpflow_exchanges_lost +%d, want 0", lost)
	}
}
