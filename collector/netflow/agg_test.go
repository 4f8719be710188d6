package netflow

import (
	"dkebpf/collector/flow"

	"bytes"
	"encoding/binary"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"dkebpf/collector/point"
	"dkebpf/collector/procfs"
)

type fakeOwners map[uint64]procfs.Owner

func (f fakeOwners) Lookup(ino uint64) (procfs.Owner, bool) { o, ok := f[ino]; return o, ok }
func (f fakeOwners) Refresh()                               {}
func (f fakeOwners) Scans() uint64                          { return 0 }
func (f fakeOwners) ScannedSince(uint64) bool               { return true } // every lookup's answer is in

func tuple(t *testing.T, src string, sport uint16, dst string, dport uint16, proto uint8) flow.Tuple {
	t.Helper()
	s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
	tp := flow.Tuple{Sport: sport, Dport: dport, Proto: proto, Family: flow.AFInet}
	if s.Is4() {
		a, b := s.As4(), d.As4()
		copy(tp.Saddr[:], a[:])
		copy(tp.Daddr[:], b[:])
	} else {
		tp.Family = flow.AFInet6
		tp.Saddr, tp.Daddr = s.As16(), d.As16()
	}
	return tp
}

func rec(cookie uint64, t flow.Tuple, dir uint8, written, read uint64, closed bool) TCPRecord {
	r := TCPRecord{Cookie: cookie, T: t, Dir: dir, BytesWritten: written, BytesRead: read, Pid: 42, SrttUs: 30, RttvarUs: 10}
	copy(r.Comm[:], "client")
	if closed {
		r.Closed = 1
	}
	return r
}

func flush(a *Aggregator) []point.Point { return a.Flush(time.Unix(100, 0)) }

func only(t *testing.T, pts []point.Point) point.Point {
	t.Helper()
	if len(pts) != 1 {
		t.Fatalf("got %d points, want 1: %v", len(pts), pts)
	}
	return pts[0]
}

func wantFields(t *testing.T, p point.Point, want map[string]int64) {
	t.Helper()
	for k, v := range want {
		if p.Fields[k] != v {
			t.Errorf("field %s = %v, want %d (all: %v)", k, p.Fields[k], v, p.Fields)
		}
	}
}

func TestDecodeRoundTripsEveryRecordType(t *testing.T) {
	for _, v := range []any{
		&TCPRecord{Cookie: 7, T: tuple(t, "10.0.0.1", 1, "10.0.0.2", 2, flow.ProtoTCP), BytesWritten: 1 << 40, BytesRead: 3, Retrans: 4, SrttUs: 5, RttvarUs: 6, Ino: 8, Pid: 9, Netns: 10, Comm: [16]byte{'n', 'g', 'x'}, Dir: flow.DirIn, Closed: 1, Preexisting: 1, Mntns: 13},
		&flow.Sock{T: tuple(t, "::1", 1, "::1", 2, flow.ProtoUDP), Sk: 11, Pid: 12, Dir: flow.DirOut, Established: 1, FinSent: 1, Mntns: 14},
		&UDPKey{Cookie: 13, Lport: 53, Rport: 5353, Family: flow.AFInet6},
		&UDPVal{BytesOut: 1, BytesIn: 2, PktsOut: 3, PktsIn: 4},
	} {
		var buf bytes.Buffer
		if err := binary.Write(&buf, binary.NativeEndian, v); err != nil {
			t.Fatal(err)
		}
		got := reflect.New(reflect.TypeOf(v).Elem()).Interface()
		if err := flow.Decode(buf.Bytes(), got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, v) {
			t.Errorf("round trip of %T: got %+v, want %+v", v, got, v)
		}
		if r, ok := v.(*TCPRecord); ok { // the hand-written decoder of the hot record agrees
			var hand TCPRecord
			if err := hand.UnmarshalBinary(buf.Bytes()); err != nil || hand != *r {
				t.Errorf("UnmarshalBinary: got %+v (%v), want %+v", hand, err, *r)
			}
			if err := hand.UnmarshalBinary(buf.Bytes()[:buf.Len()-1]); err == nil {
				t.Error("UnmarshalBinary of a short record succeeded")
			}
		}
		if err := flow.Decode(buf.Bytes()[:buf.Len()-1], got); err == nil {
			t.Errorf("decoding a short %T succeeded", v)
		}
	}
	if _, err := DecodeTCPRecords(make([]byte, SizeTCPRecord+1)); err == nil {
		t.Error("iterator output of a partial record decoded without error")
	}
}

