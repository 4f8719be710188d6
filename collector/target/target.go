// Package target finds the executable files that uprobes attach to (OpenSSL's libssl, or a program with
// OpenSSL linked in, and Go programs, for httpflow-tls; bash for ebpf-bash) in every root directory on the
// host (ours, a chroot's, a container's through /proc/<pid>/root), hands out each file once, and watches
// for new ones.
//
// The kernel attaches a uprobe to a file's inode: one probe per file covers every process that runs or
// maps it, those started later included. So the unit here is the file, not the process.
package target

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"dkebpf/collector/elfsym"
)

// Spec says which files one plugin probes.
type Spec struct {
	Plugin string // names the plugin in logs and errors: "bash", "httpflow-tls"
	What   string // names what is probed in logs: "readline", "libssl"

	Symbols []string // functions whose file offsets the plugin attaches to
	// Partial: a file holding some of Symbols is a target (libssl builds differ); else it needs them all.
	Partial bool

	// Which files. Exe: a process's executable (its path, and its comm). Mapped: a file a process maps
	// executable (its path). InRoots: paths in our root and in every process's root directory. Known: paths
	// in our root only, so that a process started later is covered without being seen first.
	Exe     func(path, comm string) bool
	Mapped  func(path string) bool
	InRoots []string
	Known   []string

	// Linked: an executable Exe accepts may have the library linked in, not mapped (OpenSSL built into a
	// program): its static symbol table is searched too, and one without any of Symbols is not a target and
	// is not reported (most executables are not).
	Linked bool

	// Go: the executables Exe accepts are Go programs, and Symbols are Go functions, found with their return
	// instructions through the program's own function table (elfsym.GoFunctions; stripped programs too).
	// Like Linked, a file that is not Go or has none of them is not a target and is not reported.
	Go bool

	// SameAcrossDevices: one file reached through several overlay mounts is one target. Containers of one
	// image reach the same lower file through mounts that each have their own device number; overlayfs
	// keeps the lower file's inode number and the kernel probes that lower file. Keyed by device, each
	// container would add one more probe to the same file, and every event would arrive once per container.
	// Size and mtime stand in for the device against inode numbers that coincide on two filesystems.
	SameAcrossDevices bool
}

// File is one file to probe.
type File struct {
	// Path is a path this process can open now: the plain path for a file reachable from our root (the host's,
	// a chroot's), /proc/<pid>/root/<path> for one in another mount namespace (a container), /proc/<pid>/exe or
	// /proc/<pid>/map_files/<range> for a deleted file or one no path reaches (valid while the process lives).
	Path     string
	Dev, Ino uint64
	Offsets  map[string]uint64        // each symbol found: its file offset
	Funcs    map[string]elfsym.GoFunc // with Spec.Go, each function found: its entry and returns
}

// fileID identifies a file as stat sees it.
type fileID struct {
	dev, ino, size uint64
	mtime          int64
}

// Finder finds a Spec's files and hands out each once. It is safe for concurrent use (a periodic Scan, and
// Check as processes are reported).
//
// A file that is not a target (no symbol, not ELF) is remembered and reported once, as an error (wrapping
// elfsym.ErrNoSymbol when symbols are missing). Files that cannot be opened (a process that just exited)
// are skipped silently and tried again when seen again.
type Finder struct {
	procRoot string
	spec     Spec

	mu   sync.Mutex
	seen map[fileID]bool // handed out, being parsed, or not a target
}

// NewFinder returns a Finder reading processes under procRoot (normally "/proc").
func NewFinder(procRoot string, spec Spec) *Finder {
	return &Finder{procRoot: procRoot, spec: spec, seen: map[fileID]bool{}}
}

// Spec returns what the Finder looks for.
func (f *Finder) Spec() Spec { return f.spec }

// run is what one Host, Scan or Check call gathers.
type run struct {
	roots map[fileID]bool // root directories already looked into
	files []File
	errs  []error
}

