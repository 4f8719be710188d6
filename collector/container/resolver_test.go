package container

import (
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

const (
	hostNS  = 4026531841
	ctrNS   = 4026532001
	otherNS = 4026532002 // a systemd service's private namespace: no container
	newNS   = 4026532003
	deadNS  = 4026532999
)

// fakeProc is a /proc with processes made by add.
type fakeProc struct {
	t   *testing.T
	dir string
}

func newFakeProc(t *testing.T) *fakeProc {
	p := &fakeProc{t: t, dir: t.TempDir()}
	p.add(1, hostNS, "0::/init.scope\n")
	return p
}

// add makes /proc/<pid>/ns/mnt (a link to "mnt:[ns]") and /proc/<pid>/cgroup.
func (p *fakeProc) add(pid int, ns uint32, cgroup string) {
	dir := filepath.Join(p.dir, strconv.Itoa(pid))
	if err := os.MkdirAll(filepath.Join(dir, "ns"), 0o755); err != nil {
		p.t.Fatal(err)
	}
	if err := os.Symlink("mnt:["+strconv.FormatUint(uint64(ns), 10)+"]", filepath.Join(dir, "ns", "mnt")); err != nil {
		p.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte(cgroup), 0o644); err != nil {
		p.t.Fatal(err)
	}
}

func (p *fakeProc) exit(pid int) { os.RemoveAll(filepath.Join(p.dir, strconv.Itoa(pid))) }

// clock is an injected time.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newResolver(p *fakeProc, c *clock) *Resolver {
	return New(Config{Proc: p.dir, Endpoints: []string{}, Now: c.now})
}

func TestByMntnsNamesContainersAndNothingElse(t *testing.T) {
	p := newFakeProc(t)
	p.add(90, hostNS, "0::/system.slice/docker-"+id+".scope\n") // a host process in a container's cgroup is not the key
	p.add(200, ctrNS, "0::/\n4:memory:/libpod_parent/libpod-"+id+"\n")
	p.add(201, ctrNS, "0::/\n4:memory:/libpod_parent/libpod-"+id+"\n")
	p.add(300, otherNS, "0::/system.slice/private-tmp.service\n")
	r := newResolver(p, &clock{time.Unix(1000, 0)})

	if _, ok := r.ByMntns(hostNS); ok {
		t.Error("the host's namespace named a container")
	}
	if got, ok := r.ByMntns(ctrNS); !ok || got.ID != id || got.Runtime != "podman" || got.Name != "" {
		t.Errorf("container namespace: %+v %v", got, ok)
	}
	if _, ok := r.ByMntns(otherNS); ok {
		t.Error("a namespace of no container named one")
	}
	if _, ok := r.ByMntns(deadNS); ok {
		t.Error("a namespace with no process named a container")
	}
	if _, ok := r.ByMntns(0); ok {
		t.Error("no namespace named a container")
	}
	if r.scans != 1 {
		t.Errorf("%d scans, want 1 (the rest cached or rate limited)", r.scans)
	}
}

// A host process that entered a container's namespace (nsenter) keeps the host's cgroup: the namespace is
// still the container's.
func TestByMntnsLooksPastAProcessThatEnteredTheNamespace(t *testing.T) {
	p := newFakeProc(t)
	p.add(100, ctrNS, "0::/user.slice/user-0.slice/session-1.scope\n")
	p.add(200, ctrNS, "0::/docker/"+id+"\n")
	r := newResolver(p, &clock{time.Unix(1000, 0)})
	if got, ok := r.ByMntns(ctrNS); !ok || got.ID != id || got.Runtime != "docker" {
		t.Errorf("got %+v %v", got, ok)
	}
}

func TestByMntnsRescansAtMostOncePerSecond(t *testing.T) {
	p := newFakeProc(t)
	c := &clock{time.Unix(1000, 0)}
	r := newResolver(p, c)
	if _, ok := r.ByMntns(newNS); ok || r.scans != 1 {
		t.Fatalf("unknown namespace: ok %v after %d scans", ok, r.scans)
	}
	p.add(400, newNS, "0::/kubepods/burstable/pod"+uid+"/"+id+"\n") // the container starts
	c.advance(rescanEvery / 2)
	if _, ok := r.ByMntns(newNS); ok || r.scans != 1 {
		t.Fatalf("a second miss within %v: ok %v after %d scans, want one scan", rescanEvery, ok, r.scans)
	}
	c.advance(rescanEvery / 2)
	if got, ok := r.ByMntns(newNS); !ok || got.ID != id || got.PodUID != uid || r.scans != 2 {
		t.Fatalf("after %v: %+v %v after %d scans", rescanEvery, got, ok, r.scans)
	}
	for range 100 { // a hit costs no scan
		r.ByMntns(newNS)
	}
	if r.scans != 2 {
		t.Errorf("hits scanned: %d scans", r.scans)
	}
}

