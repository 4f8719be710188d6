package bpf

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	libbpfgo "github.com/aquasecurity/libbpfgo"

	"dkebpf/collector/elfsym"
)

// SSLSymbols are the OpenSSL functions httpflow-tls probes, in every libssl it finds.
var SSLSymbols = []string{"SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex", "SSL_free"}

// SSLSymbols are the OpenSSL functions AttachSSL wants the offsets of.
func (n *Netflow) SSLSymbols() []string { return SSLSymbols }

// sslProbes: which program runs at the entry (and the return) of each symbol.
var sslProbes = []struct{ symbol, entry, ret string }{
	{"SSL_write", "hf_ssl_write", "hf_ssl_write_ret"},
	{"SSL_write_ex", "hf_ssl_write_ex", "hf_ssl_write_ret"},
	{"SSL_read", "hf_ssl_read", "hf_ssl_read_ret"},
	{"SSL_read_ex", "hf_ssl_read_ex", "hf_ssl_read_ret"},
	{"SSL_free", "hf_ssl_free", ""},
}

// GoTLSFuncs are the crypto/tls methods httpflow-tls probes in every Go program.
var GoTLSFuncs = []string{"crypto/tls.(*Conn).Write", "crypto/tls.(*Conn).Read", "crypto/tls.(*Conn).Close"}

// GoTLSFuncs are the Go functions AttachGoTLS wants.
func (n *Netflow) GoTLSFuncs() []string { return GoTLSFuncs }

// goProbes: which program runs at the entry (and at every return) of each Go function.
var goProbes = []struct{ fn, entry, ret string }{
	{"crypto/tls.(*Conn).Write", "hf_go_write", ""}, // parsed at its entry
	{"crypto/tls.(*Conn).Read", "hf_go_read", "hf_go_read_ret"},
	{"crypto/tls.(*Conn).Close", "hf_go_close", ""},
}

// Where a Go program keeps a TLS connection's socket descriptor, Go 1.18 onwards (checked against Go's debug
// information by TestGoConnOffsetsAreGos): hf_go_tie follows them.
const (
	goConnIfaceOff  = 8  // tls.Conn.conn, a net.Conn interface: its data word (a *net.TCPConn, whose fd is first)
	goNetFDSysfdOff = 16 // net.netFD.pfd (internal/poll.FD).Sysfd
)

// httpflow is the HTTP part of the netflow object: parsing runs in the same cgroup_skb programs, and
// TLS in uprobes attached per libssl file.
type httpProbe struct {
	ring  *Ring
	stats *libbpfgo.BPFMap
	links []*libbpfgo.BPFLink
}

func (n *Netflow) openHTTP() error {
	events, err := n.m.GetMap("hf_events")
	if err != nil {
		return fmt.Errorf("map hf_events: %w", err)
	}
	h := &httpProbe{}
	if h.stats, err = n.m.GetMap("hf_stats"); err != nil {
		return fmt.Errorf("map hf_stats: %w", err)
	}
	if h.ring, err = newRing(events.FileDescriptor(), events.MaxEntries()); err != nil {
		return err
	}
	n.http = h
	if n.GoTLS() {
		// A Go call is handed to the OpenSSL return program of its direction (HF_OUT 0, HF_IN 1).
		exits, err := n.m.GetMap("hf_tls_exits")
		if err != nil {
			return fmt.Errorf("map hf_tls_exits: %w", err)
		}
		for i, name := range []string{"hf_ssl_write_ret", "hf_ssl_read_ret"} {
			prog, err := n.m.GetProgram(name)
			if err != nil {
				return fmt.Errorf("program %s: %w", name, err)
			}
			k, fd := uint32(i), uint32(prog.FileDescriptor())
			if err := exits.Update(unsafe.Pointer(&k), unsafe.Pointer(&fd)); err != nil {
				return fmt.Errorf("map hf_tls_exits: put %s: %w", name, err)
			}
		}
	}
	return nil
}

// HTTP says whether plain HTTP parsing runs (it needs the cgroup_skb programs of the udp part).
func (n *Netflow) HTTP() bool { return n.http != nil }

// DrainHTTP hands over the HTTP exchanges completed since the last call (struct hf_event each).
func (n *Netflow) DrainHTTP(fn func([]byte)) int {
	if n.http == nil {
		return 0
	}
	return n.http.ring.Drain(fn)
}

