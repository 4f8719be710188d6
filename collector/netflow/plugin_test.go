package netflow

import (
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"dkebpf/collector/flow"
	"dkebpf/collector/plugin/plugintest"
)

// fakeKernel is netflow's BPF object for the adapter: records in, as the kernel lays them out.
type fakeKernel struct {
	closed  plugintest.Ring
	live    []byte
	batches [][]byte          // instead of live: the walk hands these over one at a time
	udp     map[string][]byte // key bytes -> value bytes
	socks   map[uint64][]byte
	stats   []uint64
	deleted int
	want    []bool // what WantTCPOwners was told, walk by walk
}

func (k *fakeKernel) TCP() bool                       { return true }
func (k *fakeKernel) UDP() bool                       { return true }
func (k *fakeKernel) DrainClosed(fn func([]byte)) int { return k.closed.Drain(fn) }
func (k *fakeKernel) WantTCPOwners(on bool)           { k.want = append(k.want, on) }

func (k *fakeKernel) ReadLive(fn func([]byte)) error {
	if len(k.live) > 0 {
		fn(k.live)
	}
	for _, b := range k.batches {
		fn(b)
	}
	return nil
}
func (k *fakeKernel) ReadUDP(fn func(key, val []byte)) error {
	for kb, vb := range k.udp {
		fn([]byte(kb), vb)
	}
	return nil
}
func (k *fakeKernel) DeleteUDP(key []byte) error { delete(k.udp, string(key)); k.deleted++; return nil }
func (k *fakeKernel) LookupUDPSock(cookie uint64) ([]byte, bool) {
	b, ok := k.socks[cookie]
	return b, ok
}
func (k *fakeKernel) Stats() []uint64 { return k.stats }

