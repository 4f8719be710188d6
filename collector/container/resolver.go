package container

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config says where the host's processes and the runtimes' sockets are.
type Config struct {
	Proc      string           // proc root; default "/proc" (the caller passes HOST_PROC when set)
	HostRoot  string           // prefix of the sockets' paths (DataKit's HOST_ROOT, e.g. "/rootfs"); default ""
	Endpoints []string         // Docker-API unix sockets ("/path" or "unix:///path"); nil: DefaultEndpoints, empty: none
	Logger    *slog.Logger     // default: discard
	Now       func() time.Time // default time.Now (tests inject a clock)
}

// DefaultEndpoints are the sockets of the runtimes that serve Docker's API (podman's `podman system service`
// does). containerd and cri-o are never asked: their containers are named by Kubernetes enrichment.
var DefaultEndpoints = []string{"/var/run/docker.sock", "/run/podman/podman.sock"}

const (
	// rescanEvery bounds how often misses make the resolver read every /proc/<pid>/ns/mnt: a burst of
	// misses costs one scan.
	rescanEvery = time.Second
	// verifyEvery is how long a cached namespace is trusted before it is checked again: the kernel reuses a
	// dead namespace's inode number for the next one, so a new container may take an old one's number.
	verifyEvery = 5 * time.Second
	// forgetAfter is how long an entry stays once its namespace has no process and nothing asked for it.
	forgetAfter = 10 * time.Minute
	// maxTries bounds the cgroup files read per namespace and scan: a host process that entered a
	// container's namespace (nsenter) keeps the host's cgroup, so one process is not always enough.
	maxTries = 8
)

// entry is what a scan learned of one mount namespace.
type entry struct {
	info     Info
	ok       bool      // info names a container
	pid      uint32    // a process seen in the namespace at the last scan; 0 when it had none
	checked  time.Time // when info was last confirmed (scan or pid check)
	lastUsed time.Time
}

// Resolver maps mount namespaces and pids to containers. It is safe for concurrent use.
type Resolver struct {
	proc  string
	log   *slog.Logger
	now   func() time.Time
	names *namer

	mu       sync.Mutex
	hostNS   uint32 // 0 while unknown
	byNS     map[uint32]*entry
	lastScan time.Time
	scans    int // for tests
}

