package bash

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func TestLineMirrorHasTheSizeOfBashLine(t *testing.T) {
	if got := binary.Size(Line{}); got != SizeLine {
		t.Errorf("binary.Size(Line{}) = %d, SizeLine = %d", got, SizeLine)
	}
	if got := binary.Size(Exec{}); got != SizeExec {
		t.Errorf("binary.Size(Exec{}) = %d, SizeExec = %d", got, SizeExec)
	}
}

func encode(t *testing.T, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	// Kernel records are in host byte order, which binary.NativeEndian is.
	if err := binary.Write(&buf, binary.NativeEndian, v); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestLineDecodeRoundTripsEveryField(t *testing.T) {
	l := Line{TsNs: 1<<62 + 12345, Pid: 4242, Uid: 1001, Mntns: 4026531841, Len: LineLen - 1, Truncated: 1, Comm: [CommLen]byte{'b', 'a', 's', 'h'}}
	for i := range l.Line {
		l.Line[i] = byte(i%250 + 1)
	}
	b := encode(t, &l)
	if len(b) != SizeLine {
		t.Fatalf("encoded %d bytes, want %d", len(b), SizeLine)
	}
	var got Line
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if got != l {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, l)
	}
	if err := got.UnmarshalBinary(b[:SizeHead+LineLen-2]); err == nil {
		t.Error("decoding a record shorter than its length succeeded")
	}
}

// A short line's record ends after its NUL, and nothing of a used Line stays.
func TestLineDecodeOfAShortRecord(t *testing.T) {
	l := Line{Pid: 7, Len: 5, Comm: [CommLen]byte{'b', 'a', 's', 'h'}}
	copy(l.Line[:], "ls -l")
	b := encode(t, &l)[:SizeHead+6]
	got := Line{Len: 900}
	got.Line[800] = 'x'
	if err := got.UnmarshalBinary(b); err != nil || got != l {
		t.Errorf("decoded %+v, %v; want %+v", got, err, l)
	}
	if got.Text() != "ls -l" {
		t.Errorf("Text() = %q", got.Text())
	}
	if err := got.UnmarshalBinary(b[:SizeHead+4]); err == nil {
		t.Error("decoding a record shorter than its length succeeded")
	}
}

func TestExecDecodeRoundTrips(t *testing.T) {
	e := Exec{Pid: 99999}
	var got Exec
	if err := got.UnmarshalBinary(encode(t, &e)); err != nil || got != e {
		t.Errorf("round trip: got %+v, %v; want %+v", got, err, e)
	}
	if err := got.UnmarshalBinary(make([]byte, SizeExec-1)); err == nil {
		t.Error("decoding a short record succeeded")
	}
}

func TestLineTextIsLenBytesOfValidUTF8(t *testing.T) {
	mk := func(s string, n uint32) Line {
		var l Line
		copy(l.Line[:], s)
		l.Len = n
		return l
	}
	full := bytes.Repeat([]byte{'x'}, LineLen)
	tests := []struct {
		name string
		l    Line
		want string
	}{
		{"plain", mk("ls -l\x00junk", 5), "ls -l"},
		{"empty", mk("", 0), ""},
		{"len past a NUL", mk("ab\x00cd", 5), "ab"},
		{"len longer than the buffer", mk(string(full), 5000), string(full[:LineLen-1])},
		{"cut inside a rune", mk("echo \xc3\xa9\xc3", 8), "echo \u00e9\ufffd"},
		{"invalid bytes", mk("a\xffb", 3), "a\ufffdb"},
	}
	for _, tt := range tests {
		if got := tt.l.Text(); got != tt.want {
			t.Errorf("%s: Text() = %q, want %q", tt.name, got, tt.want)
		}
	}
	l := Line{Comm: [CommLen]byte{'b', 'a', 's', 'h'}}
	if got := l.CommString(); got != "bash" {
		t.Errorf("CommString() = %q", got)
	}
}
