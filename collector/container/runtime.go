package container

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

const (
	// apiTimeout bounds one question to one socket (dial, request and answer).
	apiTimeout = 300 * time.Millisecond
	// absentRetry is how long an unreachable socket, and an id no socket knew, are left alone.
	absentRetry = 30 * time.Second
	// maxInspect bounds the inspect document read.
	maxInspect = 4 << 20
)

// namer caches each container id's name and image, asked once of the runtime's API (again after
// absentRetry while no socket knew it). It is safe for concurrent use.
type namer struct {
	api *runtimeAPI
	now func() time.Time

	mu   sync.Mutex
	byID map[string]*names
}

type names struct {
	name, image string
	known       bool          // a socket answered
	retryAt     time.Time     // when not known: when to ask again
	pending     chan struct{} // non-nil while one caller asks; closed when it has the answer
	lastUsed    time.Time
}

func newNamer(api *runtimeAPI, now func() time.Time) *namer {
	return &namer{api: api, now: now, byID: map[string]*names{}}
}

// asks says whether the sockets may know info's container: docker's and podman's, and one whose runtime
// the path does not say outside Kubernetes (docker with its own --cgroup-parent). Containers of containerd
// and cri-o, and any in a pod, are named by Kubernetes enrichment instead.
func asks(info Info) bool {
	return info.Runtime == "docker" || info.Runtime == "podman" || info.Runtime == "" && info.PodUID == ""
}

// fill sets info's Name and Image from the cache, asking the sockets on the first sight of its id. Callers
// asking for an id being asked wait for that answer, which the sockets' timeouts bound.
func (n *namer) fill(info Info) Info {
	if !asks(info) || len(n.api.sockets) == 0 {
		return info
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	now := n.now()
	e := n.byID[info.ID]
	if e == nil {
		e = &names{}
		n.byID[info.ID] = e
	}
	e.lastUsed = now
	for e.pending != nil {
		ch := e.pending
		n.mu.Unlock()
		<-ch
		n.mu.Lock()
	}
	if !e.known && !now.Before(e.retryAt) {
		e.pending = make(chan struct{})
		n.mu.Unlock()
		name, image, ok := n.api.inspect(info.ID)
		n.mu.Lock()
		if ok {
			e.name, e.image, e.known = name, image, true
		} else {
			e.retryAt = n.now().Add(absentRetry)
		}
		close(e.pending)
		e.pending = nil
	}
	info.Name, info.Image = e.name, e.image
	return info
}

// forget drops the ids nobody asked for in forgetAfter (bounded memory as containers come and go).
func (n *namer) forget(now time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for id, e := range n.byID {
		if e.pending == nil && now.Sub(e.lastUsed) > forgetAfter {
			delete(n.byID, id)
		}
	}
}

// runtimeAPI asks Docker-API unix sockets (docker's, podman's service) to inspect containers.
type runtimeAPI struct {
	log     *slog.Logger
	now     func() time.Time
	sockets []*socket

	mu sync.Mutex // guards each socket's downUntil
}

type socket struct {
	path      string
	client    *http.Client
	downUntil time.Time
}

func newRuntimeAPI(hostRoot string, endpoints []string, log *slog.Logger, now func() time.Time) *runtimeAPI {
	a := &runtimeAPI{log: log, now: now}
	for _, ep := range endpoints {
		path := strings.TrimPrefix(ep, "unix://")
		if strings.Contains(path, "://") || path == "" {
			log.Warn("container runtime endpoint is not a unix socket, ignored", "endpoint", ep)
			continue
		}
		path = filepath.Join("/", hostRoot, path)
		a.sockets = append(a.sockets, &socket{path: path, client: &http.Client{
			Timeout: apiTimeout,
			Transport: &http.Transport{
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, "unix", path)
				},
				MaxIdleConnsPerHost: 1,
				IdleConnTimeout:     time.Minute,
			},
		}})
	}
	return a
}

// inspect asks each socket in turn for container id's name and image; ok is false when none knew it. A
// socket that cannot be reached is skipped for absentRetry.
func (a *runtimeAPI) inspect(id string) (name, image string, ok bool) {
	for _, s := range a.sockets {
		a.mu.Lock()
		down := a.now().Before(s.downUntil)
		a.mu.Unlock()
		if down {
			continue
		}
		name, image, found, err := s.inspect(id)
		if err != nil {
			a.mu.Lock()
			s.downUntil = a.now().Add(absentRetry)
			a.mu.Unlock()
			a.log.Debug("container runtime socket unreachable", "socket", s.path, "retry_in", absentRetry, "err", err)
			continue
		}
		if found {
			return name, image, true
		}
	}
	return "", "", false
}

// inspect asks GET /containers/<id>/json. err is for a socket that did not answer; an answer without the
// container (404, another runtime's socket) is found=false.
func (s *socket) inspect(id string) (name, image string, found bool, err error) {
	resp, err := s.client.Get("http://runtime/containers/" + url.PathEscape(id) + "/json")
	if err != nil {
		return "", "", false, fmt.Errorf("inspect container %.12s on %s: %w", id, s.path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return "", "", false, nil
	}
	var v struct {
		Name      string
		ImageName string // podman's libpod document
		Config    struct{ Image string }
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxInspect)).Decode(&v); err != nil {
		return "", "", false, nil // answered, but not with a container
	}
	image = v.Config.Image
	if v.ImageName != "" {
		image = v.ImageName
	}
	return strings.TrimPrefix(v.Name, "/"), image, true, nil
}
