package process

import (
	"cmp"
	"encoding/binary"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"dkebpf/collector/point"
)

func raw(t *testing.T, r any) []byte {
	t.Helper()
	b, err := binary.Append(nil, binary.NativeEndian, r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func comm(s string) (c [CommLen]byte) {
	copy(c[:], s)
	return c
}

func TestDecodeCountsReadsTheKernelsLayout(t *testing.T) {
	c, err := DecodeCounts(raw(t, RawCounts{Forks: 3, Threads: 1, Execs: 1, ThreadExits: 1, ExitCode: 3 << 8, Mntns: 8,
		Exited: 1, Comm: comm("ls"), OOMKilled: 1, KillRSSPages: 5, MemcgID: 6}))
	if err != nil {
		t.Fatal(err)
	}
	want := Counts{Forks: 3, Threads: 1, Execs: 1, ThreadExits: 1, ExitCode: 3 << 8, Mntns: 8, Exited: true, Comm: "ls",
		OOMKilled: true, KillRSSPages: 5, MemcgID: 6}
	if c != want {
		t.Fatalf("decoded %+v, want %+v", c, want)
	}
	if !c.Failed() {
		t.Fatal("exit 3 did not fail")
	}
	if _, err := DecodeCounts(make([]byte, 10)); err == nil {
		t.Fatal("a short value decoded")
	}
	if k, err := DecodeKey(raw(t, RawKey{Tgid: 7, StartNs: 9})); err != nil || k != (Key{Tgid: 7, StartNs: 9}) {
		t.Fatalf("key %+v, %v", k, err)
	}
}

func TestTrackerReportsDifferencesZombiesAndForgetsFreedProcesses(t *testing.T) {
	tr := NewTracker()
	k := Key{Tgid: 100, StartNs: 5}
	g := Group{Comm: "w", Mntns: 1}

	out := map[Group]*Totals{}
	if tr.Add(k, Counts{Forks: 2, Threads: 3, Comm: "w", Mntns: 1}, out) {
		t.Fatal("freed")
	}
	if *out[g] != (Totals{Forks: 2, Threads: 3}) {
		t.Fatalf("first interval %+v", *out[g])
	}
	out = map[Group]*Totals{}
	tr.Add(k, Counts{Forks: 5, Threads: 3, Exited: true, ExitCode: 9, Comm: "w", Mntns: 1}, out)
	if *out[g] != (Totals{Forks: 3, Exits: 1, ExitsFailed: 1, Zombies: 1}) {
		t.Fatalf("second interval %+v", *out[g])
	}
	out = map[Group]*Totals{}
	tr.Add(k, Counts{Forks: 5, Threads: 3, Exited: true, ExitCode: 9, Comm: "w", Mntns: 1}, out)
	if *out[g] != (Totals{Zombies: 1}) {
		t.Fatalf("a zombie still there %+v", *out[g])
	}
	out = map[Group]*Totals{}
	if !tr.Add(k, Counts{Forks: 5, Threads: 3, Exited: true, Freed: true, ExitCode: 9, Comm: "w", Mntns: 1}, out) {
		t.Fatal("not freed")
	}
	if *out[g] != (Totals{}) || tr.Len() != 0 {
		t.Fatalf("reaped: %+v, %d held", *out[g], tr.Len())
	}
	// Exited and freed between two reads: one exit, no zombie.
	out = map[Group]*Totals{}
	tr.Add(Key{Tgid: 101}, Counts{Execs: 1, Exited: true, Freed: true, Comm: "w", Mntns: 1}, out)
	if *out[g] != (Totals{Execs: 1, Exits: 1}) {
		t.Fatalf("short-lived %+v", *out[g])
	}
}

type fakeKernel struct {
	procs   map[RawKey]RawCounts
	deleted []RawKey
}

func (f *fakeKernel) ReadProcesses(fn func(key, val []byte)) error {
	for k, c := range f.procs {
		kb, _ := binary.Append(nil, binary.NativeEndian, k)
		vb, _ := binary.Append(nil, binary.NativeEndian, c)
		fn(kb, vb)
		fn(kb, vb) // a walk that restarted: read once
	}
	return nil
}

func (f *fakeKernel) DeleteProcess(key []byte) error {
	var k RawKey
	if _, err := binary.Decode(key, binary.NativeEndian, &k); err != nil {
		return err
	}
	f.deleted = append(f.deleted, k)
	delete(f.procs, k)
	return nil
}

func (f *fakeKernel) Stats() []uint64 { return []uint64{4} }

func TestPluginFlushesOnePointPerNameAndDeletesWhatItReadFreed(t *testing.T) {
	k := &fakeKernel{procs: map[RawKey]RawCounts{
		{Tgid: 1, StartNs: 1}: {Forks: 1, Threads: 2, Comm: comm("a")},
		{Tgid: 2, StartNs: 2}: {Execs: 1, Exited: 1, Freed: 1, ExitCode: 1 << 8, Comm: comm("a")},
		{Tgid: 3, StartNs: 3}: {Exited: 1, Comm: comm("b")},
	}}
	p := NewPlugin(k, slog.New(slog.NewTextHandler(io.Discard, nil)))
	pts := p.Flush(time.Unix(1, 0))
	got := map[string]map[string]any{}
	for _, pt := range pts {
		if pt.Name != Measurement {
			t.Fatalf("measurement %q", pt.Name)
		}
		got[pt.Tags["process_name"]] = pt.Fields
	}
	wantA := map[string]any{"forks": int64(1), "threads": int64(2), "execs": int64(1), "exits": int64(1),
		"thread_exits": int64(0), "exits_failed": int64(1), "zombies": int64(0)}
	wantB := map[string]any{"forks": int64(0), "threads": int64(0), "execs": int64(0), "exits": int64(1),
		"thread_exits": int64(0), "exits_failed": int64(0), "zombies": int64(1)}
	if len(got) != 2 || !equal(got["a"], wantA) || !equal(got["b"], wantB) {
		t.Fatalf("points %v", got)
	}
	if len(k.deleted) != 1 || k.deleted[0].Tgid != 2 {
		t.Fatalf("deleted %v", k.deleted)
	}
	// Nothing new: only the zombie is reported again.
	pts = p.Flush(time.Unix(2, 0))
	if len(pts) != 1 || pts[0].Tags["process_name"] != "b" || pts[0].Fields["zombies"] != int64(1) || pts[0].Fields["exits"] != int64(0) {
		t.Fatalf("second flush %v", pts)
	}
	// Reaped: one point says there are none left, then nothing.
	z := k.procs[RawKey{Tgid: 3, StartNs: 3}]
	z.Freed = 1
	k.procs[RawKey{Tgid: 3, StartNs: 3}] = z
	pts = p.Flush(time.Unix(3, 0))
	if len(pts) != 1 || pts[0].Tags["process_name"] != "b" || pts[0].Fields["zombies"] != int64(0) {
		t.Fatalf("third flush %v", pts)
	}
	if pts = p.Flush(time.Unix(4, 0)); len(pts) != 0 {
		t.Fatalf("fourth flush %v", pts)
	}
	c := p.Counters()
	if c.MapFull != 4 || c.Extra["processes_freed"] != 2 || c.Extra["processes_followed"] != 1 {
		t.Fatalf("counters %+v", c)
	}
}

func equal(a, b map[string]any) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestOOMPluginReportsEachKillOnceWithItsCgroupAndRSS(t *testing.T) {
	// A cgroup tree the Cgroups finds through a mountinfo line of a cgroup2 mount.
	root := t.TempDir()
	dir := filepath.Join(root, "pods", "web")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	mountinfo := filepath.Join(t.TempDir(), "mountinfo")
	lines := "22 1 0:21 / /proc rw - proc proc rw\n" +
		"30 1 0:26 / " + root + " rw,nosuid - cgroup2 cgroup2 rw\n"
	if err := os.WriteFile(mountinfo, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	k := &fakeKernel{procs: map[RawKey]RawCounts{
		{Tgid: 7, StartNs: 1}:  {Exited: 1, ExitCode: 9, OOMKilled: 1, KillRSSPages: 100, MemcgID: st.Ino, Comm: comm("hog")},
		{Tgid: 8, StartNs: 1}:  {Exited: 1, ExitCode: 9, KillRSSPages: 50, Comm: comm("killed")}, // a plain kill -9
		{Tgid: 9, StartNs: 1}:  {Exited: 1, ExitCode: 9, OOMKilled: 1, MemcgID: 1 << 40, Comm: comm("gone")},
		{Tgid: 10, StartNs: 1}: {Forks: 1, Comm: comm("alive")},
	}}
	p := NewPlugin(k, log)
	o := NewOOMPlugin(p, NewCgroups(mountinfo), log)
	p.Flush(time.Unix(1, 0))
	pts := o.Flush(time.Unix(1, 0))
	if len(pts) != 2 {
		t.Fatalf("%d points, want 2: %v", len(pts), pts)
	}
	slices.SortFunc(pts, func(a, b point.Point) int { return cmp.Compare(a.Fields["pid"].(int64), b.Fields["pid"].(int64)) })
	hog, gone := pts[0], pts[1]
	page := int64(os.Getpagesize())
	if hog.Name != OOMMeasurement || hog.Tags["process_name"] != "hog" || hog.Tags["cgroup"] != "/pods/web" ||
		hog.Fields["pid"] != int64(7) || hog.Fields["rss_bytes"] != 100*page || hog.Fields["cgroup_id"] != int64(st.Ino) {
		t.Fatalf("hog: %v %v", hog.Tags, hog.Fields)
	}
	// A cgroup no mount holds (removed since): named by its id, and counted.
	if gone.Tags["cgroup"] != "1099511627776" || o.Counters().Extra["cgroups_unnamed"] != 1 {
		t.Fatalf("gone: %v %v, counters %+v", gone.Tags, gone.Fields, o.Counters())
	}
	// Read again (zombies until reaped): not reported twice.
	p.Flush(time.Unix(2, 0))
	if pts := o.Flush(time.Unix(2, 0)); len(pts) != 0 {
		t.Fatalf("second flush: %v", pts)
	}
	if c := o.Counters(); c.Events != 2 {
		t.Fatalf("counters %+v", c)
	}
	if o.Category() != "logging" || o.Input() != "ebpf-process/oom_kill" {
		t.Fatalf("category %s, input %s", o.Category(), o.Input())
	}
}

func TestCgroupsFindsV1MemoryMountsOnly(t *testing.T) {
	mountinfo := filepath.Join(t.TempDir(), "mountinfo")
	lines := "40 30 0:35 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n" +
		"41 30 0:36 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n" +
		"42 30 0:37 /sub /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n" // not its hierarchy's root: skipped
	if err := os.WriteFile(mountinfo, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := NewCgroups(mountinfo).roots(); !slices.Equal(got, []string{"/sys/fs/cgroup/memory"}) {
		t.Fatalf("roots %v", got)
	}
}

func TestExitsPluginCountsFailedExitsByStatusAndSignal(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	k := &fakeKernel{procs: map[RawKey]RawCounts{
		{Tgid: 1, StartNs: 1}: {Exited: 1, ExitCode: 3 << 8, Comm: comm("a")},
		{Tgid: 2, StartNs: 1}: {Exited: 1, ExitCode: 3 << 8, Freed: 1, Comm: comm("a")},
		{Tgid: 3, StartNs: 1}: {Exited: 1, ExitCode: 15, Comm: comm("a")},
		{Tgid: 4, StartNs: 1}: {Exited: 1, ExitCode: 0x80 | 11, Comm: comm("a")}, // SIGSEGV, core dumped
		{Tgid: 5, StartNs: 1}: {Exited: 1, Comm: comm("a")},                      // exit 0: not a failure
		{Tgid: 6, StartNs: 1}: {Exited: 1, ExitCode: 1 << 8, Mntns: 9, Comm: comm("b")},
	}}
	p := NewPlugin(k, log)
	e := NewExitsPlugin(p, log)
	p.Flush(time.Unix(1, 0))
	got := map[string]any{}
	for _, pt := range e.Flush(time.Unix(1, 0)) {
		if pt.Name != ExitsMeasurement {
			t.Fatalf("measurement %q", pt.Name)
		}
		got[pt.Tags["process_name"]+" "+pt.Tags["exit_code"]+" "+pt.Tags["signal"]+" "+strconv.Itoa(int(pt.Mntns))] = pt.Fields["count"]
	}
	want := map[string]any{"a 3 N/A 0": int64(2), "a N/A SIGTERM 0": int64(1), "a N/A SIGSEGV 0": int64(1), "b 1 N/A 9": int64(1)}
	if !equal(got, want) {
		t.Fatalf("points %v, want %v", got, want)
	}
	// The zombies are read again: their exits are not counted twice.
	p.Flush(time.Unix(2, 0))
	if pts := e.Flush(time.Unix(2, 0)); len(pts) != 0 {
		t.Fatalf("second flush %v", pts)
	}
	if c := e.Counters(); c.Events != 5 {
		t.Fatalf("counters %+v", c)
	}
}
