package dnsflow

import (
	"encoding/binary"
	"fmt"

	"dkebpf/collector/flow"
)

// NameLen is DF_NAME_LEN: the bytes of a question's name (wire format) the kernel keeps.
const NameLen = 256

// Key mirrors struct df_key (probes/dnsflow.h): what the kernel counts UDP queries per.
type Key struct {
	T       flow.Tuple // client (local) and server; the client's port is 0 unless it is a DNS port
	Pid     uint32
	Mntns   uint32
	Netns   uint32
	Rcode   int16 // -1: unanswered
	Qtype   uint16
	NameLen uint16 // bytes of Name, its final zero label included
	Epoch   uint8
	_       uint8
	Comm    [16]byte
	Name    [NameLen]byte // wire format
}

// Query mirrors struct df_query: a UDP query the kernel waits an answer for.
type Query struct {
	TsNs uint64 // CLOCK_MONOTONIC when it was sent
	K    Key
	_    uint32
}

// Acc mirrors struct df_acc: one CPU's counts of a key.
type Acc struct {
	Count, LatencySum, LatencyMax uint64
}

// Sizes of the C structs (the layout test checks the mirrors against the BTF).
const (
	SizeKey   = 332
	SizeQuery = 344
)

// UnmarshalBinary decodes a struct df_key in host byte order.
func (k *Key) UnmarshalBinary(b []byte) error {
	if len(b) < SizeKey {
		return fmt.Errorf("decode df_key: %d bytes, want %d", len(b), SizeKey)
	}
	n := binary.NativeEndian
	_ = k.T.UnmarshalBinary(b[:flow.SizeTuple])
	k.Pid = n.Uint32(b[40:])
	k.Mntns = n.Uint32(b[44:])
	k.Netns = n.Uint32(b[48:])
	k.Rcode = int16(n.Uint16(b[52:]))
	k.Qtype = n.Uint16(b[54:])
	k.NameLen = n.Uint16(b[56:])
	k.Epoch = b[58]
	copy(k.Comm[:], b[60:76])
	copy(k.Name[:], b[76:SizeKey])
	return nil
}

// UnmarshalBinary decodes a struct df_query in host byte order.
func (q *Query) UnmarshalBinary(b []byte) error {
	if len(b) < SizeQuery {
		return fmt.Errorf("decode df_query: %d bytes, want %d", len(b), SizeQuery)
	}
	q.TsNs = binary.NativeEndian.Uint64(b)
	return q.K.UnmarshalBinary(b[8:])
}

// question returns the key's question as a DNS message (a header with one question, the name, type and
// class IN), so it is named by the same parser as the collector's own messages.
func (k *Key) question() []byte {
	n := min(int(k.NameLen), NameLen)
	b := make([]byte, 12, 12+n+4)
	b[5] = 1 // QDCOUNT
	b = append(b, k.Name[:n]...)
	return binary.BigEndian.AppendUint32(b, uint32(k.Qtype)<<16|1)
}
