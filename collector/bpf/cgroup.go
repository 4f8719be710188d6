package bpf

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// privateCgroup2 is where the collector mounts cgroup v2 when the host has not (cgroup v1-only hosts).
const privateCgroup2 = "/run/datakit-ebpf/cgroup2"

// cgroup2Root finds the cgroup v2 mount (its root covers every socket on the host), mounting one if
// there is none.
func cgroup2Root() (string, error) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return "", fmt.Errorf("find cgroup2 mount: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 && fields[2] == "cgroup2" {
			return fields[1], nil
		}
	}
	if err := os.MkdirAll(privateCgroup2, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", privateCgroup2, err)
	}
	if err := unix.Mount("none", privateCgroup2, "cgroup2", 0, ""); err != nil {
		return "", fmt.Errorf("no cgroup2 mount and mounting one at %s failed: %w", privateCgroup2, err)
	}
	fmt.Fprintf(os.Stderr, "mounted cgroup2 at %s (the host had no cgroup v2 mount)\n", privateCgroup2)
	return privateCgroup2, nil
}
