package container

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// runtimeServer serves Docker's inspect on a unix socket: docs by container id, 404 for others. It counts
// the requests.
func runtimeServer(t *testing.T, docs map[string]any, block chan struct{}) (sock string, requests *atomic.Int32) {
	sock = filepath.Join(t.TempDir(), "runtime.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	requests = &atomic.Int32{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if block != nil {
			<-block
		}
		for id, doc := range docs {
			if r.Method == http.MethodGet && r.URL.Path == "/containers/"+id+"/json" {
				json.NewEncoder(w).Encode(doc)
				return
			}
		}
		http.Error(w, `{"message":"no such container"}`, http.StatusNotFound)
	}))
	srv.Listener = l
	srv.Start()
	t.Cleanup(func() {
		if block != nil {
			close(block)
		}
		srv.Close()
	})
	return sock, requests
}

func TestByMntnsNamesDockerAndPodmanContainersFromTheirSocket(t *testing.T) {
	sock, requests := runtimeServer(t, map[string]any{
		id:  map[string]any{"Name": "/web", "Config": map[string]any{"Image": "nginx:1.27"}},
		id2: map[string]any{"Name": "db", "ImageName": "localhost/db:latest", "Config": map[string]any{"Image": "sha256:0123"}},
	}, nil)
	p := newFakeProc(t)
	p.add(200, ctrNS, "0::/system.slice/docker-"+id+".scope\n")
	p.add(300, newNS, "0::/\n4:memory:/libpod_parent/libpod-"+id2+"\n")
	absent := filepath.Join(t.TempDir(), "absent.sock")
	r := New(Config{Proc: p.dir, HostRoot: "/", Endpoints: []string{absent, "unix://" + sock}})

	got, ok := r.ByMntns(ctrNS)
	if !ok || got.Name != "web" || got.Image != "nginx:1.27" {
		t.Errorf("docker: got %+v %v", got, ok)
	}
	tags := map[string]string{}
	got.AddTags(tags)
	if len(tags) != 3 || tags["container_id"] != id || tags["container_name"] != "web" || tags["container_image"] != "nginx:1.27" {
		t.Errorf("tags %v", tags)
	}
	if got, ok := r.ByMntns(newNS); !ok || got.Name != "db" || got.Image != "localhost/db:latest" {
		t.Errorf("podman: got %+v %v", got, ok)
	}
	if got, ok := r.ByPid(300); !ok || got.Name != "db" {
		t.Errorf("by pid: got %+v %v", got, ok)
	}
	r.ByMntns(ctrNS)
	if n := requests.Load(); n != 2 {
		t.Errorf("%d requests, want one per container", n)
	}
}

// An absent socket costs nothing after the first try, and the resolver still names the container's id.
func TestAbsentSocketLeavesNamesEmptyQuickly(t *testing.T) {
	p := newFakeProc(t)
	p.add(200, ctrNS, "0::/docker/"+id+"\n")
	c := &clock{time.Unix(1000, 0)}
	r := New(Config{Proc: p.dir, Endpoints: []string{filepath.Join(t.TempDir(), "docker.sock")}, Now: c.now})
	start := time.Now()
	got, ok := r.ByMntns(ctrNS)
	if !ok || got.ID != id || got.Name != "" || got.Image != "" {
		t.Errorf("got %+v %v", got, ok)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("an absent socket took %v", d)
	}
}

// A socket that accepts but never answers blocks the first caller for apiTimeout at most, and is then
// left alone for absentRetry.
func TestUnansweringSocketBlocksOnceForTheTimeout(t *testing.T) {
	sock, requests := runtimeServer(t, nil, make(chan struct{}))
	p := newFakeProc(t)
	p.add(200, ctrNS, "0::/docker/"+id+"\n")
	p.add(300, newNS, "0::/docker/"+id2+"\n")
	c := &clock{time.Unix(1000, 0)}
	r := New(Config{Proc: p.dir, Endpoints: []string{sock}, Now: c.now})

	start := time.Now()
	if got, ok := r.ByMntns(ctrNS); !ok || got.ID != id || got.Name != "" {
		t.Errorf("got %+v %v", got, ok)
	}
	if d := time.Since(start); d < apiTimeout || d > time.Second {
		t.Errorf("first lookup took %v, want about %v", d, apiTimeout)
	}
	start = time.Now()
	r.ByMntns(newNS) // another id: the socket is known down
	r.ByMntns(ctrNS)
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("lookups while the socket is down took %v", d)
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("%d requests while down, want 1", n)
	}
	c.advance(absentRetry)
	r.ByMntns(newNS)
	if n := requests.Load(); n != 2 {
		t.Errorf("%d requests after %v, want 2", n, absentRetry)
	}
}

// An id no socket knows is asked again only after absentRetry; containerd's and pods' never.
func TestSocketsAreAskedOnlyAboutTheirContainers(t *testing.T) {
	sock, requests := runtimeServer(t, nil, nil)
	p := newFakeProc(t)
	p.add(200, ctrNS, "0::/docker/"+id+"\n")
	p.add(300, newNS, "0::/kubepods.slice/kubepods-pod"+uidU+".slice/cri-containerd-"+id2+".scope\n")
	p.add(400, otherNS, "0::/kubepods/pod"+uid+"/"+id2+"\n")
	c := &clock{time.Unix(1000, 0)}
	r := New(Config{Proc: p.dir, Endpoints: []string{sock}, Now: c.now})
	for range 3 {
		r.ByMntns(ctrNS)
		r.ByMntns(newNS)
		r.ByMntns(otherNS)
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("%d requests, want 1 (the docker id, once)", n)
	}
	c.advance(absentRetry)
	r.ByMntns(ctrNS)
	if n := requests.Load(); n != 2 {
		t.Errorf("%d requests after %v, want 2", n, absentRetry)
	}
}

// Callers asking together about a new id share one request.
func TestConcurrentCallersShareOneRequest(t *testing.T) {
	block := make(chan struct{})
	sock, requests := runtimeServer(t, map[string]any{id: map[string]any{"Name": "/web", "Config": map[string]any{"Image": "nginx"}}}, block)
	p := newFakeProc(t)
	p.add(200, ctrNS, "0::/docker/"+id+"\n")
	r := New(Config{Proc: p.dir, Endpoints: []string{sock}})
	var wg sync.WaitGroup
	names := make([]string, 8)
	for i := range names {
		wg.Go(func() {
			info, _ := r.ByMntns(ctrNS)
			names[i] = info.Name
		})
	}
	time.Sleep(50 * time.Millisecond)
	block <- struct{}{}
	wg.Wait()
	for i, n := range names {
		if n != "web" {
			t.Errorf("caller %d got name %q", i, n)
		}
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}
