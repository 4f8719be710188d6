package integration

// Kernel-side faults: a map or ring buffer of the collector's BPF object shrunk (by the collector's test-only
// knobs DKE_TEST_RINGBUF_BYTES and DKE_TEST_MAP_ENTRIES, collector/bpf/testknobs.go) so that the test's own
// burst overflows it, and the collector's counters checked against what the burst made the kernel do.

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// selfCounter polls the collector's latest datakit_ebpf point until field(p) equals want, then waits two
// more intervals and returns the latest point (a counter still moving after that would be a double count).
func selfCounter(t *testing.T, a *agent, what string, want int64, field func(lpPoint) int64) lpPoint {
	t.Helper()
	deadline := time.Now().Add(max(10*interval, 20*time.Second))
	p, _ := latestSelfPoint(a)
	for field(p) != want && time.Now().Before(deadline) {
		time.Sleep(interval / 4)
		p, _ = latestSelfPoint(a)
	}
	time.Sleep(2 * interval)
	p, ok := latestSelfPoint(a)
	if !ok {
		t.Fatalf("%s: no datakit_ebpf point", what)
	}
	return p
}

// TestFaultRingBufferFloodCountsEveryDrop shrinks dnsflow's ring buffer (df_events) to one page and sends
// a burst of DNS queries over UDP (batches of 64 sent back to back, then their answers read) to a resolver
// in this process, on a port that is the collector's only DNS port: the burst is the only DNS traffic it
// sees. The kernel pairs each query with its answer itself (no record), and submits the answer for the
// name cache when its content is new: every answer here is (each asks another name, answered with an A
// record). The resolver's own datagrams come from and go to no DNS port of the collector's, so they submit
// none. The collector drains the ring every 20 ms; a batch alone is more than a page holds. Exact identities:
//
//	dnsflow_events_received + dnsflow_events_lost == answers received
//	Δdnsflow_kernel_queries == queries sent
//
// (each record is either read from the ring or counted in DF_STAT_RB_LOST when bpf_ringbuf_output fails),
// with dnsflow_events_lost > 0 (the ring really overflowed) and received > 0.
func TestFaultRingBufferFloodCountsEveryDrop(t *testing.T) {
	const ringBytes = 4096
	s := startGoDNSServer(t)
	a := startAgent(t, fmt.Sprintf("  dnsflow_ports = [%d]\n  envs = [\"DKE_TEST_RINGBUF_BYTES=df_events=%d\"]", s.port, ringBytes))
	if p, _ := latestSelfPoint(a); intField(p, "dnsflow_events_received")+intField(p, "dnsflow_events_lost") != 0 {
		t.Fatalf("harness: the collector saw DNS traffic on port %d before the burst: %v", s.port, p.Fields)
	}

	n := 5000
	if faultsLong {
		n = 50000
	}
	server := s.addr("127.0.0.1")
	conn, err := net.Dial("udp4", server.String())
	must(t, err)
	defer conn.Close()
	var sent, answered int64
	buf := make([]byte, 4096)
	start := time.Now()
	// Batches of queries sent back to back, then their answers read: 2×batch records within microseconds,
	// more than a page holds, however slow the machine (a query waiting for its answer each may not be).
	const batch = 64
	for i := 0; i < n; i += batch {
		k := min(batch, n-i)
		for j := 0; j < k; j++ {
			id := uint16(i + j)
			if _, err := conn.Write(buildQuery(id, dnsQ{fmt.Sprintf("flood%d.dk.test", i+j), dnsmessage.TypeA})); err != nil {
				t.Fatalf("harness: query %d: %v", i+j, err)
			}
			sent++
		}
		for j := 0; j < k; j++ {
			conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := conn.Read(buf); err != nil {
				t.Fatalf("harness: answer %d of batch %d: %v", j, i/batch, err)
			}
			answered++
		}
	}
	took := time.Since(start)
	// An answer that arrived after its read timed out would be a record the test did not count: none may wait.
	conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := conn.Read(buf); err == nil {
		answered++
		t.Errorf("harness: an answer arrived after the burst")
	}
	caused := answered
	t.Logf("burst: %d queries, %d answers in %v (%.0f records/s)", sent, answered, took.Round(time.Millisecond), float64(caused)/took.Seconds())

	total := func(p lpPoint) int64 {
		return intField(p, "dnsflow_events_received") + intField(p, "dnsflow_events_lost")
	}
	p := selfCounter(t, a, "ring flood", caused, total)
	received, lost := intField(p, "dnsflow_events_received"), intField(p, "dnsflow_events_lost")
	t.Logf("collector: %d received + %d lost = %d; the burst caused %d records; ring %d bytes", received, lost, received+lost, caused, ringBytes)
	if received+lost != caused {
		t.Errorf("received %d + lost %d = %d, want exactly the %d records the burst caused", received, lost, received+lost, caused)
	}
	if lost == 0 {
		t.Errorf("no record lost: the burst did not overflow a %d-byte ring (%d records)", ringBytes, caused)
	}
	if received == 0 {
		t.Errorf("no record received: the ring was never drained")
	}
	if d := intField(p, "dnsflow_decode_errors"); d != 0 {
		t.Errorf("%d decode errors", d)
	}
	if k := intField(p, "dnsflow_kernel_queries"); k != sent {
		t.Errorf("dnsflow_kernel_queries = %d, want the %d queries sent, each paired in the kernel", k, sent)
	}
	addFault(t, faultRow{Case: "bpf: ring buffer flooded (dnsflow df_events)", Done: fmt.Sprintf("df_events shrunk to %d bytes; %d UDP queries answered by a resolver, in batches of %d", ringBytes, n, batch),
		Acked: fmt.Sprintf("%d records", caused), Found: fmt.Sprintf("%d received", received), Lost: fmt.Sprintf("%d (counted)", lost),
		Dup: fmt.Sprint(max(0, received+lost-caused)), Recovered: "-",
		Detail: fmt.Sprintf("received + lost = %d of %d; burst took %v", received+lost, caused, took.Round(time.Millisecond))})
}

