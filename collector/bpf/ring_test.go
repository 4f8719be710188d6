package bpf

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
)

// fakeRing is a Ring over plain memory with a producer written the way the kernel writes: an 8-byte
// header (length, busy and discard bits) at an 8-aligned position, then the record, wrapping at the end
// of the data area.
type fakeRing struct {
	r    *Ring
	prod uint64
}

func newFakeRing(size int) *fakeRing {
	const page = 4096
	prod := make([]byte, page+size)
	return &fakeRing{r: &Ring{consumer: make([]byte, 8), producer: prod, data: prod[page:], mask: uint64(size) - 1}}
}

func (f *fakeRing) put(rec []byte, flags uint32) {
	size := uint64(len(f.r.data))
	off := f.prod & f.r.mask
	binary.NativeEndian.PutUint32(f.r.data[off:], uint32(len(rec))|flags)
	for i, b := range rec {
		f.r.data[(off+ringHeaderSize+uint64(i))%size] = b
	}
	f.prod += (uint64(len(rec)) + ringHeaderSize + 7) &^ 7
	binary.NativeEndian.PutUint64(f.r.producer, f.prod)
}

func TestRingDrainsRecordsThatWrap(t *testing.T) {
	f := newFakeRing(8192) // a round writes at most 4 records of 1400 bytes and a discarded one
	var want, got [][]byte
	for round := 0; round < 200; round++ {
		// records of every length class, so that some end exactly at the end of the data area, some
		// wrap in their payload, and some start right at it
		for i := 0; i < 1+round%4; i++ {
			rec := bytes.Repeat([]byte{byte(round), byte(i)}, (round*37+i*11)%700+1)
			f.put(rec, 0)
			want = append(want, rec)
		}
		f.put([]byte("discarded"), ringDiscardBit)
		n := f.r.Drain(func(b []byte) { got = append(got, bytes.Clone(b)) })
		if n != 1+round%4 {
			t.Fatalf("round %d: drained %d records, want %d", round, n, 1+round%4)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("record %d: got %d bytes %s, want %d bytes %s", i, len(got[i]), prefix(got[i]), len(want[i]), prefix(want[i]))
		}
	}
	if cons := binary.NativeEndian.Uint64(f.r.consumer); cons != f.prod {
		t.Errorf("consumer at %d, producer at %d", cons, f.prod)
	}
}

func TestRingStopsAtABusyRecord(t *testing.T) {
	f := newFakeRing(4096)
	f.put([]byte("first"), 0)
	f.put([]byte("reserved"), ringBusyBit)
	var got []string
	if n := f.r.Drain(func(b []byte) { got = append(got, string(b)) }); n != 1 || len(got) != 1 || got[0] != "first" {
		t.Fatalf("drained %d: %q, want only \"first\"", n, got)
	}
}

func prefix(b []byte) string { return fmt.Sprintf("%x", b[:min(len(b), 8)]) }
