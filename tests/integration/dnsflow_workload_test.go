package integration

// The dnsflow workloads: a DNS client built on dnsmessage that keeps its own account of every query
// (UDP connected and not, TCP one query per connection, pipelined, split, and queries that get no answer),
// a DNS server in this process that records every query it receives, and dnsmasq in a network namespace
// of the test's own. What the clients sent and received, and what the servers logged, is the ground truth.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"
)

// dnsKey is what dnsflow aggregates a client's queries by, less the client's address and pid: who asked
// (process), how (transport, server address and port), what (qname, qtype) and the outcome.
type dnsKey struct {
	Process, Transport, Server string
	Port                       int
	QName, QType               string
	RCode                      int64 // -1: no answer
	RCodeName                  string
}

func (k dnsKey) String() string {
	return fmt.Sprintf("%s %s %s %s %s rcode=%d/%s", k.Process, k.Transport,
		net.JoinHostPort(k.Server, strconv.Itoa(k.Port)), k.QName, k.QType, k.RCode, k.RCodeName)
}

// dnsCounts is a count of queries per key.
type dnsCounts map[dnsKey]int64

// diff lists every key whose count differs, sorted.
func (c dnsCounts) diff(got dnsCounts) []string {
	var out []string
	for k, n := range c {
		if got[k] != n {
			out = append(out, fmt.Sprintf("%v: want count %d, got %d", k, n, got[k]))
		}
	}
	for k, n := range got {
		if _, ok := c[k]; !ok {
			out = append(out, fmt.Sprintf("%v: want nothing, got count %d", k, n))
		}
	}
	slices.Sort(out)
	return out
}

func (c dnsCounts) total() (n int64) {
	for _, v := range c {
		n += v
	}
	return n
}

// rcodeNames are dnsflow's rcode_name values.
var rcodeNames = map[int64]string{-1: "TIMEOUT", 0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}

func newDNSKey(process, transport string, server netip.AddrPort, qname string, qtype dnsmessage.Type, rcode int64) dnsKey {
	return dnsKey{Process: process, Transport: transport, Server: server.Addr().String(), Port: int(server.Port()),
		QName: strings.TrimSuffix(strings.ToLower(qname), "."), QType: strings.TrimPrefix(qtype.String(), "Type"),
		RCode: rcode, RCodeName: rcodeNames[rcode]}
}

// dnsTruth is what the dnsflow points of the test's names must add up to.
type dnsTruth struct {
	want    dnsCounts
	maxRTT  map[dnsKey]time.Duration // answered keys: the longest round trip the client measured
	sentAt  map[dnsKey][2]time.Time  // unanswered keys: before the first query's send, after the last's
	retried map[dnsKey]bool          // unanswered keys of queries a retry replaced: reported at once, no window
	pids    map[string]string        // process_name -> pid
	netns   map[string][]string      // process_name -> the netns tags it may carry (inodes)
	timeout time.Duration            // dnsflow's query timeout
	ports   map[int]bool             // DNS server ports of the config: every other port is "*"
	lock    sync.Mutex               // the clients may account from several goroutines
}

func newDNSTruth(timeout time.Duration, ports ...int) *dnsTruth {
	tr := &dnsTruth{want: dnsCounts{}, maxRTT: map[dnsKey]time.Duration{}, sentAt: map[dnsKey][2]time.Time{},
		retried: map[dnsKey]bool{}, pids: map[string]string{}, netns: map[string][]string{}, timeout: timeout, ports: map[int]bool{}}
	for _, p := range ports {
		tr.ports[p] = true
	}
	return tr
}

// answered adds one answered query with the round trip its client measured.
func (tr *dnsTruth) answered(k dnsKey, rtt time.Duration) {
	tr.lock.Lock()
	defer tr.lock.Unlock()
	tr.want[k]++
	tr.maxRTT[k] = max(tr.maxRTT[k], rtt)
}

// unanswered adds one query that gets no answer, sent between from and to.
func (tr *dnsTruth) unanswered(k dnsKey, from, to time.Time) {
	tr.lock.Lock()
	defer tr.lock.Unlock()
	tr.want[k]++
	tr.windowLocked(k, from, to)
}

// retriedOnce counts a query replaced by a retry with its ID: unanswered, reported without waiting for
// the timeout.
func (tr *dnsTruth) retriedOnce(k dnsKey) {
	tr.lock.Lock()
	defer tr.lock.Unlock()
	tr.want[k]++
	tr.retried[k] = true
}

// window widens the send window of an unanswered key without counting a query.
func (tr *dnsTruth) window(k dnsKey, from, to time.Time) {
	tr.lock.Lock()
	defer tr.lock.Unlock()
	tr.windowLocked(k, from, to)
}

func (tr *dnsTruth) windowLocked(k dnsKey, from, to time.Time) {
	w, ok := tr.sentAt[k]
	if !ok || from.Before(w[0]) {
		w[0] = from
	}
	if to.After(w[1]) {
		w[1] = to
	}
	tr.sentAt[k] = w
}

