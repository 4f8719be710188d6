package httpflow

import (
	"dkebpf/collector/flow"

	"encoding/binary"
	"testing"
)

func TestEventMirrorHasTheSizeOfHfEvent(t *testing.T) {
	if got := binary.Size(Event{}); got != SizeEvent {
		t.Errorf("binary.Size(Event{}) = %d, SizeEvent = %d", got, SizeEvent)
	}
}

// record is e as the kernel's ring carries it.
func record(t testing.TB, e Event) []byte {
	t.Helper()
	b, err := e.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
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
	for i := range e.HostLen {
		e.Host[i] = byte(255 - i)
	}
	b := record(t, e)
	if len(b) != SizeHead+ReqLen+17 {
		t.Fatalf("encoded %d bytes, want %d", len(b), SizeHead+ReqLen+17)
	}
	var got Event
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if got != e {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, e)
	}
	if err := got.UnmarshalBinary(b[:len(b)-1]); err == nil {
		t.Error("decoding a short record succeeded")
	}
}

// The host follows the request's bytes, wherever they end, and nothing of a used Event stays.
func TestEventDecodeOfAShortRecord(t *testing.T) {
	e := Event{Status: 200, ReqLen: 16, HostLen: 9}
	copy(e.Req[:], "GET / HTTP/1.1\r\n")
	copy(e.Host[:], " api.test")
	b := record(t, e)
	if len(b) != SizeHead+16+9 || string(b[SizeHead:]) != "GET / HTTP/1.1\r\n api.test" {
		t.Fatalf("record %q (%d bytes), want the head, then the request line and the host", b[SizeHead:], len(b))
	}
	got := Event{ReqLen: 99}
	got.Req[100], got.Host[50] = 'x', 'y'
	if err := got.UnmarshalBinary(b); err != nil || got != e {
		t.Errorf("decoded %+v, %v; want %+v", got, err, e)
	}
}
