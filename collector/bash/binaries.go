package bash

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"dkebpf/collector/elfsym"
)

// Binary is one bash executable file to attach the readline uretprobe to, identified by device and inode:
// the kernel attaches to the inode, so one uretprobe covers every bash started from that file, later ones
// included.
type Binary struct {
	// Path is a path this process can open now: the plain path for a file reachable from our root (the
	// host's bash, a chroot's), /proc/<pid>/root/<path> for one in another mount namespace (a container), and
	// /proc/<pid>/exe for a deleted file or one no such path reaches (valid while the process lives).
	Path     string
	Dev, Ino uint64
	Offset   uint64 // file offset of the readline function
}

// hostPaths are where a root directory has its bash.
var hostPaths = []string{"/bin/bash", "/usr/bin/bash"}

// fileID identifies a file as stat sees it.
type fileID struct {
	dev, ino, size uint64
	mtime          int64
}

// probeKey is the identity of the file the kernel probes. Containers of one image reach the same bash
// through overlay mounts that each have their own device number; overlayfs keeps the lower file's inode
// number (when its layers share a filesystem), and the kernel puts the uprobe on that lower file. Keyed by
// device, each container would add one more uretprobe to the same file, and every line would arrive once
// per container. Size and mtime stand in for the device against inode numbers that coincide on two
// filesystems.
func (id fileID) probeKey() fileID { id.dev = 0; return id }

// Finder finds bash binaries to probe and hands out each (dev, ino) once. It is safe for concurrent use
// (a periodic Scan, and Check as bash execs are reported).
//
// A file that is not a bash with its own readline (dash, busybox, a bash linked to libreadline.so, a
// script named bash) is remembered and reported once, as an error wrapping elfsym.ErrNoSymbol or naming
// the ELF problem. Files that cannot be opened (a process that just exited) are skipped silently and
// tried again when seen again.
type Finder struct {
	procRoot string

	mu   sync.Mutex
	seen map[fileID]bool // handed out, being parsed, or not probeable
}

// NewFinder returns a Finder reading processes under procRoot (normally "/proc").
func NewFinder(procRoot string) *Finder {
	return &Finder{procRoot: procRoot, seen: map[fileID]bool{}}
}

// Host returns /bin/bash and /usr/bin/bash of our own root directory, each file once (on a merged-/usr
// system they are one), unless handed out before.
func (f *Finder) Host() ([]Binary, []error) {
	var r run
	for _, p := range hostPaths {
		f.addPath(&r, p)
	}
	return r.bins, r.errs
}

// Scan returns the bash binaries of all processes not handed out before: each process's executable when it
// is a bash (its name or its comm is "bash"), and the /bin/bash and /usr/bin/bash of each distinct root
// directory (a container's, a chroot's), so that a container's bash is probed before anyone runs it.
// Processes that vanish or cannot be read are skipped silently; an unreadable procRoot is an error.
func (f *Finder) Scan() ([]Binary, []error) {
	ents, err := os.ReadDir(f.procRoot)
	if err != nil {
		return nil, []error{fmt.Errorf("scan %s for bash binaries: %w", f.procRoot, err)}
	}
	ourRoot, err := os.Stat("/")
	if err != nil {
		return nil, []error{fmt.Errorf("stat our root: %w", err)}
	}
	r := run{roots: map[fileID]bool{}}
	for _, e := range ents {
		if _, err := strconv.ParseUint(e.Name(), 10, 32); err == nil {
			f.process(&r, filepath.Join(f.procRoot, e.Name()), ourRoot)
		}
	}
	return r.bins, r.errs
}

// Check is Scan for one process, at once (the kernel reported that pid exec'd bash).
func (f *Finder) Check(pid uint32) ([]Binary, []error) {
	ourRoot, err := os.Stat("/")
	if err != nil {
		return nil, []error{fmt.Errorf("stat our root: %w", err)}
	}
	r := run{roots: map[fileID]bool{}}
	f.process(&r, filepath.Join(f.procRoot, strconv.FormatUint(uint64(pid), 10)), ourRoot)
	return r.bins, r.errs
}

// Forget makes the file (dev, ino) new again, so that a later Host, Scan or Check returns it once more
// (after its uretprobe failed to attach, say).
func (f *Finder) Forget(dev, ino uint64) {
	f.mu.Lock()
	for k := range f.seen {
		if k.ino == ino { // the device is not part of the key
			delete(f.seen, k)
		}
	}
	f.mu.Unlock()
}

// run is what one Host, Scan or Check call gathers.
type run struct {
	roots map[fileID]bool // root directories already looked into
	bins  []Binary
	errs  []error
}

// process looks at the process whose /proc directory is pidDir: its executable, and its root directory.
func (f *Finder) process(r *run, pidDir string, ourRoot os.FileInfo) {
	rootDir := filepath.Join(pidDir, "root")
	root, err := os.Stat(rootDir)
	if err != nil {
		return
	}
	otherRoot := !os.SameFile(root, ourRoot)

	exe := filepath.Join(pidDir, "exe")
	if link, err := os.Readlink(exe); err == nil {
		path, deleted := strings.CutSuffix(link, " (deleted)")
		if filepath.Base(path) == "bash" || comm(pidDir) == "bash" {
			if id, ok := regularFile(exe); ok && !f.isSeen(id) {
				var candidates []string
				switch {
				case deleted:
				case otherRoot:
					candidates = []string{filepath.Join(rootDir, path), path}
				default:
					candidates = []string{path}
				}
				p := exe
				for _, c := range candidates {
					if cid, ok := regularFile(c); ok && cid == id {
						p = c
						break
					}
				}
				f.add(r, p, id)
			}
		}
	}

	rid, _ := statID(root)
	if r.roots[rid] {
		return
	}
	r.roots[rid] = true
	for _, p := range hostPaths {
		if otherRoot {
			p = filepath.Join(rootDir, p)
		}
		f.addPath(r, p)
	}
}

// comm returns the process name of pidDir, "" if unreadable.
func comm(pidDir string) string {
	b, err := os.ReadFile(filepath.Join(pidDir, "comm"))
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(b), "\n")
}

func (f *Finder) addPath(r *run, path string) {
	if id, ok := regularFile(path); ok {
		f.add(r, path, id)
	}
}

func (f *Finder) isSeen(id fileID) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seen[id.probeKey()]
}

// add finds readline in the file id at path unless id was seen before.
func (f *Finder) add(r *run, path string, id fileID) {
	f.mu.Lock()
	if f.seen[id.probeKey()] {
		f.mu.Unlock()
		return
	}
	f.seen[id.probeKey()] = true
	f.mu.Unlock()

	offs, err := elfsym.Offsets(path, []string{"readline"})
	if err != nil {
		if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
			f.Forget(id.dev, id.ino) /* could not open it (gone, or no access): try again when seen again */
			return
		}
		r.errs = append(r.errs, fmt.Errorf("bash binary %s (dev %d inode %d) cannot be probed: %w", path, id.dev, id.ino, err))
		return
	}
	r.bins = append(r.bins, Binary{Path: path, Dev: id.dev, Ino: id.ino, Offset: offs["readline"]})
}

// regularFile returns the identity of the regular file at path, following links.
func regularFile(path string) (fileID, bool) {
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() {
		return fileID{}, false
	}
	return statID(fi)
}

func statID(fi os.FileInfo) (fileID, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	return fileID{dev: st.Dev, ino: st.Ino, size: uint64(st.Size), mtime: st.Mtim.Nano()}, true
}