// netnsInode is the inode of a network namespace file (/proc/self/ns/net, /run/netns/<name>): the
// namespace's number, dnsflow's netns tag.
func netnsInode(t *testing.T, path string) string {
	t.Helper()
	var st unix.Stat_t
	must(t, unix.Stat(path, &st))
	return strconv.FormatUint(st.Ino, 10)
}

// ---------------------------------------------------------------------------------------------------
// DNS messages

type dnsQ struct {
	name  string
	qtype dnsmessage.Type
}

func qA(name string) dnsQ    { return dnsQ{name, dnsmessage.TypeA} }
func qAAAA(name string) dnsQ { return dnsQ{name, dnsmessage.TypeAAAA} }
func qTXT(name string) dnsQ  { return dnsQ{name, dnsmessage.TypeTXT} }

func times(n int, q dnsQ) []dnsQ { return slices.Repeat([]dnsQ{q}, n) }

// buildQuery is a standard recursive query for q with id.
func buildQuery(id uint16, q dnsQ) []byte {
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		panic(err)
	}
	if err := b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(fqdn(q.name)), Type: q.qtype, Class: dnsmessage.ClassINET}); err != nil {
		panic(err)
	}
	m, err := b.Finish()
	if err != nil {
		panic(err)
	}
	return m
}

func fqdn(name string) string {
	if strings.HasSuffix(name, ".") {
		return name
	}
	return name + "."
}

// checkAnswer parses an answer to query (id, q) and returns its RCODE.
func checkAnswer(b []byte, id uint16, q dnsQ) (int64, error) {
	var p dnsmessage.Parser
	h, err := p.Start(b)
	if err != nil {
		return 0, fmt.Errorf("answer to %s %v: %w", q.name, q.qtype, err)
	}
	qq, err := p.Question()
	switch {
	case err != nil:
		return 0, fmt.Errorf("answer to %s %v: question: %w", q.name, q.qtype, err)
	case h.ID != id || !h.Response:
		return 0, fmt.Errorf("answer to %s %v: id %d response %v, want id %d response", q.name, q.qtype, h.ID, h.Response, id)
	case !strings.EqualFold(qq.Name.String(), fqdn(q.name)) || qq.Type != q.qtype:
		return 0, fmt.Errorf("answer to %s %v is about %s %v", q.name, q.qtype, qq.Name, qq.Type)
	}
	return int64(h.RCode), nil
}

// wantRCode is the RCODE every server of these tests answers a name with: the names say it.
func wantRCode(name string) int64 {
	switch first, _, _ := strings.Cut(name, "."); {
	case strings.HasPrefix(first, "nx"):
		return int64(dnsmessage.RCodeNameError)
	case strings.HasPrefix(first, "refused"):
		return int64(dnsmessage.RCodeRefused)
	case strings.HasPrefix(first, "servfail"):
		return int64(dnsmessage.RCodeServerFailure)
	}
	return int64(dnsmessage.RCodeSuccess)
}

// ---------------------------------------------------------------------------------------------------
// The dnsmessage client

// dnsClient sends queries with dnsmessage, each one timed from before its first write to after its
// answer's last read, and accounts for them in truth. Its sockets are made by sockets (in a network
// namespace of the test's, or this one); those of unanswered queries stay open until the test ends.
type dnsClient struct {
	t       *testing.T
	process string
	truth   *dnsTruth
	sockets func(func() error) error
	id      uint16
	timeout time.Duration
}

// netns are the netns tags its points may carry.
func newDNSClient(t *testing.T, truth *dnsTruth, sockets func(func() error) error, netns ...string) *dnsClient {
	if sockets == nil {
		sockets = func(f func() error) error { return f() }
	}
	c := &dnsClient{t: t, process: selfComm(t), truth: truth, sockets: sockets, id: uint16(os.Getpid()),
		timeout: max(30*time.Second, 10*interval)}
	truth.pids[c.process] = strconv.Itoa(os.Getpid())
	truth.netns[c.process] = netns
	return c
}

func (c *dnsClient) nextID() uint16 {
	c.id++
	return c.id
}

func udpNet(server netip.AddrPort) string {
	if server.Addr().Is4() {
		return "udp4"
	}
	return "udp6"
}

func tcpNet(server netip.AddrPort) string {
	if server.Addr().Is4() {
		return "tcp4"
	}
	return "tcp6"
}

func (c *dnsClient) dial(network string, server netip.AddrPort) net.Conn {
	c.t.Helper()
	var conn net.Conn
	err := c.sockets(func() (err error) {
		conn, err = net.DialTimeout(network, server.String(), c.timeout)
		return err
	})
	if err != nil {
		c.t.Fatalf("harness: dial %s %s: %v", network, server, err)
	}
	conn.SetDeadline(time.Now().Add(c.timeout))
	return conn
}

