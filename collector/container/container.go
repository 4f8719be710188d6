// Package container is the flush-time enrichment stage that names the container a point's process ran in:
// the id from the cgroup path of a process in the event's mount namespace (docker, containerd, cri-o,
// podman; cgroup v1, v2 and hybrid), the name and image from the runtime's Docker-style API when its socket
// answers. The mount namespace is the key because the process that made the event may have exited by the
// flush, while the container's other processes still live in its namespace.
package container

import (
	"regexp"
	"strings"
)

// Info is what is known of one container.
type Info struct {
	ID      string // the full id (64 hex digits for every runtime recognised)
	Runtime string // "docker", "podman", "containerd", "cri-o"; "" when the cgroup path does not say
	PodUID  string // the Kubernetes pod's UID when the cgroup path names one ('_' turned back to '-')
	Name    string // from the runtime's API; "" without a socket that knows the container
	Image   string // idem
}

// AddTags adds the point tags of the container to tags: container_id always, container_name and
// container_image only when known (non-empty). tags must not be nil.
func (i Info) AddTags(tags map[string]string) {
	tags["container_id"] = i.ID
	if i.Name != "" {
		tags["container_name"] = i.Name
	}
	if i.Image != "" {
		tags["container_image"] = i.Image
	}
}

const hex64 = `([0-9a-f]{64})`

// components are the cgroup path components that name a container. The monitors libpod-conmon-<id> and
// crio-conmon-<id> do not match: hex must follow the prefix. A bare <id> is docker's under /docker/ and
// unknown elsewhere: under /kubepods/ (cgroupfs driver) it is containerd's or dockershim's alike, so
// Runtime stays "" rather than guess.
var components = []struct {
	re      *regexp.Regexp
	runtime string
}{
	{regexp.MustCompile(`^libpod-` + hex64 + `(\.scope)?$`), "podman"},
	{regexp.MustCompile(`^docker-` + hex64 + `\.scope$`), "docker"},
	{regexp.MustCompile(`^cri-containerd-` + hex64 + `\.scope$`), "containerd"},
	{regexp.MustCompile(`:cri-containerd:` + hex64 + `$`), "containerd"}, // systemd driver under containerd.service
	{regexp.MustCompile(`^crio-` + hex64 + `(\.scope)?$`), "cri-o"},
	{regexp.MustCompile(`^` + hex64 + `$`), ""},
}

// podUID is a pod cgroup: pod<uid> (cgroupfs) or kubepods-<qos>-pod<uid with '_'>.slice (systemd).
var podUID = regexp.MustCompile(`pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(\.slice)?(:|$)`)

// IDFromCgroup parses the content of a /proc/<pid>/cgroup file (v1 lines "N:controllers:path", the v2 line
// "0::path") and returns the container it names: the v2 line's if it names one, else the first v1 line's
// that does (on a hybrid host the v2 path is often "/").
func IDFromCgroup(content string) (id, runtime, podUID string, ok bool) {
	info, ok := fromCgroupFile(content)
	return info.ID, info.Runtime, info.PodUID, ok
}

func fromCgroupFile(content string) (Info, bool) {
	var v1 []string
	for line := range strings.Lines(content) {
		hier, rest, ok := strings.Cut(strings.TrimRight(line, "\n"), ":")
		if !ok {
			continue
		}
		_, path, ok := strings.Cut(rest, ":") // the path itself may hold ':' (…slice:cri-containerd:<id>)
		if !ok {
			continue
		}
		if hier != "0" {
			v1 = append(v1, path)
			continue
		}
		if info, ok := fromCgroupPath(path); ok {
			return info, true
		}
	}
	for _, path := range v1 {
		if info, ok := fromCgroupPath(path); ok {
			return info, true
		}
	}
	return Info{}, false
}

// fromCgroupPath returns the container a cgroup path names, searching from its last component up: the
// payload may sit below the container's cgroup (libpod-<id>.scope/container, a systemd inside), and a path
// seen from a private cgroup namespace starts with /../.. .
func fromCgroupPath(path string) (Info, bool) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	for i := len(parts) - 1; i >= 0; i-- {
		for _, c := range components {
			m := c.re.FindStringSubmatch(parts[i])
			if m == nil {
				continue
			}
			info := Info{ID: m[1], Runtime: c.runtime}
			if info.Runtime == "" && i > 0 && parts[i-1] == "docker" {
				info.Runtime = "docker"
			}
			for _, p := range parts[:i+1] {
				if u := podUID.FindStringSubmatch(p); u != nil {
					info.PodUID = strings.ReplaceAll(u[1], "_", "-")
				}
			}
			return info, true
		}
	}
	return Info{}, false
}
