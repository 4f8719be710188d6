// Package plugintest holds what the plugins' unit tests share to stand in for the kernel: a ring of records
// and the kernel's byte layout of a Go mirror.
package plugintest

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// Ring is a kernel ring buffer's pending records; Drain hands them over once, as the kernel's does.
type Ring [][]byte

// Drain hands each pending record to fn and empties the ring.
func (r *Ring) Drain(fn func([]byte)) int {
	n := len(*r)
	for _, b := range *r {
		fn(b)
	}
	*r = nil
	return n
}

// Raw returns a Go mirror of a kernel record as the kernel lays it out (host byte order, no gaps).
func Raw(t testing.TB, v any) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := binary.Write(&b, binary.NativeEndian, v); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