func TestLiveConnectionReportsEachIntervalsDelta(t *testing.T) {
	a := NewAggregator(Config{EphemeralPort: 32768}, fakeOwners{})
	tp := tuple(t, "10.0.0.1", 40000, "10.0.0.2", 80, flow.ProtoTCP)

	a.AddTCP(rec(1, tp, flow.DirOut, 100, 50, false))
	wantFields(t, only(t, flush(a)), map[string]int64{"bytes_written": 100, "bytes_read": 50, "tcp_established": 1, "tcp_closed": 0, "rtt": 30, "rtt_var": 10})

	a.AddTCP(rec(1, tp, flow.DirOut, 300, 50, false))
	wantFields(t, only(t, flush(a)), map[string]int64{"bytes_written": 200, "bytes_read": 0, "tcp_established": 0})

	a.AddTCP(rec(1, tp, flow.DirOut, 300, 50, false)) // idle interval: nothing to report
	if pts := flush(a); len(pts) != 0 {
		t.Errorf("idle connection produced %v", pts)
	}

	a.AddTCP(rec(1, tp, flow.DirOut, 350, 60, true))
	wantFields(t, only(t, flush(a)), map[string]int64{"bytes_written": 50, "bytes_read": 10, "tcp_closed": 1, "tcp_established": 0})
}

func TestShortConnectionCountsOnceFromItsCloseRecord(t *testing.T) {
	a := NewAggregator(Config{EphemeralPort: 32768}, fakeOwners{})
	tp := tuple(t, "10.0.0.1", 40000, "10.0.0.2", 80, flow.ProtoTCP)
	a.AddTCP(rec(1, tp, flow.DirOut, 10, 20, true))
	a.AddTCP(rec(2, tuple(t, "10.0.0.1", 40001, "10.0.0.2", 80, flow.ProtoTCP), flow.DirOut, 1, 2, true))
	p := only(t, flush(a))
	wantFields(t, p, map[string]int64{"bytes_written": 11, "bytes_read": 22, "tcp_established": 2, "tcp_closed": 2, "client_sent": 11, "server_sent": 22})
	if p.Tags["src_port"] != "*" || p.Tags["dst_port"] != "80" || p.Tags["direction"] != "outgoing" || p.Tags["conn_side"] != "client" {
		t.Errorf("tags %v", p.Tags)
	}
}

func TestCounterReadMidUpdateNeverCountsTwice(t *testing.T) {
	a := NewAggregator(Config{EphemeralPort: 32768}, fakeOwners{})
	tp := tuple(t, "10.0.0.1", 40000, "10.0.0.2", 80, flow.ProtoTCP)
	a.AddTCP(rec(1, tp, flow.DirOut, 100, 0, false))
	a.AddTCP(rec(1, tp, flow.DirOut, 99, 0, false)) // FIN marked, not yet numbered
	a.AddTCP(rec(1, tp, flow.DirOut, 100, 0, true))
	wantFields(t, only(t, flush(a)), map[string]int64{"bytes_written": 100, "tcp_established": 1, "tcp_closed": 1})
}

func TestPreexistingConnectionIsNotCountedAsEstablished(t *testing.T) {
	a := NewAggregator(Config{EphemeralPort: 32768}, fakeOwners{})
	r := rec(1, tuple(t, "10.0.0.1", 40000, "10.0.0.2", 80, flow.ProtoTCP), flow.DirOut, 5, 5, true)
	r.Preexisting = 1
	wantFields(t, only(t, flush2(a, r)), map[string]int64{"tcp_established": 0, "tcp_closed": 1})
}

func flush2(a *Aggregator, rs ...TCPRecord) []point.Point {
	for _, r := range rs {
		a.AddTCP(r)
	}
	return flush(a)
}

