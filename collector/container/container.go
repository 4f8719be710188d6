// Package container names the container a process runs in: its id from the process's cgroup path
// (docker, containerd, cri-o, podman), its name and image from the runtime's API when its socket is
// reachable. The kernel records each event's mount namespace, so a container is found even after the
// process that made the event has exited: its other processes still live in that namespace.
package container

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Info is what is known of one container.
type Info struct {
	ID      string
	Runtime string // docker, podman, containerd, cri-o; "" when the path does not say
	PodUID  string // the Kubernetes pod's UID when the cgroup path names one
	Name    string // from the runtime's API; "" without a reachable socket
	Image   string
}

// AddTags adds container_id, and container_name and container_image when known, to tags.
func (i Info) AddTags(tags map[string]string) {
	tags["container_id"] = i.ID
	if i.Name != "" {
		tags["container_name"] = i.Name
	}
	if i.Image != "" {
		tags["container_image"] = i.Image
	}
}

var (
	hex64 = `([0-9a-f]{64})`
	// One cgroup path component naming a container, most specific first; conmon (podman's and cri-o's
	// monitor) is not the container.
	patterns = []struct {
		re      *regexp.Regexp
		runtime string
	}{
		{regexp.MustCompile(`^libpod-` + hex64 + `(\.scope)?$`), "podman"},
		{regexp.MustCompile(`^docker-` + hex64 + `\.scope$`), "docker"},
		{regexp.MustCompile(`^cri-containerd-` + hex64 + `\.scope$`), "containerd"},
		{regexp.MustCompile(`:cri-containerd:` + hex64 + `$`), "containerd"},
		{regexp.MustCompile(`^crio-` + hex64 + `(\.scope)?$`), "cri-o"},
		{regexp.MustCompile(`^` + hex64 + `$`), ""}, // /docker/<id>, /kubepods/.../<id>: the parent says
	}
	podUID = regexp.MustCompile(`pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(\.slice)?(:|$)`)
)

// FromCgroupPath returns the container a cgroup path names.
func FromCgroupPath(path string) (Info, bool) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	for i := len(parts) - 1; i >= 0; i-- {
		for _, p := range patterns {
			m := p.re.FindStringSubmatch(parts[i])
			if m == nil {
				continue
			}
			info := Info{ID: m[1], Runtime: p.runtime}
			if info.Runtime == "" && i > 0 && parts[i-1] == "docker" {
				info.Runtime = "docker"
			}
			for _, q := range parts[:i+1] {
				if u := podUID.FindStringSubmatch(q); u != nil {
					info.PodUID = strings.ReplaceAll(u[1], "_", "-")
				}
			}
			return info, true
		}
	}
	return Info{}, false
}

// FromCgroupFile parses a /proc/<pid>/cgroup file: the v2 line ("0::path") if it names a container, else
// the first v1 line that does (on a hybrid host the v2 path is often /).
func FromCgroupFile(content string) (Info, bool) {
	var v1 []string
	for _, line := range strings.Split(content, "\n") {
		id, path, ok := cutCgroupLine(line)
		if !ok {
			continue
		}
		if id == "0" {
			if info, ok := FromCgroupPath(path); ok {
				return info, true
			}
			continue
		}
		v1 = append(v1, path)
	}
	for _, path := range v1 {
		if info, ok := FromCgroupPath(path); ok {
			return info, true
		}
	}
	return Info{}, false
}

func cutCgroupLine(line string) (id, path string, ok bool) {
	id, rest, ok := strings.Cut(line, ":")
	if !ok {
		return "", "", false
	}
	_, path, ok = strings.Cut(rest, ":")
	return id, path, ok
}

// Config says where the host's processes and runtime sockets are.
type Config struct {
	Proc      string   // default /proc (with hostPID, the host's processes)
	HostRoot  string   // DataKit's HOST_ROOT: the prefix of the runtime sockets' paths
	Endpoints []string // Docker-API sockets; default DefaultEndpoints
}

// DefaultEndpoints are the sockets of the runtimes that serve Docker's API (podman's service does).
// containerd and cri-o are not asked: on Kubernetes the pod's spec names their containers.
var DefaultEndpoints = []string{"/var/run/docker.sock", "/run/podman/podman.sock"}

// rescanEvery bounds how often an unknown mount namespace makes the resolver read every /proc/<pid>/ns/mnt.
const rescanEvery = time.Second

// forgetAfter is how long a namespace's entry stays once its processes are gone and nothing asked for it.
const forgetAfter = 10 * time.Minute

type entry struct {
	info     Info
	ok       bool
	lastUsed time.Time
}

// Resolver maps mount namespaces and pids to containers. It is safe for concurrent use.
type Resolver struct {
	cfg      Config
	now      func() time.Time
	mu       sync.Mutex
	hostNS   uint32
	byNS     map[uint32]*entry
	lastScan time.Time
	names    map[string][2]string // id -> name, image
	api      *runtimeAPI
}

func New(cfg Config) *Resolver {
	if cfg.Proc == "" {
		cfg.Proc = "/proc"
	}
	if cfg.Endpoints == nil {
		cfg.Endpoints = DefaultEndpoints
	}
	r := &Resolver{cfg: cfg, now: time.Now, byNS: map[uint32]*entry{}, names: map[string][2]string{}}
	r.hostNS, _ = nsInode(filepath.Join(cfg.Proc, "1", "ns", "mnt"))
	r.api = newRuntimeAPI(cfg.HostRoot, cfg.Endpoints)
	return r
}

