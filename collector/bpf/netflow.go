package bpf

import (
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	libbpfgo "github.com/aquasecurity/libbpfgo"

	"dkebpf/collector/netflow"
	"dkebpf/collector/procfs"
)

//go:embed obj/netflow.bpf.o
var netflowObj []byte

// NetflowHooks: TCP needs only the state tracepoint and a read of live connections once per interval
// (no probe on any send or receive), plus a walk of the TCP sockets at start for connections already
// open; UDP counts datagrams at the cgroup v2 root and learns owners in process context, from the socket
// tracepoints (6.3+) or, on older kernels, kprobes on the UDP send/receive functions. Each group is a
// ladder, best first (README "Fallbacks" has the table); httpflow-tls' uprobes are loaded here and
// attached per libssl file.
var NetflowHooks = []Hook{
	{Prog: "nf_state", Kind: TPBTF, Target: "inet_sock_set_state", Part: "tcp", Required: true, Since: "4.16", Group: "tcp-state"},
	{Prog: "nf_state_raw", Kind: RawTP, Target: "inet_sock_set_state", Part: "tcp", Required: true, Since: "4.16", Group: "tcp-state", Alt: 1},
	{Prog: "nf_state_tp", Kind: Tracepoint, Target: "sock/inet_sock_set_state", Part: "tcp", Required: true, Since: "4.16", Group: "tcp-state", Alt: 2},
	{Prog: "nf_iter", Kind: MapIter, Target: "nf_socks", Part: "tcp", Required: true, Since: "5.9", Group: "tcp-live"},
	{Prog: "nf_live", Kind: TestRun, Part: "tcp", Required: true, Since: "5.10", Group: "tcp-live", Alt: 1},
	{Prog: "nf_seed", Kind: Iter, Target: "tcp", Part: "tcp", Since: "5.9", Group: "tcp-seed"},
	{Prog: "nf_seed_walk", Kind: TestRun, Part: "tcp", Since: "5.10", Group: "tcp-seed", Alt: 1},
	{Prog: "nf_skb_egress", Kind: CgroupEgress, Part: "udp", Required: true, Since: "4.10"},
	{Prog: "nf_skb_ingress", Kind: CgroupIngress, Part: "udp", Required: true, Since: "4.10"},
	{Prog: "nf_udp_send", Kind: TPBTF, Target: "sock_send_length", Part: "udp", Since: "6.3", Group: "udp-owner"},
	{Prog: "nf_udp_recv", Kind: TPBTF, Target: "sock_recv_length", Part: "udp", Since: "6.3", Group: "udp-owner"},
	{Prog: "nf_udp_send_raw", Kind: RawTP, Target: "sock_send_length", Part: "udp", Since: "6.3", Group: "udp-owner", Alt: 1},
	{Prog: "nf_udp_recv_raw", Kind: RawTP, Target: "sock_recv_length", Part: "udp", Since: "6.3", Group: "udp-owner", Alt: 1},
	{Prog: "nf_kp_udp_send", Kind: Kprobe, Target: "udp_sendmsg", Part: "udp", Group: "udp-owner", Alt: 2},
	{Prog: "nf_kp_udp6_send", Kind: Kprobe, Target: "udpv6_sendmsg", Part: "udp", Group: "udp-owner", Alt: 2},
	{Prog: "nf_kp_udp_recv", Kind: Kprobe, Target: "udp_recvmsg", Part: "udp", Group: "udp-owner", Alt: 2},
	{Prog: "nf_kp_udp6_recv", Kind: Kprobe, Target: "udpv6_recvmsg", Part: "udp", Group: "udp-owner", Alt: 2},
	{Prog: "hf_ssl_write", Kind: Uprobe, Target: "SSL_write", Part: "tls", Required: true},
	{Prog: "hf_ssl_write_ex", Kind: Uprobe, Target: "SSL_write_ex", Part: "tls", Required: true},
	{Prog: "hf_ssl_read", Kind: Uprobe, Target: "SSL_read", Part: "tls", Required: true},
	{Prog: "hf_ssl_read_ex", Kind: Uprobe, Target: "SSL_read_ex", Part: "tls", Required: true},
	{Prog: "hf_ssl_write_ret", Kind: Uprobe, Target: "SSL_write(ret)", Part: "tls", Required: true},
	{Prog: "hf_ssl_read_ret", Kind: Uprobe, Target: "SSL_read(ret)", Part: "tls", Required: true},
	{Prog: "hf_ssl_free", Kind: Uprobe, Target: "SSL_free", Part: "tls", Required: true},
	{Prog: "hf_go_write", Kind: Uprobe, Target: "crypto/tls.(*Conn).Write", Part: "gotls", Required: true},
	{Prog: "hf_go_read", Kind: Uprobe, Target: "crypto/tls.(*Conn).Read", Part: "gotls", Required: true},
	{Prog: "hf_go_read_ret", Kind: Uprobe, Target: "crypto/tls.(*Conn).Read(returns)", Part: "gotls", Required: true},
	{Prog: "hf_go_close", Kind: Uprobe, Target: "crypto/tls.(*Conn).Close", Part: "gotls", Required: true},
	{Prog: "hf_h2", Kind: Uprobe, Target: "HTTP/2 frames (tail call of the TLS return programs)", Part: "h2", Required: true},
}