func TestPluginTurnsKernelRecordsIntoPoints(t *testing.T) {
	tp := tuple(t, "10.0.0.1", 40000, "10.0.0.2", 80, flow.ProtoTCP)
	udpKey := UDPKey{Cookie: 7, Lport: 45000, Rport: 53, Family: flow.AFInet}
	copy(udpKey.Laddr[:], []byte{10, 0, 0, 1})
	copy(udpKey.Raddr[:], []byte{10, 0, 0, 53})
	sock := flow.Sock{Pid: 77, Dir: flow.DirOut, Netns: 1}
	copy(sock.Comm[:], "dig")
	k := &fakeKernel{
		closed: [][]byte{plugintest.Raw(t, rec(1, tp, flow.DirOut, 10, 20, true)), []byte("short")},
		live:   plugintest.Raw(t, rec(2, tuple(t, "10.0.0.1", 40001, "10.0.0.2", 80, flow.ProtoTCP), flow.DirOut, 5, 6, false)),
		udp:    map[string][]byte{string(plugintest.Raw(t, udpKey)): plugintest.Raw(t, UDPVal{BytesOut: 40, PktsOut: 1, BytesIn: 120, PktsIn: 1})},
		socks:  map[uint64][]byte{7: plugintest.Raw(t, sock)},
		stats:  []uint64{3, 4, 5},
	}
	p := NewPlugin(k, Config{EphemeralPort: 32768}, fakeOwners{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	p.Drain()
	pts := p.Flush(time.Unix(100, 0))
	if len(pts) != 2 {
		t.Fatalf("got %d points, want a TCP and a UDP one: %v", len(pts), pts)
	}
	byTransport := map[string]int{pts[0].Tags["transport"]: 0, pts[1].Tags["transport"]: 1}
	tcp, udp := pts[byTransport["tcp"]], pts[byTransport["udp"]]
	wantFields(t, tcp, map[string]int64{"bytes_written": 15, "bytes_read": 26, "tcp_established": 2, "tcp_closed": 1})
	wantFields(t, udp, map[string]int64{"bytes_written": 40, "bytes_read": 120, "datagrams_written": 1, "datagrams_read": 1})
	if udp.Tags["process_name"] != "dig" || udp.Tags["pid"] != "77" || udp.Tags["dst_port"] != "53" {
		t.Errorf("udp tags %v: want the owner the kernel learnt", udp.Tags)
	}
	c := p.Counters()
	if c.Events != 4 || c.DecodeErrors != 1 || c.Lost != 3 || c.MapFull != 9 {
		t.Errorf("counters %+v: want 4 events (2 closed, 1 live, 1 udp), 1 decode error, 3 lost, 9 map-full", c)
	}
}

// A connection that closes during the walk, its live record read before the close but handed over after
// the close record was drained (between two batches), is counted once, with its final counters.
func TestALiveRecordOlderThanItsDrainedCloseIsDropped(t *testing.T) {
	tp := tuple(t, "10.0.0.1", 40000, "10.0.0.2", 80, flow.ProtoTCP)
	other := tuple(t, "10.0.0.1", 40001, "10.0.0.2", 80, flow.ProtoTCP)
	k := &fakeKernel{batches: [][]byte{
		plugintest.Raw(t, rec(2, other, flow.DirOut, 3, 4, false)),
		plugintest.Raw(t, rec(1, tp, flow.DirOut, 5, 6, false)), // read before connection 1 closed
	}}
	p := NewPlugin(k, Config{EphemeralPort: 32768}, fakeOwners{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	closing := plugintest.Raw(t, rec(1, tp, flow.DirOut, 10, 20, true))
	p.SetPause(func() {
		if closing != nil { // connection 1 closes during the walk; the main loop drains between batches
			k.closed = append(k.closed, closing)
			closing = nil
		}
		p.Drain()
	})
	pt := only(t, p.Flush(time.Unix(100, 0)))
	wantFields(t, pt, map[string]int64{"bytes_written": 13, "bytes_read": 24, "tcp_established": 2, "tcp_closed": 1})
	// The next walk reads the connection no more (it left nf_socks at its close).
	k.batches = [][]byte{plugintest.Raw(t, rec(2, other, flow.DirOut, 3, 4, false))}
	if pts := p.Flush(time.Unix(110, 0)); len(pts) != 0 {
		t.Errorf("an idle interval reported %v", pts)
	}
}

// The kernel is asked to learn owners while a walk meets a socket without one that the last walk did not:
// a socket idle since it was asked for is left to /proc, and TCP sends and receives stop paying for it.
func TestOwnersAreAskedForOnceForEachOwnerlessSocket(t *testing.T) {
	ownerless := func(cookie uint64, port uint16) []byte {
		r := rec(cookie, tuple(t, "10.0.0.1", 80, "10.0.0.2", port, flow.ProtoTCP), flow.DirIn, 1, 1, false)
		r.Pid, r.Comm = 0, [16]byte{}
		return plugintest.Raw(t, r)
	}
	owned := plugintest.Raw(t, rec(9, tuple(t, "10.0.0.1", 40000, "10.0.0.2", 80, flow.ProtoTCP), flow.DirOut, 1, 1, false))
	k := &fakeKernel{}
	p := NewPlugin(k, Config{EphemeralPort: 32768}, fakeOwners{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for _, walk := range [][][]byte{
		{owned},                                    // nothing to learn
		{owned, ownerless(1, 50000)},               // a new one: ask
		{owned, ownerless(1, 50000)},               // asked for already: stop
		{ownerless(1, 50000), ownerless(2, 50001)}, // another new one: ask
		{ownerless(2, 50001)},                      // asked for already
		{ownerless(1, 50000)},                      // met again after a walk without it: ask again
	} {
		k.batches = walk
		p.Flush(time.Unix(100, 0))
	}
	want := []bool{false, true, false, true, false, true}
	if fmt.Sprint(k.want) != fmt.Sprint(want) {
		t.Errorf("WantTCPOwners walk by walk: %v, want %v", k.want, want)
	}
}