func TestPortsAtOrAboveEphemeralAggregateOnTheClientSide(t *testing.T) {
	a := NewAggregator(Config{EphemeralPort: 32768}, fakeOwners{})
	in := rec(1, tuple(t, "192.168.1.5", 8080, "10.0.0.9", 50000, flow.ProtoTCP), flow.DirIn, 1, 1, true)
	low := rec(2, tuple(t, "192.168.1.5", 1000, "10.0.0.9", 22, flow.ProtoTCP), flow.DirOut, 1, 1, true)
	pts := flush2(a, in, low)
	if len(pts) != 2 {
		t.Fatalf("points: %v", pts)
	}
	for _, p := range pts {
		switch p.Tags["direction"] {
		case "incoming":
			if p.Tags["src_port"] != "8080" || p.Tags["dst_port"] != "*" || p.Tags["server_port"] != "8080" ||
				p.Tags["client_port"] != "*" || p.Tags["server_ip_type"] != "private" || p.Tags["client_ip_type"] != "private" {
				t.Errorf("incoming tags %v", p.Tags)
			}
		case "outgoing":
			if p.Tags["src_port"] != "1000" {
				t.Errorf("a client port below the ephemeral range was aggregated: %v", p.Tags)
			}
		}
	}
}

func TestFiltersAndAddressForms(t *testing.T) {
	lo := netip.MustParsePrefix("127.0.0.0/8")
	cases := []struct {
		name string
		cfg  Config
		r    TCPRecord
		want map[string]string // nil: dropped
	}{
		{"loopback kept by default", Config{}, rec(1, tuple(t, "127.0.0.1", 1, "127.0.0.1", 2, flow.ProtoTCP), flow.DirOut, 1, 1, true),
			map[string]string{"family": "IPv4", "dst_ip_type": "loopback"}},
		{"ignored CIDR", Config{Filter: flow.Filter{IgnoreCIDRs: []netip.Prefix{lo}}}, rec(1, tuple(t, "127.0.0.1", 1, "127.0.0.1", 2, flow.ProtoTCP), flow.DirOut, 1, 1, true), nil},
		{"IPv4-mapped reported as IPv4", Config{}, rec(1, tuple(t, "::ffff:10.0.0.1", 1, "::ffff:8.8.8.8", 2, flow.ProtoTCP), flow.DirOut, 1, 1, true),
			map[string]string{"family": "IPv4", "src_ip": "10.0.0.1", "dst_ip": "8.8.8.8", "dst_ip_type": "other"}},
		{"IPv6 disabled", Config{Filter: flow.Filter{IPv6Disabled: true}}, rec(1, tuple(t, "::1", 1, "::1", 2, flow.ProtoTCP), flow.DirOut, 1, 1, true), nil},
		{"multicast", Config{}, rec(1, tuple(t, "10.0.0.1", 1, "239.1.1.1", 2, flow.ProtoTCP), flow.DirOut, 1, 1, true),
			map[string]string{"dst_ip_type": "multicast", "src_ip_type": "private"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pts := flush2(NewAggregator(c.cfg, fakeOwners{}), c.r)
			if c.want == nil {
				if len(pts) != 0 {
					t.Errorf("not dropped: %v", pts)
				}
				return
			}
			p := only(t, pts)
			for k, v := range c.want {
				if p.Tags[k] != v {
					t.Errorf("tag %s = %q, want %q", k, p.Tags[k], v)
				}
			}
		})
	}
}

func TestOwnerFoundByInodeStaysWithTheConnection(t *testing.T) {
	owners := fakeOwners{77: {Pid: 1234, Comm: "nginx"}}
	a := NewAggregator(Config{EphemeralPort: 32768}, owners)
	tp := tuple(t, "10.0.0.1", 80, "10.0.0.2", 40000, flow.ProtoTCP)
	live := rec(1, tp, flow.DirIn, 10, 10, false)
	live.Pid, live.Comm, live.Ino = 0, [16]byte{}, 77
	// Seen first without an owner, it waits a walk for the kernel to learn one; /proc is searched at the next.
	if pts := flush2(a, live); len(pts) != 0 {
		t.Fatalf("reported (or searched /proc) at its first sighting: %v", pts)
	}
	p := only(t, flush2(a, live))
	if p.Tags["pid"] != "1234" || p.Tags["process_name"] != "nginx" {
		t.Errorf("owner not resolved by inode: %v", p.Tags)
	}
	delete(owners, 77) // the socket is gone from /proc by the time it closes
	closed := live
	closed.Ino, closed.Closed, closed.BytesWritten = 0, 1, 20
	if p := only(t, flush2(a, closed)); p.Tags["pid"] != "1234" {
		t.Errorf("close record lost the owner: %v", p.Tags)
	}
}

