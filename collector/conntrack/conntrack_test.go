package conntrack

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// backend is the address the ClusterIP is translated to (a pod's, on a node).
const backend = "10.99.0.2"

// inNetns runs the whole test on one OS thread inside a fresh network namespace, whose nftables DNAT
// 10.96.7.7:80 (TCP and UDP) to listeners on backend, as kube-proxy does for a ClusterIP in OUTPUT.
func inNetns(t *testing.T) (tcpPort, udpPort int) {
	if os.Getenv("DKEBPF_SKIP_ROOT_TESTS") == "1" {
		t.Skip("DKEBPF_SKIP_ROOT_TESTS=1")
	}
	if os.Geteuid() != 0 {
		t.Fatal("needs root (network namespaces, nftables, conntrack); DKEBPF_SKIP_ROOT_TESTS=1 opts out")
	}
	runtime.LockOSThread() // never unlocked: the thread ends with the test's goroutine
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Fatal(err)
	}
	run(t, "ip", "link", "set", "lo", "up")
	run(t, "ip", "addr", "add", backend+"/32", "dev", "lo") // not 127/8: the kernel will not route there after DNAT
	tl, err := net.Listen("tcp4", backend+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tl.Close() })
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 64)
			n, _ := c.Read(buf)
			c.Write(buf[:n])
			c.Close()
		}
	}()
	ul, err := net.ListenPacket("udp4", backend+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ul.Close() })
	go func() {
		buf := make([]byte, 64)
		for {
			n, from, err := ul.ReadFrom(buf)
			if err != nil {
				return
			}
			ul.WriteTo(buf[:n], from)
		}
	}()
	tcpPort, udpPort = tl.Addr().(*net.TCPAddr).Port, ul.LocalAddr().(*net.UDPAddr).Port
	// Children forked from this thread (nft, ip) inherit its namespace.
	nft := fmt.Sprintf(`table ip t {
	chain out { type nat hook output priority -100; ip daddr 10.96.7.7 tcp dport 80 dnat to %[3]s:%[1]d; ip daddr 10.96.7.7 udp dport 80 dnat to %[3]s:%[2]d; }
}`, tcpPort, udpPort, backend)
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(nft)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v\n%s", err, out)
	}
	run(t, "ip", "route", "add", "10.96.0.0/16", "dev", "lo") // the ClusterIP range routes somewhere, as on a node
	return tcpPort, udpPort
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// call makes one exchange with the ClusterIP and returns the client's tuple.
func call(t *testing.T, network string) Tuple {
	t.Helper()
	c, err := net.Dial(network, "10.96.7.7:80")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
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
	return Tuple{Proto: proto, Src: netip.MustParseAddrPort(c.LocalAddr().String()), Dst: netip.MustParseAddrPort("10.96.7.7:80")}
}

func TestLookupNamesTheDNATTarget(t *testing.T) {
	tcpPort, udpPort := inNetns(t)
	tab, err := Open(slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer tab.Close()
	tcp, udp := call(t, "tcp4"), call(t, "udp4")
	if err := tab.Refresh(); err != nil {
		t.Fatal(err)
	}
	if s := tab.Stats(); s.Entries != 2 || s.Dumps != 1 {
		t.Errorf("after one dump: %+v, want 2 entries", s)
	}
	for _, c := range []struct {
		tup  Tuple
		port int
	}{{tcp, tcpPort}, {udp, udpPort}} {
		to, ok := tab.Lookup(c.tup)
		if want := netip.AddrPortFrom(netip.MustParseAddr(backend), uint16(c.port)); !ok || to != want {
			t.Errorf("Lookup(%+v) = %v, %v; want %v", c.tup, to, ok, want)
		}
	}
	if s := tab.Stats(); s.Gets != 0 {
		t.Errorf("dumped connections cost %d gets, want 0", s.Gets)
	}

	// Made after the dump: one targeted get, then remembered.
	late := call(t, "tcp4")
	for i := 0; i < 2; i++ {
		if to, ok := tab.Lookup(late); !ok || int(to.Port()) != tcpPort {
			t.Errorf("Lookup of a connection newer than the dump = %v, %v", to, ok)
		}
	}
	if s := tab.Stats(); s.Gets != 1 {
		t.Errorf("gets = %d, want 1 (the second lookup is cached)", s.Gets)
	}

	// Not translated: no query at all.
	direct := Tuple{Proto: unix.IPPROTO_TCP, Src: netip.MustParseAddrPort("127.0.0.1:40000"), Dst: netip.AddrPortFrom(netip.MustParseAddr(backend), uint16(tcpPort))}
	if _, ok := tab.Lookup(direct); ok {
		t.Error("a direct connection was found translated")
	}
	if s := tab.Stats(); s.Gets != 1 {
		t.Errorf("gets = %d after a direct connection, want still 1", s.Gets)
	}

	// A virtual destination no dump has shown translated yet is worth a get.
	if err := tab.Refresh(); err != nil {
		t.Fatal(err)
	}
	other := Tuple{Proto: unix.IPPROTO_TCP, Src: netip.MustParseAddrPort("10.0.0.1:1234"), Dst: netip.MustParseAddrPort("10.96.9.9:443")}
	tab.Lookup(other)
	tab.SetVirtual(func(d netip.AddrPort, _ uint8) bool { return d.Addr() == netip.MustParseAddr("10.96.9.9") })
	tab.Lookup(other)
	tab.Lookup(other)
	if s := tab.Stats(); s.Gets != 2 {
		t.Errorf("gets = %d, want 2 (one for the virtual destination, its miss cached)", s.Gets)
	}
}