// Netflow is the loaded and attached netflow probe.
type Netflow struct {
	m        *libbpfgo.Module
	att      *attachment
	ring     *Ring
	socks    *libbpfgo.BPFMap
	udp      *libbpfgo.BPFMap
	udpSocks *libbpfgo.BPFMap
	stats    *libbpfgo.BPFMap
	want     *libbpfgo.BPFMap // nf_want_owner
	live     *Ring            // nf_live's records, when it stands in for nf_iter
	http     *httpProbe       // nil unless Options.HTTP or TLS
	dns      *dnsProbe        // nil unless Options.DNS
}

// loadObject returns the embedded object, or objDir/name when objDir is set (developers' override).
func loadObject(objDir, name string, embedded []byte) ([]byte, error) {
	if objDir == "" {
		return embedded, nil
	}
	b, err := os.ReadFile(filepath.Join(objDir, name))
	if err != nil {
		return nil, fmt.Errorf("read bpf object: %w", err)
	}
	return b, nil
}

// Options are load-time settings shared by the probes.
type Options struct {
	ObjectDir string   // read objects from here instead of the embedded ones (developers)
	Floor     bool     // every program returns at once: what the hooks alone cost (make bench)
	HTTP      bool     // parse HTTP/1.x in the TCP segments the cgroup_skb programs see (httpflow)
	TLS       bool     // parse it in OpenSSL calls, once AttachSSL is called per libssl (httpflow-tls)
	DNS       bool     // hand DNS packets of client sockets to the collector (dnsflow)
	DNSPorts  []uint16 // server ports that mark DNS (at most DNSPortsMax; default 53)
	// MaxSockets sizes nf_socks, the TCP sockets followed at once (0: NF_SOCKS_MAX, 65 536).
	MaxSockets int
}