// listenUDP is an unconnected UDP socket on the server's loopback address.
func (c *dnsClient) listenUDP(server netip.AddrPort) *net.UDPConn {
	c.t.Helper()
	var pc net.PacketConn
	err := c.sockets(func() (err error) {
		pc, err = net.ListenPacket(udpNet(server), net.JoinHostPort(server.Addr().String(), "0"))
		return err
	})
	if err != nil {
		c.t.Fatalf("harness: listen %s: %v", udpNet(server), err)
	}
	pc.SetDeadline(time.Now().Add(c.timeout))
	return pc.(*net.UDPConn)
}

func (c *dnsClient) record(transport string, server netip.AddrPort, q dnsQ, rcode int64, rtt time.Duration) {
	c.t.Helper()
	if want := wantRCode(q.name); rcode != want {
		c.t.Fatalf("harness: %s %s %v over %s answered rcode %d, want %d", server, q.name, q.qtype, transport, rcode, want)
	}
	c.truth.answered(newDNSKey(c.process, transport, server, q.name, q.qtype, rcode), rtt)
}

// udpConnected asks qs in turn on one connected UDP socket (write and read).
func (c *dnsClient) udpConnected(server netip.AddrPort, qs ...dnsQ) {
	c.t.Helper()
	conn := c.dial(udpNet(server), server)
	defer conn.Close()
	c.udpOn(conn, server, qs...)
}

// udpOn asks qs in turn on a connected UDP socket.
func (c *dnsClient) udpOn(conn net.Conn, server netip.AddrPort, qs ...dnsQ) {
	c.t.Helper()
	for _, q := range qs {
		c.exchangeUDP(conn, server, c.nextID(), q)
	}
}

// exchangeUDP sends q with id on a connected UDP socket and records its answer, timed from the send.
func (c *dnsClient) exchangeUDP(conn net.Conn, server netip.AddrPort, id uint16, q dnsQ) {
	c.t.Helper()
	buf := make([]byte, 4096)
	start := time.Now()
	if _, err := conn.Write(buildQuery(id, q)); err != nil {
		c.t.Fatalf("harness: udp %s: %v", server, err)
	}
	n, err := conn.Read(buf)
	rtt := time.Since(start)
	if err != nil {
		c.t.Fatalf("harness: udp %s %s: %v", server, q.name, err)
	}
	rcode, err := checkAnswer(buf[:n], id, q)
	must(c.t, err)
	c.record("udp", server, q, rcode, rtt)
}

// udpUnconnected asks qs in turn on one unconnected UDP socket (sendto and recvfrom).
func (c *dnsClient) udpUnconnected(server netip.AddrPort, qs ...dnsQ) {
	c.t.Helper()
	conn := c.listenUDP(server)
	defer conn.Close()
	buf := make([]byte, 4096)
	for _, q := range qs {
		id := c.nextID()
		start := time.Now()
		if _, err := conn.WriteToUDPAddrPort(buildQuery(id, q), server); err != nil {
			c.t.Fatalf("harness: udp sendto %s: %v", server, err)
		}
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		rtt := time.Since(start)
		if err != nil {
			c.t.Fatalf("harness: udp recvfrom %s %s: %v", server, q.name, err)
		}
		if from.Addr().Unmap() != server.Addr() || from.Port() != server.Port() {
			c.t.Fatalf("harness: answer to %s from %s, want %s", q.name, from, server)
		}
		rcode, err := checkAnswer(buf[:n], id, q)
		must(c.t, err)
		c.record("udp", server, q, rcode, rtt)
	}
}

// tcpMsg frames a DNS message for TCP.
func tcpMsg(m []byte) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(m))), m...)
}

func readTCPMsg(r io.Reader) ([]byte, error) {
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	m := make([]byte, binary.BigEndian.Uint16(l[:]))
	_, err := io.ReadFull(r, m)
	return m, err
}

// tcpEach asks every query on a connection of its own.
func (c *dnsClient) tcpEach(server netip.AddrPort, qs ...dnsQ) {
	c.t.Helper()
	for _, q := range qs {
		c.tcpPipelined(server, q)
	}
}

// tcpPipelined writes all of qs in one write on one connection, then reads their answers.
func (c *dnsClient) tcpPipelined(server netip.AddrPort, qs ...dnsQ) {
	c.t.Helper()
	conn := c.dial(tcpNet(server), server)
	defer conn.Close()
	var burst []byte
	ids := make([]uint16, len(qs))
	for i, q := range qs {
		ids[i] = c.nextID()
		burst = append(burst, tcpMsg(buildQuery(ids[i], q))...)
	}
	start := time.Now()
	if _, err := conn.Write(burst); err != nil {
		c.t.Fatalf("harness: tcp %s: %v", server, err)
	}
	c.readTCPAnswers(conn, server, start, ids, qs)
}

