// Package procfs finds which process owns a socket, for connections the kernel saw only in softirq
// (a server's long-lived accepted sockets): it maps socket inodes to processes through /proc/*/fd.
package procfs

import (
	"dkebpf/collector/flow"

	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Owner is a process that holds a socket, with its mount namespace as the kernel reports it: a flow whose
// owner came from here and one whose owner the kernel bound must aggregate under the same key.
type Owner = flow.Proc

// Owners resolves socket inodes from a scan of /proc. A scan reads every open file of every process
// (about a second at 200 000 sockets), so it runs in the background, never holding the caller (the main
// loop, which drains the rings), at most once per Refresh, and only once ten times the last scan's
// length has passed since it: it takes at most a tenth of the time however many sockets wait. A lookup
// that misses starts one; its answer is there for the next walk.
type Owners struct {
	root string
	now  func() time.Time

	mu       sync.Mutex
	byInode  map[uint64]Owner // from the last finished scan
	scanned  bool             // a scan started since the last Refresh
	scanning sync.WaitGroup   // the scan in flight, if any
	busy     bool
	lastScan time.Time     // when the last scan started
	scanTook time.Duration // how long it took
	started  uint64        // scans started
	finished uint64        // the number (started, as it began) of the last scan finished
}

// scanBudget is how many times a scan's length must pass before the next one.
const scanBudget = 10

func NewOwners(root string) *Owners { return &Owners{root: root, now: time.Now} }

// Refresh allows one more scan, on the next miss (once the budget allows).
func (o *Owners) Refresh() {
	o.mu.Lock()
	o.scanned = false
	o.mu.Unlock()
}

// Lookup returns the process holding socket inode ino, as the last scan saw it (with several holders, a
// fork, the lowest pid). A miss may start a scan.
func (o *Owners) Lookup(ino uint64) (Owner, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if ow, ok := o.byInode[ino]; ok {
		return ow, true
	}
	if o.scanned || o.busy || o.now().Sub(o.lastScan) < scanBudget*o.scanTook {
		return Owner{}, false
	}
	o.scanned, o.busy, o.lastScan = true, true, o.now()
	o.started++
	n := o.started
	o.scanning.Add(1)
	go func() {
		defer o.scanning.Done()
		found := scan(o.root)
		o.mu.Lock()
		o.byInode, o.busy, o.scanTook, o.finished = found, false, o.now().Sub(o.lastScan), n
		o.mu.Unlock()
	}()
	return Owner{}, false
}

// Scans is the number of scans started so far.
func (o *Owners) Scans() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.started
}

// ScannedSince reports whether a scan started after Scans returned n has finished: its answers are in.
func (o *Owners) ScannedSince(n uint64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.finished > n
}

// wait returns once no scan is in flight (tests).
func (o *Owners) wait() { o.scanning.Wait() }

// scan maps every socket inode held open under root (/proc) to its process.
func scan(root string) map[uint64]Owner {
	byInode := map[uint64]Owner{}
	procs, _ := os.ReadDir(root)
	for _, p := range procs {
		pid, err := strconv.ParseUint(p.Name(), 10, 32)
		if err != nil {
			continue
		}
		dir := filepath.Join(root, p.Name())
		fds, _ := os.ReadDir(filepath.Join(dir, "fd"))
		var name string
		var mntns uint32
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join(dir, "fd", fd.Name()))
			if err != nil || !strings.HasPrefix(link, "socket:[") {
				continue
			}
			ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]"), 10, 64)
			if err != nil {
				continue
			}
			if prev, ok := byInode[ino]; ok && prev.Pid < uint32(pid) {
				continue
			}
			if name == "" {
				b, _ := os.ReadFile(filepath.Join(dir, "comm"))
				name = strings.TrimSpace(string(b))
				mntns = nsInode(filepath.Join(dir, "ns", "mnt"))
			}
			byInode[ino] = Owner{Pid: uint32(pid), Comm: name, Mntns: mntns}
		}
	}
	return byInode
}

// nsInode reads a namespace link ("mnt:[4026531841]") as its inode number, 0 if unreadable.
func nsInode(link string) uint32 {
	l, err := os.Readlink(link)
	if err != nil {
		return 0
	}
	_, num, _ := strings.Cut(strings.TrimSuffix(l, "]"), "[")
	n, _ := strconv.ParseUint(num, 10, 32)
	return uint32(n)
}