// A container's events arrive after it exits: its namespace is still named, until unused for forgetAfter.
func TestByMntnsRemembersExitedContainersThenForgetsThem(t *testing.T) {
	p := newFakeProc(t)
	p.add(200, ctrNS, "0::/docker/"+id+"\n")
	c := &clock{time.Unix(1000, 0)}
	r := newResolver(p, c)
	if _, ok := r.ByMntns(ctrNS); !ok {
		t.Fatal("container not found")
	}
	p.exit(200)
	c.advance(verifyEvery)
	if got, ok := r.ByMntns(ctrNS); !ok || got.ID != id {
		t.Fatalf("exited container forgotten at once: %+v %v", got, ok)
	}
	c.advance(forgetAfter + time.Second)
	r.ByMntns(deadNS) // any miss rescans
	r.mu.Lock()
	_, kept := r.byNS[ctrNS]
	n := len(r.byNS)
	r.mu.Unlock()
	if kept || n != 0 {
		t.Errorf("a namespace unused for forgetAfter with no process was kept (%d entries)", n)
	}
	if _, ok := r.ByMntns(ctrNS); ok {
		t.Error("a forgotten namespace with no process named a container")
	}
}

// Memory is bounded: entries of namespaces with no process go once unused for forgetAfter, those with
// processes stay.
func TestCacheHoldsOnlyLiveOrRecentlyUsedNamespaces(t *testing.T) {
	p := newFakeProc(t)
	c := &clock{time.Unix(1000, 0)}
	r := newResolver(p, c)
	for i := range 50 {
		p.add(1000+i, uint32(newNS+i), "0::/docker/"+id+"\n")
	}
	r.ByMntns(newNS)
	for i := range 50 {
		if i%2 == 0 {
			p.exit(1000 + i)
		}
	}
	c.advance(forgetAfter + time.Second)
	r.ByMntns(deadNS)
	r.mu.Lock()
	n := len(r.byNS)
	r.mu.Unlock()
	if n != 25 {
		t.Errorf("cache holds %d entries, want the 25 live namespaces", n)
	}
}

// The kernel gives a dead namespace's inode number to the next one: a new container may take it.
func TestByMntnsNamesTheNewOwnerOfAReusedNamespaceNumber(t *testing.T) {
	p := newFakeProc(t)
	p.add(200, ctrNS, "0::/docker/"+id+"\n")
	c := &clock{time.Unix(1000, 0)}
	r := newResolver(p, c)
	if got, _ := r.ByMntns(ctrNS); got.ID != id {
		t.Fatalf("got %+v", got)
	}
	p.exit(200)
	p.add(500, ctrNS, "0::/system.slice/docker-"+id2+".scope\n")
	c.advance(verifyEvery)
	if got, ok := r.ByMntns(ctrNS); !ok || got.ID != id2 {
		t.Errorf("reused number: got %.12s %v, want %.12s", got.ID, ok, id2)
	}
	scans := r.scans
	c.advance(verifyEvery)
	r.ByMntns(ctrNS) // its process is still there: checked without a scan
	if r.scans != scans {
		t.Error("a namespace whose process is still there was rescanned")
	}
}

// Under some sandboxes pid 1's namespaces cannot be read; kthreadd shares them.
func TestHostNamespaceFallsBackToKthreadd(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "1", "ns"), 0o755) // no mnt link: unreadable
	os.MkdirAll(filepath.Join(dir, "2", "ns"), 0o755)
	os.WriteFile(filepath.Join(dir, "2", "comm"), []byte("kthreadd\n"), 0o644)
	os.Symlink("mnt:[4026531832]", filepath.Join(dir, "2", "ns", "mnt"))
	if got := hostMntns(dir); got != 4026531832 {
		t.Errorf("got %d", got)
	}
	os.WriteFile(filepath.Join(dir, "2", "comm"), []byte("bash\n"), 0o644) // a private pid namespace
	if got := hostMntns(dir); got != 0 {
		t.Errorf("pid 2 of a private pid namespace taken for the host: %d", got)
	}
}

func TestByPidReadsTheProcessCgroup(t *testing.T) {
	p := newFakeProc(t)
	p.add(200, ctrNS, "0::/kubepods.slice/kubepods-pod"+uidU+".slice/cri-containerd-"+id+".scope\n")
	r := newResolver(p, &clock{time.Unix(1000, 0)})
	if got, ok := r.ByPid(200); !ok || got.ID != id || got.Runtime != "containerd" || got.PodUID != uid {
		t.Errorf("got %+v %v", got, ok)
	}
	if _, ok := r.ByPid(1); ok {
		t.Error("the host's init named a container")
	}
	if _, ok := r.ByPid(12345); ok {
		t.Error("a missing process named a container")
	}
}

func TestResolverIsSafeForConcurrentUse(t *testing.T) {
	p := newFakeProc(t)
	p.add(200, ctrNS, "0::/docker/"+id+"\n")
	r := New(Config{Proc: p.dir, Endpoints: []string{}})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 200 {
				r.ByMntns(uint32(ctrNS + (i+j)%3))
				r.ByPid(200)
			}
		})
	}
	wg.Wait()
	if got, ok := r.ByMntns(ctrNS); !ok || got.ID != id {
		t.Errorf("got %+v %v", got, ok)
	}
}