// An accepted connection read live before its owner is known waits for it (up to ownerWaitRounds live
// reads), so that its establishment is counted in its process's flow with its bytes and close.
func TestNewConnectionWaitsForItsOwner(t *testing.T) {
	owners := fakeOwners{}
	a := NewAggregator(Config{EphemeralPort: 32768}, owners)
	tp := tuple(t, "10.0.0.1", 80, "10.0.0.2", 40000, flow.ProtoTCP)
	live := rec(1, tp, flow.DirIn, 10, 10, false)
	live.Pid, live.Comm, live.Ino = 0, [16]byte{}, 0 // not accepted yet: no file, no owner
	a.AddTCP(live)
	if pts := flush(a); len(pts) != 0 {
		t.Fatalf("an ownerless new connection was reported at once: %v", pts)
	}
	owned := rec(1, tp, flow.DirIn, 30, 10, false) // its owner, learnt by the next read
	a.AddTCP(owned)
	p := only(t, flush(a))
	if p.Tags["pid"] != "42" {
		t.Errorf("owner: %v", p.Tags)
	}
	wantFields(t, p, map[string]int64{"tcp_established": 1, "bytes_written": 30, "bytes_read": 10})

	// One whose owner never comes is reported without one after ownerWaitRounds reads, once, whole.
	orphan := rec(2, tp, flow.DirIn, 5, 5, false)
	orphan.Pid, orphan.Comm = 0, [16]byte{}
	for range ownerWaitRounds {
		a.AddTCP(orphan)
		if pts := flush(a); len(pts) != 0 {
			t.Fatalf("reported before its wait ended: %v", pts)
		}
	}
	a.AddTCP(orphan)
	p = only(t, flush(a))
	if p.Tags["pid"] != "0" && p.Tags["pid"] != "" {
		t.Errorf("orphan owner: %v", p.Tags)
	}
	wantFields(t, p, map[string]int64{"tcp_established": 1, "bytes_written": 5, "bytes_read": 5})
}

// slowOwners is a /proc whose scans take several intervals: the scan a lookup starts finishes after `lookups` more
// lookups, and only then holds the socket.
type slowOwners struct {
	owners             fakeOwners
	started, finished  uint64
	lookups, remaining int
}

func (s *slowOwners) Lookup(ino uint64) (procfs.Owner, bool) {
	if s.remaining > 0 {
		if s.remaining--; s.remaining == 0 {
			s.finished = s.started
		}
	} else if s.finished < s.started || s.started == 0 {
		s.started++
		s.remaining = s.lookups
	}
	if s.finished == 0 {
		return procfs.Owner{}, false
	}
	return s.owners.Lookup(ino)
}
func (s *slowOwners) Refresh()                   {}
func (s *slowOwners) Scans() uint64              { return s.started }
func (s *slowOwners) ScannedSince(n uint64) bool { return s.finished > n }

