// Package enrich adds to every plugin's points what the kernel does not know: the container of the
// process a point names (and, later, its pod).
package enrich

import (
	"strconv"

	"dkebpf/collector/container"
	"dkebpf/collector/point"
)

// Containers names the container of a mount namespace or of a live process (container.Resolver).
type Containers interface {
	ByMntns(ns uint32) (container.Info, bool)
	ByPid(pid uint32) (container.Info, bool)
}

// AddContainers tags each point whose process runs in a container with container_id, container_name and
// container_image (the last two when the runtime's socket answered). The mount namespace the kernel
// recorded is the key; a point without one (a connection found open at start, whose owner came from
// /proc) falls back to its pid, which must still be alive.
func AddContainers(pts []point.Point, c Containers) {
	for i := range pts {
		p := &pts[i]
		info, ok := c.ByMntns(p.Mntns)
		if !ok && p.Mntns == 0 {
			pid, err := strconv.ParseUint(p.Tags["pid"], 10, 32)
			if err != nil || pid == 0 {
				continue
			}
			info, ok = c.ByPid(uint32(pid))
		}
		if !ok {
			continue
		}
		if p.Tags == nil {
			p.Tags = map[string]string{}
		}
		info.AddTags(p.Tags)
	}
}
