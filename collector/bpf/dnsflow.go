package bpf

import (
	"fmt"

	libbpfgo "github.com/aquasecurity/libbpfgo"

	"dkebpf/options"
)

// DNSPortsMax is how many DNS server ports the kernel can watch (DF_PORTS_MAX, the length of dns_ports:
// tested against the object's BTF).
const DNSPortsMax = options.DNSPortsMax

// dnsProbe is the dnsflow part of the netflow object: its cgroup_skb programs hand over the DNS packets
// of client sockets.
type dnsProbe struct {
	ring  *Ring
	stats *libbpfgo.BPFMap
}

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

func (d *dnsProbe) close() { d.ring.Close() }
