package integration

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// counted is ground truth: the bytes this program really wrote and read on its sockets.
type counted struct{ wrote, read atomic.Int64 }

// exchange sends a request of reqLen bytes asking for respLen back (an 8-byte header says both).
func exchange(c net.Conn, cnt *counted, reqLen, respLen int) error {
	req := make([]byte, reqLen)
	binary.BigEndian.PutUint32(req[0:], uint32(reqLen))
	binary.BigEndian.PutUint32(req[4:], uint32(respLen))
	n, err := c.Write(req)
	cnt.wrote.Add(int64(n))
	if err != nil {
		return err
	}
	m, err := io.ReadFull(c, make([]byte, respLen))
	cnt.read.Add(int64(m))
	return err
}

// serve answers exchanges until the client closes.
func serve(c net.Conn, cnt *counted) {
	defer c.Close()
	hdr := make([]byte, 8)
	for {
		n, err := io.ReadFull(c, hdr)
		cnt.read.Add(int64(n))
		if err != nil {
			return
		}
		reqLen, respLen := binary.BigEndian.Uint32(hdr), binary.BigEndian.Uint32(hdr[4:])
		m, err := io.ReadFull(c, make([]byte, reqLen-8))
		cnt.read.Add(int64(m))
		if err != nil {
			return
		}
		w, _ := c.Write(make([]byte, respLen))
		cnt.wrote.Add(int64(w))
	}
}

// tcpServer accepts on host:0 and serves every connection; it returns the port and the server's truth.
func tcpServer(t *testing.T, network, host string) (int, *counted, *sync.WaitGroup) {
	l, err := net.Listen(network, net.JoinHostPort(host, "0"))
	must(t, err)
	return serveAll(t, l)
}

// serveAll serves every connection l accepts until the test ends; it returns l's port and the server's truth.
func serveAll(t *testing.T, l net.Listener) (int, *counted, *sync.WaitGroup) {
	t.Cleanup(func() { l.Close() })
	cnt, wg := &counted{}, &sync.WaitGroup{}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); serve(c, cnt) }()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port, cnt, wg
}

func selfComm(t *testing.T) string {
	b, err := os.ReadFile("/proc/self/comm")
	must(t, err)
	return strings.TrimSpace(string(b))
}

// flowSum adds up the netflow points of this process that match tags.
type flowSum struct {
	totals
	points []lpPoint
}

type totals struct {
	written, read, established, closed, retransmits, datagramsW, datagramsR int64
}

func sumFlows(pts []lpPoint) flowSum {
	var s flowSum
	for _, p := range pts {
		s.written += intField(p, "bytes_written")
		s.read += intField(p, "bytes_read")
		s.established += intField(p, "tcp_established")
		s.closed += intField(p, "tcp_closed")
		s.retransmits += intField(p, "retransmits")
		s.datagramsW += intField(p, "datagrams_written")
		s.datagramsR += intField(p, "datagrams_read")
		s.points = append(s.points, p)
	}
	return s
}

// settle polls until got() equals want, then waits two more intervals and checks nothing more arrives.
func settle(t *testing.T, a *agent, what string, want totals, got func() flowSum) flowSum {
	t.Helper()
	eq := func(g flowSum) bool { return g.totals == want }
	deadline := time.Now().Add(max(6*interval, 20*time.Second)) // emulated guests can be slow
	g := got()
	for !eq(g) && time.Now().Before(deadline) {
		time.Sleep(interval / 4)
		g = got()
	}
	time.Sleep(2 * interval)
	g = got()
	t.Logf("%s: reported %+v in %d points, ground truth %+v", what, g.totals, len(g.points), want)
	if !eq(g) {
		t.Errorf("%s: reported %+v, want %+v; points:", what, g.totals, want)
		for _, p := range g.points {
			t.Logf("  %v %v", p.Tags, p.Fields)
		}
	}
	return g
}

func TestNetflowCountsEveryByteAndConnectionOfTCP(t *testing.T) {
	a := startAgent(t, "")
	for _, tc := range []struct{ network, host, family string }{
		{"tcp4", "127.0.0.1", "IPv4"},
		{"tcp6", "::1", "IPv6"},
	} {
		t.Run(tc.family, func(t *testing.T) { checkTCPFlows(t, a, tc.network, tc.host, tc.family) })
	}
}

