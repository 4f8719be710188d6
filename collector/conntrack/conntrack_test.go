package conntrack

import (
	"bufio"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	ct "github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// client is the namespace's own address: connections to the ClusterIP range leave from it, as a node's do.
const client = "10.99.0.2"

// inNetns moves the calling goroutine, for good, onto an OS thread inside a fresh network namespace
// (deleted at cleanup) whose lo holds client and routes the ClusterIP range 10.96.0.0/16. Sockets,
// netlink ones included, belong to the namespace of the thread that creates them. It returns the
// namespace's name.
func inNetns(tb testing.TB) string {
	if os.Getenv("DKEBPF_SKIP_ROOT_TESTS") == "1" {
		tb.Skip("DKEBPF_SKIP_ROOT_TESTS=1")
	}
	if os.Geteuid() != 0 {
		tb.Fatal("needs root (network namespaces, nftables, conntrack); DKEBPF_SKIP_ROOT_TESTS=1 opts out")
	}
	ns := fmt.Sprintf("dkct-%08x", rand.Uint32())
	run(tb, "", "ip", "netns", "add", ns)
	tb.Cleanup(func() { run(tb, "", "ip", "netns", "del", ns) })
	fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer unix.Close(fd)
	runtime.LockOSThread() // never unlocked: the thread, still in the namespace, ends with the goroutine
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		tb.Fatal(err)
	}
	run(tb, "", "ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
	run(tb, "", "ip", "netns", "exec", ns, "ip", "addr", "add", client+"/32", "dev", "lo")
	run(tb, "", "ip", "netns", "exec", ns, "ip", "route", "add", "10.96.0.0/16", "dev", "lo", "src", client)
	return ns
}

// dnat loads an nftables ruleset whose output chain (where kube-proxy translates a host process's
// connections) holds rules.
func dnat(tb testing.TB, ns string, rules ...string) {
	nft := "table ip t {\n\tchain out {\n\t\ttype nat hook output priority -100;\n\t\t" +
		strings.Join(rules, "\n\t\t") + "\n\t}\n}\n"
	run(tb, nft, "ip", "netns", "exec", ns, "nft", "-f", "-")
}

func run(tb testing.TB, stdin, name string, args ...string) {
	tb.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// echo serves one exchange per TCP connection, or per UDP datagram, on 127.0.0.1; it returns the port.
func echo(t *testing.T, network string) uint16 {
	var addr net.Addr
	if network == "tcp4" {
		l, err := net.Listen(network, "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				buf := make([]byte, 64)
				n, _ := c.Read(buf)
				c.Write(buf[:n])
				c.Close()
			}
		}()
		addr = l.Addr()
	} else {
		l, err := net.ListenPacket(network, "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			buf := make([]byte, 64)
			for {
				n, from, err := l.ReadFrom(buf)
				if err != nil {
					return
				}
				l.WriteTo(buf[:n], from)
			}
		}()
		addr = l.LocalAddr()
	}
	return netip.MustParseAddrPort(addr.String()).Port()
}

// call makes one exchange with dst and closes; it returns the client's tuple.
func call(t *testing.T, network, dst string) Tuple {
	t.Helper()
	c, err := net.Dial(network, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	proto := uint8(unix.IPPROTO_TCP)
	if network == "udp4" {
		proto = unix.IPPROTO_UDP
	}
	return Tuple{Proto: proto, Src: netip.MustParseAddrPort(c.LocalAddr().String()), Dst: netip.MustParseAddrPort(dst)}
}

var loopback = netip.MustParseAddr("127.0.0.1")

// fixture is a namespace where 10.96.7.7:80 (TCP and UDP) and 10.96.9.9:443 (TCP), "ClusterIPs", are
// translated to echo servers on 127.0.0.1, and a Table open on its conntrack table.
type fixture struct {
	tab              *Table
	tcpPort, udpPort uint16
}

func setup(t *testing.T) fixture {
	ns := inNetns(t)
	f := fixture{tcpPort: echo(t, "tcp4"), udpPort: echo(t, "udp4")}
	dnat(t, ns,
		fmt.Sprintf("ip daddr 10.96.7.7 tcp dport 80 dnat to 127.0.0.1:%d", f.tcpPort),
		fmt.Sprintf("ip daddr 10.96.7.7 udp dport 80 dnat to 127.0.0.1:%d", f.udpPort),
		fmt.Sprintf("ip daddr 10.96.9.9 tcp dport 443 dnat to 127.0.0.1:%d", f.tcpPort))
	tab, err := Open(slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tab.Close() })
	f.tab = tab
	return f
}

func (f fixture) refresh(t *testing.T) {
	t.Helper()
	if err := f.tab.Refresh(); err != nil {
		t.Fatal(err)
	}
}

// expect checks that Lookup(c) answers 127.0.0.1:port, or nothing when port is 0.
func (f fixture) expect(t *testing.T, c Tuple, port uint16) {
	t.Helper()
	to, ok := f.tab.Lookup(c)
	want := netip.AddrPortFrom(loopback, port)
	if port == 0 {
		want = netip.AddrPort{}
	}
	if to != want || ok != (port != 0) {
		t.Errorf("Lookup(%v) = %v, %v; want %v", c, to, ok, want)
	}
}

func (f fixture) stats(t *testing.T, want Stats) {
	t.Helper()
	if got := f.tab.Stats(); got != want {
		t.Errorf("stats %+v, want %+v", got, want)
	}
}

func mapped(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom16(a.Addr().As16()), a.Port())
}

