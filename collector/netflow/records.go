// Package netflow turns the kernel's per-connection TCP counters and per-peer UDP counters into
// DataKit's netflow points: decode, per-interval deltas, aggregation by flow.
package netflow

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
)

const (
	afInet  = 2
	afInet6 = 10

	protoTCP = 6
	protoUDP = 17

	dirOut = 1 // NF_DIR_OUT
	dirIn  = 2 // NF_DIR_IN
)

// Tuple mirrors struct nf_tuple (probes/netflow.h).
type Tuple struct {
	Saddr  [16]byte
	Daddr  [16]byte
	Sport  uint16
	Dport  uint16
	Family uint16
	Proto  uint8
	_      uint8
}

// Sock mirrors struct nf_sock (probes/netflow.h).
type Sock struct {
	T            Tuple
	Sk           uint64
	BaseAcked    uint64
	BaseReceived uint64
	BaseWriteSeq uint32
	BaseRetrans  uint32
	Pid          uint32
	Netns        uint32
	Comm         [16]byte
	Dir          uint8
	Established  uint8
	FinSent      uint8
	Preexisting  uint8
	_            [4]byte
}

// TCPRecord mirrors struct nf_tcp_rec (probes/netflow.h).
type TCPRecord struct {
	Cookie       uint64
	T            Tuple
	BytesWritten uint64
	BytesRead    uint64
	Retrans      uint32
	SrttUs       uint32
	RttvarUs     uint32
	Ino          uint32
	Pid          uint32
	Netns        uint32
	Comm         [16]byte
	Dir          uint8
	Closed       uint8
	Preexisting  uint8
	_            [5]byte
}

// UDPKey mirrors struct nf_udp_key (probes/netflow.h).
type UDPKey struct {
	Cookie uint64
	Laddr  [16]byte
	Raddr  [16]byte
	Lport  uint16
	Rport  uint16
	Family uint16
	_      [2]byte
}

// UDPVal mirrors struct nf_udp_val (probes/netflow.h).
type UDPVal struct {
	BytesOut uint64
	BytesIn  uint64
	PktsOut  uint64
	PktsIn   uint64
}

// SizeTCPRecord is the size of struct nf_tcp_rec (the layout test checks every mirror against the BTF).
var SizeTCPRecord = binary.Size(TCPRecord{})

// Decode fills v (a pointer to one of the mirrors) from a kernel record in host byte order.
func Decode(b []byte, v any) error {
	if n := binary.Size(v); len(b) < n {
		return fmt.Errorf("decode %T: record has %d bytes, want %d", v, len(b), n)
	}
	return binary.Read(bytes.NewReader(b), binary.NativeEndian, v)
}

// UnmarshalBinary decodes a struct nf_tcp_rec by hand: one runs per TCP connection, and reflection
// (binary.Read) would cost more than everything else the collector does with it.
func (r *TCPRecord) UnmarshalBinary(b []byte) error {
	if len(b) < SizeTCPRecord {
		return fmt.Errorf("decode nf_tcp_rec: record has %d bytes, want %d", len(b), SizeTCPRecord)
	}
	e := binary.NativeEndian
	r.Cookie = e.Uint64(b[0:])
	r.T.decode(b[8 : 8+SizeTuple])
	r.BytesWritten = e.Uint64(b[48:])
	r.BytesRead = e.Uint64(b[56:])
	r.Retrans = e.Uint32(b[64:])
	r.SrttUs = e.Uint32(b[68:])
	r.RttvarUs = e.Uint32(b[72:])
	r.Ino = e.Uint32(b[76:])
	r.Pid = e.Uint32(b[80:])
	r.Netns = e.Uint32(b[84:])
	copy(r.Comm[:], b[88:104])
	r.Dir, r.Closed, r.Preexisting = b[104], b[105], b[106]
	return nil
}

// SizeTuple is the size of struct nf_tuple, which other records embed.
const SizeTuple = 40

// UnmarshalBinary decodes a struct nf_tuple in host byte order, for decoders of records that embed one.
func (t *Tuple) UnmarshalBinary(b []byte) error {
	if len(b) < SizeTuple {
		return fmt.Errorf("decode nf_tuple: record has %d bytes, want %d", len(b), SizeTuple)
	}
	t.decode(b)
	return nil
}

func (t *Tuple) decode(b []byte) {
	e := binary.NativeEndian
	copy(t.Saddr[:], b[0:16])
	copy(t.Daddr[:], b[16:32])
	t.Sport, t.Dport, t.Family = e.Uint16(b[32:]), e.Uint16(b[34:]), e.Uint16(b[36:])
	t.Proto = b[38]
}

// DecodeTCPRecords splits an iterator's output into records.
func DecodeTCPRecords(b []byte) ([]TCPRecord, error) {
	if len(b)%SizeTCPRecord != 0 {
		return nil, fmt.Errorf("decode iterator output: %d bytes is not a multiple of %d", len(b), SizeTCPRecord)
	}
	out := make([]TCPRecord, len(b)/SizeTCPRecord)
	for i := range out {
		if err := out[i].UnmarshalBinary(b[i*SizeTCPRecord:]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Addr converts a kernel address to netip, reporting IPv4-mapped IPv6 as IPv4 (as DataKit does).
func Addr(family uint16, b [16]byte) netip.Addr {
	if family == afInet {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(b).Unmap()
}

// Comm returns a NUL-terminated kernel string (a process name).
func Comm(b [16]byte) string {
	if i := bytes.IndexByte(b[:], 0); i >= 0 {
		return string(b[:i])
	}
	return string(b[:])
}

// CommNames turns kernel comms into strings, allocating each distinct name once: one arrives with every
// record. Bounded, as names come and go with processes.
type CommNames map[[16]byte]string

func (c CommNames) Name(b [16]byte) string {
	s, ok := c[b]
	if !ok {
		if len(c) >= 4096 {
			clear(c)
		}
		s = Comm(b)
		c[b] = s
	}
	return s
}
