// Package procfs finds which process owns a socket, for connections the kernel saw only in softirq
// (a server's long-lived accepted sockets): it maps socket inodes to processes through /proc/*/fd.
package procfs

import (
	"dkebpf/collector/flow"

	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Owner is a process that holds a socket (its mount namespace is not read: 0).
type Owner = flow.Proc

// Owners resolves socket inodes, rescanning /proc at most once per Refresh, and only once ten times the last
// scan's length has passed since it: a scan reads every open file of every process (about a second of CPU
// at 200 000 sockets), so it takes at most a tenth of the collector's time however many sockets wait.
type Owners struct {
	root     string
	byInode  map[uint64]Owner
	scanned  bool
	lastScan time.Time     // when the last scan started
	scanTook time.Duration // how long it took
	now      func() time.Time
}

// scanBudget is how many times a scan's length must pass before the next one.
const scanBudget = 10

func NewOwners(root string) *Owners { return &Owners{root: root, now: time.Now} }

// Refresh allows one more scan, on the next miss (once the budget allows).
func (o *Owners) Refresh() { o.scanned = false }

// Lookup returns the process holding socket inode ino. With several holders (a fork), the lowest pid.
func (o *Owners) Lookup(ino uint64) (Owner, bool) {
	if ow, ok := o.byInode[ino]; ok {
		return ow, true
	}
	if o.scanned || o.now().Sub(o.lastScan) < scanBudget*o.scanTook {
		return Owner{}, false
	}
	o.lastScan = o.now()
	o.scan()
	o.scanTook = o.now().Sub(o.lastScan)
	ow, ok := o.byInode[ino]
	return ow, ok
}

func (o *Owners) scan() {
	o.scanned = true
	o.byInode = map[uint64]Owner{}
	procs, _ := os.ReadDir(o.root)
	for _, p := range procs {
		pid, err := strconv.ParseUint(p.Name(), 10, 32)
		if err != nil {
			continue
		}
		dir := filepath.Join(o.root, p.Name())
		fds, _ := os.ReadDir(filepath.Join(dir, "fd"))
		var name string
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join(dir, "fd", fd.Name()))
			if err != nil || !strings.HasPrefix(link, "socket:[") {
				continue
			}
			ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]"), 10, 64)
			if err != nil {
				continue
			}
			if prev, ok := o.byInode[ino]; ok && prev.Pid < uint32(pid) {
				continue
			}
			if name == "" {
				b, _ := os.ReadFile(filepath.Join(dir, "comm"))
				name = strings.TrimSpace(string(b))
			}
			o.byInode[ino] = Owner{Pid: uint32(pid), Comm: name}
		}
	}
}