// ByMntns returns the container of the processes in mount namespace ns; false for the host's namespace and
// one that is no container's or has no process left.
func (r *Resolver) ByMntns(ns uint32) (Info, bool) {
	if ns == 0 {
		return Info{}, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if ns == r.hostNS {
		return Info{}, false
	}
	e := r.byNS[ns]
	if e == nil && r.now().Sub(r.lastScan) >= rescanEvery {
		r.scan()
		e = r.byNS[ns]
	}
	if e == nil {
		return Info{}, false
	}
	e.lastUsed = r.now()
	if !e.ok {
		return Info{}, false
	}
	return r.named(e.info), true
}

// ByPid returns the container of a live process.
func (r *Resolver) ByPid(pid uint32) (Info, bool) {
	b, err := os.ReadFile(filepath.Join(r.cfg.Proc, strconv.FormatUint(uint64(pid), 10), "cgroup"))
	if err != nil {
		return Info{}, false
	}
	info, ok := FromCgroupFile(string(b))
	if !ok {
		return Info{}, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.named(info), true
}

// scan reads every process's mount namespace and learns the new ones from one of their processes'
// cgroup; entries of namespaces with no process left are forgotten once unused for forgetAfter.
func (r *Resolver) scan() {
	now := r.now()
	r.lastScan = now
	dirs, err := os.ReadDir(r.cfg.Proc)
	if err != nil {
		return
	}
	live := map[uint32]bool{}
	for _, d := range dirs {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		ns, err := nsInode(filepath.Join(r.cfg.Proc, d.Name(), "ns", "mnt"))
		if err != nil || ns == r.hostNS {
			continue
		}
		live[ns] = true
		if _, known := r.byNS[ns]; known {
			continue
		}
		b, err := os.ReadFile(filepath.Join(r.cfg.Proc, d.Name(), "cgroup"))
		if err != nil {
			continue
		}
		info, ok := FromCgroupFile(string(b))
		r.byNS[ns] = &entry{info: info, ok: ok, lastUsed: now}
	}
	for ns, e := range r.byNS {
		if !live[ns] && now.Sub(e.lastUsed) > forgetAfter {
			delete(r.byNS, ns)
		}
	}
}

// named adds the runtime's name and image, asked once per container (with r.mu held).
func (r *Resolver) named(info Info) Info {
	if info.Runtime != "docker" && info.Runtime != "podman" {
		return info
	}
	ni, ok := r.names[info.ID]
	if !ok {
		name, image, err := r.api.inspect(info.ID)
		if err != nil {
			return info // not remembered: asked again next time (an absent socket is itself cached)
		}
		ni = [2]string{name, image}
		r.names[info.ID] = ni
	}
	info.Name, info.Image = ni[0], ni[1]
	return info
}

// nsInode reads a namespace link such as "mnt:[4026531841]".
func nsInode(link string) (uint32, error) {
	s, err := os.Readlink(link)
	if err != nil {
		return 0, err
	}
	i, j := strings.IndexByte(s, '['), strings.IndexByte(s, ']')
	if i < 0 || j < i {
		return 0, fmt.Errorf("namespace link %q", s)
	}
	n, err := strconv.ParseUint(s[i+1:j], 10, 32)
	return uint32(n), err
}

// runtimeAPI asks Docker-API sockets for a container's name and image, quickly: an absent socket is not
// tried again for absentRetry.
type runtimeAPI struct {
	sockets []string
	absent  map[string]time.Time
}

const (
	apiTimeout  = 300 * time.Millisecond
	absentRetry = 30 * time.Second
)

func newRuntimeAPI(hostRoot string, endpoints []string) *runtimeAPI {
	a := &runtimeAPI{absent: map[string]time.Time{}}
	for _, e := range endpoints {
		a.sockets = append(a.sockets, filepath.Join(hostRoot, strings.TrimPrefix(e, "unix://")))
	}
	return a
}

func (a *runtimeAPI) inspect(id string) (name, image string, err error) {
	err = fmt.Errorf("no runtime socket answered for %s", id)
	for _, sock := range a.sockets {
		if t, ok := a.absent[sock]; ok && time.Since(t) < absentRetry {
			continue
		}
		var e error
		if name, image, e = inspectOne(sock, id); e == nil {
			return name, image, nil
		}
		if _, statErr := os.Stat(sock); statErr != nil {
			a.absent[sock] = time.Now()
		}
		err = e
	}
	return "", "", err
}

func inspectOne(sock, id string) (name, image string, err error) {
	c := http.Client{Timeout: apiTimeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
	resp, err := c.Get("http://runtime/containers/" + id + "/json")
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("%s: inspect %s: %s", sock, id, resp.Status)
	}
	var v struct {
		Name      string
		ImageName string // podman
		Config    struct{ Image string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return "", "", fmt.Errorf("%s: inspect %s: %w", sock, id, err)
	}
	image = v.Config.Image
	if v.ImageName != "" {
		image = v.ImageName
	}
	return strings.TrimPrefix(v.Name, "/"), image, nil
}