// Host returns the Known and InRoots files of our own root directory, each file once, unless handed out before.
func (f *Finder) Host() ([]File, []error) {
	var r run
	for _, p := range append(slices.Clone(f.spec.Known), f.spec.InRoots...) {
		f.addPath(&r, p)
	}
	return r.files, r.errs
}

// Scan returns the files of all processes not handed out before: executables and mapped files the Spec
// wants, and the InRoots files of each distinct root directory (so that a container's bash is probed before
// anyone runs it). Processes that vanish or cannot be read are skipped silently; an unreadable procRoot is
// an error.
func (f *Finder) Scan() ([]File, []error) {
	ents, err := os.ReadDir(f.procRoot)
	if err != nil {
		return nil, []error{fmt.Errorf("%s: scan %s: %w", f.spec.Plugin, f.procRoot, err)}
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
	return r.files, r.errs
}

// Check is Scan for one process, at once (the kernel reported that pid exec'd a target).
func (f *Finder) Check(pid uint32) ([]File, []error) {
	ourRoot, err := os.Stat("/")
	if err != nil {
		return nil, []error{fmt.Errorf("stat our root: %w", err)}
	}
	r := run{roots: map[fileID]bool{}}
	f.process(&r, filepath.Join(f.procRoot, strconv.FormatUint(uint64(pid), 10)), ourRoot)
	return r.files, r.errs
}

// Forget makes the file (dev, ino) new again, so that a later call returns it once more (after its probe
// failed to attach, say).
func (f *Finder) Forget(dev, ino uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k := range f.seen {
		if k.ino == ino && (k.dev == dev || f.spec.SameAcrossDevices) {
			delete(f.seen, k)
		}
	}
}

// process looks at the process whose /proc directory is pidDir: its executable, its mappings, its root.
func (f *Finder) process(r *run, pidDir string, ourRoot os.FileInfo) {
	rootDir := filepath.Join(pidDir, "root")
	root, err := os.Stat(rootDir)
	if err != nil {
		return
	}
	otherRoot := !os.SameFile(root, ourRoot)
	if f.spec.Exe != nil {
		f.exe(r, pidDir, otherRoot)
	}
	if f.spec.Mapped != nil {
		f.mapped(r, pidDir, otherRoot)
	}
	if len(f.spec.InRoots) == 0 {
		return
	}
	rid, _ := statID(root)
	if r.roots[rid] {
		return
	}
	r.roots[rid] = true
	for _, p := range f.spec.InRoots {
		if otherRoot {
			p = filepath.Join(rootDir, p)
		}
		f.addPath(r, p)
	}
}

// exe adds the process's executable if the Spec wants it, through a path that is that file.
func (f *Finder) exe(r *run, pidDir string, otherRoot bool) {
	exe := filepath.Join(pidDir, "exe")
	link, err := os.Readlink(exe)
	if err != nil {
		return
	}
	path, deleted := strings.CutSuffix(link, " (deleted)")
	if !f.spec.Exe(path, comm(pidDir)) {
		return
	}
	id, ok := regularFile(exe)
	if !ok || f.isSeen(id) {
		return
	}
	p := exe
	for _, c := range candidates(pidDir, path, otherRoot, deleted) {
		if cid, ok := regularFile(c); ok && cid == id {
			p = c
			break
		}
	}
	f.addLinked(r, p, id, f.spec.Linked || f.spec.Go)
}

// mapped adds the files the process maps executable that the Spec wants.
//
// The maps path is as the kernel sees it from our root when the file is reachable from it (a chroot in our
// mount namespace), else relative to the process's mount namespace (a container); a " (deleted)" path may now
// name a newer file. So each candidate is checked against the inode number in the maps line, and when none
// matches, /proc/<pid>/map_files/<range> (the mapped file itself; needs CAP_SYS_ADMIN) is used instead.
func (f *Finder) mapped(r *run, pidDir string, otherRoot bool) {
	file, err := os.Open(filepath.Join(pidDir, "maps"))
	if err != nil {
		return
	}
	defer file.Close()
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		m, ok := ParseMapsLine(sc.Text())
		if !ok || !strings.Contains(m.Perms, "x") || !f.spec.Mapped(m.Path) {
			continue
		}
		path, deleted := strings.CutSuffix(m.Path, " (deleted)")
		p := filepath.Join(pidDir, "map_files", m.Addrs)
		for _, c := range candidates(pidDir, path, otherRoot, deleted) {
			if id, ok := regularFile(c); ok && id.ino == m.Ino {
				p = c
				break
			}
		}
		f.addPath(r, p)
	}
}

