// Package sslib finds the OpenSSL libssl files mapped on this host, in any root, and the file offsets of the
// functions the collector attaches uprobes to.
package sslib

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"dkebpf/collector/elfsym"
)

// Lib is one libssl file, identified by device and inode. The kernel attaches uprobes to the inode, so one
// uprobe set per Lib covers every process that maps it, including processes started later.
type Lib struct {
	// Path is a path this process can open: the plain path for a file reachable from our root (the host's
	// files, a chroot's), /proc/<pid>/root/<path> for another mount namespace (a container), and
	// /proc/<pid>/map_files/<range> for a deleted file or one no path resolves to (valid while the process lives).
	Path     string
	Dev, Ino uint64
	// Offsets maps each symbol found to its file offset.
	Offsets map[string]uint64
}

type fileID struct{ dev, ino uint64 }

func (l Lib) id() fileID { return fileID{l.Dev, l.Ino} }

// knownDirs and knownNames are where Known looks for libssl under our root.
var (
	knownDirs = []string{
		"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64",
		"/lib", "/usr/lib", "/usr/local/lib64", "/usr/local/lib",
	}
	knownNames = []string{"libssl.so.3", "libssl.so.1.1"}
)

// Scan reads procRoot/<pid>/maps (procRoot is normally "/proc") and returns each distinct libssl file
// (base name starting with "libssl.so") that some process maps executable, once per (dev, ino).
// Processes that vanish or cannot be read are skipped silently. A library whose elfsym.Offsets failed is
// left out, except for missing symbols (elfsym.ErrNoSymbol): then it is kept with the symbols found. Either way
// the error is returned.
func Scan(procRoot string, symbols []string) ([]Lib, []error) {
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, []error{fmt.Errorf("scan %s: %w", procRoot, err)}
	}
	ourRoot, err := os.Stat("/")
	if err != nil {
		return nil, []error{fmt.Errorf("stat our root: %w", err)}
	}
	c := newCollector(symbols)
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		for _, p := range mappedLibs(filepath.Join(procRoot, e.Name()), ourRoot) {
			c.add(p)
		}
	}
	return c.libs, c.errs
}

// Known returns the libssl files (libssl.so.3, libssl.so.1.1) in the standard library directories under our
// root, so that processes started after the collector are covered without being seen first.
func Known(symbols []string) ([]Lib, []error) {
	c := newCollector(symbols)
	for _, d := range knownDirs {
		for _, n := range knownNames {
			c.add(filepath.Join(d, n))
		}
	}
	return c.libs, c.errs
}

// mappedLibs returns the openable paths of the libssl files that the process at pidDir maps executable.
//
// The maps path is as the kernel sees it from our root when the file is reachable from it (a chroot in our
// mount namespace), else relative to the process's mount namespace (a container); a " (deleted)" path may now
// name a newer file. So each candidate is checked against the inode number in the maps line, and when none
// matches, /proc/<pid>/map_files/<range> (the mapped file itself; needs CAP_SYS_ADMIN) is used instead.
func mappedLibs(pidDir string, ourRoot os.FileInfo) []string {
	f, err := os.Open(filepath.Join(pidDir, "maps"))
	if err != nil {
		return nil
	}
	defer f.Close()
	var paths []string
	rootKnown, otherRoot := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m, ok := parseMapsLine(sc.Text())
		if !ok || !strings.Contains(m.perms, "x") || !strings.HasPrefix(filepath.Base(m.path), "libssl.so") {
			continue
		}
		if !rootKnown {
			st, err := os.Stat(filepath.Join(pidDir, "root"))
			if err != nil {
				return nil
			}
			rootKnown, otherRoot = true, !os.SameFile(st, ourRoot)
		}
		candidates := []string{m.path}
		if otherRoot {
			candidates = []string{filepath.Join(pidDir, "root", m.path), m.path}
		}
		if strings.HasSuffix(m.path, " (deleted)") {
			candidates = nil
		}
		p := filepath.Join(pidDir, "map_files", m.addrs)
		for _, c := range candidates {
			if ino, ok := inode(c); ok && ino == m.ino {
				p = c
				break
			}
		}
		paths = append(paths, p)
	}
	return paths
}

func inode(path string) (uint64, bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Ino, true
}

type mapping struct {
	addrs, perms, path string
	ino                uint64
}

// parseMapsLine splits a /proc/<pid>/maps line ("addrs perms offset dev inode path"); path may hold spaces.
func parseMapsLine(line string) (mapping, bool) {
	var f [5]string
	rest := line
	for i := range f {
		var ok bool
		rest = strings.TrimLeft(rest, " ")
		if f[i], rest, ok = strings.Cut(rest, " "); !ok {
			return mapping{}, false
		}
	}
	ino, err := strconv.ParseUint(f[4], 10, 64)
	path := strings.TrimLeft(rest, " ")
	if err != nil || path == "" {
		return mapping{}, false
	}
	return mapping{addrs: f[0], perms: f[1], path: path, ino: ino}, true
}

// collector gathers distinct libraries by (dev, ino) and their offsets.
type collector struct {
	symbols []string
	seen    map[fileID]bool
	libs    []Lib
	errs    []error
}

func newCollector(symbols []string) *collector {
	return &collector{symbols: symbols, seen: map[fileID]bool{}}
}

// add records the file at path unless it is gone or already seen; the first path wins.
func (c *collector) add(path string) {
	fi, err := os.Stat(path)
	if err != nil {
		return
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || !fi.Mode().IsRegular() {
		return
	}
	id := fileID{st.Dev, st.Ino}
	if c.seen[id] {
		return
	}
	c.seen[id] = true
	offs, err := elfsym.Offsets(path, c.symbols)
	if err != nil {
		c.errs = append(c.errs, err)
		if !errors.Is(err, elfsym.ErrNoSymbol) || len(offs) == 0 {
			return
		}
	}
	c.libs = append(c.libs, Lib{Path: path, Dev: id.dev, Ino: id.ino, Offsets: offs})
}

// Tracker remembers which libraries were handed out, so a periodic rescan yields only new ones.
// The zero value is ready to use; it is not safe for concurrent use.
type Tracker struct{ seen map[fileID]bool }

// New returns the libraries in libs not returned by an earlier call, each (dev, ino) once.
func (t *Tracker) New(libs []Lib) []Lib {
	if t.seen == nil {
		t.seen = map[fileID]bool{}
	}
	var fresh []Lib
	for _, l := range libs {
		if !t.seen[l.id()] {
			t.seen[l.id()] = true
			fresh = append(fresh, l)
		}
	}
	return fresh
}
