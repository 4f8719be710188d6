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
	{"crypto/tls.(*Conn).Write", "hf_go_write", ""}, // parsed on the way in
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
	ring   *Ring
	h2Ring *Ring // nil unless H2
	stats  *libbpfgo.BPFMap
	links  []*libbpfgo.BPFLink
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
	// hf_tls_exits: a Go call is handed to the OpenSSL return program of its direction (HF_OUT 0, HF_IN 1),
	// and a call of an HTTP/2 session to hf_h2 (HF_EXIT_H2 2). An empty slot leaves that out.
	exits := map[uint32]string{}
	if n.GoTLS() {
		exits[0], exits[1] = "hf_ssl_write_ret", "hf_ssl_read_ret"
	}
	if n.H2() {
		exits[2] = "hf_h2"
		h2, err := n.m.GetMap("hf_h2_events")
		if err != nil {
			return fmt.Errorf("map hf_h2_events: %w", err)
		}
		if h.h2Ring, err = newRing(h2.FileDescriptor(), h2.MaxEntries()); err != nil {
			return err
		}
	}
	if len(exits) == 0 {
		return nil
	}
	m, err := n.m.GetMap("hf_tls_exits")
	if err != nil {
		return fmt.Errorf("map hf_tls_exits: %w", err)
	}
	for k, name := range exits {
		prog, err := n.m.GetProgram(name)
		if err != nil {
			return fmt.Errorf("program %s: %w", name, err)
		}
		fd := uint32(prog.FileDescriptor())
		if err := m.Update(unsafe.Pointer(&k), unsafe.Pointer(&fd)); err != nil {
			return fmt.Errorf("map hf_tls_exits: put %s: %w", name, err)
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

// DrainH2 hands over the HTTP/2 frames seen in TLS calls since the last call (struct hf_h2_rec each).
func (n *Netflow) DrainH2(fn func([]byte)) int {
	if n.http == nil || n.http.h2Ring == nil {
		return 0
	}
	return n.http.h2Ring.Drain(fn)
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

// fileProbes attaches programs of the netflow object to one file: all of them, or none.
type fileProbes struct {
	n     *Netflow
	path  string
	links []*libbpfgo.BPFLink
}

func (n *Netflow) probesOn(path string) (*fileProbes, error) {
	if n.http == nil {
		return nil, fmt.Errorf("attach uprobes to %s: httpflow is not loaded", path)
	}
	return &fileProbes{n: n, path: path}, nil
}

// attach puts prog at the file offset off, as a uretprobe when ret.
func (f *fileProbes) attach(prog string, off uint64, ret bool, what string) error {
	p, err := f.n.m.GetProgram(prog)
	if err != nil {
		return fmt.Errorf("program %s: %w", prog, err)
	}
	attach := p.AttachUprobe
	if ret {
		attach = p.AttachURetprobe
	}
	l, err := attach(-1, f.path, uint32(off))
	if err != nil {
		return fmt.Errorf("attach %s to %s:%s: %w", prog, f.path, what, err)
	}
	f.links = append(f.links, l)
	return nil
}

// fail detaches what was attached and returns err.
func (f *fileProbes) fail(err error) error {
	for _, l := range f.links {
		l.Destroy()
	}
	return err
}

// keep hands the links to the probe, which detaches them at close.
func (f *fileProbes) keep() { f.n.http.links = append(f.n.http.links, f.links...) }

// AttachSSL puts the OpenSSL uprobes on one libssl file (path must be openable by this process,
// e.g. /proc/<pid>/root/...). The kernel attaches them to the file's inode: every process mapping it,
// now or later, is covered. offsets are file offsets of SSLSymbols.
func (n *Netflow) AttachSSL(path string, offsets map[string]uint64) error {
	f, err := n.probesOn(path)
	if err != nil {
		return err
	}
	for _, p := range sslProbes {
		off, ok := offsets[p.symbol]
		if !ok && (p.symbol == "SSL_read_ex" || p.symbol == "SSL_write_ex") {
			continue // OpenSSL 1.1.0 has no _ex functions
		}
		if !ok {
			return f.fail(fmt.Errorf("attach uprobes to %s: no offset for %s", path, p.symbol))
		}
		if err := f.attach(p.entry, off, false, p.symbol); err != nil {
			return f.fail(err)
		}
		if p.ret != "" {
			if err := f.attach(p.ret, off, true, p.symbol); err != nil {
				return f.fail(err)
			}
		}
	}
	f.keep()
	return nil
}

// AttachGoTLS puts the crypto/tls uprobes on one Go program: past the stack check (elfsym.GoFunc.Body: once
// per call, where the entry can be run twice) and at every return instruction of each of GoTLSFuncs (funcs, as
// elfsym.GoFunctions found them).
func (n *Netflow) AttachGoTLS(path string, funcs map[string]elfsym.GoFunc) error {
	f, err := n.probesOn(path)
	if err != nil {
		return err
	}
	for _, p := range goProbes {
		fn, ok := funcs[p.fn]
		if !ok {
			return f.fail(fmt.Errorf("attach uprobes to %s: no %s", path, p.fn))
		}
		if err := f.attach(p.entry, fn.Body, false, fmt.Sprintf("%s+%#x", p.fn, fn.Body-fn.Entry)); err != nil {
			return f.fail(err)
		}
		for _, r := range fn.Returns {
			if p.ret == "" {
				break
			}
			if err := f.attach(p.ret, r, false, fmt.Sprintf("%s+%#x", p.fn, r-fn.Entry)); err != nil {
				return f.fail(err)
			}
		}
	}
	f.keep()
	return nil
}

func (h *httpProbe) close() {
	detachParallel(h.links)
	h.ring.Close()
	if h.h2Ring != nil {
		h.h2Ring.Close()
	}
}
