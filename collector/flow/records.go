package flow

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"
)

// Kernel constants of the records (probes/netflow.h).
const (
	AFInet  = 2
	AFInet6 = 10

	ProtoTCP = 6
	ProtoUDP = 17

	DirOut = 1 // NF_DIR_OUT
	DirIn  = 2 // NF_DIR_IN
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
	Mntns        uint32 // the owner's mount namespace: its container
}

// Decode fills v (a pointer to one of the mirrors) from a kernel record in host byte order.
func Decode(b []byte, v any) error {
	if n := binary.Size(v); len(b) < n {
		return fmt.Errorf("decode %T: record has %d bytes, want %d", v, len(b), n)
	}
	return binary.Read(bytes.NewReader(b), binary.NativeEndian, v)
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

// Addr converts a kernel address to netip, reporting IPv4-mapped IPv6 as IPv4 (as DataKit does).
func Addr(family uint16, b [16]byte) netip.Addr {
	if family == AFInet {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(b).Unmap()
}

// Comm returns a NUL-terminated kernel string (a process name).
func Comm(b [16]byte) string {
	n := bytes.IndexByte(b[:], 0)
	if n < 0 {
		n = len(b)
	}
	// A process sets its own name (prctl PR_SET_NAME) to any bytes: a control character or invalid UTF-8
	// would make line protocol refuse every point that names it.
	name := string(b[:n])
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x20 || c == 0x7f || c >= utf8.RuneSelf {
			return strings.Map(func(r rune) rune {
				if r < 0x20 || r == 0x7f || r == utf8.RuneError {
					return '?'
				}
				return r
			}, strings.ToValidUTF8(name, "?"))
		}
	}
	return name
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