// checkTCPFlows runs short connections and one living across intervals, and checks both sides' netflow
// points against the bytes really written and read, and the connections opened and closed.
func checkTCPFlows(t *testing.T, a *agent, network, host, family string) {
	pid, comm := strconv.Itoa(os.Getpid()), selfComm(t)
	const short = 5
	// Short connections: K exchanges of known sizes, each on a fresh connection.
	port, srv, srvWG := tcpServer(t, network, host)
	cli := &counted{}
	for i := 0; i < short; i++ {
		c, err := net.Dial(network, net.JoinHostPort(host, strconv.Itoa(port)))
		must(t, err)
		must(t, exchange(c, cli, 1000+i*111, 5000+i*333))
		c.Close()
	}
	// One connection living across several intervals, one exchange every 1.5 intervals.
	lport, lsrv, lsrvWG := tcpServer(t, network, host)
	lcli := &counted{}
	lc, err := net.Dial(network, net.JoinHostPort(host, strconv.Itoa(lport)))
	must(t, err)
	const rounds = 4
	for i := 0; i < rounds; i++ {
		must(t, exchange(lc, lcli, 3000, 7000))
		time.Sleep(interval * 3 / 2)
	}
	lc.Close()
	srvWG.Wait()
	lsrvWG.Wait()

	common := []string{"pid:" + pid, "transport:tcp", "family:" + family, "run:" + pid}
	query := func(dirTag, portTag string) func() flowSum {
		return func() flowSum {
			return sumFlows(a.query("netflow", "5m", append(common, dirTag, portTag)...))
		}
	}
	p := strconv.Itoa(port)
	settle(t, a, "short client side", totals{written: cli.wrote.Load(), read: cli.read.Load(), established: short, closed: short},
		query("direction:outgoing", "dst_port:"+p))
	settle(t, a, "short server side", totals{written: srv.wrote.Load(), read: srv.read.Load(), established: short, closed: short},
		query("direction:incoming", "src_port:"+p))

	lp := strconv.Itoa(lport)
	out := settle(t, a, "long client side", totals{written: lcli.wrote.Load(), read: lcli.read.Load(), established: 1, closed: 1},
		query("direction:outgoing", "dst_port:"+lp))
	settle(t, a, "long server side", totals{written: lsrv.wrote.Load(), read: lsrv.read.Load(), established: 1, closed: 1},
		query("direction:incoming", "src_port:"+lp))

	// Each interval reports that interval's delta, never a running total. In time order, the sums so far
	// are whole requests and whole responses, with at most the last request still unanswered: a flush
	// may fall between a request and its response (slow emulated guests), never inside one of them.
	// Together with the exact totals above, a running total or a doubled delta fails this.
	sort.Slice(out.points, func(i, j int) bool { return out.points[i].Time.Before(out.points[j].Time) })
	var withBytes int
	var sumW, sumR int64
	for _, pt := range out.points {
		w, r := intField(pt, "bytes_written"), intField(pt, "bytes_read")
		if w == 0 && r == 0 {
			continue
		}
		withBytes++
		sumW, sumR = sumW+w, sumR+r
		if sumW%3000 != 0 || sumR%7000 != 0 || sumR/7000 > sumW/3000 || sumW/3000 > sumR/7000+1 {
			t.Errorf("long connection: after a point of %d/%d bytes the sums are %d/%d, want whole 3000/7000 exchanges with at most one unanswered: %v",
				w, r, sumW, sumR, pt.Fields)
		}
	}
	if withBytes < 3 {
		t.Errorf("long connection reported in %d intervals, want at least 3 of its %d", withBytes, rounds)
	}
	for _, pt := range out.points {
		if pt.Tags["process_name"] != comm || pt.Tags["src_ip"] != host || pt.Tags["dst_ip"] != host ||
			pt.Tags["src_port"] != "*" || pt.Tags["src_ip_type"] != "loopback" || pt.Tags["conn_side"] != "client" {
			t.Errorf("client point tags: %v (want process_name=%s, loopback %s, src_port=*)", pt.Tags, comm, host)
		}
		if _, ok := pt.Fields["rtt"]; !ok {
			t.Errorf("client point has no rtt: %v", pt.Fields)
		}
	}
}

