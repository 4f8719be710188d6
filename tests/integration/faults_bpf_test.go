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
// sees. The kernel submits one record per DNS datagram of a client socket: the query when the client sends
// it (cgroup_skb egress) and the answer when the client's socket receives it (cgroup_skb ingress, before the
// socket's queue); the resolver's own datagrams come from and go to no DNS port of the collector's, so they
// submit none. The collector drains the ring every 20 ms; a batch alone is more than a page holds.
// Exact identity:
//
//	dnsflow_events_received + dnsflow_events_lost == queries sent + answers received
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
	caused := sent + answered
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
	addFault(t, faultRow{Case: "bpf: ring buffer flooded (dnsflow df_events)", Done: fmt.Sprintf("df_events shrunk to %d bytes; %d UDP queries answered by a resolver, in batches of %d", ringBytes, n, batch),
		Acked: fmt.Sprintf("%d records", caused), Found: fmt.Sprintf("%d received", received), Lost: fmt.Sprintf("%d (counted)", lost),
		Dup: fmt.Sprint(max(0, received+lost-caused)), Recovered: "-",
		Detail: fmt.Sprintf("received + lost = %d of %d; burst took %v", received+lost, caused, took.Round(time.Millisecond))})
}

// TestFaultMapFullNetflowConnections shrinks netflow's connection map (nf_socks, one entry per TCP socket,
// both ends of a loopback connection) to 256 entries and opens M = 400 connections to a server of this
// process (800 sockets), each with one exchange of 100 bytes each way, held open across intervals, then
// closed.
//
// No exact identity "connections reported + netflow_map_full_drops == M" holds: nf_socks is a LRU_HASH (as
// the house style asks of per-flow state), so an insert into the full map succeeds by evicting an older
// entry, silently. NF_STAT_SOCK_FULL (map_full_drops) counts only bpf_map_update_elem failures, which a LRU
// map does not return when full; an evicted socket is then neither reported live (nf_iter walks the map)
// nor at its close (tcp_state finds no entry and returns). What the test asserts exactly instead:
//
//   - the map overflowed: fewer than M connections reported on either side, and the sockets reported
//     (client + server) fit in the map: reported <= entries;
//   - a connection is lost whole or reported whole: per side, bytes written == bytes read == 100 ×
//     connections established, and connections closed == connections established (the burst runs just
//     after a flush, within an interval: when a flush falls in it anyway, this is not checked);
//
// and it records the sockets lost uncounted, 2M − reported − Δmap_full_drops, in the fault table.
func TestFaultMapFullNetflowConnections(t *testing.T) {
	const entries, m, size = 256, 400, 100
	a := startAgent(t, fmt.Sprintf("  envs = [\"DKE_TEST_MAP_ENTRIES=nf_socks=%d\"]", entries))
	port, srv, srvWG := tcpServer(t, "tcp4", "127.0.0.1")
	cli := &counted{}

	// Start right after a flush: wait for a self point newer than the latest one.
	first, _ := latestSelfPoint(a)
	a.waitFor("a flush", 5*interval, func() bool { p, _ := latestSelfPoint(a); return p.Time.After(first.Time) })
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
	if took > interval/2 {
		t.Logf("harness: the burst took %v, more than half an interval: a live read may have fallen in it", took)
	}
	time.Sleep(2 * interval) // held open across intervals
	for _, c := range conns {
		c.Close()
	}
	srvWG.Wait()

	pid := strconv.Itoa(os.Getpid())
	p := strconv.Itoa(port)
	query := func(tags ...string) flowSum {
		return sumFlows(a.query("netflow", "5m", append([]string{"run:" + pid, "pid:" + pid, "transport:tcp"}, tags...)...))
	}
	// Wait until both sides have reported every close they will (closed == established), then two more intervals.
	var out, in flowSum
	deadline := time.Now().Add(max(10*interval, 20*time.Second))
	for {
		out, in = query("direction:outgoing", "dst_port:"+p), query("direction:incoming", "src_port:"+p)
		done := out.established > 0 && in.established > 0 && out.closed == out.established && in.closed == in.established
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(interval / 4)
	}
	time.Sleep(2 * interval)
	out, in = query("direction:outgoing", "dst_port:"+p), query("direction:incoming", "src_port:"+p)
	after, _ := latestSelfPoint(a)
	drops := intField(after, "netflow_map_full_drops") - intField(before, "netflow_map_full_drops")
	reported := out.established + in.established
	uncounted := 2*m - reported - drops
	t.Logf("burst: %d connections in %v; client side %+v; server side %+v", m, took.Round(time.Millisecond), out.totals, in.totals)
	t.Logf("nf_socks %d entries: %d of %d sockets reported, map_full_drops +%d, %d lost uncounted (LRU evictions)", entries, reported, 2*m, drops, uncounted)

	if out.established >= m || in.established >= m {
		t.Errorf("client %d, server %d connections reported of %d: the map did not overflow", out.established, in.established, m)
	}
	if reported > entries {
		t.Errorf("%d sockets reported, more than the %d entries of nf_socks", reported, entries)
	}
	// A flush inside the burst may report a connection live that a later one evicts before its close: then
	// the whole-connection identity does not apply (a slow machine).
	flushedInBurst := false
	for _, sp := range a.query("datakit_ebpf", "5m") {
		flushedInBurst = flushedInBurst || (sp.Time.After(start) && sp.Time.Before(start.Add(took)))
	}
	if flushedInBurst {
		t.Logf("a flush fell within the burst (%v): whole-connection identity not checked", took)
	}
	for _, side := range []struct {
		name string
		s    flowSum
	}{{"client", out}, {"server", in}} {
		s := side.s
		if flushedInBurst {
			continue
		}
		if s.established == 0 || s.written != size*s.established || s.read != size*s.established || s.closed != s.established {
			t.Errorf("%s side: %+v, want %d bytes each way per connection established and every one closed: a connection reported in part",
				side.name, s.totals, size)
		}
	}
	if got := cli.wrote.Load(); got != m*size || srv.read.Load() != m*size {
		t.Errorf("harness: client wrote %d, server read %d, want %d", got, srv.read.Load(), m*size)
	}
	addFault(t, faultRow{Case: "bpf: connection map full (netflow nf_socks)", Done: fmt.Sprintf("nf_socks shrunk to %d entries; %d TCP connections (%d sockets) held open 2 intervals", entries, m, 2*m),
		Acked: fmt.Sprintf("%d sockets", 2*m), Found: fmt.Sprintf("%d (client %d, server %d)", reported, out.established, in.established),
		Lost: fmt.Sprintf("%d (NOT counted: LRU evicts silently)", uncounted), Dup: "0", Recovered: "-",
		Detail: fmt.Sprintf("map_full_drops +%d; reported connections whole (bytes, closes exact)", drops)})
}