func New(cfg Config) *Resolver {
	if cfg.Proc == "" {
		cfg.Proc = "/proc"
	}
	if cfg.Endpoints == nil {
		cfg.Endpoints = DefaultEndpoints
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	r := &Resolver{proc: cfg.Proc, log: cfg.Logger, now: cfg.Now, byNS: map[uint32]*entry{}}
	r.names = newNamer(newRuntimeAPI(cfg.HostRoot, cfg.Endpoints, cfg.Logger, cfg.Now), cfg.Now)
	r.hostNS = hostMntns(cfg.Proc)
	return r
}

// ByMntns returns the container whose processes live in mount namespace mntns. It is false for 0, for the
// host's namespace (pid 1's), for a namespace whose processes' cgroups name no container, and for an unknown
// namespace with no process left. A namespace once seen keeps its container after its processes exit, until
// unused for forgetAfter; a cached namespace is re-checked after verifyEvery, as the kernel gives a dead
// namespace's number to the next one (an exited container's late events then get the new owner: the number
// is all the kernel recorded). A miss rescans /proc at most once per rescanEvery. Name and Image are filled from
// the runtime's API for docker and podman containers (and unknown-runtime ones outside Kubernetes), with a
// wait of at most 300 ms per socket the first time an id is seen; an absent socket leaves them "".
func (r *Resolver) ByMntns(mntns uint32) (Info, bool) {
	if mntns == 0 {
		return Info{}, false
	}
	r.mu.Lock()
	now := r.now()
	e := r.byNS[mntns]
	if mntns != r.hostNS && (e == nil || (now.Sub(e.checked) >= verifyEvery && !r.stillThere(mntns, e, now))) {
		if now.Sub(r.lastScan) >= rescanEvery || r.scans == 0 {
			r.scan(now)
		}
		e = r.byNS[mntns] // nil for a namespace no process was ever seen in: not cached, the next miss rescans
	}
	if mntns == r.hostNS || e == nil {
		r.mu.Unlock()
		return Info{}, false
	}
	e.lastUsed = now
	info, ok := e.info, e.ok
	r.mu.Unlock()
	if !ok {
		return Info{}, false
	}
	return r.names.fill(info), true
}

// ByPid returns the container of a live process, from its /proc/<pid>/cgroup (for records that carry no
// mount namespace).
func (r *Resolver) ByPid(pid uint32) (Info, bool) {
	b, err := os.ReadFile(filepath.Join(r.proc, strconv.FormatUint(uint64(pid), 10), "cgroup"))
	if err != nil {
		return Info{}, false
	}
	info, ok := fromCgroupFile(string(b))
	if !ok {
		return Info{}, false
	}
	return r.names.fill(info), true
}

// stillThere confirms a cached entry cheaply: the process it was learned from is still in the namespace.
func (r *Resolver) stillThere(mntns uint32, e *entry, now time.Time) bool {
	if e.pid == 0 {
		return false
	}
	if ns, err := nsInode(filepath.Join(r.proc, strconv.FormatUint(uint64(e.pid), 10), "ns", "mnt")); err != nil || ns != mntns {
		return false
	}
	e.checked = now
	return true
}

// scan reads every process's mount namespace and derives each live namespace's container again from its
// processes' cgroups (a reused inode number gets its new owner). Namespaces with no process keep what was
// known and are forgotten once unused for forgetAfter. Called with r.mu held.
func (r *Resolver) scan(now time.Time) {
	r.lastScan = now
	r.scans++
	if r.hostNS == 0 {
		r.hostNS = hostMntns(r.proc)
	}
	dirs, err := os.ReadDir(r.proc)
	if err != nil {
		r.log.Warn("scan processes for containers", "err", err)
		return
	}
	type found struct {
		pid   uint32
		info  Info
		ok    bool // info names a container
		read  bool // a cgroup file was read
		tries int
	}
	live := map[uint32]*found{}
	for _, d := range dirs {
		pid, err := strconv.ParseUint(d.Name(), 10, 32)
		if err != nil {
			continue
		}
		dir := filepath.Join(r.proc, d.Name())
		ns, err := nsInode(filepath.Join(dir, "ns", "mnt"))
		if err != nil || ns == r.hostNS {
			continue
		}
		f := live[ns]
		if f == nil {
			f = &found{pid: uint32(pid)}
			live[ns] = f
		}
		if f.ok || f.tries >= maxTries {
			continue
		}
		f.tries++
		b, err := os.ReadFile(filepath.Join(dir, "cgroup"))
		if err != nil {
			continue // exited meanwhile
		}
		f.read = true
		if info, ok := fromCgroupFile(string(b)); ok {
			f.pid, f.info, f.ok = uint32(pid), info, true
		}
	}
	for ns, f := range live {
		e := r.byNS[ns]
		if e == nil {
			e = &entry{lastUsed: now}
			r.byNS[ns] = e
		}
		if f.read {
			e.info, e.ok = f.info, f.ok
		}
		e.pid, e.checked = f.pid, now
	}
	for ns, e := range r.byNS {
		if live[ns] != nil {
			continue
		}
		e.pid, e.checked = 0, now
		if now.Sub(e.lastUsed) > forgetAfter {
			delete(r.byNS, ns)
		}
	}
	r.names.forget(now)
}

// hostMntns is the host's mount namespace: pid 1's, else (pid 1 unreadable, as under some sandboxes)
// kthreadd's, which shares init's namespaces; 0 when neither can be read.
func hostMntns(proc string) uint32 {
	if ns, err := nsInode(filepath.Join(proc, "1", "ns", "mnt")); err == nil {
		return ns
	}
	if comm, err := os.ReadFile(filepath.Join(proc, "2", "comm")); err == nil && strings.TrimSpace(string(comm)) == "kthreadd" {
		if ns, err := nsInode(filepath.Join(proc, "2", "ns", "mnt")); err == nil {
			return ns
		}
	}
	return 0
}

// nsInode reads a namespace link such as "mnt:[4026531841]".
func nsInode(link string) (uint32, error) {
	s, err := os.Readlink(link)
	if err != nil {
		return 0, err
	}
	i, j := strings.IndexByte(s, '['), strings.IndexByte(s, ']')
	if i < 0 || j < i {
		return 0, fmt.Errorf("namespace link %s: %q has no inode", link, s)
	}
	n, err := strconv.ParseUint(s[i+1:j], 10, 32)
	if err != nil {
		return 0, fmt.Errorf("namespace link %s: %w", link, err)
	}
	return uint32(n), nil
}
