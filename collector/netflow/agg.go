package netflow

import (
	"dkebpf/collector/flow"

	"net/netip"
	"time"

	"dkebpf/collector/point"
	"dkebpf/collector/procfs"
)

// Config is what the user can set about netflow.
type Config struct {
	EphemeralPort uint16      // ports at or above it are aggregated as "*" on the client side
	Filter        flow.Filter // what the user chose not to see
	NAT           flow.NAT    // names the DNAT target of outgoing connections; nil: dst_nat_ip is N/A
}

// OwnerLookup finds a socket's process by inode (procfs.Owners in production).
type OwnerLookup interface {
	Lookup(ino uint64) (procfs.Owner, bool)
	Refresh()
	// Scans is the number of /proc scans started so far; ScannedSince(n) reports whether a scan started after
	// Scans returned n has finished.
	Scans() uint64
	ScannedSince(n uint64) bool
}

// SockLookup returns the kernel's nf_socks entry of a cookie (the owner of a UDP socket).
type SockLookup func(cookie uint64) (flow.Sock, bool)

// udpIdleRounds is how many silent intervals a UDP (socket, peer) entry is kept before it is deleted.
const udpIdleRounds = 3

// Aggregator accumulates one interval of connections into flows, DataKit's netflow aggregation.
type Aggregator struct {
	cfg    Config
	owners OwnerLookup

	tcpLast  map[uint64]tcpSeen   // live TCP connections: counters already reported
	tcpWait  map[uint64]ownerWait // new connections not reported yet, waiting for their owner
	udpLast  map[UDPKey]udpSeen
	udpSocks map[uint64]flow.Sock // UDP socket cookie -> its nf_socks entry, once it names an owner
	comms    flow.CommNames
	flows    map[flow.Key]*flowAcc
	flushes  uint64
	domains  Domains // nil: no dst_domain/server_domain tags
}

type tcpSeen struct {
	written, read uint64
	retrans       uint32
	owner         procfs.Owner
	flush         uint64 // the last interval it was reported in
}

// tcpForgetAfter is how many intervals a connection may go unreported before it is forgotten (evicted
// from nf_socks, or its close record lost). Two: a close record can wait one drain in the ring buffer.
const tcpForgetAfter = 2

// ownerWaitRounds is how many live reads a new connection with no known owner waits for one before it is
// reported without: an accepted socket's owner is learnt in process context (or from /proc once accept()
// gave it a file), which may come just after a live read. Reported at once, its establishment would be
// counted in a flow with no process, and its bytes and close later in its process's. Its counters are
// cumulative: waiting loses nothing. One with a file also waits for a /proc scan started after it was first
// seen to finish (scans are rationed: on a loaded host one may not come within ownerWaitRounds short
// intervals), up to ownerWaitMax live reads.
const (
	ownerWaitRounds = 2
	ownerWaitMax    = 10
)

// ownerWait is a new connection waiting for its owner: the interval first seen, and the /proc scans started
// by then.
type ownerWait struct{ flush, scans uint64 }

type udpSeen struct {
	val  UDPVal
	idle int
}

type flowAcc struct {
	written, read, retrans  uint64
	established, closed     uint64
	rttSum, rttVarSum, rttN uint64
	pktsWritten, pktsRead   uint64
	mntns                   uint32 // the owner's mount namespace, the first one known
}

func NewAggregator(cfg Config, owners OwnerLookup) *Aggregator {
	return &Aggregator{
		cfg:      cfg,
		owners:   owners,
		tcpLast:  map[uint64]tcpSeen{},
		tcpWait:  map[uint64]ownerWait{},
		udpLast:  map[UDPKey]udpSeen{},
		udpSocks: map[uint64]flow.Sock{},
		comms:    flow.CommNames{},
		flows:    map[flow.Key]*flowAcc{},
	}
}