func TestLookupAnswersFromTheDump(t *testing.T) {
	f := setup(t)
	tcp, udp := call(t, "tcp4", "10.96.7.7:80"), call(t, "udp4", "10.96.7.7:80")
	f.refresh(t)
	f.stats(t, Stats{Dumps: 1, Entries: 2})
	f.expect(t, tcp, f.tcpPort)
	f.expect(t, udp, f.udpPort)
	f.expect(t, Tuple{Proto: tcp.Proto, Src: mapped(tcp.Src), Dst: mapped(tcp.Dst)}, f.tcpPort) // ::ffff:a.b.c.d is IPv4
	f.stats(t, Stats{Dumps: 1, Entries: 2, Hits: 3})

	// Concurrent use, for the race detector.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				f.tab.Lookup(tcp)
			}
		})
	}
	for range 5 {
		f.refresh(t)
	}
	wg.Wait()
	f.stats(t, Stats{Dumps: 6, Entries: 2, Hits: 403})
}

func TestLookupGetsAConnectionNewerThanTheDump(t *testing.T) {
	f := setup(t)
	call(t, "tcp4", "10.96.7.7:80")
	f.refresh(t)
	late := call(t, "tcp4", "10.96.7.7:80")
	f.expect(t, late, f.tcpPort)
	f.stats(t, Stats{Dumps: 1, Entries: 1, Gets: 1, Hits: 1})
	f.expect(t, late, f.tcpPort) // remembered
	f.stats(t, Stats{Dumps: 1, Entries: 1, Gets: 1, Hits: 2})

	// A miss is remembered too, until the next dump forgets it.
	gone := Tuple{Proto: unix.IPPROTO_TCP, Src: netip.MustParseAddrPort(client + ":1"), Dst: late.Dst}
	f.expect(t, gone, 0)
	f.expect(t, gone, 0)
	f.stats(t, Stats{Dumps: 1, Entries: 1, Gets: 2, Hits: 2}) // ENOENT is no error
	f.refresh(t)
	f.expect(t, gone, 0)
	f.stats(t, Stats{Dumps: 2, Entries: 2, Gets: 3, Hits: 2})
}

func TestLookupOfAnUntranslatedDestinationCostsNothing(t *testing.T) {
	f := setup(t)
	call(t, "tcp4", "10.96.7.7:80")
	f.refresh(t)
	direct := call(t, "tcp4", netip.AddrPortFrom(loopback, f.tcpPort).String())
	f.expect(t, direct, 0)
	f.expect(t, Tuple{Proto: unix.IPPROTO_TCP, Src: netip.MustParseAddrPort(client + ":1"), Dst: netip.MustParseAddrPort("10.96.7.7:81")}, 0)
	f.expect(t, Tuple{Proto: unix.IPPROTO_UDP, Src: netip.MustParseAddrPort(client + ":1"), Dst: netip.MustParseAddrPort("10.96.9.9:443")}, 0)
	f.stats(t, Stats{Dumps: 1, Entries: 1})

	// An entry whose reply comes from elsewhere without the DST_NAT bit (made by hand) is not translated.
	odd := ct.NewFlow(unix.IPPROTO_TCP, 0, netip.MustParseAddr(client), netip.MustParseAddr("10.96.7.7"), 2, 80, 60, 0)
	odd.TupleReply.IP.SourceAddress, odd.TupleReply.Proto.SourcePort = loopback, f.tcpPort
	if err := f.tab.conn.Create(odd); err != nil {
		t.Fatal(err)
	}
	f.expect(t, Tuple{Proto: unix.IPPROTO_TCP, Src: netip.MustParseAddrPort(client + ":2"), Dst: netip.MustParseAddrPort("10.96.7.7:80")}, 0)
	f.stats(t, Stats{Dumps: 1, Entries: 1, Gets: 1})
	f.refresh(t)
	f.stats(t, Stats{Dumps: 2, Entries: 1, Gets: 1})
}

