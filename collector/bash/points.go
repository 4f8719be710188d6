package bash

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"dkebpf/collector/point"
)

// Measurement is the name of the points (category logging, input ebpf-bash: the caller's business).
const Measurement = "bash"

// DefaultMaxLines bounds the lines a Buffer holds between flushes when Config.MaxLines is 0.
const DefaultMaxLines = 10000

// UserNamer resolves the uid of a process to a user name; *Users is one.
type UserNamer interface {
	Name(pid, uid uint32) string
}

// Config configures a Buffer. Zero fields take their defaults.
type Config struct {
	MaxLines int                         // lines held between flushes; more are dropped and counted (DefaultMaxLines)
	Redactor *Redactor                   // the default rules only
	Users    UserNamer                   // NewUsers("/proc", "/etc/passwd")
	Wall     func(tsNs uint64) time.Time // converts a record's CLOCK_MONOTONIC time (MonoToWall)
}

// Stats counts lines since the Buffer was made.
type Stats struct {
	Lines     uint64 // lines that became points
	Empty     uint64 // empty or blank lines, skipped
	Dropped   uint64 // lines dropped because MaxLines were already held
	Redacted  uint64 // points in which some rule hid something
	Truncated uint64 // points whose line the kernel capture cut
}

// Buffer turns bash lines into points and holds them until the next Flush. It is safe for concurrent use
// (a ring buffer reader adds, a timer flushes).
type Buffer struct {
	cfg Config

	mu    sync.Mutex
	pts   []point.Point
	stats Stats
}

// NewBuffer returns an empty Buffer.
func NewBuffer(cfg Config) *Buffer {
	if cfg.MaxLines <= 0 {
		cfg.MaxLines = DefaultMaxLines
	}
	if cfg.Redactor == nil {
		cfg.Redactor, _ = NewRedactor(nil) // cannot fail without user rules
	}
	if cfg.Users == nil {
		cfg.Users = NewUsers("/proc", "/etc/passwd")
	}
	if cfg.Wall == nil {
		cfg.Wall = MonoToWall
	}
	return &Buffer{cfg: cfg}
}

// Add makes the point of one line: redacted, with its user name looked up now (while the process lives).
// An empty or blank line (Enter alone) is counted in Stats.Empty and makes no point.
func (b *Buffer) Add(l Line) {
	text := l.Text()
	b.mu.Lock()
	skip := false
	switch {
	case strings.TrimSpace(text) == "":
		b.stats.Empty++
		skip = true
	case len(b.pts) >= b.cfg.MaxLines:
		b.stats.Dropped++
		skip = true
	}
	b.mu.Unlock()
	if skip {
		return
	}

	cmd, fired := b.cfg.Redactor.Redact(text)
	p := newPoint(b.cfg.Wall(l.TsNs), l.Pid, b.cfg.Users.Name(l.Pid, l.Uid), cmd, l.Truncated != 0, fired)
	p.Mntns = l.Mntns

	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.pts) >= b.cfg.MaxLines {
		b.stats.Dropped++
		return
	}
	b.pts = append(b.pts, p)
	b.stats.Lines++
	if len(fired) > 0 {
		b.stats.Redacted++
	}
	if l.Truncated != 0 {
		b.stats.Truncated++
	}
}

// Flush returns the points added since the last Flush, in time order (lines from different CPUs arrive
// interleaved; lines with equal times keep the order they were added in), and empties the Buffer.
func (b *Buffer) Flush() []point.Point {
	b.mu.Lock()
	pts := b.pts
	b.pts = nil
	b.mu.Unlock()
	slices.SortStableFunc(pts, func(x, y point.Point) int { return x.Time.Compare(y.Time) })
	return pts
}

// Stats returns the counters.
func (b *Buffer) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stats
}

// newPoint returns the point of one line, with DataKit's fields and message.
func newPoint(t time.Time, pid uint32, user, cmd string, truncated bool, redacted []string) point.Point {
	pidS := strconv.FormatUint(uint64(pid), 10)
	f := map[string]any{
		"cmd":       cmd,
		"pid":       pidS,
		"user":      user,
		"message":   fmt.Sprintf("%s pid:`%s` user:`%s` cmd:`%s`", t.Format(time.RFC3339), pidS, user, cmd),
		"truncated": truncated,
	}
	if len(redacted) > 0 {
		f["redacted"] = strings.Join(redacted, ",")
	}
	return point.Point{Name: Measurement, Fields: f, Time: t}
}

// MonoToWall converts a CLOCK_MONOTONIC time in ns (bpf_ktime_get_ns) to wall-clock time in the local zone,
// through the current difference between the two clocks.
func MonoToWall(tsNs uint64) time.Time {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return time.Now().Round(0)
	}
	now := time.Now().Round(0) // wall clock only
	return now.Add(-time.Duration(ts.Nano() - int64(tsNs)))
}