// candidates are the paths that may reach a process's file named path: none for a deleted file, the path
// under the process's root then as is for another root, else the path itself.
func candidates(pidDir, path string, otherRoot, deleted bool) []string {
	switch {
	case deleted:
		return nil
	case otherRoot:
		return []string{filepath.Join(pidDir, "root", path), path}
	}
	return []string{path}
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

func (f *Finder) key(id fileID) fileID {
	if f.spec.SameAcrossDevices {
		id.dev = 0
	}
	return id
}

func (f *Finder) isSeen(id fileID) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seen[f.key(id)]
}

// add finds the Spec's symbols in the file id at path unless id was seen before.
func (f *Finder) add(r *run, path string, id fileID) { f.addLinked(r, path, id, false) }

// addLinked is add, for an executable that may have the library linked in when linked.
func (f *Finder) addLinked(r *run, path string, id fileID, linked bool) {
	f.mu.Lock()
	if f.seen[f.key(id)] {
		f.mu.Unlock()
		return
	}
	f.seen[f.key(id)] = true
	f.mu.Unlock()

	var (
		offs  map[string]uint64
		funcs map[string]elfsym.GoFunc
		err   error
	)
	switch {
	case f.spec.Go:
		funcs, err = elfsym.GoFunctions(path, f.spec.Symbols)
		if errors.Is(err, elfsym.ErrNotGo) {
			return // not a Go program: the common case, not worth a line
		}
	case linked:
		offs, err = elfsym.StaticOffsets(path, f.spec.Symbols)
	default:
		offs, err = elfsym.Offsets(path, f.spec.Symbols)
	}
	if err != nil {
		if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
			f.Forget(id.dev, id.ino) // could not open it (gone, or no access): try again when seen again
			return
		}
		if linked && len(offs) == 0 && len(funcs) == 0 && (!f.spec.Go || errors.Is(err, elfsym.ErrNoSymbol)) {
			return // an executable without the library: the common case, not worth a line
		}
		if !f.spec.Partial || !errors.Is(err, elfsym.ErrNoSymbol) || len(offs) == 0 {
			r.errs = append(r.errs, fmt.Errorf("%s: %s (dev %d inode %d) cannot be probed: %w", f.spec.Plugin, path, id.dev, id.ino, err))
			return
		}
		// Partial: probed with the symbols it has (an older libssl without SSL_read_ex, say).
	}
	r.files = append(r.files, File{Path: path, Dev: id.dev, Ino: id.ino, Offsets: offs, Funcs: funcs})
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

// Mapping is one line of /proc/<pid>/maps.
type Mapping struct {
	Addrs, Perms, Path string
	Ino                uint64
}

// ParseMapsLine splits a /proc/<pid>/maps line ("addrs perms offset dev inode path"); path may hold spaces.
func ParseMapsLine(line string) (Mapping, bool) {
	var f [5]string
	rest := line
	for i := range f {
		var ok bool
		rest = strings.TrimLeft(rest, " ")
		if f[i], rest, ok = strings.Cut(rest, " "); !ok {
			return Mapping{}, false
		}
	}
	ino, err := strconv.ParseUint(f[4], 10, 64)
	path := strings.TrimLeft(rest, " ")
	if err != nil || path == "" {
		return Mapping{}, false
	}
	return Mapping{Addrs: f[0], Perms: f[1], Path: path, Ino: ino}, true
}