// OpenNetflow loads probes/netflow.bpf.c and attaches what this kernel offers. It fails only when
// no part can run.
func OpenNetflow(opts Options) (_ *Netflow, err error) {
	obj, err := loadObject(opts.ObjectDir, "netflow.bpf.o", netflowObj)
	if err != nil {
		return nil, err
	}
	n := &Netflow{}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	n.m, n.att, err = loadHooked("netflow", obj, NetflowHooks, hooked{
		setup: func(m *libbpfgo.Module, a *attachment) error {
			// With no rung of udp-owner left, cgroup_skb egress learns owners instead.
			udpOwnerless := !a.uses("nf_udp_send") && !a.uses("nf_udp_send_raw") && !a.uses("nf_kp_udp_send")
			if udpOwnerless {
				a.notes["udp"] = "no socket hook for UDP owners: learnt at a socket's first datagram sent (cgroup_skb egress); sockets that only receive report no process"
			}
			// Raw and classic tracepoints, and the seed walk, cannot ask for a socket's cookie: then every
			// TCP program keys by address.
			cookies := kernelAtLeast(5, 12) && a.uses("nf_state") && !a.uses("nf_seed_walk")
			knobs := map[string]bool{"cookie_helper": cookies, "udp_owner_at_egress": udpOwnerless, "floor_only": opts.Floor,
				"http_enabled": opts.HTTP, "tls_enabled": opts.TLS, "dns_enabled": opts.DNS}
			for name, v := range knobs {
				if err := m.InitGlobalVariable(name, v); err != nil {
					return fmt.Errorf("set %s: %w", name, err)
				}
			}
			for name, v := range map[string]uint32{"go_conn_iface_off": goConnIfaceOff, "go_netfd_sysfd_off": goNetFDSysfdOff} {
				if err := m.InitGlobalVariable(name, v); err != nil {
					return fmt.Errorf("set %s: %w", name, err)
				}
			}
			if opts.MaxSockets > 0 {
				socks, err := m.GetMap("nf_socks")
				if err == nil {
					err = socks.SetMaxEntries(uint32(opts.MaxSockets))
				}
				if err != nil {
					return fmt.Errorf("size nf_socks to %d: %w", opts.MaxSockets, err)
				}
			}
			if opts.DNS {
				return setDNSPorts(m, opts.DNSPorts)
			}
			return nil
		},
		loaded: func(m *libbpfgo.Module, a *attachment) error {
			if a.uses("nf_seed_walk") {
				// The walk learns directions from listening ports, as nf_seed does from the listeners it
				// meets first; before the attach, whose trial run walks the first buckets.
				return fillListeners(m)
			}
			return nil
		},
	})
	if err != nil {
		return nil, err
	}
	m := n.m
	if !n.TCP() && !n.UDP() {
		return nil, fmt.Errorf("netflow: no part could attach: %v", n.att.off)
	}
	for name, dst := range map[string]**libbpfgo.BPFMap{"nf_socks": &n.socks, "nf_udp": &n.udp, "nf_udp_socks": &n.udpSocks, "nf_stats": &n.stats, "nf_want_owner": &n.want} {
		if *dst, err = m.GetMap(name); err != nil {
			return nil, fmt.Errorf("map %s: %w", name, err)
		}
	}
	events, err := m.GetMap("nf_events")
	if err != nil {
		return nil, fmt.Errorf("map nf_events: %w", err)
	}
	if n.ring, err = newRing(events.FileDescriptor(), events.MaxEntries()); err != nil {
		return nil, err
	}
	if n.att.uses("nf_live") {
		live, err := m.GetMap("nf_live_out")
		if err != nil {
			return nil, fmt.Errorf("map nf_live_out: %w", err)
		}
		if n.live, err = newRing(live.FileDescriptor(), live.MaxEntries()); err != nil {
			return nil, err
		}
	}
	if (opts.HTTP || opts.TLS) && n.UDP() {
		if err := n.openHTTP(); err != nil {
			return nil, err
		}
	}
	if opts.DNS && n.UDP() {
		if err := n.openDNS(); err != nil {
			return nil, err
		}
	}
	if seed := n.att.iters["nf_seed"]; seed != nil {
		if _, err := seed.read(); err != nil {
			return nil, fmt.Errorf("walk tcp sockets open at start: %w", err)
		}
	} else if n.att.uses("nf_seed_walk") && n.TCP() {
		if err := n.seedByWalk(); err != nil {
			n.att.notes["tcp"] = "connections open at start are not tracked: " + err.Error()
		}
	}
	return n, nil
}

// Report is one line per part: its hooks and whether each attached.
func (n *Netflow) Report() []string { return n.att.Report("netflow") }

