package netflow

import (
	"log/slog"
	"time"

	"dkebpf/collector/flow"
	"dkebpf/collector/plugin"
	"dkebpf/collector/point"
)

// Kernel is netflow's BPF object as the plugin reads it (collector/bpf.Netflow satisfies it).
type Kernel interface {
	TCP() bool // the TCP part runs
	UDP() bool // the UDP part runs
	// DrainClosed hands over the records of connections closed since the last drain (struct nf_tcp_rec).
	DrainClosed(fn func([]byte)) int
	// ReadLive hands over the records of the live connections (struct nf_tcp_rec, back to back), a batch
	// at a time as the kernel is read: no record of a batch is read after fn returned from the one before.
	ReadLive(fn func([]byte)) error
	// WantTCPOwners asks the kernel to learn the owners of TCP sockets that have none, at their next send
	// or receive (on kernels with those tracepoints; elsewhere it does nothing).
	WantTCPOwners(on bool)
	// ReadUDP hands over every UDP peer's key and counters (struct nf_udp_key, struct nf_udp_val).
	ReadUDP(fn func(key, val []byte)) error
	DeleteUDP(key []byte) error
	// LookupUDPSock returns the struct nf_sock of a UDP socket, by cookie.
	LookupUDPSock(cookie uint64) ([]byte, bool)
	Stats() []uint64 // indexed by Stat*
}

// Plugin joins netflow's kernel side to its aggregator.
type Plugin struct {
	k   Kernel
	agg *Aggregator
	log *slog.Logger
	c   plugin.Counters
	// pause runs between the batches of the live walk (the main loop drains the rings there).
	pause func()
	// closedInWalk is the connections whose close record was drained during the walk in progress (nil:
	// none in progress): a live record of theirs still to come was read before the close (the iterator
	// holds what it read until the next read, and a record may straddle two) and would count them again.
	closedInWalk map[uint64]struct{}
	// ownerless is the sockets the last walk met without an owner. The kernel is asked to learn owners
	// only while a walk meets one that is not in it: a socket idle since it was asked for (a keep-alive
	// connection nobody uses) is left to the /proc search, and TCP sends and receives stop paying for it.
	ownerless map[uint64]struct{}
}

var _ plugin.Plugin = (*Plugin)(nil)

// NewPlugin returns the netflow plugin reading k; owners names the processes of connections the kernel saw
// only in softirq.
func NewPlugin(k Kernel, cfg Config, owners OwnerLookup, log *slog.Logger) *Plugin {
	return &Plugin{k: k, agg: NewAggregator(cfg, owners), log: log}
}

func (p *Plugin) Name() string     { return "netflow" }
func (p *Plugin) Category() string { return "network" }
func (p *Plugin) Input() string    { return "ebpf-net/netflow" }

// Drain takes the records of connections closed since the last drain.
func (p *Plugin) Drain() {
	plugin.DrainRecords(&p.c, p.k.DrainClosed, func(r *TCPRecord) {
		if p.closedInWalk != nil {
			p.closedInWalk[r.Cookie] = struct{}{}
		}
		p.agg.AddTCP(*r)
	})
}

// Flush polls live TCP connections and UDP peers once, then returns the interval's points.
func (p *Plugin) Flush(now time.Time) []point.Point {
	if p.k.TCP() {
		// The pauses between batches may drain netflow's own ring: a live record read before its
		// connection's close but handed over after the close record was drained is dropped (closedInWalk).
		// One closed before the walk reached it has left nf_socks and is not read.
		ownerless, newOwnerless := map[uint64]struct{}{}, false
		p.closedInWalk = map[uint64]struct{}{}
		err := p.k.ReadLive(func(b []byte) {
			recs, err := DecodeTCPRecords(b)
			if err != nil {
				p.c.DecodeErrors++
				p.log.Warn("netflow: decode live connections", "err", err)
			}
			p.c.Events += uint64(len(recs))
			for _, r := range recs {
				if _, closed := p.closedInWalk[r.Cookie]; closed {
					continue
				}
				if r.Pid == 0 {
					ownerless[r.Cookie] = struct{}{}
					if _, asked := p.ownerless[r.Cookie]; !asked {
						newOwnerless = true
					}
				}
				p.agg.AddTCP(r)
			}
			if p.pause != nil {
				p.pause()
			}
		})
		p.closedInWalk = nil
		if err != nil {
			p.log.Warn("netflow: read live connections", "err", err)
		}
		// Accepted sockets change state in softirq: the kernel learns their process at a send or receive
		// when asked, where /proc would have to be searched (see Owners).
		p.k.WantTCPOwners(newOwnerless)
		p.ownerless = ownerless
	}
	if p.k.UDP() {
		var idle [][]byte
		err := p.k.ReadUDP(func(kb, vb []byte) {
			p.c.Events++
			var k UDPKey
			var v UDPVal
			if flow.Decode(kb, &k) != nil || flow.Decode(vb, &v) != nil {
				p.c.DecodeErrors++
				return
			}
			if p.agg.AddUDP(k, v, p.LookupSock) {
				idle = append(idle, kb)
			}
		})
		if err != nil {
			p.log.Warn("netflow: read udp counters", "err", err)
		}
		for _, k := range idle {
			p.k.DeleteUDP(k)
		}
	}
	return p.agg.Flush(now)
}

// SetPause sets what runs between the batches of the walk of live connections, about 1.5 µs of CPU per
// socket (0.3 s at 100 000 connections, more of wall time on a shared CPU): the main loop drains the rings
// there, as they can fill in less.
func (p *Plugin) SetPause(fn func()) { p.pause = fn }

// LookupSock returns what the kernel learnt of a UDP socket's owner (dnsflow attributes queries with it).
func (p *Plugin) LookupSock(cookie uint64) (flow.Sock, bool) {
	b, ok := p.k.LookupUDPSock(cookie)
	if !ok {
		return flow.Sock{}, false
	}
	var s flow.Sock
	if err := flow.Decode(b, &s); err != nil {
		p.c.DecodeErrors++
		return s, false
	}
	return s, true
}

// SetDomains names remote addresses from DNS answers (dnsflow's).
func (p *Plugin) SetDomains(d Domains) { p.agg.SetDomains(d) }

func (p *Plugin) Counters() plugin.Counters {
	st := p.k.Stats()
	c := p.c
	c.Lost = plugin.Stat(st, StatRingLost)
	c.MapFull = plugin.Stat(st, StatSockFull) + plugin.Stat(st, StatUDPFull)
	// The same apart, as their units differ, and the entries whose close the kernel missed.
	c.Extra = map[string]uint64{
		"connections_untracked": plugin.Stat(st, StatSockFull),
		"datagrams_uncounted":   plugin.Stat(st, StatUDPFull),
		"connections_stale":     plugin.Stat(st, StatSockStale),
	}
	return c
}

// Close does nothing: the kernel object is netflow's, httpflow's and dnsflow's, and its owner closes it.
func (p *Plugin) Close() {}
