package bpf

import (
	"encoding/binary"
	"fmt"
	"time"
	"unsafe"

	libbpfgo "github.com/aquasecurity/libbpfgo"

	"dkebpf/options"
)

// DNSPortsMax is how many DNS server ports the kernel can watch (DF_PORTS_MAX, the length of dns_ports:
// tested against the object's BTF).
const DNSPortsMax = options.DNSPortsMax

// dnsProbe is the dnsflow part of the netflow object: its cgroup_skb programs pair UDP queries with their
// answers and count them per key and epoch, and hand over the other DNS packets of client sockets.
type dnsProbe struct {
	ring                     *Ring
	stats                    *libbpfgo.BPFMap
	inflight, agg, ctl, busy *libbpfgo.BPFMap
	epoch                    uint32 // df_ctl's: what the kernel counts under now
	graceTimeouts            uint64
}

// Offsets in struct df_key and df_query (probes/dnsflow.h; the layout test checks the Go mirrors in
// collector/dnsflow, which decode them).
const (
	dfKeyEpoch  = 58
	dfAccSize   = 24
	dfQueryTsNs = 0
)

func setDNSPorts(m *libbpfgo.Module, ports []uint16) error {
	if len(ports) == 0 {
		ports = []uint16{53}
	}
	if len(ports) > DNSPortsMax {
		return fmt.Errorf("dnsflow: at most %d DNS ports, got %d", DNSPortsMax, len(ports))
	}
	var slots [DNSPortsMax]uint16
	copy(slots[:], ports)
	if err := m.InitGlobalVariable("dns_ports", slots); err != nil {
		return fmt.Errorf("set dns_ports: %w", err)
	}
	return nil
}

func (n *Netflow) openDNS() error {
	events, err := n.m.GetMap("df_events")
	if err != nil {
		return fmt.Errorf("map df_events: %w", err)
	}
	d := &dnsProbe{}
	if d.stats, err = n.m.GetMap("df_stats"); err != nil {
		return fmt.Errorf("map df_stats: %w", err)
	}
	for name, dst := range map[string]**libbpfgo.BPFMap{"df_inflight": &d.inflight, "df_agg": &d.agg, "df_ctl": &d.ctl, "df_busy": &d.busy} {
		if *dst, err = n.m.GetMap(name); err != nil {
			return fmt.Errorf("map %s: %w", name, err)
		}
	}
	if d.ring, err = newRing(events.FileDescriptor(), events.MaxEntries()); err != nil {
		return err
	}
	n.dns = d
	return nil
}

// DNS says whether DNS packets are taken (it needs the cgroup_skb programs of the udp part).
func (n *Netflow) DNS() bool { return n.dns != nil }

// DrainDNS hands over the DNS packets seen since the last call (struct df_event each).
func (n *Netflow) DrainDNS(fn func([]byte)) int {
	if n.dns == nil {
		return 0
	}
	return n.dns.ring.Drain(fn)
}

// DNSStats returns the dnsflow kernel counters, indexed by DNSStat*, summed over CPUs.
func (n *Netflow) DNSStats() []uint64 {
	if n.dns == nil {
		return nil
	}
	return perCPUStats(n.dns.stats)
}

// DrainDNSCounts ends the kernel's current epoch of DNS counts and hands over what it counted: fn gets each
// key (struct df_key) of the epochs that ended with its queries, their latencies summed and the largest,
// over every CPU; the keys are deleted. The kernel counts on under the next epoch meanwhile. No count is
// lost or read twice: the keys are read only once no program still writes under an old epoch.
func (n *Netflow) DrainDNSCounts(fn func(key []byte, count, latencySum, latencyMax uint64)) error {
	d := n.dns
	if d == nil {
		return nil
	}
	zero, next := uint32(0), d.epoch+1 // locals: cgo refuses a pointer into a struct holding Go pointers
	if err := d.ctl.Update(unsafe.Pointer(&zero), unsafe.Pointer(&next)); err != nil {
		return fmt.Errorf("dnsflow: move the epoch on: %w", err)
	}
	d.epoch = next
	if !d.quiesce() {
		// A writer still busy after a second (a CPU stalled): read anyway and count it. Its count, if it
		// lands between a key's read and its delete, is lost; after the delete, the next drain reads it.
		d.graceTimeouts++
	}
	var keys [][]byte
	it := d.agg.Iterator()
	for it.Next() {
		if k := it.Key(); k[dfKeyEpoch] != uint8(d.epoch) {
			keys = append(keys, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("dnsflow: read df_agg: %w", err)
	}
	for _, k := range keys {
		v, err := d.agg.GetValue(unsafe.Pointer(&k[0]))
		if err != nil {
			continue
		}
		d.agg.DeleteKey(unsafe.Pointer(&k[0]))
		var count, sum, most uint64
		for cpu := 0; cpu+dfAccSize <= len(v); cpu += dfAccSize {
			count += binary.NativeEndian.Uint64(v[cpu:])
			sum += binary.NativeEndian.Uint64(v[cpu+8:])
			most = max(most, binary.NativeEndian.Uint64(v[cpu+16:]))
		}
		if count > 0 {
			fn(k, count, sum, most)
		}
	}
	return nil
}

// quiesce waits until every CPU has been seen with no program between taking the epoch and counting
// (df_busy at 0): from then on every writer has the new epoch. It gives up after a second.
func (d *dnsProbe) quiesce() bool {
	zero := uint32(0)
	var pending []bool
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Microsecond) {
		v, err := d.busy.GetValue(unsafe.Pointer(&zero))
		if err != nil {
			return false
		}
		if pending == nil {
			pending = make([]bool, len(v)/8)
			for i := range pending {
				pending[i] = true
			}
		}
		left := false
		for cpu := range pending {
			if pending[cpu] && binary.NativeEndian.Uint64(v[cpu*8:]) == 0 {
				pending[cpu] = false
			}
			left = left || pending[cpu]
		}
		if !left {
			return true
		}
	}
	return false
}

// ExpireDNS deletes the UDP queries the kernel still waits an answer for that were sent before cutoff
// (CLOCK_MONOTONIC ns) and hands each it deleted (struct df_query) to fn; an answer arriving meanwhile
// finds it gone and is not counted. It returns how many queries remain in flight.
func (n *Netflow) ExpireDNS(cutoff uint64, fn func(query []byte)) (int, error) {
	d := n.dns
	if d == nil {
		return 0, nil
	}
	var keys [][]byte
	it := d.inflight.Iterator()
	for it.Next() {
		keys = append(keys, it.Key())
	}
	if err := it.Err(); err != nil {
		return 0, fmt.Errorf("dnsflow: read df_inflight: %w", err)
	}
	left := 0
	for _, k := range keys {
		v, err := d.inflight.GetValue(unsafe.Pointer(&k[0]))
		if err != nil {
			continue // answered meanwhile
		}
		if binary.NativeEndian.Uint64(v[dfQueryTsNs:]) >= cutoff {
			left++
			continue
		}
		if d.inflight.DeleteKey(unsafe.Pointer(&k[0])) == nil {
			fn(v)
		}
	}
	return left, nil
}

// DNSGraceTimeouts counts the drains that read df_agg with a writer of the old epoch still busy.
func (n *Netflow) DNSGraceTimeouts() uint64 {
	if n.dns == nil {
		return 0
	}
	return n.dns.graceTimeouts
}

func (d *dnsProbe) close() { d.ring.Close() }