// Parts is each part's status on this kernel.
func (n *Netflow) Parts() []PartStatus { return n.att.Parts("netflow") }

// Refused is how many of its hooks the kernel refused to load.
func (n *Netflow) Refused() int { return n.att.Refused() }

// TLS says whether httpflow-tls' OpenSSL uprobe programs loaded (they are attached per libssl file).
func (n *Netflow) TLS() bool { return n.att.On("tls") }

// GoTLS says whether httpflow-tls' crypto/tls uprobe programs loaded (they are attached per Go program),
// and the OpenSSL return programs that parse for them.
func (n *Netflow) GoTLS() bool { return n.att.On("gotls") && n.att.On("tls") }

// H2 says whether HTTP/2 sessions in TLS calls are followed (hf_h2 loaded).
func (n *Netflow) H2() bool { return n.att.On("h2") && n.att.On("tls") }

func (n *Netflow) TCP() bool { return n.att.On("tcp") }
func (n *Netflow) UDP() bool { return n.att.On("udp") }

// DrainClosed hands over the records of TCP connections closed since the last call.
func (n *Netflow) DrainClosed(fn func([]byte)) int { return n.ring.Drain(fn) }

// ReadLive reads every live tracked TCP connection's counters, one record each (struct nf_tcp_rec), and
// hands them to fn a batch at a time as they are read: a batch is read after fn returned from the last.
// fn must not keep the bytes.
func (n *Netflow) ReadLive(fn func([]byte)) error {
	if n.live != nil {
		return n.readLiveByRuns(fn)
	}
	it := n.att.iters["nf_iter"]
	if it == nil {
		return nil
	}
	if err := it.readEach(netflow.SizeTCPRecord, fn); err != nil {
		return fmt.Errorf("nf_iter: %w", err)
	}
	return nil
}

// WantTCPOwners says whether some tracked TCP socket has no owner yet: while it does, the socket
// send/receive tracepoints (6.3+) bind tracked TCP sockets to the process calling.
func (n *Netflow) WantTCPOwners(on bool) {
	var zero, v uint32
	if on {
		v = 1
	}
	n.want.Update(unsafe.Pointer(&zero), unsafe.Pointer(&v))
}

// fillListeners puts every listening TCP port of every network namespace into nf_listen.
func fillListeners(m *libbpfgo.Module) error {
	listen, err := m.GetMap("nf_listen")
	if err != nil {
		return fmt.Errorf("map nf_listen: %w", err)
	}
	one := uint8(1)
	for _, l := range procfs.Listeners("/proc") {
		var k [8]byte // struct nf_listen_key
		binary.NativeEndian.PutUint32(k[0:], l.Netns)
		binary.NativeEndian.PutUint16(k[4:], l.Port)
		listen.Update(unsafe.Pointer(&k[0]), unsafe.Pointer(&one)) // full: that port's direction is guessed
	}
	return nil
}

// seedByWalk is nf_seed without iterators: nf_seed_walk over the established-socket table, a few buckets
// per run (the first run says how many there are).
func (n *Netflow) seedByWalk() error {
	prog, err := n.m.GetProgram("nf_seed_walk")
	if err != nil {
		return fmt.Errorf("program nf_seed_walk: %w", err)
	}
	args := make([]uint64, testRunArgs)
	for start, buckets := uint64(0), uint64(1); start < buckets; start += seedBuckets {
		args[0] = start
		b, err := testRun(prog.FileDescriptor(), args)
		if err != nil {
			return fmt.Errorf("walk tcp sockets open at start: %w", err)
		}
		if start == 0 && b == 0 {
			return errors.New("nf_seed_walk found no established-socket table")
		}
		buckets = uint64(b)
	}
	return nil
}

// seedBuckets is how many buckets one run of nf_seed_walk reads (NF_SEED_BUCKETS).
const seedBuckets = 16