// tcpSplit writes each query's 2-byte length and its message in two writes (two segments: Go's TCP
// connections have Nagle off) on one connection, and reads each answer before the next query.
func (c *dnsClient) tcpSplit(server netip.AddrPort, qs ...dnsQ) {
	c.t.Helper()
	conn := c.dial(tcpNet(server), server)
	defer conn.Close()
	for _, q := range qs {
		id := c.nextID()
		m := tcpMsg(buildQuery(id, q))
		start := time.Now()
		if _, err := conn.Write(m[:2]); err != nil {
			c.t.Fatalf("harness: tcp %s: %v", server, err)
		}
		time.Sleep(20 * time.Millisecond) // not synchronisation: lets the length leave alone, as its own segment
		if _, err := conn.Write(m[2:]); err != nil {
			c.t.Fatalf("harness: tcp %s: %v", server, err)
		}
		c.readTCPAnswers(conn, server, start, []uint16{id}, []dnsQ{q})
	}
}

// tcpOn asks qs in turn on a TCP connection, each answer read before the next query.
func (c *dnsClient) tcpOn(conn net.Conn, server netip.AddrPort, qs ...dnsQ) {
	c.t.Helper()
	for _, q := range qs {
		id := c.nextID()
		start := time.Now()
		if _, err := conn.Write(tcpMsg(buildQuery(id, q))); err != nil {
			c.t.Fatalf("harness: tcp %s: %v", server, err)
		}
		c.readTCPAnswers(conn, server, start, []uint16{id}, []dnsQ{q})
	}
}

func (c *dnsClient) readTCPAnswers(conn net.Conn, server netip.AddrPort, start time.Time, ids []uint16, qs []dnsQ) {
	c.t.Helper()
	for i, q := range qs {
		m, err := readTCPMsg(conn) // unbuffered: nothing of a later answer is read ahead

		rtt := time.Since(start)
		if err != nil {
			c.t.Fatalf("harness: tcp %s: answer to %s: %v", server, q.name, err)
		}
		rcode, err := checkAnswer(m, ids[i], q)
		must(c.t, err)
		c.record("tcp", server, q, rcode, rtt)
	}
}

// unansweredUDP sends qs on one UDP socket (connected or not) and never reads: nothing answers them. The
// socket stays open until the test ends.
func (c *dnsClient) unansweredUDP(server netip.AddrPort, connected bool, qs ...dnsQ) {
	c.t.Helper()
	var send func([]byte) error
	if connected {
		conn := c.dial(udpNet(server), server)
		c.t.Cleanup(func() { conn.Close() })
		send = func(b []byte) error { _, err := conn.Write(b); return err }
	} else {
		conn := c.listenUDP(server)
		c.t.Cleanup(func() { conn.Close() })
		send = func(b []byte) error { _, err := conn.WriteToUDPAddrPort(b, server); return err }
	}
	for _, q := range qs {
		start := time.Now()
		if err := send(buildQuery(c.nextID(), q)); err != nil {
			c.t.Fatalf("harness: udp %s: %v", server, err)
		}
		c.truth.unanswered(newDNSKey(c.process, "udp", server, q.name, q.qtype, -1), start, time.Now())
	}
}

// retriedUDP sends each of qs twice with the same ID on one connected socket, as glibc resends a query,
// and reads the answer to the second (the server drops the first). The first counts as unanswered at
// once, when the retry replaces it, not after the timeout: it has no send window.
func (c *dnsClient) retriedUDP(server netip.AddrPort, qs ...dnsQ) {
	c.t.Helper()
	conn := c.dial(udpNet(server), server)
	defer conn.Close()
	for _, q := range qs {
		id := c.nextID()
		if _, err := conn.Write(buildQuery(id, q)); err != nil {
			c.t.Fatalf("harness: udp %s: %v", server, err)
		}
		c.truth.retriedOnce(newDNSKey(c.process, "udp", server, q.name, q.qtype, -1))
		// Not synchronisation: a latency taken from the first send (the answer paired with the query it
		// replaced) would then exceed the round trip the client measures from the second.
		time.Sleep(50 * time.Millisecond)
		c.exchangeUDP(conn, server, id, q)
	}
}

// unansweredTCP sends qs on one TCP connection whose server reads and never answers. The connection stays
// open until the test ends.
func (c *dnsClient) unansweredTCP(server netip.AddrPort, qs ...dnsQ) {
	c.t.Helper()
	conn := c.dial(tcpNet(server), server)
	c.t.Cleanup(func() { conn.Close() })
	for _, q := range qs {
		start := time.Now()
		if _, err := conn.Write(tcpMsg(buildQuery(c.nextID(), q))); err != nil {
			c.t.Fatalf("harness: tcp %s: %v", server, err)
		}
		c.truth.unanswered(newDNSKey(c.process, "tcp", server, q.name, q.qtype, -1), start, time.Now())
	}
}

// ---------------------------------------------------------------------------------------------------
// Silent servers: they read queries and never answer.

// silentServers listen on UDP and TCP at addr, read whatever comes and answer nothing, until the test ends.
// They count the bytes they read, so the test knows its queries arrived.
type silentServers struct {
	mu   sync.Mutex
	read int
}

func (s *silentServers) add(n int) {
	s.mu.Lock()
	s.read += n
	s.mu.Unlock()
}

