package process

import (
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"dkebpf/collector/plugin"
	"dkebpf/collector/point"
	"dkebpf/collector/procfs"
)

// OOMMeasurement is the name of the OOM kill events.
const OOMMeasurement = "oom_kill"

// OOMPlugin reports, as logging, each process the OOM killer ended: the process plugin finds them in the
// kernel's per-process counters (a process's end says whether it was the victim), so none is lost to a
// full ring, and this plugin only writes them out.
type OOMPlugin struct {
	p        *Plugin
	cgroups  *Cgroups
	pageSize uint64
	c        plugin.Counters
	unnamed  uint64
}

var _ plugin.Plugin = (*OOMPlugin)(nil)

// NewOOMPlugin reports the kills p sees; it must come after p in the plugin list (it flushes what p's Flush
// found in the same pass).
func NewOOMPlugin(p *Plugin, cgroups *Cgroups, log *slog.Logger) *OOMPlugin {
	log.Info("process: OOM kills as " + OOMMeasurement + " logging, from each process's end")
	return &OOMPlugin{p: p, cgroups: cgroups, pageSize: uint64(os.Getpagesize())}
}

func (o *OOMPlugin) Name() string     { return "oom" }
func (o *OOMPlugin) Category() string { return "logging" }
func (o *OOMPlugin) Input() string    { return "ebpf-process/" + OOMMeasurement }
func (o *OOMPlugin) Drain()           {}
func (o *OOMPlugin) Close()           {}

func (o *OOMPlugin) Flush(now time.Time) []point.Point {
	kills := o.p.kills
	o.p.kills = nil
	pts := make([]point.Point, 0, len(kills))
	for _, k := range kills {
		o.c.Events++
		cg, ok := o.cgroups.Path(k.MemcgID)
		if !ok {
			o.unnamed++
		}
		rss := k.KillRSSPages * o.pageSize
		pts = append(pts, point.Point{
			Name: OOMMeasurement,
			Tags: map[string]string{"process_name": k.Comm, "cgroup": cg},
			Fields: map[string]any{
				"pid": int64(k.Pid), "rss_bytes": int64(rss), "cgroup_id": int64(k.MemcgID),
				"message": fmt.Sprintf("out of memory: killed process %d (%s), resident %d bytes, memory cgroup %s", k.Pid, k.Comm, rss, cg),
			},
			Time:  now,
			Mntns: k.Mntns,
		})
	}
	return pts
}

func (o *OOMPlugin) Counters() plugin.Counters {
	c := o.c
	c.Extra = map[string]uint64{"cgroups_unnamed": o.unnamed}
	return c
}

// Cgroups names memory cgroups by their kernfs id, which is their directory's inode number: it searches the
// cgroup v2 mounts and the v1 mounts of the memory controller that mountinfo lists.
type Cgroups struct {
	mountinfo string
	names     map[uint64]string
}

// NewCgroups searches the mounts that mountinfo (e.g. /proc/self/mountinfo) lists.
func NewCgroups(mountinfo string) *Cgroups {
	return &Cgroups{mountinfo: mountinfo, names: map[uint64]string{}}
}

// Path is the cgroup's path from its hierarchy's root ("/" for the root), or its id in decimal with ok false
// when no mount holds it (removed since, or mounted nowhere we see).
func (c *Cgroups) Path(id uint64) (path string, ok bool) {
	if p, ok := c.names[id]; ok {
		return p, true
	}
	for _, root := range c.roots() {
		if p, ok := findIno(root, id); ok {
			if len(c.names) >= 4096 { // ids are not reused: a long-lived host's would only grow
				clear(c.names)
			}
			c.names[id] = p
			return p, true
		}
	}
	return fmt.Sprint(id), false
}

// roots are the mount points of cgroup v2 and of v1's memory controller.
func (c *Cgroups) roots() []string {
	f, err := os.Open(c.mountinfo)
	if err != nil {
		return nil
	}
	defer f.Close()
	mounts, _ := procfs.Mounts(f) // what was read before an error still counts
	var roots []string
	for _, m := range mounts {
		if m.Root == "/" && (m.FSType == "cgroup2" || m.FSType == "cgroup" && strings.Contains(","+m.SuperOptions+",", ",memory,")) {
			roots = append(roots, m.Point)
		}
	}
	return roots
}

// findIno walks root for the directory whose inode is ino.
func findIno(root string, ino uint64) (string, bool) {
	var found string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Ino == ino {
				found = "/" + strings.TrimPrefix(strings.TrimPrefix(p, root), "/")
				return filepath.SkipAll
			}
		}
		return nil
	})
	return found, found != ""
}