func TestNetflowCountsEveryUDPDatagram(t *testing.T) {
	a := startAgent(t, "")
	for _, tc := range []struct{ network, host, family string }{
		{"udp4", "127.0.0.1", "IPv4"},
		{"udp6", "::1", "IPv6"},
	} {
		t.Run(tc.family, func(t *testing.T) { checkUDPFlows(t, a, tc.network, tc.host, tc.family) })
	}
}

// checkUDPFlows exchanges datagrams between a connected client and an unconnected server and checks
// both sides' netflow points against the bytes and datagrams really sent and received.
func checkUDPFlows(t *testing.T, a *agent, network, host, family string) {
	pid := strconv.Itoa(os.Getpid())
	// The server is unconnected (ReadFrom/WriteTo), the client connected: the two common shapes.
	srv, err := net.ListenUDP(network, &net.UDPAddr{IP: net.ParseIP(host)})
	must(t, err)
	defer srv.Close()
	port := srv.LocalAddr().(*net.UDPAddr).Port
	cli, err := net.DialUDP(network, nil, srv.LocalAddr().(*net.UDPAddr))
	must(t, err)
	defer cli.Close()

	const n = 7
	var sent, replied int64
	buf := make([]byte, 65536)
	for i := 0; i < n; i++ {
		w, err := cli.Write(make([]byte, 100+i*17))
		must(t, err)
		sent += int64(w)
		r, from, err := srv.ReadFromUDP(buf)
		must(t, err)
		w2, err := srv.WriteToUDP(buf[:2*r], from)
		must(t, err)
		replied += int64(w2)
		_, err = cli.Read(buf)
		must(t, err)
	}
	p := strconv.Itoa(port)
	common := []string{"pid:" + pid, "transport:udp", "family:" + family}
	settle(t, a, "udp client side", totals{written: sent, read: replied, datagramsW: n, datagramsR: n}, func() flowSum {
		return sumFlows(a.query("netflow", "5m", append(common, "direction:outgoing", "dst_port:"+p)...))
	})
	settle(t, a, "udp server side", totals{written: replied, read: sent, datagramsW: n, datagramsR: n}, func() flowSum {
		return sumFlows(a.query("netflow", "5m", append(common, "direction:incoming", "src_port:"+p)...))
	})
}

// tcpRound runs one short exchange and returns its client-side truth, for tests that need fresh traffic.
func tcpRound(t *testing.T) (port int, wrote, read int64) {
	port, _, wg := tcpServer(t, "tcp4", "127.0.0.1")
	cli := &counted{}
	c, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
	must(t, err)
	must(t, exchange(c, cli, 4321, 1234))
	c.Close()
	wg.Wait()
	return port, cli.wrote.Load(), cli.read.Load()
}

func TestNetflowTracksConnectionsOpenedBeforeTheCollector(t *testing.T) {
	port, srv, wg := tcpServer(t, "tcp4", "127.0.0.1")
	c, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
	must(t, err)
	must(t, exchange(c, &counted{}, 999, 999)) // before the collector: not counted

	a := startAgent(t, "")
	srvBefore := counted{}
	srvBefore.wrote.Store(srv.wrote.Load())
	srvBefore.read.Store(srv.read.Load())
	cli := &counted{}
	must(t, exchange(c, cli, 2000, 3000))
	must(t, exchange(c, cli, 100, 200))
	c.Close()
	wg.Wait()

	pid, p := strconv.Itoa(os.Getpid()), strconv.Itoa(port)
	// Bytes since the collector started; the connection closes but was not established under it.
	settle(t, a, "client side", totals{written: cli.wrote.Load(), read: cli.read.Load(), closed: 1}, func() flowSum {
		return sumFlows(a.query("netflow", "5m", "pid:"+pid, "direction:outgoing", "dst_port:"+p))
	})
	settle(t, a, "server side", totals{written: srv.wrote.Load() - srvBefore.wrote.Load(), read: srv.read.Load() - srvBefore.read.Load(), closed: 1}, func() flowSum {
		return sumFlows(a.query("netflow", "5m", "pid:"+pid, "direction:incoming", "src_port:"+p))
	})
}
