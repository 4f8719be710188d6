package bash

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
)

// Sizes of the records and of their captured buffers (probes/bash.h).
const (
	LineLen  = 1024 // BASH_LINE_LEN: bytes of a line captured, NUL included
	CommLen  = 16   // BASH_COMM_LEN
	SizeLine = 1072 // sizeof(struct bash_line)
	SizeHead = 48   // BASH_LINE_HEAD: a record's fixed part; a short line's record ends after its NUL
	SizeExec = 8    // sizeof(struct bash_exec)
)

// Indexes of the bash_stats per-CPU counters (BASH_STAT_*).
const (
	StatRBLost   = 0 // lines the ring buffer had no room for
	StatExecLost = 1 // bash execs the exec ring had no room for
	StatMax      = 2
)

// Line mirrors struct bash_line (probes/bash.h): one line an interactive bash's readline returned.
type Line struct {
	TsNs      uint64 // CLOCK_MONOTONIC ns when readline returned
	Pid       uint32 // tgid
	Uid       uint32 // real uid in the initial user namespace
	Len       uint32 // bytes of Line before its NUL (at most LineLen-1)
	Mntns     uint32 // mount namespace: the container bash runs in
	Truncated uint8  // 1: the line was longer than the capture, Line holds its first Len bytes
	_         [7]byte
	Comm      [CommLen]byte
	Line      [LineLen]byte
}

// Exec mirrors struct bash_exec (probes/bash.h): a process exec'd a program named bash (or sh).
type Exec struct {
	Pid uint32
	_   uint32
}

// UnmarshalBinary decodes a struct bash_line in host byte order.
func (l *Line) UnmarshalBinary(b []byte) error {
	if len(b) < SizeHead {
		return fmt.Errorf("decode bash_line: record has %d bytes, want at least %d", len(b), SizeHead)
	}
	n := binary.NativeEndian
	l.Len = n.Uint32(b[16:])
	if want := SizeHead + int(min(l.Len, LineLen-1)); len(b) < want {
		return fmt.Errorf("decode bash_line: record has %d bytes, its length says %d", len(b), want)
	}
	l.TsNs = n.Uint64(b[0:])
	l.Pid = n.Uint32(b[8:])
	l.Uid = n.Uint32(b[12:])
	l.Mntns = n.Uint32(b[20:])
	l.Truncated = b[24]
	copy(l.Comm[:], b[32:32+CommLen])
	clear(l.Line[copy(l.Line[:], b[SizeHead:]):])
	return nil
}

// UnmarshalBinary decodes a struct bash_exec in host byte order.
func (e *Exec) UnmarshalBinary(b []byte) error {
	if len(b) < SizeExec {
		return fmt.Errorf("decode bash_exec: record has %d bytes, want %d", len(b), SizeExec)
	}
	e.Pid = binary.NativeEndian.Uint32(b)
	return nil
}

// Text returns the captured line: its first Len bytes, cut at a NUL should one come first, with invalid
// UTF-8 replaced by U+FFFD (line protocol carries only valid UTF-8; a truncated line may end inside a rune).
func (l *Line) Text() string { return cString(l.Line[:min(int(l.Len), LineLen-1)]) }

// CommString returns the process name the kernel recorded.
func (l *Line) CommString() string { return cString(l.Comm[:]) }

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}
