package bash

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Users resolves uids to login names through passwd files: the one in the process's root directory
// (a container's), then the host's. It is safe for concurrent use.
//
// A lookup costs an open and an fstat of the passwd file, no read: a file is parsed once and again only when
// its inode, size, modification or change time changes. Names from NSS services (LDAP, sssd) are not seen: such a
// uid comes out as its number.
type Users struct {
	procRoot   string // "/proc"
	hostPasswd string // "/etc/passwd"

	mu    sync.Mutex
	files map[fileKey]*passwdFile // by the passwd file's identity
	byPid map[uint32]pidRoot      // the passwd file last seen through each process's root
	reads int                     // passwd files parsed (for tests)
}

type fileKey struct{ dev, ino uint64 }

type passwdFile struct {
	size         int64
	mtime, ctime time.Time
	names        map[uint32]string
	used         time.Time
}

type pidRoot struct {
	key  fileKey
	seen time.Time
}

// Cache bounds: a passwd file or a pid unused this long is forgotten at the next sweep.
const (
	usersIdle      = 10 * time.Minute
	usersSweepSize = 256
	passwdMaxBytes = 16 << 20
)

// NewUsers returns a Users reading procRoot/<pid>/root/etc/passwd (procRoot is normally "/proc") and then
// hostPasswd (normally "/etc/passwd").
func NewUsers(procRoot, hostPasswd string) *Users {
	return &Users{procRoot: procRoot, hostPasswd: hostPasswd, files: map[fileKey]*passwdFile{}, byPid: map[uint32]pidRoot{}}
}

// Name returns the login name of uid as seen by process pid: from the passwd file in the process's root
// directory, else from the host's, else uid as a decimal string. When the process is gone, the passwd file
// last seen through its root is used, so a container's "exit" line keeps the container's name.
func (u *Users) Name(pid, uid uint32) string {
	now := time.Now()
	u.mu.Lock()
	defer u.mu.Unlock()
	u.sweep(now)

	root := filepath.Join(u.procRoot, strconv.FormatUint(uint64(pid), 10), "root")
	f, err := openInRoot(root, "etc/passwd")
	if pf, key, err := u.load(f, err, now); err == nil {
		u.byPid[pid] = pidRoot{key, now}
		if name, ok := pf.names[uid]; ok {
			return name
		}
	} else if pr, ok := u.byPid[pid]; ok {
		if pf := u.files[pr.key]; pf != nil {
			pf.used = now
			if name, ok := pf.names[uid]; ok {
				return name
			}
		}
	}
	f, err = os.OpenFile(u.hostPasswd, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if pf, _, err := u.load(f, err, now); err == nil {
		if name, ok := pf.names[uid]; ok {
			return name
		}
	}
	return strconv.FormatUint(uint64(uid), 10)
}

// load returns the parsed passwd file f, the result of opening it with error openErr, and closes f. The file
// is read only if the cache lacks it or it changed.
func (u *Users) load(f *os.File, openErr error, now time.Time) (*passwdFile, fileKey, error) {
	if openErr != nil {
		return nil, fileKey{}, openErr
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fileKey{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || !fi.Mode().IsRegular() {
		return nil, fileKey{}, fmt.Errorf("%s is not a regular file", f.Name())
	}
	key := fileKey{st.Dev, st.Ino}
	ctime := time.Unix(st.Ctim.Unix())
	if c := u.files[key]; c != nil && c.size == fi.Size() && c.mtime.Equal(fi.ModTime()) && c.ctime.Equal(ctime) {
		c.used = now
		return c, key, nil
	}
	u.reads++
	names, err := parsePasswd(io.LimitReader(f, passwdMaxBytes))
	if err != nil {
		return nil, fileKey{}, fmt.Errorf("read %s: %w", f.Name(), err)
	}
	c := &passwdFile{size: fi.Size(), mtime: fi.ModTime(), ctime: ctime, names: names, used: now}
	u.files[key] = c
	return c, key, nil
}

// sweep forgets idle files and pids once the caches grow.
func (u *Users) sweep(now time.Time) {
	if len(u.files) > usersSweepSize {
		for k, f := range u.files {
			if now.Sub(f.used) > usersIdle {
				delete(u.files, k)
			}
		}
	}
	if len(u.byPid) > usersSweepSize {
		for pid, pr := range u.byPid {
			if now.Sub(pr.seen) > usersIdle {
				delete(u.byPid, pid)
			}
		}
	}
}

// parsePasswd reads passwd lines (name:password:uid:gid:gecos:home:shell). The first name of a uid wins, as
// with getpwuid; comments, NIS lines (+, -) and malformed lines are skipped.
func parsePasswd(r io.Reader) (map[uint32]string, error) {
	names := map[uint32]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' || line[0] == '+' || line[0] == '-' {
			continue
		}
		f := strings.SplitN(line, ":", 4)
		if len(f) < 4 || f[0] == "" {
			continue
		}
		uid, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			continue
		}
		if _, ok := names[uint32(uid)]; !ok {
			names[uint32(uid)] = strings.ToValidUTF8(f[0], "\uFFFD")
		}
	}
	return names, sc.Err()
}

// openInRoot opens name (relative) inside the directory root as if root were "/": symbolic links, absolute
// ones included, resolve inside it (a container's /etc/passwd may be a link), never to our own files.
func openInRoot(root, name string) (*os.File, error) {
	dfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: root, Err: err}
	}
	defer unix.Close(dfd)
	fd, err := unix.Openat2(dfd, name, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOCTTY | unix.O_NONBLOCK,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if errors.Is(err, unix.ENOSYS) { /* kernel before 5.6: resolve as a plain path */
		return os.Open(filepath.Join(root, name))
	}
	if err != nil {
		return nil, &os.PathError{Op: "openat2", Path: filepath.Join(root, name), Err: err}
	}
	return os.NewFile(uintptr(fd), filepath.Join(root, name)), nil
}
