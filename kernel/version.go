// Package kernel reads facts about the running kernel that both binaries need: its version.
package kernel

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Version is a kernel version major.minor.patch.
type Version [3]int

// ParseVersion parses the leading "X.Y[.Z]" of a release string such as
// "6.1.0-18-amd64" or "5.10.0-rt".
func ParseVersion(release string) (Version, error) {
	var v Version
	end := strings.IndexFunc(release, func(r rune) bool { return r != '.' && (r < '0' || r > '9') })
	if end < 0 {
		end = len(release)
	}
	parts := strings.Split(strings.TrimRight(release[:end], "."), ".")
	if len(parts) < 2 {
		return v, fmt.Errorf("parse kernel release %q: want X.Y[.Z]", release)
	}
	for i := 0; i < len(parts) && i < 3; i++ {
		n, err := strconv.Atoi(parts[i])
		if err != nil {
			return v, fmt.Errorf("parse kernel release %q: %w", release, err)
		}
		v[i] = n
	}
	return v, nil
}

// AtLeast reports whether v >= min.
func (v Version) AtLeast(min Version) bool {
	for i := range v {
		if v[i] != min[i] {
			return v[i] > min[i]
		}
	}
	return true
}

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v[0], v[1], v[2]) }

// Release is the running kernel's release string (uname -r).
func Release() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// Running is the running kernel's version; ok is false when it cannot be read or parsed.
func Running() (v Version, ok bool) {
	v, err := ParseVersion(Release())
	return v, err == nil
}