// On a loaded host a /proc scan can take longer than ownerWaitRounds intervals: a new connection without an
// owner waits for one started after it was first seen to finish (up to ownerWaitMax reads), so that its
// establishment is counted in its owner's flow, not in one without a process.
func TestNewConnectionWaitsForAScanOfProc(t *testing.T) {
	owners := &slowOwners{owners: fakeOwners{77: {Pid: 1234, Comm: "server"}}, lookups: ownerWaitRounds + 2}
	a := NewAggregator(Config{EphemeralPort: 32768}, owners)
	tp := tuple(t, "10.0.0.1", 80, "10.0.0.2", 40000, flow.ProtoTCP)
	live := rec(1, tp, flow.DirIn, 10, 10, false)
	live.Pid, live.Comm, live.Ino = 0, [16]byte{}, 77
	var pts []point.Point
	rounds := 0
	for ; len(pts) == 0 && rounds < ownerWaitMax+1; rounds++ {
		a.AddTCP(live)
		pts = flush(a)
	}
	p := only(t, pts)
	if p.Tags["pid"] != "1234" || rounds <= ownerWaitRounds+1 {
		t.Errorf("after %d reads: %v, want the owner the slow scan found, after more than %d reads", rounds, p.Tags, ownerWaitRounds+1)
	}
	wantFields(t, p, map[string]int64{"tcp_established": 1, "bytes_written": 10, "bytes_read": 10})

	// A scan that never ends: reported without an owner after ownerWaitMax reads.
	stuck := &slowOwners{lookups: 1 << 30}
	a = NewAggregator(Config{EphemeralPort: 32768}, stuck)
	for range ownerWaitMax {
		a.AddTCP(live)
		if pts := flush(a); len(pts) != 0 {
			t.Fatalf("reported before ownerWaitMax reads: %v", pts)
		}
	}
	a.AddTCP(live)
	if p := only(t, flush(a)); p.Tags["pid"] != "0" && p.Tags["pid"] != "" {
		t.Errorf("owner %v", p.Tags)
	}

	// A socket with no file yet is in no scan's answer: it waits ownerWaitRounds reads, not for a scan.
	a = NewAggregator(Config{EphemeralPort: 32768}, &slowOwners{lookups: 1 << 30})
	noFile := live
	noFile.Ino = 0
	for range ownerWaitRounds {
		a.AddTCP(noFile)
		if pts := flush(a); len(pts) != 0 {
			t.Fatalf("reported before ownerWaitRounds reads: %v", pts)
		}
	}
	a.AddTCP(noFile)
	only(t, flush(a))
}

func TestUDPCountsDeltasAndForgetsIdlePeers(t *testing.T) {
	a := NewAggregator(Config{EphemeralPort: 32768}, fakeOwners{})
	k := UDPKey{Cookie: 5, Lport: 53, Rport: 45000, Family: flow.AFInet}
	copy(k.Laddr[:], []byte{127, 0, 0, 1})
	copy(k.Raddr[:], []byte{127, 0, 0, 1})
	owner := func(uint64) (flow.Sock, bool) {
		s := flow.Sock{Pid: 99, Dir: flow.DirIn, Netns: 4026531840}
		copy(s.Comm[:], "dnsmasq")
		return s, true
	}
	a.AddUDP(k, UDPVal{BytesOut: 300, BytesIn: 100, PktsOut: 3, PktsIn: 3}, owner)
	p := only(t, flush(a))
	wantFields(t, p, map[string]int64{"bytes_written": 300, "bytes_read": 100, "datagrams_written": 3, "datagrams_read": 3, "server_sent": 300})
	if p.Tags["transport"] != "udp" || p.Tags["direction"] != "incoming" || p.Tags["src_port"] != "53" || p.Tags["dst_port"] != "*" ||
		p.Tags["process_name"] != "dnsmasq" || p.Tags["netns"] != "4026531840" {
		t.Errorf("tags %v", p.Tags)
	}
	if _, ok := p.Fields["tcp_established"]; ok {
		t.Errorf("udp point carries tcp fields: %v", p.Fields)
	}
	a.AddUDP(k, UDPVal{BytesOut: 400, BytesIn: 100, PktsOut: 4, PktsIn: 3}, owner)
	wantFields(t, only(t, flush(a)), map[string]int64{"bytes_written": 100, "datagrams_written": 1, "bytes_read": 0})

	for i := 1; i <= udpIdleRounds; i++ {
		forget := a.AddUDP(k, UDPVal{BytesOut: 400, BytesIn: 100, PktsOut: 4, PktsIn: 3}, owner)
		if forget != (i == udpIdleRounds) {
			t.Errorf("idle round %d: forget = %v", i, forget)
		}
		if pts := flush(a); len(pts) != 0 {
			t.Errorf("idle peer produced %v", pts)
		}
	}
	// Re-created from zero in the kernel after being forgotten: counted from zero.
	a.AddUDP(k, UDPVal{BytesOut: 10, PktsOut: 1}, owner)
	wantFields(t, only(t, flush(a)), map[string]int64{"bytes_written": 10, "datagrams_written": 1})
}