func TestSetVirtualMakesADestinationWorthAGet(t *testing.T) {
	f := setup(t)
	call(t, "tcp4", "10.96.7.7:80")
	f.refresh(t)
	vip := call(t, "tcp4", "10.96.9.9:443") // translated, but after the dump: unknown until SetVirtual
	f.expect(t, vip, 0)
	f.stats(t, Stats{Dumps: 1, Entries: 1})
	f.tab.SetVirtual(func(d netip.AddrPort, proto uint8) bool { return d == vip.Dst && proto == unix.IPPROTO_TCP })
	f.expect(t, vip, f.tcpPort)
	f.expect(t, vip, f.tcpPort)
	f.stats(t, Stats{Dumps: 1, Entries: 1, Gets: 1, Hits: 2})
	f.refresh(t)
	f.stats(t, Stats{Dumps: 2, Entries: 2, Gets: 1, Hits: 2})
}

func TestRefreshErrorKeepsTheState(t *testing.T) {
	f := setup(t)
	tcp := call(t, "tcp4", "10.96.7.7:80")
	f.refresh(t)
	f.tab.Close()
	if err := f.tab.Refresh(); err == nil {
		t.Fatal("Refresh on a closed socket did not fail")
	}
	f.expect(t, tcp, f.tcpPort)
	f.stats(t, Stats{Dumps: 2, Entries: 1, Hits: 1, Errors: 1})
}

// BenchmarkRefresh10000 dumps a table of 10 000 UDP entries of which 1 000 are translated. It reports
// the growth of the process's RSS from before the first dump. Most of the time is the kernel's: a dump
// walks every bucket of the hash table that all namespaces share (net.netfilter.nf_conntrack_buckets),
// however few entries the namespace holds.
func BenchmarkRefresh10000(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	ns := inNetns(b)
	run(b, "", "ip", "netns", "exec", ns, "sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=600")
	dnat(b, ns, "ip daddr 10.96.7.7 udp dport 10000-10999 dnat to 127.0.0.1")
	fill(b)
	if out, err := exec.Command("ip", "netns", "exec", ns, "conntrack", "-C").Output(); err != nil || strings.TrimSpace(string(out)) != "10000" {
		b.Fatalf("conntrack -C: %s %v, want 10000 entries", out, err)
	}
	tab, err := Open(slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer tab.Close()
	rss0 := rssKiB(b)
	b.ReportAllocs()
	for b.Loop() {
		if err := tab.Refresh(); err != nil {
			b.Fatal(err)
		}
	}
	if n := tab.Stats().Entries; n != 1000 {
		b.Fatalf("%d translated entries, want 1000", n)
	}
	b.ReportMetric(float64(rssKiB(b)-rss0), "rss-growth-KiB")
}

// fill makes 10 000 UDP entries, one per destination port, from client: 1 000 to 10.96.7.7 and 9 000
// to 127.0.0.1.
func fill(tb testing.TB) {
	s, err := net.ListenPacket("udp4", client+":0")
	if err != nil {
		tb.Fatal(err)
	}
	defer s.Close()
	for port := 10000; port < 20000; port++ {
		dst := netip.MustParseAddr("10.96.7.7")
		if port >= 11000 {
			dst = loopback
		}
		if _, err := s.WriteTo([]byte{0}, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, uint16(port)))); err != nil {
			tb.Fatal(err)
		}
	}
}

func rssKiB(tb testing.TB) int {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	for sc := bufio.NewScanner(f); sc.Scan(); {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(v, "kB")))
			if err != nil {
				tb.Fatal(err)
			}
			return n
		}
	}
	tb.Fatal("no VmRSS in /proc/self/status")
	return 0
}