func (s *silentServers) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.read
}

func startSilent(t *testing.T, sockets func(func() error) error, network string, addr netip.AddrPort) *silentServers {
	t.Helper()
	s := &silentServers{}
	if sockets == nil {
		sockets = func(f func() error) error { return f() }
	}
	switch {
	case strings.HasPrefix(network, "udp"):
		var pc net.PacketConn
		must(t, sockets(func() (err error) { pc, err = net.ListenPacket(network, addr.String()); return err }))
		t.Cleanup(func() { pc.Close() })
		go func() {
			buf := make([]byte, 65536)
			for {
				n, _, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				s.add(n)
			}
		}()
	default:
		var l net.Listener
		must(t, sockets(func() (err error) { l, err = net.Listen(network, addr.String()); return err }))
		var mu sync.Mutex
		var conns []net.Conn
		t.Cleanup(func() {
			l.Close()
			mu.Lock()
			for _, c := range conns {
				c.Close()
			}
			mu.Unlock()
		})
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
				go func() {
					buf := make([]byte, 65536)
					for {
						n, err := c.Read(buf)
						s.add(n)
						if err != nil {
							return
						}
					}
				}()
			}
		}()
	}
	return s
}

// ---------------------------------------------------------------------------------------------------
// A network namespace of the test's own

