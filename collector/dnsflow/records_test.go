package dnsflow

import (
	"dkebpf/collector/flow"

	"bytes"
	"encoding/binary"
	"testing"
)

func TestEventMirrorHasTheSizeOfDfEvent(t *testing.T) {
	if got := binary.Size(Event{}); got != SizeEvent {
		t.Errorf("binary.Size(Event{}) = %d, SizeEvent = %d", got, SizeEvent)
	}
}

func TestEventDecodeRoundTripsEveryField(t *testing.T) {
	e := Event{
		T: flow.Tuple{Saddr: [16]byte{10, 0, 0, 1}, Daddr: [16]byte{10, 0, 0, 53},
			Sport: 40000, Dport: 53, Family: afInet, Proto: protoTCP},
		Cookie: 1 << 60, TsNs: 123456789012, Pid: 4242, Netns: 4026531840, Mntns: 4026531841, Seq: 0xfffffff0, Len: 70000,
		Cap: MsgLen, Flags: FlagEgress | FlagOwner | FlagTCPFin, Comm: [16]byte{'d', 'i', 'g'},
	}
	for i := range e.Msg {
		e.Msg[i] = byte(i*7 + 1)
	}
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.NativeEndian, &e); err != nil {
		t.Fatal(err)
	}
	if buf.Len() != SizeEvent {
		t.Fatalf("encoded %d bytes, want %d", buf.Len(), SizeEvent)
	}
	var got Event
	if err := got.UnmarshalBinary(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	if got != e {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, e)
	}
	if err := got.UnmarshalBinary(buf.Bytes()[:SizeEvent-1]); err == nil {
		t.Error("decoding a record shorter than its cap says succeeded")
	}
}

// The kernel sends only the Cap payload bytes a record holds.
func TestEventDecodesARecordCutAfterItsPayload(t *testing.T) {
	e := Event{T: flow.Tuple{Family: afInet, Proto: protoUDP, Dport: 53}, Len: 33, Cap: 33, Flags: FlagEgress}
	copy(e.Msg[:], "0123456789abcdefghijklmnopqrstuvw")
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.NativeEndian, &e); err != nil {
		t.Fatal(err)
	}
	var got Event
	if err := got.UnmarshalBinary(buf.Bytes()[:SizeHeader+33]); err != nil {
		t.Fatal(err)
	}
	if got != e {
		t.Errorf("cut record:\n got %+v\nwant %+v", got, e)
	}
	if err := got.UnmarshalBinary(buf.Bytes()[:SizeHeader-1]); err == nil {
		t.Error("decoding a record without its header succeeded")
	}
}

func TestPayloadTrustsNeitherCapNorLen(t *testing.T) {
	for _, c := range []struct {
		len  uint32
		cap  uint16
		want int
	}{{100, 100, 100}, {1000, 512, 512}, {1000, 9999, 512}, {10, 512, 10}, {0, 0, 0}} {
		e := Event{Len: c.len, Cap: c.cap}
		if got := len(e.payload()); got != c.want {
			t.Errorf("len %d cap %d: payload has %d bytes, want %d", c.len, c.cap, got, c.want)
		}
	}
}
