package dnsflow

import (
	"dkebpf/collector/flow"

	"net/netip"
	"slices"
	"time"

	"dkebpf/collector/point"
)

// Defaults of the Config fields left zero.
const (
	DefaultTimeout     = 6 * time.Second // DataKit's query timeout
	DefaultMaxInFlight = 65536
	DefaultMaxNames    = 16384
	DefaultMaxStreams  = 4096
)

// DefaultPorts are the DNS server ports when Config.Ports is empty.
var DefaultPorts = []uint16{53}

// Config is what the user (and the collector) can set about dnsflow.
type Config struct {
	Ports         []uint16      // DNS server ports; a port tag is its number if in Ports, else "*"
	Timeout       time.Duration // a query unanswered this long is reported with rcode -1
	MaxInFlight   int           // queries awaiting an answer; beyond it the oldest is dropped
	MaxNames      int           // addresses in the name cache
	MaxStreams    int           // TCP connections being reassembled
	EphemeralPort uint16        // unused: the port rule above replaces it (kept so one setting feeds every plugin)
	Filter        flow.Filter   // what the user chose not to see
	// Owner finds the process of a socket whose record was not sent in its owner's context (the kernel's
	// UDP socket-owner map), and its network namespace. May be nil.
	Owner func(cookie uint64) (p flow.Proc, netns uint32, ok bool)
}

// Stats counts, since the Tracker was created, what it saw and what it did not report.
type Stats struct {
	Queries          uint64 // queries tracked (not ignored)
	Answers          uint64 // answers matched to a tracked query
	Timeouts         uint64 // queries reported unanswered: timed out, or replaced by a retry with the same key
	UnmatchedAnswers uint64 // answers with no query in flight (not reported)
	Malformed        uint64 // records or DNS messages that could not be parsed
	TCPDesyncs       uint64 // TCP streams abandoned because message boundaries were lost
	InFlight         uint64 // queries awaiting an answer now
	InFlightEvicted  uint64 // queries dropped unreported because the in-flight table was full
	NamesEvicted     uint64 // name cache entries dropped before their TTL because the cache was full
	StreamsEvicted   uint64 // TCP connections dropped because MaxStreams were being reassembled
	Ignored          uint64 // filtered: IgnoreCIDRs, IPv6 while disabled, datakit* processes, answers sent or queries received
}

// Tracker matches a client's DNS answers to its queries and aggregates them into points. It is not safe
// for concurrent use; its NameCache is.
type Tracker struct {
	cfg       Config
	timeoutNs uint64
	ports     []uint16

	inflight map[queryKey]*query
	fifo     query // sentinel of the in-flight queries in arrival order (fifo.next is the oldest)
	conns    map[uint64]*conn
	names    *NameCache
	comms    flow.CommNames
	points   map[aggKey]*acc
	stats    Stats
	now      func() time.Time // wall clock of name cache TTLs (tests replace it)
}

// NewTracker returns an empty Tracker, with defaults for the Config fields left zero.
func NewTracker(cfg Config) *Tracker {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.MaxNames <= 0 {
		cfg.MaxNames = DefaultMaxNames
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = DefaultMaxStreams
	}
	ports := slices.Clone(cfg.Ports)
	if len(ports) == 0 {
		ports = slices.Clone(DefaultPorts)
	}
	t := &Tracker{
		cfg:       cfg,
		timeoutNs: uint64(cfg.Timeout),
		ports:     ports,
		inflight:  map[queryKey]*query{},
		conns:     map[uint64]*conn{},
		names:     newNameCache(cfg.MaxNames),
		comms:     flow.CommNames{},
		points:    map[aggKey]*acc{},
		now:       time.Now,
	}
	t.fifo.next, t.fifo.prev = &t.fifo, &t.fifo
	return t
}

const (
	afInet   = 2
	afInet6  = 10
	protoTCP = 6
	protoUDP = 17
)

// owner is the process that sent a query, and its network namespace.
type owner struct {
	flow.Proc
	netns uint32
}

// rec is what a DNS message carries over from its record (or, for TCP, from the segment it started in).
type rec struct {
	t        flow.Tuple
	cookie   uint64
	ts       uint64
	egress   bool
	owner    owner
	hasOwner bool
}

// Add takes one kernel record: a UDP datagram or a TCP segment.
func (t *Tracker) Add(e *Event) {
	if e.T.Proto != protoUDP && e.T.Proto != protoTCP || e.T.Family != afInet && e.T.Family != afInet6 {
		t.stats.Malformed++
		return
	}
	if t.filtered(flow.Addr(e.T.Family, e.T.Daddr)) {
		t.stats.Ignored++
		return
	}
	if e.Flags&FlagNames != 0 { // paired and counted in the kernel: its addresses only
		if m, err := parse(e.payload()); err == nil && m.response {
			t.learnNames(m.qname, &m)
		} else {
			t.stats.Malformed++
		}
		return
	}
	r := rec{t: e.T, cookie: e.Cookie, ts: e.TsNs, egress: e.Flags&FlagEgress != 0}
	if e.Flags&FlagOwner != 0 {
		r.owner, r.hasOwner = owner{flow.Proc{Pid: e.Pid, Comm: t.comms.Name(e.Comm), Mntns: e.Mntns}, e.Netns}, true
	}
	if e.T.Proto == protoTCP {
		t.segment(e, r)
		return
	}
	t.message(r, e.payload())
}

// filtered reports whether the user's settings drop the exchanges with server.
func (t *Tracker) filtered(server netip.Addr) bool { return t.cfg.Filter.Drops(server) }

// message handles one whole DNS message (a datagram, or reassembled from TCP).
func (t *Tracker) message(r rec, b []byte) {
	m, err := parse(b)
	if err != nil {
		t.stats.Malformed++
		return
	}
	if r.egress == m.response { // an answer we sent or a query we received: not a client's exchange
		t.stats.Ignored++
		return
	}
	if r.egress {
		t.query(r, &m)
	} else {
		t.answer(r, &m)
	}
}

// Expire reports the queries unanswered for Config.Timeout at nowMono (CLOCK_MONOTONIC ns, the clock of
// the records) and forgets TCP connections idle as long.
func (t *Tracker) Expire(nowMono uint64) {
	for q := t.fifo.next; q != &t.fifo && nowMono >= q.ts && nowMono-q.ts >= t.timeoutNs; q = t.fifo.next {
		t.remove(q)
		t.unanswered(q)
	}
	t.expireConns(nowMono)
}

// Names returns the cache of answered addresses.
func (t *Tracker) Names() *NameCache { return t.names }

// Stats returns the Tracker's counters.
func (t *Tracker) Stats() Stats {
	s := t.stats
	s.InFlight = uint64(len(t.inflight))
	s.NamesEvicted = t.names.evictions()
	return s
}

// Flush returns the interval's dnsflow points, stamped at now, and starts a new interval.
func (t *Tracker) Flush(now time.Time) []point.Point {
	pts := make([]point.Point, 0, len(t.points))
	for k, a := range t.points {
		pts = append(pts, point.Point{Name: "dnsflow", Tags: k.tags(), Fields: a.fields(k), Time: now, Mntns: k.flow.Mntns})
	}
	t.points = map[aggKey]*acc{}
	return pts
}
