package process

import (
	"encoding/binary"
	"io"
	"log/slog"
	"testing"
	"time"
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
		Exited: 1, Comm: comm("ls")}))
	if err != nil {
		t.Fatal(err)
	}
	want := Counts{Forks: 3, Threads: 1, Execs: 1, ThreadExits: 1, ExitCode: 3 << 8, Mntns: 8, Exited: true, Comm: "ls"}
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