// AddTCP takes a connection's cumulative counters (live from the iterator, or final at close) and
// adds what is new since the last report. A connection seen for the first time counts as established,
// unless it was already open when the collector started.
func (a *Aggregator) AddTCP(r TCPRecord) {
	last, known := a.tcpLast[r.Cookie]
	owner := last.owner
	wait, waiting := a.tcpWait[r.Cookie]
	if r.Pid != 0 {
		owner = procfs.Owner{Pid: r.Pid, Comm: a.comms.Name(r.Comm), Mntns: r.Mntns}
	} else if owner.Pid == 0 && r.Ino != 0 && (known || waiting && wait.flush < a.flushes) {
		// /proc is searched for a socket seen without owner in an earlier walk, not at once: the kernel
		// learns most owners at the socket's next send or receive (WantTCPOwners), and a search reads
		// every open file of the host.
		owner, _ = a.owners.Lookup(uint64(r.Ino))
	}
	if !known && owner.Pid == 0 && r.Closed == 0 {
		if !waiting {
			wait = ownerWait{a.flushes, a.owners.Scans()}
			a.tcpWait[r.Cookie] = wait
		}
		// A socket without a file (r.Ino 0) is in no scan's answer: it does not wait for one.
		scanPending := r.Ino != 0 && !a.owners.ScannedSince(wait.scans)
		if waited := a.flushes - wait.flush; waited < ownerWaitRounds || waited < ownerWaitMax && scanPending {
			return
		}
	}
	delete(a.tcpWait, r.Cookie)
	// High-water marks: a counter read mid-update (FIN queued but not yet numbered) never goes backwards twice.
	cur := tcpSeen{written: max(r.BytesWritten, last.written), read: max(r.BytesRead, last.read),
		retrans: max(r.Retrans, last.retrans), owner: owner, flush: a.flushes}
	if r.Closed != 0 {
		delete(a.tcpLast, r.Cookie)
	} else {
		a.tcpLast[r.Cookie] = cur
	}
	dw, dr, drt := cur.written-last.written, cur.read-last.read, cur.retrans-last.retrans
	if known && dw == 0 && dr == 0 && drt == 0 && r.Closed == 0 {
		return // idle this interval
	}
	f := a.flow(r.T, r.Dir, owner, r.Netns)
	if f == nil {
		return
	}
	f.written += dw
	f.read += dr
	f.retrans += uint64(drt)
	if !known && r.Preexisting == 0 {
		f.established++
	}
	if r.Closed != 0 {
		f.closed++
	}
	if r.SrttUs > 0 {
		f.rttSum += uint64(r.SrttUs)
		f.rttVarSum += uint64(r.RttvarUs)
		f.rttN++
	}
}

// AddUDP takes one (socket, peer) counter pair and adds what is new. It returns whether the entry has
// been idle long enough to be deleted from the kernel map.
func (a *Aggregator) AddUDP(k UDPKey, v UDPVal, sock SockLookup) (forget bool) {
	last, known := a.udpLast[k]
	if known && (v.BytesOut < last.val.BytesOut || v.BytesIn < last.val.BytesIn) {
		last = udpSeen{} // evicted and re-created in the kernel: count from zero
	}
	d := UDPVal{v.BytesOut - last.val.BytesOut, v.BytesIn - last.val.BytesIn,
		v.PktsOut - last.val.PktsOut, v.PktsIn - last.val.PktsIn}
	if d.PktsOut == 0 && d.PktsIn == 0 {
		last.idle++
		a.udpLast[k] = last
		if last.idle >= udpIdleRounds {
			delete(a.udpLast, k)
			return true
		}
		return false
	}
	a.udpLast[k] = udpSeen{val: v}

	s, ok := a.udpSocks[k.Cookie]
	if !ok {
		if s, ok = sock(k.Cookie); ok && s.Pid != 0 {
			a.udpSocks[k.Cookie] = s
		}
	}
	dir := s.Dir
	if dir == 0 {
		dir = flow.DirOut // DataKit reports an unknown direction as outgoing
	}
	t := flow.Tuple{Saddr: k.Laddr, Daddr: k.Raddr, Sport: k.Lport, Dport: k.Rport, Family: k.Family, Proto: flow.ProtoUDP}
	f := a.flow(t, dir, procfs.Owner{Pid: s.Pid, Comm: a.comms.Name(s.Comm), Mntns: s.Mntns}, s.Netns)
	if f == nil {
		return false
	}
	f.written += d.BytesOut
	f.read += d.BytesIn
	f.pktsWritten += d.PktsOut
	f.pktsRead += d.PktsIn
	return false
}

