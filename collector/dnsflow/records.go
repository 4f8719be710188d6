package dnsflow

import (
	"dkebpf/collector/flow"

	"encoding/binary"
	"fmt"
)

// Flags of Event.Flags (DF_F_* in probes/dnsflow.h).
const (
	FlagEgress = 1 // DF_F_EGRESS: sent by the local (client) socket to the server; else received from it
	FlagOwner  = 2 // DF_F_OWNER: sent in the owner's process context, so Pid, Comm and Netns are the sender's
	FlagTCPFin = 4 // DF_F_TCP_FIN: the segment carries FIN or RST (its direction of the stream ends)
	FlagNames  = 8 // DF_F_NAMES: an answer the kernel paired and counted, for the name cache only
)

// MsgLen is DF_MSG_LEN: the bytes of a packet's DNS payload the kernel copies.
const MsgLen = 512

// Event mirrors struct df_event (probes/dnsflow.h): one DNS datagram, or one TCP segment with payload of a
// connection to a DNS port, seen on a client's socket.
type Event struct {
	T      flow.Tuple // local (client) and remote (server) address, in both directions
	Cookie uint64     // socket cookie
	TsNs   uint64     // CLOCK_MONOTONIC when the packet passed the socket's hook
	Pid    uint32     // sender (tgid) if FlagOwner, else 0
	Netns  uint32     // its network namespace if FlagOwner, else 0
	Seq    uint32     // TCP: sequence number of the first payload byte
	Len    uint32     // payload bytes in the packet
	Cap    uint16     // valid bytes of Msg: min(Len, MsgLen)
	Flags  uint8      // Flag*
	_      uint8
	Mntns  uint32 // the sender's mount namespace (its container) if FlagOwner, else 0
	Comm   [16]byte
	Msg    [MsgLen]byte // the payload's first bytes
}

// SizeEvent is the size of struct df_event (the layout test checks the mirror against the BTF).
const SizeEvent = 608

// SizeHeader is the size of a record without payload: the kernel sends a struct df_event cut after its
// Cap bytes of Msg.
const SizeHeader = SizeEvent - MsgLen

// UnmarshalBinary decodes a struct df_event in host byte order by hand: one arrives per DNS packet, and
// reflection (binary.Read) would cost more than parsing the message.
func (e *Event) UnmarshalBinary(b []byte) error {
	if len(b) < SizeHeader {
		return fmt.Errorf("decode df_event: record has %d bytes, want at least %d", len(b), SizeHeader)
	}
	n := binary.NativeEndian
	_ = e.T.UnmarshalBinary(b[:flow.SizeTuple]) // cannot fail: the length is checked above
	e.Cookie = n.Uint64(b[40:])
	e.TsNs = n.Uint64(b[48:])
	e.Pid = n.Uint32(b[56:])
	e.Netns = n.Uint32(b[60:])
	e.Seq = n.Uint32(b[64:])
	e.Len = n.Uint32(b[68:])
	e.Cap = n.Uint16(b[72:])
	e.Flags = b[74]
	e.Mntns = n.Uint32(b[76:])
	copy(e.Comm[:], b[80:96])
	if int(e.Cap) > len(b)-SizeHeader {
		return fmt.Errorf("decode df_event: record has %d payload bytes, its cap says %d", len(b)-SizeHeader, e.Cap)
	}
	copy(e.Msg[:], b[SizeHeader:SizeHeader+int(e.Cap)])
	return nil
}

// payload returns the captured bytes, trusting neither Cap nor Len beyond the buffer.
func (e *Event) payload() []byte {
	return e.Msg[:min(int(e.Cap), int(e.Len), MsgLen)]
}
