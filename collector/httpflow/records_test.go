package httpflow

import (
	"dkebpf/collector/flow"

	"bytes"
	"encoding/binary"
	"testing"
)

func TestEventMirrorHasTheSizeOfHfEvent(t *testing.T) {
	if got := binary.Size(Event{}); got != SizeEvent {
		t.Errorf("binary.Size(Event{}) = %d, SizeEvent = %d", got, SizeEvent)
	}
}

func TestEventDecodeRoundTripsEveryField(t *testing.T) {
	e := Event{
		T: flow.Tuple{Saddr: [16]byte{10, 0, 0, 1}, Daddr: [16]byte{10, 0, 0, 2},
			Sport: 40000, Dport: 8080, Family: afInet, Proto: 6},
		Cookie: 1 << 60, LatencyNs: 1234567, ReqBytes: 1 << 33, RespBytes: 99,
		Pid: 4242, Netns: 4026531840, Mntns: 4026531841, Comm: [16]byte{'c', 'u', 'r', 'l'},
		Status: 404, Dir: DirIn, Flags: FlagTLS | FlagReqSplit, ReqLen: ReqLen, HostLen: 17,
	}
	for i := range e.Req {
		e.Req[i] = byte(i + 1)
	}
	for i := range e.Host {
		e.Host[i] = byte(255 - i)
	}
	var buf bytes.Buffer
	// Kernel records are in host byte order, which binary.NativeEndian is (little-endian on x86 and arm64).
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
		t.Error("decoding a short record succeeded")
	}
}
