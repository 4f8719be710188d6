package bash

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"dkebpf/collector/plugin/plugintest"
	"dkebpf/collector/target"
)

// fakeKernel is bash's BPF object: lines and execs in, as the kernel lays them out; attachments recorded.
type fakeKernel struct {
	mu       sync.Mutex
	lines    plugintest.Ring
	execs    plugintest.Ring
	attached []string
}

func (k *fakeKernel) DrainLines(fn func([]byte)) int { return k.lines.Drain(fn) }
func (k *fakeKernel) DrainExecs(fn func([]byte)) int { return k.execs.Drain(fn) }
func (k *fakeKernel) Stats() []uint64                { return []uint64{5, 6} }
func (k *fakeKernel) AttachReadline(path string, offset uint64) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.attached = append(k.attached, path)
	return nil
}

// fakeTargets hands out one file per source: the host's bash, and the process that exec'd bash.
type fakeTargets struct{}

func (fakeTargets) Host() ([]target.File, []error) { return []target.File{{Path: "/bin/bash"}}, nil }
func (fakeTargets) Scan() ([]target.File, []error) { return nil, nil }
func (fakeTargets) Check(pid uint32) ([]target.File, []error) {
	return []target.File{{Path: fmt.Sprintf("/proc/%d/exe", pid)}}, nil
}
func (fakeTargets) Spec() target.Spec { return Targets() }

func TestPluginProbesExecsAndTurnsLinesIntoPoints(t *testing.T) {
	k := &fakeKernel{
		execs: [][]byte{plugintest.Raw(t, Exec{Pid: 7})},
		lines: [][]byte{plugintest.Raw(t, line(1e9, 42, 1000, "export TOKEN=abc")), []byte("short")},
	}
	p := NewPlugin(k, Config{Users: fakeUsers{1000: "alice"}, Wall: func(ts uint64) time.Time { return base.Add(time.Duration(ts)) }},
		fakeTargets{}, time.Hour, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer p.Close()
	p.Drain()
	pts := p.Flush(time.Now())
	if len(pts) != 1 || pts[0].Fields["cmd"] != "export TOKEN=***" || pts[0].Fields["user"] != "alice" {
		t.Fatalf("points %v", pts)
	}
	k.mu.Lock()
	if want := []string{"/bin/bash", "/proc/7/exe"}; !slices.Equal(k.attached, want) {
		t.Errorf("attached %q, want %q (the host's bash at start, then the exec'd one)", k.attached, want)
	}
	k.mu.Unlock()
	c := p.Counters()
	if c.Events != 2 || c.DecodeErrors != 1 || c.Lost != 5 || c.Extra["exec_lost"] != 6 || c.Extra["binaries_probed"] != 2 {
		t.Errorf("counters %+v", c)
	}
}

func TestTargetsAreTheHostBashWithItsReadline(t *testing.T) {
	files, errs := target.NewFinder("/proc", Targets()).Host()
	if len(errs) != 0 || len(files) == 0 || files[0].Offsets["readline"] == 0 {
		t.Errorf("Host = %+v, %v; want /bin/bash with the offset of readline", files, errs)
	}
}
