package bpf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const hostMountinfo = `22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw
30 22 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
40 30 0:35 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
`

// fakeProc builds a proc tree where self and kthreadd (pid 2) have the given cgroup namespaces and mountinfo files.
func fakeProc(t *testing.T, selfNS, initNS, selfMounts, initMounts string) string {
	t.Helper()
	proc := t.TempDir()
	for pid, v := range map[string][2]string{"self": {selfNS, selfMounts}, "2": {initNS, initMounts}} {
		dir := filepath.Join(proc, pid)
		if err := os.MkdirAll(filepath.Join(dir, "ns"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(v[0], filepath.Join(dir, "ns", "cgroup")); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "mountinfo"), []byte(v[1]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// kthreadd's root: the host's file system, where its cgroup2 mount point exists.
	if err := os.MkdirAll(filepath.Join(proc, "2", "root", "sys", "fs", "cgroup", "unified"), 0o755); err != nil {
		t.Fatal(err)
	}
	return proc
}

func TestCgroup2RootOnTheHostIsTheMount(t *testing.T) {
	proc := fakeProc(t, "cgroup:[4026531835]", "cgroup:[4026531835]", hostMountinfo, hostMountinfo)
	root, how, err := findCgroup2Root(proc)
	if err != nil || root != "/sys/fs/cgroup/unified" || !strings.Contains(how, "host's cgroup namespace") {
		t.Fatalf("got %q (%s), %v", root, how, err)
	}
}

// In a pod with its own cgroup namespace, the cgroup2 mount it sees is its own cgroup: the root must be
// the host's, through kthreadd.
func TestCgroup2RootInAPrivateNamespaceIsTheHostsThroughPid1(t *testing.T) {
	podMounts := "50 40 0:35 / /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n"
	proc := fakeProc(t, "cgroup:[4026532999]", "cgroup:[4026531835]", podMounts, hostMountinfo)
	root, how, err := findCgroup2Root(proc)
	if err != nil || root != proc+"/2/root/sys/fs/cgroup/unified" || !strings.Contains(how, "private") {
		t.Fatalf("got %q (%s), %v", root, how, err)
	}

	// Without access to kthreadd's root (no hostPID, no CAP_SYS_PTRACE) it says so rather than attach to its own cgroup.
	if err := os.RemoveAll(filepath.Join(proc, "2", "root")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := findCgroup2Root(proc); err == nil || !strings.Contains(err.Error(), "hostPID") {
		t.Fatalf("want an error naming hostPID, got %v", err)
	}
}

func TestParseCgroup2MountSkipsSubtreeBindsAndUnescapes(t *testing.T) {
	in := "60 1 0:35 /kubepods/pod1 /mnt/sub rw - cgroup2 cgroup2 rw\n" +
		`61 1 0:35 / /mnt/with\040space rw - cgroup2 cgroup2 rw` + "\n"
	got, err := parseCgroup2Mount(strings.NewReader(in))
	if err != nil || got != "/mnt/with space" {
		t.Fatalf("got %q, %v", got, err)
	}
	if _, err := parseCgroup2Mount(strings.NewReader(hostMountinfo[:strings.Index(hostMountinfo, "40 ")])); err != errNoCgroup2 {
		t.Fatalf("no cgroup2: got %v", err)
	}
}

// A container in the host's cgroup namespace whose mounts lack cgroup2 (a v1 or hybrid host) reaches the
// host's through kthreadd rather than mounting one (which needs CAP_SYS_ADMIN).
func TestCgroup2RootWithoutOurOwnMountIsTheHostsThroughPid1(t *testing.T) {
	proc := fakeProc(t, "cgroup:[4026531835]", "cgroup:[4026531835]", "22 1 0:21 / /sys ro - sysfs sysfs ro\n", hostMountinfo)
	root, how, err := findCgroup2Root(proc)
	if err != nil || root != proc+"/2/root/sys/fs/cgroup/unified" || !strings.Contains(how, "no cgroup2 mount") {
		t.Fatalf("got %q (%s), %v", root, how, err)
	}
}