// TestFaultMapFullNetflow shrinks netflow's two counter maps (nf_socks: one entry per tracked TCP socket,
// both ends of a loopback connection; nf_udp: one per (UDP socket, peer) seen in a datagram) so that the
// test's own bursts overflow them. Both are plain hashes: a full map refuses an insert, which the kernel
// counts, and never drops an entry it holds. Exact identities:
//
//	TCP: sockets reported (client + server connections established) + Δnetflow_connections_untracked == 2M
//	UDP: datagrams reported (client written + server read) + Δnetflow_datagrams_uncounted == 2M
//
// with both maps really overflowed (something counted) and every reported connection whole.
func TestFaultMapFullNetflow(t *testing.T) {
	const entries = 256
	a := startAgent(t, fmt.Sprintf("  envs = [\"DKE_TEST_MAP_ENTRIES=nf_socks=%d,nf_udp=%d\"]", entries, entries))
	t.Run("TCP", func(t *testing.T) { mapFullTCP(t, a, entries) })
	t.Run("UDP", func(t *testing.T) { mapFullUDP(t, a, entries) })
}

// mapFullTCP opens M = 400 connections to a server of this process (800 sockets), each with one exchange
// of 100 bytes each way, holds them open across intervals, then closes them. A client's connect() takes
// an entry at SYN_SENT (not counted when refused: ESTABLISHED tries again and counts once per socket).
func mapFullTCP(t *testing.T, a *agent, entries int) {
	const m, size = 400, 100
	port, srv, srvWG := tcpServer(t, "tcp4", "127.0.0.1")
	cli := &counted{}
	before, _ := latestSelfPoint(a)
	start := time.Now()
	var conns []net.Conn
	for i := 0; i < m; i++ {
		c, err := net.Dial("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		must(t, err)
		must(t, exchange(c, cli, size, size))
		conns = append(conns, c)
	}
	took := time.Since(start)
	time.Sleep(2 * interval) // held open across intervals: live reports of a full map
	for _, c := range conns {
		c.Close()
	}
	srvWG.Wait()

	pid, p := strconv.Itoa(os.Getpid()), strconv.Itoa(port)
	query := func(tags ...string) flowSum {
		return sumFlows(a.query("netflow", "5m", append([]string{"run:" + pid, "pid:" + pid, "transport:tcp"}, tags...)...))
	}
	untracked := func(p lpPoint) int64 {
		return intField(p, "netflow_connections_untracked") - intField(before, "netflow_connections_untracked")
	}
	var out, in flowSum
	after := selfCounter(t, a, "tcp map full", 2*m, func(sp lpPoint) int64 {
		out, in = query("direction:outgoing", "dst_port:"+p), query("direction:incoming", "src_port:"+p)
		return out.established + in.established + untracked(sp)
	})
	out, in = query("direction:outgoing", "dst_port:"+p), query("direction:incoming", "src_port:"+p)
	reported, lost := out.established+in.established, untracked(after)
	t.Logf("burst: %d connections in %v; client side %+v; server side %+v", m, took.Round(time.Millisecond), out.totals, in.totals)
	t.Logf("nf_socks %d entries: %d of %d sockets reported, %d counted untracked", entries, reported, 2*m, lost)

	if reported+lost != 2*m {
		t.Errorf("%d sockets reported + %d counted untracked = %d, want exactly %d", reported, lost, reported+lost, 2*m)
	}
	if lost == 0 || reported > int64(entries) {
		t.Errorf("%d sockets reported, %d untracked: the %d-entry map did not overflow as it must", reported, lost, entries)
	}
	for _, side := range []struct {
		name string
		s    flowSum
	}{{"client", out}, {"server", in}} {
		s := side.s
		if s.established == 0 || s.written != size*s.established || s.read != size*s.established || s.closed != s.established {
			t.Errorf("%s side: %+v, want %d bytes each way per connection established and every one closed: a connection reported in part",
				side.name, s.totals, size)
		}
	}
	if got := cli.wrote.Load(); got != m*size || srv.read.Load() != m*size {
		t.Errorf("harness: client wrote %d, server read %d, want %d", got, srv.read.Load(), m*size)
	}
	if st := intField(after, "netflow_connections_stale") - intField(before, "netflow_connections_stale"); st != 0 {
		t.Errorf("%d connections found stale: every close ran", st)
	}
	addFault(t, faultRow{Case: "bpf: connection map full (netflow nf_socks)", Done: fmt.Sprintf("nf_socks shrunk to %d entries; %d TCP connections (%d sockets) held open 2 intervals", entries, m, 2*m),
		Acked: fmt.Sprintf("%d sockets", 2*m), Found: fmt.Sprintf("%d (client %d, server %d)", reported, out.established, in.established),
		Lost: fmt.Sprintf("%d (counted untracked)", lost), Dup: fmt.Sprint(max(0, reported+lost-2*m)), Recovered: "-",
		Detail: "reported connections whole (bytes, closes exact)"})
}

// mapFullUDP sends one datagram from each of M = 400 client sockets to one server socket of this process,
// which reads them all: 2M (socket, peer) keys, one datagram each (the client's egress, the server's
// ingress).
func mapFullUDP(t *testing.T, a *agent, entries int) {
	const m, size = 400, 64
	// Below the ephemeral range: a server reported without its owner (so as outgoing) keeps its port as
	// src_port, where an ephemeral one would be folded into "*".
	var srv *net.UDPConn
	var err error
	for p := 20000 + os.Getpid()%5000; srv == nil; p++ {
		if srv, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p}); err != nil && p > 29999 {
			t.Fatalf("harness: no free UDP port below 30000: %v", err)
		}
	}
	defer srv.Close()
	port := srv.LocalAddr().(*net.UDPAddr).Port
	before, _ := latestSelfPoint(a)
	var clients []*net.UDPConn
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	buf := make([]byte, 2048)
	for i := 0; i < m; i++ {
		c, err := net.DialUDP("udp4", nil, srv.LocalAddr().(*net.UDPAddr))
		must(t, err)
		clients = append(clients, c)
		if _, err := c.Write(make([]byte, size)); err != nil {
			t.Fatalf("harness: datagram %d: %v", i, err)
		}
		srv.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, _, err := srv.ReadFromUDP(buf); err != nil || n != size {
			t.Fatalf("harness: server read %d of datagram %d: %v", n, i, err)
		}
	}
	// By port alone: on kernels whose UDP owners come from kprobes or from a socket's first datagram sent,
	// a client that sends once, or a server that only receives, is reported without its process (README,
	// Kernels), and a flow without an owner as outgoing.
	p := strconv.Itoa(port)
	query := func(tags ...string) flowSum {
		return sumFlows(a.query("netflow", "5m", append([]string{"transport:udp"}, tags...)...))
	}
	uncounted := func(p lpPoint) int64 {
		return intField(p, "netflow_datagrams_uncounted") - intField(before, "netflow_datagrams_uncounted")
	}
	var out, in flowSum
	after := selfCounter(t, a, "udp map full", 2*m, func(sp lpPoint) int64 {
		out, in = query("dst_port:"+p), query("src_port:"+p)
		return out.datagramsW + in.datagramsR + uncounted(sp)
	})
	out, in = query("dst_port:"+p), query("src_port:"+p)
	reported, lost := out.datagramsW+in.datagramsR, uncounted(after)
	t.Logf("nf_udp %d entries: %d of %d datagrams reported (client %d, server %d), %d counted in datagrams_uncounted", entries, reported, 2*m, out.datagramsW, in.datagramsR, lost)
	if reported+lost != 2*m {
		t.Errorf("%d datagrams reported + %d counted = %d, want exactly %d", reported, lost, reported+lost, 2*m)
	}
	if lost == 0 || reported > int64(entries) {
		t.Errorf("%d datagrams reported, %d uncounted: the %d-entry map did not overflow as it must", reported, lost, entries)
	}
	if out.written != size*out.datagramsW || in.read != size*in.datagramsR {
		t.Errorf("client %+v, server %+v: want %d bytes per datagram reported", out.totals, in.totals, size)
	}
	addFault(t, faultRow{Case: "bpf: UDP peer map full (netflow nf_udp)", Done: fmt.Sprintf("nf_udp shrunk to %d entries; %d UDP sockets send one datagram each to one server", entries, m),
		Acked: fmt.Sprintf("%d datagrams (both ends)", 2*m), Found: fmt.Sprintf("%d (client %d, server %d)", reported, out.datagramsW, in.datagramsR),
		Lost: fmt.Sprintf("%d (counted)", lost), Dup: fmt.Sprint(max(0, reported+lost-2*m)), Recovered: "-",
		Detail: "bytes exact for every datagram reported"})
}
