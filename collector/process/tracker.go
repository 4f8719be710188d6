package process

// Group is what a point is per: a process name in a mount namespace (its container).
type Group struct {
	Comm  string
	Mntns uint32
}

// Totals are one group's numbers for an interval (Zombies: at its end).
type Totals struct {
	Forks, Threads, Execs, Exits, ThreadExits, ExitsFailed, Zombies uint64
}

func (t Totals) zero() bool { return t == Totals{} }

// OOMKill is a process the OOM killer ended.
type OOMKill struct {
	Pid          uint32
	Comm         string
	Mntns        uint32
	MemcgID      uint64 // its memory cgroup's kernfs id (the directory's inode number)
	KillRSSPages uint64 // its resident set when the kill was delivered, in pages (0: not seen)
}

// Failure is one kind of failed exit in a group: the exit status, or the signal (the other is "N/A").
type Failure struct {
	Group
	ExitCode, Signal string
}

// Tracker turns the kernel's cumulative per-process counters into each interval's differences. It keeps
// the last counts read of every process the kernel still holds; a process read freed is reported once
// more and forgotten, here and (by the caller) in the kernel: nothing counts against it after its free.
type Tracker struct {
	last  map[Key]Counts
	kills []OOMKill          // seen since the last TakeKills
	fails map[Failure]uint64 // failed exits seen since the last TakeFailures
}

func NewTracker() *Tracker { return &Tracker{last: map[Key]Counts{}} }

// Add takes one process as read now and adds what it did since the last read to out. It returns true
// when the process is freed: the caller deletes it from the kernel.
func (t *Tracker) Add(k Key, c Counts, out map[Group]*Totals) (freed bool) {
	prev := t.last[k]
	g := Group{Comm: c.Comm, Mntns: c.Mntns}
	tot := out[g]
	if tot == nil {
		tot = &Totals{}
		out[g] = tot
	}
	tot.Forks += c.Forks - prev.Forks
	tot.Threads += c.Threads - prev.Threads
	tot.Execs += c.Execs - prev.Execs
	tot.ThreadExits += c.ThreadExits - prev.ThreadExits
	if c.Exited && !prev.Exited {
		tot.Exits++
		if c.Failed() {
			tot.ExitsFailed++
			code, sig := c.exitReason()
			if t.fails == nil {
				t.fails = map[Failure]uint64{}
			}
			t.fails[Failure{g, code, sig}]++
		}
		if c.OOMKilled {
			t.kills = append(t.kills, OOMKill{Pid: k.Tgid, Comm: c.Comm, Mntns: c.Mntns, MemcgID: c.MemcgID, KillRSSPages: c.KillRSSPages})
		}
	}
	if c.Freed {
		delete(t.last, k)
		return true
	}
	if c.Exited {
		tot.Zombies++
	}
	t.last[k] = c
	return false
}

// Forget drops what the Tracker holds of processes not read in the last pass (the kernel no longer has
// them: deleted after their free, or never created because its map was full).
func (t *Tracker) Forget(seen map[Key]bool) {
	for k := range t.last {
		if !seen[k] {
			delete(t.last, k)
		}
	}
}

// Len is how many processes the Tracker holds.
func (t *Tracker) Len() int { return len(t.last) }

// TakeKills returns the OOM kills seen since it was last called.
func (t *Tracker) TakeKills() []OOMKill {
	k := t.kills
	t.kills = nil
	return k
}

// TakeFailures returns the failed exits seen since it was last called, by kind.
func (t *Tracker) TakeFailures() map[Failure]uint64 {
	f := t.fails
	t.fails = nil
	return f
}
