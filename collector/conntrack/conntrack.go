// Package conntrack names where the kernel's destination NAT sent a connection: DataKit's dst_nat_ip and
// dst_nat_port, so a call to a Kubernetes ClusterIP names the pod that answered. It reads the kernel's
// conntrack table over netlink (github.com/ti-mo/conntrack).
//
// The table is per network namespace: the collector must run in the host's (hostNetwork), where
// kube-proxy translates pods' connections (PREROUTING) and host processes' (OUTPUT); from a pod's own
// namespace none of them is visible. A dump at each flush holds the translated connections still in the
// table, closed ones included (a TCP entry stays 120 s in TIME_WAIT). A connection born and gone between
// two dumps is asked for by its tuple, but only when its destination is one known to be translated (seen
// in the last dump, or a ClusterIP), so that all other connections cost no syscall.
package conntrack

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"

	ct "github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// Tuple is a connection as its client's socket sees it.
type Tuple struct {
	Proto    uint8 // 6 TCP, 17 UDP (syscall.IPPROTO_*)
	Src, Dst netip.AddrPort
}

// Stats counts the table's work since Open, for the collector's self-metric.
type Stats struct {
	Dumps   uint64 // Refresh calls
	Entries uint64 // translated connections in the last successful dump
	Gets    uint64 // targeted queries by tuple
	Hits    uint64 // Lookups answered
	Errors  uint64 // failed dumps and queries
}

// dest is a translated ("virtual") destination, such as a ClusterIP's ip:port.
type dest struct {
	proto uint8
	addr  netip.AddrPort
}

// Table answers Lookup from the last dump and from targeted queries. Safe for concurrent use.
type Table struct {
	conn *ct.Conn
	log  *slog.Logger

	mu      sync.Mutex
	nat     map[Tuple]netip.AddrPort // translated connections; the zero AddrPort caches a miss
	virtual map[dest]struct{}        // destinations seen translated in the last dump
	isVIP   func(netip.AddrPort, uint8) bool
	stats   Stats
}

// Open connects to the conntrack table of the calling thread's network namespace.
func Open(log *slog.Logger) (*Table, error) {
	c, err := ct.Dial(nil)
	if err != nil {
		return nil, fmt.Errorf("conntrack netlink: %w", err)
	}
	return &Table{conn: c, log: log, nat: map[Tuple]netip.AddrPort{}, virtual: map[dest]struct{}{}}, nil
}

// Close releases the netlink socket.
func (t *Table) Close() error { return t.conn.Close() }

// SetVirtual adds destinations worth a query although no dump has shown them translated yet (the
// Kubernetes ClusterIPs).
func (t *Table) SetVirtual(f func(dst netip.AddrPort, proto uint8) bool) {
	t.mu.Lock()
	t.isVIP = f
	t.mu.Unlock()
}

// Refresh dumps the translated connections once and replaces what the last dump and queries knew. On
// error the previous state is kept.
func (t *Table) Refresh() error {
	// The kernel filters on the status bit since 5.15; older ones ignore the filter and send everything,
	// which translated() sorts out.
	flows, err := t.conn.DumpFilter(ct.NewFilter().Status(ct.StatusDstNAT), nil)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stats.Dumps++
	if err != nil {
		t.stats.Errors++
		return fmt.Errorf("conntrack dump: %w", err)
	}
	t.nat = make(map[Tuple]netip.AddrPort, len(flows))
	t.virtual = map[dest]struct{}{}
	for _, f := range flows {
		if orig, to, ok := translated(f); ok {
			t.nat[orig] = to
			t.virtual[dest{orig.Proto, orig.Dst}] = struct{}{}
		}
	}
	t.stats.Entries = uint64(len(t.nat))
	return nil
}

// translated returns a connection's original tuple and where DNAT sent it: the reply's source.
func translated(f ct.Flow) (Tuple, netip.AddrPort, bool) {
	o, r := f.TupleOrig, f.TupleReply
	orig := Tuple{Proto: o.Proto.Protocol,
		Src: netip.AddrPortFrom(o.IP.SourceAddress.Unmap(), o.Proto.SourcePort),
		Dst: netip.AddrPortFrom(o.IP.DestinationAddress.Unmap(), o.Proto.DestinationPort)}
	to := netip.AddrPortFrom(r.IP.SourceAddress.Unmap(), r.Proto.SourcePort)
	return orig, to, f.Status.DstNAT() && to != orig.Dst
}

// Lookup returns where DNAT sent the connection c.
func (t *Table) Lookup(c Tuple) (netip.AddrPort, bool) {
	c.Src = netip.AddrPortFrom(c.Src.Addr().Unmap(), c.Src.Port())
	c.Dst = netip.AddrPortFrom(c.Dst.Addr().Unmap(), c.Dst.Port())
	t.mu.Lock()
	defer t.mu.Unlock()
	to, known := t.nat[c]
	if !known {
		if _, ok := t.virtual[dest{c.Proto, c.Dst}]; !ok && (t.isVIP == nil || !t.isVIP(c.Dst, c.Proto)) {
			return netip.AddrPort{}, false
		}
		to = t.get(c)
		t.nat[c] = to // a miss is remembered too, until the next dump
	}
	if !to.IsValid() {
		return netip.AddrPort{}, false
	}
	t.stats.Hits++
	return to, true
}

// get asks the kernel for one connection by its original tuple; the zero AddrPort when it is not there
// or not translated.
func (t *Table) get(c Tuple) netip.AddrPort {
	t.stats.Gets++
	q := ct.Flow{TupleOrig: ct.Tuple{
		IP:    ct.IPTuple{SourceAddress: c.Src.Addr(), DestinationAddress: c.Dst.Addr()},
		Proto: ct.ProtoTuple{Protocol: c.Proto, SourcePort: c.Src.Port(), DestinationPort: c.Dst.Port()}}}
	f, err := t.conn.Get(q)
	if err != nil {
		if !errors.Is(err, unix.ENOENT) { // ENOENT: gone, or never tracked
			t.stats.Errors++
			t.log.Debug("conntrack get", "tuple", c, "err", err)
		}
		return netip.AddrPort{}
	}
	// The kernel matches either direction: only an entry that c originated counts.
	if orig, to, ok := translated(f); ok && orig == c {
		return to
	}
	return netip.AddrPort{}
}

// Stats returns the counters.
func (t *Table) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stats
}