// readLiveByRuns is ReadLive without map iterators: it reads nf_socks' keys in batches and runs nf_live on
// them, testRunArgs at a time, draining nf_live_out after each run (a run writes at most testRunArgs
// records). A key whose entry is deleted meanwhile is skipped by nf_live.
func (n *Netflow) readLiveByRuns(fn func([]byte)) error {
	prog, err := n.m.GetProgram("nf_live")
	if err != nil {
		return fmt.Errorf("program nf_live: %w", err)
	}
	args := make([]uint64, 0, testRunArgs)
	var recs []byte
	run := func() error {
		if len(args) == 0 {
			return nil
		}
		_, err := testRun(prog.FileDescriptor(), args[:testRunArgs]) // a 0 ends the arguments
		clear(args[:testRunArgs])
		args = args[:0]
		if err != nil {
			return fmt.Errorf("nf_live: %w", err)
		}
		n.live.Drain(func(b []byte) { recs = append(recs, b...) })
		return nil
	}
	return hashKeys(n.socks, func(keys []uint64) error {
		for _, k := range keys {
			if k == 0 { // a cookie or a socket's address: never 0
				continue
			}
			if args = append(args, k); len(args) == testRunArgs {
				if err := run(); err != nil {
					return err
				}
			}
		}
		if err := run(); err != nil {
			return err
		}
		if len(recs) > 0 {
			fn(recs)
			recs = recs[:0]
		}
		return nil
	})
}

// ReadUDP calls fn with every (key, value) of nf_udp, the value summed over CPUs (nf_udp is per CPU and
// struct nf_udp_val is all 64-bit counters).
func (n *Netflow) ReadUDP(fn func(key, val []byte)) error {
	size := n.udp.ValueSize()
	it := n.udp.Iterator()
	for it.Next() {
		k := it.Key()
		v, err := n.udp.GetValue(unsafe.Pointer(&k[0]))
		if err != nil {
			continue // deleted meanwhile
		}
		fn(k, sumPerCPU(v, size))
	}
	return it.Err()
}

// sumPerCPU adds up the per-CPU copies of a value made of uint64 counters.
func sumPerCPU(v []byte, size int) []byte {
	sum := make([]byte, size)
	for cpu := 0; cpu+size <= len(v); cpu += (size + 7) &^ 7 {
		for w := 0; w+8 <= size; w += 8 {
			total := binary.NativeEndian.Uint64(sum[w:]) + binary.NativeEndian.Uint64(v[cpu+w:])
			binary.NativeEndian.PutUint64(sum[w:], total)
		}
	}
	return sum
}

// DeleteUDP forgets an idle (socket, peer) entry.
func (n *Netflow) DeleteUDP(key []byte) error { return n.udp.DeleteKey(unsafe.Pointer(&key[0])) }

// LookupUDPSock returns the nf_udp_socks value (the owner) of a UDP socket cookie.
func (n *Netflow) LookupUDPSock(cookie uint64) ([]byte, bool) {
	v, err := n.udpSocks.GetValue(unsafe.Pointer(&cookie))
	return v, err == nil
}

// Stats returns the kernel-side drop counters, indexed by NetflowStat*.
func (n *Netflow) Stats() []uint64 {
	out := make([]uint64, n.stats.MaxEntries())
	for i := range out {
		k := uint32(i)
		if v, err := n.stats.GetValue(unsafe.Pointer(&k)); err == nil && len(v) >= 8 {
			out[i] = *(*uint64)(unsafe.Pointer(&v[0]))
		}
	}
	return out
}

// Close detaches every program and frees the maps.
func (n *Netflow) Close() {
	if n.http != nil {
		n.http.close()
	}
	if n.dns != nil {
		n.dns.close()
	}
	for _, r := range []*Ring{n.ring, n.live} {
		if r != nil {
			r.Close()
		}
	}
	if n.att != nil {
		for _, it := range n.att.iters {
			it.Destroy()
		}
	}
	if n.m != nil {
		n.m.Close()
	}
}
