// Package kernelcheck checks that the running kernel can host the eBPF
// collector: version, BTF, the bpf syscall and tracefs.
package kernelcheck

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"dkebpf/kernel"
)

// MinVersion is the oldest supported kernel (BPF ring buffer).
var MinVersion = kernel.Version{5, 8, 0}

// BTFPath is where the kernel exposes its BTF.
const BTFPath = "/sys/kernel/btf/vmlinux"

// TracefsPaths are the usual tracefs mount points.
var TracefsPaths = []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"}

// Result is the outcome of one check.
type Result struct {
	Name   string
	OK     bool
	Hard   bool   // a missing hard requirement stops the collector
	Detail string // what was found
	Fix    string // how to fix it when not OK
}

func (r Result) String() string {
	status := "ok"
	if !r.OK {
		status = "MISSING"
		if !r.Hard {
			status = "MISSING (warning)"
		}
	}
	s := fmt.Sprintf("%-8s %s: %s", status, r.Name, r.Detail)
	if !r.OK && r.Fix != "" {
		s += "; fix: " + r.Fix
	}
	return s
}

// Run runs every check against the running kernel.
func Run() []Result {
	return []Result{CheckVersion(kernel.Release()), CheckBTF(), CheckBPFSyscall(), CheckTracefs("/proc/self/mounts")}
}

// Failed reports whether a hard requirement is missing.
func Failed(rs []Result) bool {
	for _, r := range rs {
		if r.Hard && !r.OK {
			return true
		}
	}
	return false
}

// CheckVersion checks a kernel release string against MinVersion.
func CheckVersion(release string) Result {
	r := Result{Name: "kernel version >= " + MinVersion.String(), Hard: true,
		Fix: "upgrade to Linux " + MinVersion.String() + " or later (BPF ring buffer)"}
	v, err := kernel.ParseVersion(release)
	if err != nil {
		r.Detail = err.Error()
		return r
	}
	r.OK = v.AtLeast(MinVersion)
	r.Detail = release
	return r
}

// CheckBTF checks that the kernel exposes BTF for CO-RE.
func CheckBTF() Result {
	r := Result{Name: "BTF", Hard: true, Fix: "use a kernel built with CONFIG_DEBUG_INFO_BTF=y"}
	if _, err := os.Stat(BTFPath); err != nil {
		r.Detail = BTFPath + " not found"
		return r
	}
	r.OK, r.Detail = true, BTFPath
	return r
}

// CheckBPFSyscall creates and closes a one-entry BPF array map.
func CheckBPFSyscall() Result {
	r := Result{Name: "bpf syscall", Hard: true}
	attr := struct {
		mapType, keySize, valueSize, maxEntries, mapFlags uint32
	}{mapType: 2 /* BPF_MAP_TYPE_ARRAY */, keySize: 4, valueSize: 4, maxEntries: 1}
	fd, _, errno := unix.Syscall(unix.SYS_BPF, 0 /* BPF_MAP_CREATE */, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if errno != 0 {
		r.Detail = "create BPF array map: " + errno.Error()
		switch errno {
		case unix.EPERM:
			r.Fix = "run as root (or with CAP_BPF and CAP_PERFMON); check kernel.unprivileged_bpf_disabled and, before 5.11, RLIMIT_MEMLOCK"
		case unix.ENOSYS:
			r.Fix = "use a kernel built with CONFIG_BPF_SYSCALL=y"
		default:
			r.Fix = "check dmesg and the kernel's BPF configuration"
		}
		return r
	}
	unix.Close(int(fd))
	r.OK, r.Detail = true, "created and closed a BPF array map"
	return r
}

// CheckTracefs looks for a tracefs mount in the given mounts file. It is a
// warning only: the collector mounts tracefs itself when it is missing.
func CheckTracefs(mountsFile string) Result {
	r := Result{Name: "tracefs", Fix: "mount -t tracefs nodev /sys/kernel/tracing (only a classic tracepoint, the last fallback of a few hooks, needs it, and the collector mounts it then)"}
	f, err := os.Open(mountsFile)
	if err != nil {
		r.Detail = err.Error()
		return r
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 || fields[2] != "tracefs" {
			continue
		}
		for _, p := range TracefsPaths {
			if fields[1] == p {
				r.OK, r.Detail = true, "mounted at "+p
				return r
			}
		}
	}
	r.Detail = "not mounted at " + strings.Join(TracefsPaths, " or ")
	return r
}