type testNetns struct {
	name  string
	path  string
	inode string
	fd    int
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("harness: %s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newTestNetns makes a network namespace with lo up (127.0.0.1 and ::1), deleted when the test ends.
func newTestNetns(t *testing.T) *testNetns { return newNetns(t, "dns") }

// newNetns is newTestNetns with a name of the caller's (several namespaces in one test).
func newNetns(t *testing.T, what string) *testNetns {
	t.Helper()
	n := &testNetns{name: fmt.Sprintf("dkebpf-%s-%d", what, os.Getpid())}
	n.path = filepath.Join("/run/netns", n.name)
	exec.Command("ip", "netns", "del", n.name).Run() // a leftover of a killed run with this pid
	run(t, "ip", "netns", "add", n.name)
	t.Cleanup(func() {
		if n.fd > 0 {
			unix.Close(n.fd)
		}
		if out, err := exec.Command("ip", "netns", "del", n.name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v %s", n.name, err, out)
		}
	})
	run(t, "ip", "-n", n.name, "link", "set", "lo", "up")
	addrs := run(t, "ip", "-n", n.name, "addr", "show", "dev", "lo")
	if !strings.Contains(addrs, "127.0.0.1/8") || !strings.Contains(addrs, "::1/128") {
		t.Fatalf("harness: lo in %s lacks 127.0.0.1 or ::1:\n%s", n.name, addrs)
	}
	fd, err := unix.Open(n.path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	must(t, err)
	n.fd = fd
	n.inode = netnsInode(t, n.path)
	return n
}

// routedNetns makes a namespace holding ip/30 on a veth whose other end (the gateway gw) is in this
// namespace, with a default route through it: a pod as a CNI wires it, or any host off loopback.
func routedNetns(t *testing.T, what, ip, gw string) *testNetns {
	n := newNetns(t, what)
	host := fmt.Sprintf("dk%s%d", what[:3], os.Getpid()%100000)
	exec.Command("ip", "link", "del", host).Run()
	run(t, "ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", n.name)
	t.Cleanup(func() { exec.Command("ip", "link", "del", host).Run() })
	run(t, "ip", "addr", "add", gw+"/30", "dev", host)
	run(t, "ip", "link", "set", host, "up")
	run(t, "ip", "-n", n.name, "addr", "add", ip+"/30", "dev", "eth0")
	run(t, "ip", "-n", n.name, "link", "set", "eth0", "up")
	run(t, "ip", "-n", n.name, "route", "add", "default", "via", gw)
	return n
}

// sockets runs f on an OS thread that entered the namespace, so the sockets f makes belong to it (a
// socket stays in the namespace it was made in, whichever thread uses it later). The thread goes back to
// its own namespace after f; if it cannot, it is never given back to the runtime and ends with its
// goroutine.
func (n *testNetns) sockets(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(n.fd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", n.name, err)
			return
		}
		err = f()
		if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// ---------------------------------------------------------------------------------------------------
// dnsmasq in the namespace

type dnsmasqServer struct {
	ns  *testNetns
	log string
	cmd *exec.Cmd
}

// dnsmasqZone is the local zone dk.test: names dnsmasq knows; every other name in it is NXDOMAIN.
var dnsmasqZone = []string{
	"--host-record=udp.dk.test,10.1.2.3,fd00::3",
	"--host-record=udp6.dk.test,10.1.2.6,fd00::6",
	"--host-record=v4only.dk.test,10.1.2.4",
	"--host-record=unconn.dk.test,10.1.2.7,fd00::7",
	"--host-record=tcp.dk.test,10.1.2.8,fd00::8",
	"--host-record=pipe.dk.test,10.1.2.9",
	"--host-record=split.dk.test,10.1.2.10,fd00::10",
	"--host-record=glibc.dk.test,10.1.2.11,fd00::11",
	`--txt-record=txt.dk.test,"dkebpf"`,
	"--host-record=" + svcName + ",127.0.0.7,fd00:d6::7", // addresses of the namespace's lo: see svcAddrs
}

// startDnsmasq runs dnsmasq in ns on 127.0.0.1:53 and [::1]:53 (UDP and TCP) serving dnsmasqZone, with
// every query logged, and waits until it answers.
func startDnsmasq(t *testing.T, ns *testNetns) *dnsmasqServer {
	t.Helper()
	d := &dnsmasqServer{ns: ns, log: filepath.Join(t.TempDir(), "dnsmasq.log")}
	args := append([]string{"netns", "exec", ns.name, "/usr/sbin/dnsmasq", "--conf-file=/dev/null", "--keep-in-foreground",
		"--no-resolv", "--no-hosts", "--no-poll", "--bind-interfaces", "--listen-address=127.0.0.1,::1", "--port=53",
		"--user=root", "--pid-file=", "--log-queries=extra", "--log-facility=" + d.log, "--local=/dk.test/"}, dnsmasqZone...)
	d.cmd = exec.Command("ip", args...)
	out := &strings.Builder{}
	d.cmd.Stdout, d.cmd.Stderr = out, out
	must(t, d.cmd.Start()) // ip execs dnsmasq in place: this pid is dnsmasq's
	done := make(chan struct{})
	go func() { d.cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		d.cmd.Process.Signal(unix.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			d.cmd.Process.Kill()
			<-done
		}
	})
	// Ready when it answers over UDP and TCP on both addresses (a name outside the zone: REFUSED, no
	// upstream). The collector does not run yet: these are nobody's points.
	deadline := time.Now().Add(20 * time.Second)
	for _, server := range []string{"127.0.0.1:53", "[::1]:53"} {
		for _, network := range []string{"udp", "tcp"} {
			for {
				err := ns.sockets(func() error { return probeDNS(network, server) })
				if err == nil {
					break
				}
				select {
				case <-done:
					t.Fatalf("harness: dnsmasq exited: %s\n%s", d.cmd.ProcessState, out)
				default:
				}
				if time.Now().After(deadline) {
					t.Fatalf("harness: dnsmasq does not answer on %s %s: %v\n%s", network, server, err, out)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	return d
}

func probeDNS(network, server string) error {
	c, err := net.DialTimeout(network, server, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	q := buildQuery(1, qA("ready.probe"))
	if network == "tcp" {
		q = tcpMsg(q)
	}
	if _, err := c.Write(q); err != nil {
		return err
	}
	if network == "tcp" {
		_, err = readTCPMsg(c)
		return err
	}
	_, err = c.Read(make([]byte, 512))
	return err
}

// loggedQuery is a query as dnsmasq logs it (transport is not logged).
type loggedQuery struct {
	QName, QType, From string
}

var dnsmasqQueryLine = regexp.MustCompile(`query\[([A-Za-z0-9]+)\] (\S+) from (\S+)$`)

// queries counts the queries of dnsmasq's log by name, type and client address.
func (d *dnsmasqServer) queries(t *testing.T) map[loggedQuery]int64 {
	t.Helper()
	b, err := os.ReadFile(d.log)
	must(t, err)
	out := map[loggedQuery]int64{}
	for _, line := range strings.Split(string(b), "\n") {
		if m := dnsmasqQueryLine.FindStringSubmatch(line); m != nil {
			out[loggedQuery{QName: strings.ToLower(m[2]), QType: m[1], From: m[3]}]++
		}
	}
	return out
}

// nsTCPServer accepts on addr:0 in ns and serves every connection (serve: exchanges of sizes the client
// asks for); it returns the port and the server's truth.
func nsTCPServer(t *testing.T, ns *testNetns, addr netip.Addr) (int, *counted, *sync.WaitGroup) {
	t.Helper()
	var l net.Listener
	must(t, ns.sockets(func() (err error) {
		l, err = net.Listen(tcpNet(netip.AddrPortFrom(addr, 0)), netip.AddrPortFrom(addr, 0).String())
		return err
	}))
	return serveAll(t, l)
}

// nsResolver is Go's resolver (PreferGo) asking server from sockets of ns.
func nsResolver(ns *testNetns, server netip.AddrPort) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var conn net.Conn
		err := ns.sockets(func() (err error) {
			var d net.Dialer
			conn, err = d.DialContext(ctx, network, server.String())
			return err
		})
		return conn, err
	}}
}

// ---------------------------------------------------------------------------------------------------
// glibc: python's getaddrinfo in the namespace, against the namespace's resolv.conf

const glibcClient = `
import json, os, socket, sys, time
out = {"pid": os.getpid(), "comm": open("/proc/self/comm").read().strip(), "calls": []}
for name in sys.argv[1:]:
    t0 = time.monotonic_ns()
    try:
        addrs, err = sorted({a[4][0] for a in socket.getaddrinfo(name, None, 0, socket.SOCK_DGRAM)}), 0
    except socket.gaierror as e:
        addrs, err = [], e.errno
    out["calls"].append({"name": name, "ns": time.monotonic_ns() - t0, "addrs": addrs, "err": err})
print(json.dumps(out))
`

// glibcRun is what the glibc client reports.
type glibcRun struct {
	PID   int    `json:"pid"`
	Comm  string `json:"comm"`
	Calls []struct {
		Name  string   `json:"name"`
		NS    int64    `json:"ns"`
		Addrs []string `json:"addrs"`
		Err   int      `json:"err"`
	} `json:"calls"`
}

// writeNetnsResolvConf makes `ip netns exec` bind a resolv.conf naming dnsmasq over /etc/resolv.conf.
func writeNetnsResolvConf(t *testing.T, ns *testNetns) {
	t.Helper()
	dir := filepath.Join("/etc/netns", ns.name)
	_, statErr := os.Stat("/etc/netns")
	must(t, os.MkdirAll(dir, 0o755))
	t.Cleanup(func() {
		os.RemoveAll(dir)
		if statErr != nil {
			os.Remove("/etc/netns") // ours: only if empty
		}
	})
	// attempts:1: a lost answer is not retried (it would show in dnsmasq's log anyway); no search list:
	// the names are absolute.
	must(t, os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver 127.0.0.1\noptions attempts:1 timeout:10\n"), 0o644))
}

// ---------------------------------------------------------------------------------------------------
// A DNS server in this process

// goDNSServer answers on UDP and TCP at 127.0.0.1 and [::1] on one port, by the rules of respond, and
// records every query it receives by key (Process left empty) as the ground truth.
type goDNSServer struct {
	port int
	mu   sync.Mutex
	got  dnsCounts
	bad  int // messages it could not parse
	// retried: the retry* queries (by ID and name) seen once and dropped; their repeat is answered.
	retried map[string]bool
}

// startGoDNSServer listens on a port free for UDP and TCP on both loopback addresses.
func startGoDNSServer(t *testing.T) *goDNSServer {
	t.Helper()
	s := &goDNSServer{got: dnsCounts{}, retried: map[string]bool{}}
	var closers []io.Closer
	t.Cleanup(func() {
		for _, c := range closers {
			c.Close()
		}
	})
	for attempt := 0; ; attempt++ {
		if attempt == 50 {
			t.Fatalf("harness: no port free on UDP and TCP at both 127.0.0.1 and ::1")
		}
		l4, err := net.Listen("tcp4", "127.0.0.1:0")
		must(t, err)
		port := l4.Addr().(*net.TCPAddr).Port
		l6, err6 := net.Listen("tcp6", fmt.Sprintf("[::1]:%d", port))
		u4, erru4 := net.ListenPacket("udp4", fmt.Sprintf("127.0.0.1:%d", port))
		u6, erru6 := net.ListenPacket("udp6", fmt.Sprintf("[::1]:%d", port))
		if err6 != nil || erru4 != nil || erru6 != nil {
			for _, c := range []io.Closer{l4, l6, u4, u6} {
				if c != nil && !isNilCloser(c) {
					c.Close()
				}
			}
			continue
		}
		s.port = port
		closers = append(closers, l4, l6, u4, u6)
		for _, l := range []net.Listener{l4, l6} {
			go s.serveTCP(l, &closers)
		}
		for _, u := range []net.PacketConn{u4, u6} {
			go s.serveUDP(u)
		}
		return s
	}
}

func isNilCloser(c io.Closer) bool {
	switch v := c.(type) {
	case net.Listener:
		return v == nil
	case net.PacketConn:
		return v == nil
	}
	return false
}

func (s *goDNSServer) addr(ip string) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr(ip), uint16(s.port))
}

// snapshot is a copy of the queries received so far.
func (s *goDNSServer) snapshot() (dnsCounts, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.got), s.bad
}

// respond decides a query's answer by its name's first label: drop* gets none, retry* none the first time
// its ID and name come and an answer when they come again, garbage* a few bytes that
// are no DNS message, wrongid* an answer with another ID (no answer for the client either), tc* over UDP
// an empty truncated answer; otherwise wantRCode's RCODE, with an A, AAAA or TXT record when NOERROR. It
// records the query with the RCODE the client will see (-1: none).
func (s *goDNSServer) respond(req []byte, transport string, local netip.AddrPort) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(req)
	var q dnsmessage.Question
	if err == nil {
		q, err = p.Question()
	}
	if err != nil || h.Response {
		s.mu.Lock()
		s.bad++
		s.mu.Unlock()
		return nil
	}
	name := strings.TrimSuffix(strings.ToLower(q.Name.String()), ".")
	first, _, _ := strings.Cut(name, ".")
	rcode := wantRCode(name)
	var resp []byte
	switch {
	case strings.HasPrefix(first, "drop"):
		rcode = -1
	case strings.HasPrefix(first, "retry"):
		id := fmt.Sprintf("%d %s", h.ID, name)
		s.mu.Lock()
		again := s.retried[id]
		s.retried[id] = true
		s.mu.Unlock()
		if again {
			resp = s.answer(h, q, rcode, false)
		} else {
			rcode = -1
		}
	case strings.HasPrefix(first, "garbage"):
		rcode, resp = -1, []byte("garbage")
	case strings.HasPrefix(first, "wrongid"):
		rcode = -1
		h.ID ^= 0x5a5a
		resp = s.answer(h, q, 0, false)
	case strings.HasPrefix(first, "tc") && transport == "udp":
		resp = s.answer(h, q, 0, true)
	default:
		resp = s.answer(h, q, rcode, false)
	}
	k := newDNSKey("", transport, netip.AddrPortFrom(local.Addr().Unmap(), local.Port()), name, q.Type, rcode)
	s.mu.Lock()
	s.got[k]++
	s.mu.Unlock()
	return resp
}

func (s *goDNSServer) answer(req dnsmessage.Header, q dnsmessage.Question, rcode int64, truncated bool) []byte {
	h := dnsmessage.Header{ID: req.ID, Response: true, Authoritative: true, RecursionDesired: req.RecursionDesired,
		RecursionAvailable: true, Truncated: truncated, RCode: dnsmessage.RCode(rcode)}
	b := dnsmessage.NewBuilder(nil, h)
	b.EnableCompression()
	must2(b.StartQuestions())
	must2(b.Question(q))
	must2(b.StartAnswers())
	if rcode == 0 && !truncated {
		rh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}
		switch q.Type {
		case dnsmessage.TypeA:
			must2(b.AResource(rh, dnsmessage.AResource{A: [4]byte{10, 9, 0, 1}}))
		case dnsmessage.TypeAAAA:
			must2(b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: netip.MustParseAddr("fd00::9:1").As16()}))
		case dnsmessage.TypeTXT:
			must2(b.TXTResource(rh, dnsmessage.TXTResource{TXT: []string{"dkebpf"}}))
		}
	}
	m, err := b.Finish()
	must2(err)
	return m
}