func TestConnectionsNoLongerReportedAreForgotten(t *testing.T) {
	a := NewAggregator(Config{EphemeralPort: 32768}, fakeOwners{})
	tp := tuple(t, "10.0.0.1", 40000, "10.0.0.2", 80, flow.ProtoTCP)
	a.AddTCP(rec(1, tp, flow.DirOut, 100, 0, false))
	flush(a)
	flush(a) // evicted from the kernel map: no live record, no close record
	flush(a)
	if len(a.tcpLast) != 0 {
		t.Fatalf("a connection unreported for %d intervals is still remembered", tcpForgetAfter)
	}

	// A close record that waited one drain is still matched with what was reported.
	a.AddTCP(rec(2, tp, flow.DirOut, 100, 0, false))
	flush(a)
	flush(a)
	wantFields(t, only(t, flush2(a, rec(2, tp, flow.DirOut, 150, 0, true))), map[string]int64{"bytes_written": 50, "tcp_established": 0, "tcp_closed": 1})
}

type fakeDomains map[string]string

func (f fakeDomains) Lookup(ip netip.Addr, _ time.Time) (string, bool) {
	d, ok := f[ip.String()]
	return d, ok
}

func TestDomainsNameTheRemoteAndTheServer(t *testing.T) {
	a := NewAggregator(Config{EphemeralPort: 32768}, fakeOwners{})
	a.SetDomains(fakeDomains{"10.0.0.2": "api.example.com", "10.0.0.9": "client.example.com"})
	a.AddTCP(rec(1, tuple(t, "10.0.0.1", 40000, "10.0.0.2", 80, flow.ProtoTCP), flow.DirOut, 1, 1, false))
	out := only(t, flush(a))
	if out.Tags["dst_domain"] != "api.example.com" || out.Tags["server_domain"] != "api.example.com" {
		t.Errorf("outgoing: dst_domain %q, server_domain %q; want both api.example.com", out.Tags["dst_domain"], out.Tags["server_domain"])
	}
	a.AddTCP(rec(2, tuple(t, "10.0.0.1", 80, "10.0.0.9", 40000, flow.ProtoTCP), flow.DirIn, 1, 1, false))
	in := only(t, flush(a))
	if _, ok := in.Tags["server_domain"]; ok || in.Tags["dst_domain"] != "client.example.com" {
		t.Errorf("incoming: dst_domain %q, server_domain %q; want the client's name and no server_domain (this host)", in.Tags["dst_domain"], in.Tags["server_domain"])
	}
	a.AddTCP(rec(3, tuple(t, "10.0.0.1", 40001, "10.0.0.3", 80, flow.ProtoTCP), flow.DirOut, 1, 1, false))
	if p := only(t, flush(a)); p.Tags["dst_domain"] != "" || p.Tags["server_domain"] != "" {
		t.Errorf("unknown address got domains %v", p.Tags)
	}
}

// A process's connections are one flow whether or not each owner came with its mount namespace (the kernel
// binds none to an exiting task): two points with the same tags at the same time overwrite each other in an
// engine.
func TestOwnersWithAndWithoutMountNamespaceAreOneFlow(t *testing.T) {
	a := NewAggregator(Config{EphemeralPort: 32768}, fakeOwners{})
	with := rec(1, tuple(t, "10.0.0.1", 40000, "10.0.0.2", 80, flow.ProtoTCP), flow.DirOut, 10, 20, true)
	with.Mntns = 7
	without := rec(2, tuple(t, "10.0.0.1", 40001, "10.0.0.2", 80, flow.ProtoTCP), flow.DirOut, 1, 2, true)
	a.AddTCP(without)
	a.AddTCP(with)
	p := only(t, flush(a))
	wantFields(t, p, map[string]int64{"bytes_written": 11, "bytes_read": 22, "tcp_closed": 2})
	if p.Mntns != 7 {
		t.Errorf("point's mount namespace %d, want 7 (the one known)", p.Mntns)
	}
}
