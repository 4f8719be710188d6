package bash

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"dkebpf/collector/point"
)

type fakeUsers map[uint32]string

func (f fakeUsers) Name(pid, uid uint32) string { return f[uid] }

// base is the wall time of monotonic time 0 in these tests.
var base = time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)

func testBuffer(max int) *Buffer {
	return NewBuffer(Config{
		MaxLines: max,
		Users:    fakeUsers{0: "root", 1000: "alice"},
		Wall:     func(ts uint64) time.Time { return base.Add(time.Duration(ts)) },
	})
}

func line(ts uint64, pid, uid uint32, text string) Line {
	l := Line{TsNs: ts, Pid: pid, Uid: uid, Len: uint32(len(text)), Comm: [CommLen]byte{'b', 'a', 's', 'h'}}
	copy(l.Line[:], text)
	return l
}

func TestEachLineBecomesADataKitBashPoint(t *testing.T) {
	b := testBuffer(0)
	b.Add(line(1e9, 42, 1000, "ls -l /tmp"))
	cut := line(2e9, 43, 0, strings.Repeat("a", LineLen-1))
	cut.Truncated = 1
	b.Add(cut)
	b.Add(line(3e9, 42, 1000, "mysql -uroot -ps3cret -e 'select 1'"))
	b.Add(line(4e9, 44, 7, "curl -H 'Authorization: Bearer t0k' https://x"))

	want := []point.Point{
		{Name: "bash", Time: base.Add(time.Second), Fields: map[string]any{
			"cmd": "ls -l /tmp", "pid": "42", "user": "alice", "truncated": false,
			"message": "2025-03-04T05:06:08Z pid:`42` user:`alice` cmd:`ls -l /tmp`",
		}},
		{Name: "bash", Time: base.Add(2 * time.Second), Fields: map[string]any{
			"cmd": strings.Repeat("a", LineLen-1), "pid": "43", "user": "root", "truncated": true,
			"message": "2025-03-04T05:06:09Z pid:`43` user:`root` cmd:`" + strings.Repeat("a", LineLen-1) + "`",
		}},
		{Name: "bash", Time: base.Add(3 * time.Second), Fields: map[string]any{
			"cmd": "mysql -uroot -p*** -e 'select 1'", "pid": "42", "user": "alice", "truncated": false,
			"redacted": "mysql-p",
			"message":  "2025-03-04T05:06:10Z pid:`42` user:`alice` cmd:`mysql -uroot -p*** -e 'select 1'`",
		}},
		{Name: "bash", Time: base.Add(4 * time.Second), Fields: map[string]any{
			"cmd": "curl -H 'Authorization: Bearer ***' https://x", "pid": "44", "user": "", "truncated": false,
			"redacted": "authorization,bearer",
			"message":  "2025-03-04T05:06:11Z pid:`44` user:`` cmd:`curl -H 'Authorization: Bearer ***' https://x`",
		}},
	}
	got := b.Flush()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Flush:\n got %+v\nwant %+v", got, want)
	}
	for _, p := range got {
		if _, err := point.NewEncoder(nil).Encode(p); err != nil {
			t.Errorf("encode %v: %v", p, err)
		}
	}
	if s := b.Stats(); s != (Stats{Lines: 4, Redacted: 2, Truncated: 1}) {
		t.Errorf("Stats = %+v", s)
	}
	if got := b.Flush(); len(got) != 0 {
		t.Errorf("second Flush = %v, want nothing", got)
	}
}

func TestEmptyLinesAreCountedNotReported(t *testing.T) {
	b := testBuffer(0)
	for _, s := range []string{"", "   ", "\t"} {
		b.Add(line(1, 1, 0, s))
	}
	b.Add(line(2, 1, 0, " pwd "))
	got := b.Flush()
	if len(got) != 1 || got[0].Fields["cmd"] != " pwd " {
		t.Errorf("Flush = %v, want the one non-blank line, as typed", got)
	}
	if s := b.Stats(); s.Empty != 3 || s.Lines != 1 {
		t.Errorf("Stats = %+v, want 3 empty, 1 line", s)
	}
}

func TestFlushReturnsLinesInTimeOrderKeepingArrivalOrderOfTies(t *testing.T) {
	b := testBuffer(0)
	/* two CPUs' rings drained one after the other: each in time order, interleaved in time */
	for _, l := range []Line{line(10, 1, 0, "a1"), line(30, 1, 0, "a3"), line(50, 1, 0, "a5"),
		line(20, 2, 0, "b2"), line(30, 2, 0, "b3"), line(40, 2, 0, "b4")} {
		b.Add(l)
	}
	var cmds []string
	for _, p := range b.Flush() {
		cmds = append(cmds, p.Fields["cmd"].(string))
	}
	if want := []string{"a1", "b2", "a3", "b3", "b4", "a5"}; !reflect.DeepEqual(cmds, want) {
		t.Errorf("order %v, want %v", cmds, want)
	}
}

func TestBufferDropsAndCountsLinesBeyondItsBound(t *testing.T) {
	b := testBuffer(2)
	for i := range 5 {
		b.Add(line(uint64(i), 1, 0, "echo"))
	}
	if got := b.Flush(); len(got) != 2 || got[0].Time != base || got[1].Time != base.Add(1) {
		t.Errorf("Flush = %v, want the first two lines", got)
	}
	if s := b.Stats(); s.Dropped != 3 || s.Lines != 2 {
		t.Errorf("Stats = %+v, want 3 dropped", s)
	}
	b.Add(line(9, 1, 0, "echo"))
	if got := b.Flush(); len(got) != 1 {
		t.Errorf("after a flush the buffer takes lines again: got %d", len(got))
	}
}

func TestMonoToWallConvertsKernelTimestamps(t *testing.T) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	mono := uint64(ts.Nano())
	before := time.Now()
	got := MonoToWall(mono - uint64(5*time.Second))
	after := time.Now()
	if got.Before(before.Add(-5*time.Second-50*time.Millisecond)) || got.After(after.Add(-5*time.Second)) {
		t.Errorf("MonoToWall(5 s ago) = %v, want about %v", got, before.Add(-5*time.Second))
	}
	if got.Location() != time.Local {
		t.Errorf("MonoToWall returns %v times, want local ones (DataKit's message uses local time)", got.Location())
	}
}