func must2(err error) {
	if err != nil {
		panic(err)
	}
}

func (s *goDNSServer) serveUDP(pc net.PacketConn) {
	local := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if resp := s.respond(buf[:n], "udp", local); resp != nil {
			pc.WriteTo(resp, from)
		}
	}
}

func (s *goDNSServer) serveTCP(l net.Listener, closers *[]io.Closer) {
	local := l.Addr().(*net.TCPAddr).AddrPort()
	var mu sync.Mutex
	var conns []net.Conn
	defer func() {
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
		go func() {
			br := bufio.NewReader(c)
			for {
				m, err := readTCPMsg(br)
				if err != nil {
					if !errors.Is(err, io.EOF) {
						c.Close()
					}
					return
				}
				if resp := s.respond(m, "tcp", local); resp != nil {
					c.Write(tcpMsg(resp))
				}
			}
		}()
	}
}

// ---------------------------------------------------------------------------------------------------
// Go's own resolver

// goResolver is net.Resolver{PreferGo} sending every query to server, whatever resolv.conf says.
func goResolver(server netip.AddrPort) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		if strings.HasPrefix(network, "tcp") {
			network = tcpNet(server)
		} else {
			network = udpNet(server)
		}
		return d.DialContext(ctx, network, server.String())
	}}
}