// HTTPStats returns the httpflow counters, indexed by HTTPStat*, summed over CPUs.
func (n *Netflow) HTTPStats() []uint64 {
	if n.http == nil {
		return nil
	}
	return perCPUStats(n.http.stats)
}

// perCPUStats reads a per-CPU array of uint64 counters, each summed over CPUs.
func perCPUStats(m *libbpfgo.BPFMap) []uint64 {
	out := make([]uint64, m.MaxEntries())
	for i := range out {
		k := uint32(i)
		v, err := m.GetValue(unsafe.Pointer(&k))
		if err != nil {
			continue
		}
		for cpu := 0; cpu+8 <= len(v); cpu += 8 {
			out[i] += binary.NativeEndian.Uint64(v[cpu:])
		}
	}
	return out
}

// AttachSSL puts the OpenSSL uprobes on one libssl file (path must be openable by this process,
// e.g. /proc/<pid>/root/...). The kernel attaches them to the file's inode: every process mapping it,
// now or later, is covered. offsets are file offsets of SSLSymbols.
func (n *Netflow) AttachSSL(path string, offsets map[string]uint64) error {
	if n.http == nil {
		return fmt.Errorf("attach uprobes to %s: httpflow is not loaded", path)
	}
	var links []*libbpfgo.BPFLink
	fail := func(err error) error {
		for _, l := range links {
			l.Destroy()
		}
		return err
	}
	for _, p := range sslProbes {
		off, ok := offsets[p.symbol]
		if !ok && (p.symbol == "SSL_read_ex" || p.symbol == "SSL_write_ex") {
			continue // OpenSSL 1.1.0 has no _ex functions
		}
		if !ok {
			return fail(fmt.Errorf("attach uprobes to %s: no offset for %s", path, p.symbol))
		}
		for _, a := range []struct {
			prog string
			ret  bool
		}{{p.entry, false}, {p.ret, true}} {
			if a.prog == "" {
				continue
			}
			prog, err := n.m.GetProgram(a.prog)
			if err != nil {
				return fail(fmt.Errorf("program %s: %w", a.prog, err))
			}
			attach := prog.AttachUprobe
			if a.ret {
				attach = prog.AttachURetprobe
			}
			l, err := attach(-1, path, uint32(off))
			if err != nil {
				return fail(fmt.Errorf("attach %s to %s:%s: %w", a.prog, path, p.symbol, err))
			}
			links = append(links, l)
		}
	}
	n.http.links = append(n.http.links, links...)
	return nil
}

// AttachGoTLS puts the crypto/tls uprobes on one Go program: at the entry and at every return instruction
// of each of GoTLSFuncs (funcs, as elfsym.GoFunctions found them).
func (n *Netflow) AttachGoTLS(path string, funcs map[string]elfsym.GoFunc) error {
	if n.http == nil {
		return fmt.Errorf("attach uprobes to %s: httpflow is not loaded", path)
	}
	var links []*libbpfgo.BPFLink
	fail := func(err error) error {
		for _, l := range links {
			l.Destroy()
		}
		return err
	}
	attach := func(prog string, off uint64) error {
		p, err := n.m.GetProgram(prog)
		if err != nil {
			return fmt.Errorf("program %s: %w", prog, err)
		}
		l, err := p.AttachUprobe(-1, path, uint32(off))
		if err != nil {
			return fmt.Errorf("attach %s to %s at %#x: %w", prog, path, off, err)
		}
		links = append(links, l)
		return nil
	}
	for _, p := range goProbes {
		f, ok := funcs[p.fn]
		if !ok {
			return fail(fmt.Errorf("attach uprobes to %s: no %s", path, p.fn))
		}
		if err := attach(p.entry, f.Entry); err != nil {
			return fail(err)
		}
		for _, r := range f.Returns {
			if p.ret == "" {
				break
			}
			if err := attach(p.ret, r); err != nil {
				return fail(err)
			}
		}
	}
	n.http.links = append(n.http.links, links...)
	return nil
}

func (h *httpProbe) close() {
	for _, l := range h.links {
		l.Destroy()
	}
	h.ring.Close()
}
