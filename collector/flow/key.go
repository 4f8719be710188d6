// Package flow is the vocabulary every plugin shares: the kernel's connection tuple and socket, addresses and
// process names, DataKit's flow key with its tags, and the user's filters.
package flow

import (
	"net/netip"
	"strconv"
	"strings"
)

// Key is DataKit's aggregation key of a flow (ref §3.1); httpflow extends it with its own fields.
type Key struct {
	Transport, Family, Direction string
	Src, Dst                     netip.Addr
	SrcPort, DstPort             int32 // AnyPort: aggregated as "*"
	Pid                          uint32
	Process                      string
	Mntns                        uint32 // not a tag: the collector names the process's container from it
	Netns                        uint32
	NAT                          netip.AddrPort // where the kernel's DNAT sent the connection (dst_nat_ip/port); zero: none
}

// NAT finds where the kernel's DNAT sent a connection made from src to dst (conntrack.Table.Lookup).
type NAT func(proto uint8, src, dst netip.AddrPort) (netip.AddrPort, bool)

// SetNAT records where DNAT sent the connection t of an outgoing key (the client's socket sees the
// address it called, a Kubernetes ClusterIP for example). nat may be nil.
func (k *Key) SetNAT(t Tuple, nat NAT) {
	if nat == nil || k.Direction != "outgoing" {
		return
	}
	proto := uint8(ProtoTCP)
	if k.Transport == "udp" {
		proto = ProtoUDP
	}
	if to, ok := nat(proto, netip.AddrPortFrom(k.Src, t.Sport), netip.AddrPortFrom(k.Dst, t.Dport)); ok {
		k.NAT = to
	}
}

// Proc is the process behind a flow, as the kernel recorded it.
type Proc struct {
	Pid   uint32
	Comm  string
	Mntns uint32 // its mount namespace (0: unknown)
}

// AnyPort is a Key port aggregated as "*".
const AnyPort = -1

// NewKey builds the key of a socket seen from its local side (src) in direction dir (NF_DIR_IN is
// incoming, anything else outgoing, as DataKit reports an unknown direction). The client's port is
// aggregated as "*" when it is at or above ephemeralPort: src_port when outgoing, dst_port when incoming.
func NewKey(t Tuple, dir uint8, ephemeralPort uint16, p Proc, netns uint32) Key {
	src, dst := Addr(t.Family, t.Saddr), Addr(t.Family, t.Daddr)
	k := Key{Transport: "tcp", Family: "IPv4", Src: src, Dst: dst,
		SrcPort: int32(t.Sport), DstPort: int32(t.Dport),
		Pid: p.Pid, Process: p.Comm, Mntns: p.Mntns, Netns: netns}
	if !src.Is4() {
		k.Family = "IPv6"
	}
	if t.Proto == ProtoUDP {
		k.Transport = "udp"
	}
	if dir == DirIn {
		k.Direction = "incoming"
		if t.Dport >= ephemeralPort {
			k.DstPort = AnyPort
		}
	} else {
		k.Direction = "outgoing"
		if t.Sport >= ephemeralPort {
			k.SrcPort = AnyPort
		}
	}
	return k
}

// Filter is what the user chose not to see (netflow_ignore_cidrs, ipv6_disabled), applied by every plugin.
type Filter struct {
	IgnoreCIDRs  []netip.Prefix // flows whose remote address is inside one are not reported
	IPv6Disabled bool
}

// Drops reports whether the filter drops the flows with this remote address (dst, the server of a DNS query).
func (f Filter) Drops(remote netip.Addr) bool {
	if f.IPv6Disabled && !remote.Unmap().Is4() {
		return true
	}
	for _, p := range f.IgnoreCIDRs {
		if p.Contains(remote) {
			return true
		}
	}
	return false
}

// Ignores reports whether the filter drops a flow.
func (f Filter) Ignores(k Key) bool { return f.Drops(k.Dst) }

// OwnProcess reports whether a process is DataKit or this collector, whose own HTTP calls and DNS lookups
// the plugins do not report.
func OwnProcess(comm string) bool { return strings.HasPrefix(comm, "datakit") }

// PortTag formats a Key port as a tag value.
func PortTag(p int32) string {
	if p == AnyPort {
		return "*"
	}
	return strconv.Itoa(int(p))
}

// IPType is DataKit's classification of an address, checked in this order.
func IPType(ip netip.Addr) string {
	switch {
	case ip.IsPrivate():
		return "private"
	case ip.IsLoopback():
		return "loopback"
	case ip.IsMulticast():
		return "multicast"
	}
	return "other"
}

// Tags returns the flow's netflow tags, which httpflow points share.
func (k Key) Tags() map[string]string {
	t := map[string]string{
		"family": k.Family, "transport": k.Transport, "direction": k.Direction,
		"src_ip": k.Src.String(), "dst_ip": k.Dst.String(), "src_port": PortTag(k.SrcPort), "dst_port": PortTag(k.DstPort),
		"src_ip_type": IPType(k.Src), "dst_ip_type": IPType(k.Dst),
		"pid": strconv.FormatUint(uint64(k.Pid), 10), "process_name": k.Process,
		"netns":      strconv.FormatUint(uint64(k.Netns), 10),
		"dst_nat_ip": "N/A", "dst_nat_port": "N/A",
	}
	if k.NAT.IsValid() {
		t["dst_nat_ip"], t["dst_nat_port"] = k.NAT.Addr().Unmap().String(), strconv.Itoa(int(k.NAT.Port()))
	}
	// client_*/server_* mirror src/dst by direction (DataKit v1.77+, without its server_ip_type mix-up).
	cli, srv := "src", "dst"
	t["conn_side"] = "client"
	if k.Direction == "incoming" {
		cli, srv = "dst", "src"
		t["conn_side"] = "server"
	}
	for _, f := range []string{"ip", "port", "ip_type"} {
		t["client_"+f] = t[cli+"_"+f]
		t["server_"+f] = t[srv+"_"+f]
	}
	if k.Netns == 0 {
		delete(t, "netns") // unknown for UDP seen only in packets
	}
	return t
}