// resolverCall runs one lookup and accounts in res for what the server received meanwhile: the answered
// queries of the call (the server records a query before it answers it), with the call's duration as their
// latency bound, and the send window of those it did not answer (their count is the server's final
// record). Lookups run one at a time, on names of the zone res.dk.test, which no other client asks.
func resolverCall(t *testing.T, s *goDNSServer, res *dnsTruth, process, what string, ctxTimeout time.Duration, wantErr bool, call func(ctx context.Context) error) {
	t.Helper()
	before, _ := s.snapshot()
	ctx, cancel := context.WithTimeout(context.Background(), ctxTimeout)
	defer cancel()
	start := time.Now()
	err := call(ctx)
	took, end := time.Since(start), time.Now()
	if (err != nil) != wantErr {
		t.Fatalf("harness: Go resolver %s: error %v, want an error: %v", what, err, wantErr)
	}
	got, _ := s.snapshot()
	n := int64(0)
	for k, c := range got {
		d := c - before[k]
		if d == 0 || !strings.HasSuffix(k.QName, ".res.dk.test") { // the resolver's names only
			continue
		}
		n += d
		k.Process = process
		if k.RCode == -1 {
			res.window(k, start, end)
			continue
		}
		for range d {
			res.answered(k, took)
		}
	}
	if n == 0 && !wantErr {
		t.Fatalf("harness: Go resolver %s: the server got nothing", what)
	}
	t.Logf("Go resolver %s: %d queries answered or recorded in %v (error: %v)", what, n, took.Round(time.Microsecond), err)
}