// forgetIdleUDPSockets drops cached owners of UDP sockets whose peer entries are all gone.
func (a *Aggregator) forgetIdleUDPSockets() {
	live := map[uint64]bool{}
	for k := range a.udpLast {
		live[k.Cookie] = true
	}
	for c := range a.udpSocks {
		if !live[c] {
			delete(a.udpSocks, c)
		}
	}
}

func (a *Aggregator) flow(t flow.Tuple, dir uint8, owner procfs.Owner, netns uint32) *flowAcc {
	// Not part of the key: an owner bound by the kernel while exiting, or found in /proc where unreadable,
	// has none, and two points with the same tags at the same time would overwrite each other in an engine.
	mntns := owner.Mntns
	owner.Mntns = 0
	k := flow.NewKey(t, dir, a.cfg.EphemeralPort, owner, netns)
	if a.cfg.Filter.Ignores(k) {
		return nil
	}
	k.SetNAT(t, a.cfg.NAT)
	f := a.flows[k]
	if f == nil {
		f = &flowAcc{}
		a.flows[k] = f
	}
	if f.mntns == 0 {
		f.mntns = mntns
	}
	return f
}

// Flush returns the interval's netflow points, stamped at now, and starts a new interval.
func (a *Aggregator) Flush(now time.Time) []point.Point {
	pts := make([]point.Point, 0, len(a.flows))
	for k, f := range a.flows {
		if f.written == 0 && f.read == 0 && f.established == 0 && f.closed == 0 {
			continue
		}
		tags := k.Tags()
		if a.domains != nil {
			a.addDomains(tags, k, now)
		}
		pts = append(pts, point.Point{Name: "netflow", Tags: tags, Fields: f.fields(k), Time: now, Mntns: f.mntns})
	}
	a.flows = map[flow.Key]*flowAcc{}
	for c, seen := range a.tcpLast {
		if a.flushes-seen.flush >= tcpForgetAfter {
			delete(a.tcpLast, c)
		}
	}
	for c, wait := range a.tcpWait {
		if a.flushes-wait.flush > ownerWaitMax+tcpForgetAfter { // gone meanwhile (evicted, close lost)
			delete(a.tcpWait, c)
		}
	}
	a.flushes++
	a.forgetIdleUDPSockets()
	a.owners.Refresh()
	return pts
}

// Domains names an address by the DNS answer it came from (dnsflow's answer cache).
type Domains interface {
	Lookup(ip netip.Addr, now time.Time) (string, bool)
}

// SetDomains makes points carry DataKit's dst_domain and server_domain: the names whose DNS answers gave
// the remote and the server address, when the host looked them up.
func (a *Aggregator) SetDomains(d Domains) { a.domains = d }

func (a *Aggregator) addDomains(tags map[string]string, k flow.Key, now time.Time) {
	if d, ok := a.domains.Lookup(k.Dst, now); ok {
		tags["dst_domain"] = d
	}
	server := k.Dst
	if k.Direction == "incoming" {
		server = k.Src
	}
	if d, ok := a.domains.Lookup(server, now); ok {
		tags["server_domain"] = d
	}
}

func (f *flowAcc) fields(k flow.Key) map[string]any {
	fl := map[string]any{
		"bytes_written": int64(f.written),
		"bytes_read":    int64(f.read),
	}
	if k.Direction == "incoming" {
		fl["client_sent"], fl["server_sent"] = int64(f.read), int64(f.written)
	} else {
		fl["client_sent"], fl["server_sent"] = int64(f.written), int64(f.read)
	}
	if k.Transport == "udp" {
		fl["datagrams_written"] = int64(f.pktsWritten)
		fl["datagrams_read"] = int64(f.pktsRead)
		return fl
	}
	fl["retransmits"] = int64(f.retrans)
	fl["tcp_established"] = int64(f.established)
	fl["tcp_closed"] = int64(f.closed)
	if f.rttN > 0 {
		fl["rtt"] = int64(f.rttSum / f.rttN)
		fl["rtt_var"] = int64(f.rttVarSum / f.rttN)
	}
	return fl
}
