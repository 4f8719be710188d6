package bpf

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"dkebpf/collector/procfs"

	"golang.org/x/sys/unix"
)

// privateCgroup2 is where the collector mounts cgroup v2 when the host has not (cgroup v1-only hosts).
const privateCgroup2 = "/run/datakit-ebpf/cgroup2"

// cgroup2Root is the root of the host's cgroup v2 hierarchy, where the cgroup_skb programs attach so they
// see every socket on the host. Found once; CgroupNote says which it was.
var cgroup2Root = sync.OnceValues(func() (string, error) {
	root, how, err := findCgroup2Root("/proc")
	if err == nil {
		cgroupNote = root + " (" + how + ")"
	}
	return root, err
})

// cgroupNote says where the cgroup_skb programs attached, for the start-up line.
var cgroupNote = "not used"

// CgroupNote is "not used" unless a cgroup_skb program attached: then the root and how it was found.
func CgroupNote() string { return cgroupNote }

// findCgroup2Root returns the host's cgroup v2 root. In our own cgroup namespace (a bare host, or a pod
// with hostCgroupns) it is the first cgroup2 mount we see. In a private one (a container's default), a cgroup2
// mount shows only our own cgroup: a DaemonSet attached there would see nothing but its own traffic, so the
// host's root is reached through the root directory of kthreadd (pid 2 with hostPID; it needs
// CAP_SYS_PTRACE). A host with no cgroup2 mount gets one of ours.
func findCgroup2Root(proc string) (root, how string, err error) {
	self, errSelf := os.Readlink(proc + "/self/ns/cgroup")
	host, errHost := os.Readlink(proc + "/" + hostPid + "/ns/cgroup")
	if errSelf == nil && errHost == nil && self != host {
		mp, err := cgroup2Mount(proc + "/" + hostPid + "/mountinfo")
		if err != nil {
			return "", "", fmt.Errorf("in a private cgroup namespace (%s, the host's %s), the host's cgroup v2 root is out of reach: %w (run with hostPID and CAP_SYS_PTRACE)", self, host, err)
		}
		root := proc + "/" + hostPid + "/root" + mp
		if _, err := os.Stat(root); err != nil {
			return "", "", fmt.Errorf("in a private cgroup namespace, the host's cgroup v2 root %s: %w (run with hostPID and CAP_SYS_PTRACE)", root, err)
		}
		return root, "the host's, through kthreadd (pid 2): our cgroup namespace is private", nil
	}
	mp, err := cgroup2Mount(proc + "/self/mountinfo")
	if err == nil {
		return mp, "the host's cgroup namespace", nil
	}
	if !errors.Is(err, errNoCgroup2) {
		return "", "", err
	}
	// A container without the host's cgroup2 mount (a v1 or hybrid host) still reaches it through kthreadd (pid 2).
	if mp, err := cgroup2Mount(proc + "/" + hostPid + "/mountinfo"); err == nil {
		if _, err := os.Stat(proc + "/" + hostPid + "/root" + mp); err == nil {
			return proc + "/" + hostPid + "/root" + mp, "the host's, through kthreadd (pid 2): no cgroup2 mount in our mount namespace", nil
		}
	}
	if err := os.MkdirAll(privateCgroup2, 0o755); err != nil {
		return "", "", fmt.Errorf("create %s: %w", privateCgroup2, err)
	}
	if err := unix.Mount("none", privateCgroup2, "cgroup2", 0, ""); err != nil {
		return "", "", fmt.Errorf("no cgroup2 mount and mounting one at %s failed: %w", privateCgroup2, err)
	}
	return privateCgroup2, "mounted by the collector: the host had no cgroup v2 mount", nil
}

var errNoCgroup2 = errors.New("no cgroup2 mount")

// hostPid is a process always in the host's initial namespaces and root: kthreadd, pid 2 (with hostPID).
// Not pid 1: a sandbox's init may refuse access to its root even to a privileged process (this VM's does).
const hostPid = "2"

// cgroup2Mount returns the mount point of the first cgroup2 file system in a mountinfo file whose root is
// the hierarchy's root: "/", or "/../.." when read from a private cgroup namespace (a bind mount of a
// sub-cgroup would see less).
func cgroup2Mount(mountinfo string) (string, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return "", fmt.Errorf("find cgroup2 mount: %w", err)
	}
	defer f.Close()
	return parseCgroup2Mount(f)
}

// parseCgroup2Mount returns the first cgroup2 mount of a mountinfo file.
func parseCgroup2Mount(r io.Reader) (string, error) {
	mounts, err := procfs.Mounts(r)
	if err != nil {
		return "", fmt.Errorf("find cgroup2 mount: %w", err)
	}
	for _, m := range mounts {
		if m.FSType == "cgroup2" && strings.Trim(m.Root, "/.") == "" {
			return m.Point, nil
		}
	}
	return "", errNoCgroup2
}
