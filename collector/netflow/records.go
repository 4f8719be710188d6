// Package netflow turns the kernel's per-connection TCP counters and per-peer UDP counters into
// DataKit's netflow points: decode, per-interval deltas, aggregation by flow.
package netflow

import (
	"dkebpf/collector/flow"

	"encoding/binary"
	"fmt"
)

// TCPRecord mirrors struct nf_tcp_rec (probes/netflow.h).
type TCPRecord struct {
	Cookie       uint64
	T            flow.Tuple
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
	_            uint8
	Mntns        uint32
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

// UnmarshalBinary decodes a struct nf_tcp_rec by hand: one runs per TCP connection, and reflection
// (binary.Read) would cost more than everything else the collector does with it.
func (r *TCPRecord) UnmarshalBinary(b []byte) error {
	if len(b) < SizeTCPRecord {
		return fmt.Errorf("decode nf_tcp_rec: record has %d bytes, want %d", len(b), SizeTCPRecord)
	}
	e := binary.NativeEndian
	r.Cookie = e.Uint64(b[0:])
	_ = r.T.UnmarshalBinary(b[8 : 8+flow.SizeTuple]) // the length is checked above
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
	r.Mntns = e.Uint32(b[108:])
	return nil
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
