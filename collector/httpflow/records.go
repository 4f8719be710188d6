package httpflow

import (
	"dkebpf/collector/flow"

	"encoding/binary"
	"fmt"
)

// Flags of Event.Flags (HF_F_* in probes/httpflow.h).
const (
	FlagTLS      = 1 // HF_F_TLS: seen through the OpenSSL uprobes, not in packets
	FlagReqSplit = 2 // HF_F_REQ_SPLIT: the request line did not end in the first write
)

// Values of Event.Dir (NF_DIR_* in probes/netflow.h).
const (
	DirOut = 1 // NF_DIR_OUT: we sent the request (client, direction "outgoing")
	DirIn  = 2 // NF_DIR_IN: we answered it (server, direction "incoming")
)

// Sizes of the captured buffers (HF_REQ_LEN, HF_HOST_LEN).
const (
	ReqLen  = 128
	HostLen = 64
)

// Event mirrors struct hf_event (probes/httpflow.h): one HTTP/1.x exchange, a request and its final
// response, paired in the kernel.
type Event struct {
	T         flow.Tuple // local (src) and remote (dst) address of the connection
	Cookie    uint64
	LatencyNs uint64 // first byte of the final response minus last byte of the request
	ReqBytes  uint64 // whole request message
	RespBytes uint64 // whole response messages, interim (1xx) ones included
	Pid       uint32
	Netns     uint32
	Comm      [16]byte
	Status    uint16 // final status code
	Dir       uint8  // DirOut or DirIn
	Flags     uint8  // Flag*
	ReqLen    uint8  // valid bytes of Req
	HostLen   uint8  // valid bytes of Host (0: no Host header seen)
	_         [2]byte
	Mntns     uint32 // the owner's mount namespace: its container
	_         uint32
	Req       [ReqLen]byte  // the request's first bytes: its request line
	Host      [HostLen]byte // the Host header's value, from just after "Host:"
}

// SizeEvent is the size of struct hf_event (the layout test checks the mirror against the BTF).
const SizeEvent = 304

// SizeHead is the size of a record's fixed part (HF_EVENT_HEAD): the kernel sends a struct hf_event cut
// after it, followed by ReqLen bytes of Req and HostLen bytes of Host.
const SizeHead = SizeEvent - ReqLen - HostLen

// UnmarshalBinary decodes a record of the ring (struct hf_event cut short, in host byte order) by hand: one
// arrives per HTTP exchange, up to hundreds of thousands a second, and reflection (binary.Read) would cost
// more than the rest.
func (e *Event) UnmarshalBinary(b []byte) error {
	if len(b) < SizeHead {
		return fmt.Errorf("decode hf_event: record has %d bytes, want at least %d", len(b), SizeHead)
	}
	req, host := min(int(b[100]), ReqLen), min(int(b[101]), HostLen)
	if len(b) < SizeHead+req+host {
		return fmt.Errorf("decode hf_event: record has %d bytes, its lengths say %d", len(b), SizeHead+req+host)
	}
	n := binary.NativeEndian
	_ = e.T.UnmarshalBinary(b[:flow.SizeTuple]) // cannot fail: the length is checked above
	e.Cookie = n.Uint64(b[40:])
	e.LatencyNs = n.Uint64(b[48:])
	e.ReqBytes = n.Uint64(b[56:])
	e.RespBytes = n.Uint64(b[64:])
	e.Pid = n.Uint32(b[72:])
	e.Netns = n.Uint32(b[76:])
	copy(e.Comm[:], b[80:96])
	e.Status = n.Uint16(b[96:])
	e.Dir, e.Flags, e.ReqLen, e.HostLen = b[98], b[99], b[100], b[101]
	e.Mntns = n.Uint32(b[104:])
	clear(e.Req[copy(e.Req[:], b[SizeHead:SizeHead+req]):])
	clear(e.Host[copy(e.Host[:], b[SizeHead+req:SizeHead+req+host]):])
	return nil
}

// AppendBinary appends the record the kernel sends for e (for tests and fuzzing: the collector only decodes).
func (e *Event) AppendBinary(b []byte) ([]byte, error) {
	full, err := binary.Append(nil, binary.NativeEndian, e)
	if err != nil {
		return nil, err
	}
	req, host := min(int(e.ReqLen), ReqLen), min(int(e.HostLen), HostLen)
	b = append(b, full[:SizeHead+req]...)
	return append(b, full[SizeHead+ReqLen:SizeHead+ReqLen+host]...), nil
}

// H2Chunk is HF_H2_CHUNK, the most bytes of HTTP/2 frames one H2Record carries.
const H2Chunk = 4096

// Flags of H2Record.Flags (enum hf_h2_flag in probes/httpflow.h).
const (
	H2FlagClient = 1 // HF_H2_CLIENT: this side sent the connection preface
	H2FlagClose  = 2 // HF_H2_CLOSE: the session ended
	H2FlagLost   = 4 // HF_H2_LOST: the kernel lost this direction's frame boundaries
)

// H2Record mirrors struct hf_h2_rec (probes/httpflow.h): frames of one TLS call of an HTTP/2 session, DATA
// payloads left out. The ring carries it cut after N bytes of Data.
type H2Record struct {
	T      flow.Tuple
	Cookie uint64
	SSL    uint64 // the session: SSL * or *tls.Conn in process Pid
	TsNs   uint64
	Pid    uint32
	Netns  uint32
	Comm   [16]byte
	Mntns  uint32
	Seq    uint32
	N      uint16
	Dir    uint8 // 0: written, 1: read
	Flags  uint8 // H2Flag*
	_      uint32
	Data   [H2Chunk]byte
}

// SizeH2Head is the size of an H2Record before Data.
const SizeH2Head = 104

// h2Record is a decoded record: its fixed part and its data, which aliases the ring's bytes.
type h2Record struct {
	H2Record // Data unused
	data     []byte
}

// UnmarshalBinary decodes a record without copying its data (valid until the ring's next drain).
func (r *h2Record) UnmarshalBinary(b []byte) error {
	if len(b) < SizeH2Head {
		return fmt.Errorf("decode hf_h2_rec: record has %d bytes, want at least %d", len(b), SizeH2Head)
	}
	n := binary.NativeEndian
	dlen := int(n.Uint16(b[96:]))
	if dlen > H2Chunk || len(b) < SizeH2Head+dlen {
		return fmt.Errorf("decode hf_h2_rec: record has %d bytes, its length says %d", len(b), SizeH2Head+dlen)
	}
	_ = r.T.UnmarshalBinary(b[:flow.SizeTuple])
	r.Cookie = n.Uint64(b[40:])
	r.SSL = n.Uint64(b[48:])
	r.TsNs = n.Uint64(b[56:])
	r.Pid = n.Uint32(b[64:])
	r.Netns = n.Uint32(b[68:])
	copy(r.Comm[:], b[72:88])
	r.Mntns = n.Uint32(b[88:])
	r.Seq = n.Uint32(b[92:])
	r.N = uint16(dlen)
	r.Dir, r.Flags = b[98], b[99]
	r.data = b[SizeH2Head : SizeH2Head+dlen]
	return nil
}
