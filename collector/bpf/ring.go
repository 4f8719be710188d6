package bpf

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Ring reads a BPF ring buffer by mapping it, without waiting for wakeups: producers submit with
// BPF_RB_NO_WAKEUP and the collector drains on its own timer (libbpfgo v0.7.0 only offers a poll loop
// that needs wakeups). Layout per the kernel's ringbuf: a consumer page (rw), then a producer page and
// the data area. The kernel lets a reader map the data area twice in a row, so that a record that wraps
// reads contiguously (libbpf does), but every page the mapping covers counts in the collector's resident
// memory: mapped twice, a 4 MiB ring is 8 MiB of RSS. So the data area is mapped once, and the rare
// record that wraps is copied into scratch.
type Ring struct {
	consumer []byte
	producer []byte // the producer page, then the data area
	data     []byte // producer[page:]
	mask     uint64
	scratch  []byte // a record that wraps, made contiguous
}

const (
	ringBusyBit    = 1 << 31
	ringDiscardBit = 1 << 30
	ringHeaderSize = 8
)

func newRing(fd int, size uint32) (*Ring, error) {
	page := unix.Getpagesize()
	cons, err := unix.Mmap(fd, 0, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap ring buffer consumer page: %w", err)
	}
	prod, err := unix.Mmap(fd, int64(page), page+int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		unix.Munmap(cons)
		return nil, fmt.Errorf("mmap ring buffer data: %w", err)
	}
	return &Ring{consumer: cons, producer: prod, data: prod[page:], mask: uint64(size) - 1}, nil
}

func (r *Ring) pos(b []byte) *uint64 { return (*uint64)(unsafe.Pointer(&b[0])) }

// Drain calls fn for every committed record and frees them. fn must copy what it keeps.
func (r *Ring) Drain(fn func([]byte)) int {
	n := 0
	size := uint64(len(r.data))
	cons := atomic.LoadUint64(r.pos(r.consumer))
	for {
		prod := atomic.LoadUint64(r.pos(r.producer))
		if cons >= prod {
			break
		}
		off := cons & r.mask // 8-aligned in a data area of whole pages: the header never wraps
		hdr := atomic.LoadUint32((*uint32)(unsafe.Pointer(&r.data[off])))
		if hdr&ringBusyBit != 0 {
			break // reserved, not yet submitted
		}
		length := uint64(hdr &^ (ringBusyBit | ringDiscardBit))
		if hdr&ringDiscardBit == 0 {
			start, end := off+ringHeaderSize, off+ringHeaderSize+length
			if end <= size {
				fn(r.data[start:end])
			} else {
				r.scratch = append(append(r.scratch[:0], r.data[start:]...), r.data[:end-size]...)
				fn(r.scratch)
			}
			n++
		}
		cons += (length + ringHeaderSize + 7) &^ 7
		atomic.StoreUint64(r.pos(r.consumer), cons)
	}
	return n
}

func (r *Ring) Close() {
	unix.Munmap(r.consumer)
	unix.Munmap(r.producer)
}
