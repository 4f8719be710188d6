package procfs

import (
	"bufio"
	"io"
	"strconv"
	"strings"
)

// Mount is one line of a mountinfo file.
type Mount struct {
	Root, Point  string // the mounted file system's directory, and where it is mounted (unescaped)
	FSType       string
	SuperOptions string
}

// Mounts reads mountinfo lines: "id parent maj:min root mountpoint options [optional...] - fstype source
// superoptions". Malformed lines are skipped.
func Mounts(r io.Reader) ([]Mount, error) {
	var out []Mount
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		f, fs := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(fs) < 1 {
			continue
		}
		m := Mount{Root: unescapeMount(f[3]), Point: unescapeMount(f[4]), FSType: fs[0]}
		if len(fs) >= 3 {
			m.SuperOptions = fs[2]
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// unescapeMount undoes the octal escapes (\040 for a space) the kernel writes in mount paths.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if c, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(c))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
