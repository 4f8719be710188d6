package process

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Sizes of probes/process.h (the layout test in collector/bpf checks them against the object).
const CommLen = 16 // PR_COMM_LEN

// Stat indexes of pr_stats (enum pr_stat).
const (
	StatFull = iota // PR_STAT_FULL
	StatMax         // PR_STAT_MAX
)

// RawKey mirrors struct pr_key.
type RawKey struct {
	Tgid    uint32
	Pad     uint32
	StartNs uint64
}

// RawCounts mirrors struct pr_counts.
type RawCounts struct {
	Forks, Threads, Execs, ThreadExits uint64
	ExitCode, Mntns                    uint32
	Exited, Freed, OOMKilled           uint8
	Pad                                [5]uint8
	Comm                               [CommLen]byte
	KillRSSPages, MemcgID              uint64
}

// Key is a process: its tgid and its leader's start time (a reused pid is another process).
type Key struct {
	Tgid    uint32
	StartNs uint64
}

// Counts are a process's counters since the kernel first saw it.
type Counts struct {
	Forks, Threads, Execs, ThreadExits uint64
	ExitCode                           uint32 // the last thread's: status << 8, or the signal in the low 7 bits
	Mntns                              uint32
	Exited, Freed                      bool // ended; reaped (nothing more counts against it)
	Comm                               string
	// The OOM killer chose it (set at its end); its resident pages at the last SIGKILL delivered to it; its
	// memory cgroup's id (set at its end).
	OOMKilled             bool
	KillRSSPages, MemcgID uint64
}

// Failed says whether the process ended with a non-zero status or by a signal.
func (c Counts) Failed() bool { return c.Exited && c.ExitCode != 0 }

// exitReason is how the process ended: its exit status in decimal and "N/A", or "N/A" and the name of the
// signal that killed it (SIGKILL; SIG<n> for a number without a name).
func (c Counts) exitReason() (code, signal string) {
	if sig := syscall.Signal(c.ExitCode & 0x7f); sig != 0 {
		if name := unix.SignalName(sig); name != "" {
			return "N/A", name
		}
		return "N/A", "SIG" + strconv.Itoa(int(sig))
	}
	return strconv.Itoa(int(c.ExitCode >> 8 & 0xff)), "N/A"
}

// DecodeKey reads a struct pr_key.
func DecodeKey(b []byte) (Key, error) {
	var r RawKey
	if _, err := binary.Decode(b, binary.NativeEndian, &r); err != nil {
		return Key{}, fmt.Errorf("process key: %w", err)
	}
	return Key{Tgid: r.Tgid, StartNs: r.StartNs}, nil
}

// DecodeCounts reads a struct pr_counts.
func DecodeCounts(b []byte) (Counts, error) {
	var r RawCounts
	if _, err := binary.Decode(b, binary.NativeEndian, &r); err != nil {
		return Counts{}, fmt.Errorf("process counts: %w", err)
	}
	comm := r.Comm[:]
	if i := bytes.IndexByte(comm, 0); i >= 0 {
		comm = comm[:i]
	}
	return Counts{Forks: r.Forks, Threads: r.Threads, Execs: r.Execs, ThreadExits: r.ThreadExits, ExitCode: r.ExitCode,
		Mntns: r.Mntns, Exited: r.Exited != 0, Freed: r.Freed != 0, Comm: string(comm),
		OOMKilled: r.OOMKilled != 0, KillRSSPages: r.KillRSSPages, MemcgID: r.MemcgID}, nil
}
