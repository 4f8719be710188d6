package container

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

const id = "51bf00f92182852101d7b04e1435dd8a7751dc6dc65297eb79ea99423e99ab71"

func TestFromCgroupPathKnowsEveryRuntimesLayout(t *testing.T) {
	uid := "0d3e5c1a-1b2c-4d5e-8f90-a1b2c3d4e5f6"
	uidU := "0d3e5c1a_1b2c_4d5e_8f90_a1b2c3d4e5f6"
	for path, want := range map[string]Info{
		"/docker/" + id:                                    {ID: id, Runtime: "docker"},
		"/system.slice/docker-" + id + ".scope":            {ID: id, Runtime: "docker"},
		"/libpod_parent/libpod-" + id:                      {ID: id, Runtime: "podman"},
		"/machine.slice/libpod-" + id + ".scope":           {ID: id, Runtime: "podman"},
		"/machine.slice/libpod-" + id + ".scope/container": {ID: id, Runtime: "podman"},
		"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + id + ".scope":                                  {ID: id, Runtime: "podman"},
		"/kubepods/burstable/pod" + uid + "/" + id:                                                                          {ID: id, PodUID: uid},
		"/kubepods/besteffort/pod" + uid + "/" + id:                                                                         {ID: id, PodUID: uid},
		"/kubepods/pod" + uid + "/" + id:                                                                                    {ID: id, PodUID: uid},
		"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/cri-containerd-" + id + ".scope": {ID: id, Runtime: "containerd", PodUID: uid},
		"/system.slice/containerd.service/kubepods-burstable-pod" + uidU + ".slice:cri-containerd:" + id:                    {ID: id, Runtime: "containerd", PodUID: uid},
		"/kubepods.slice/kubepods-pod" + uidU + ".slice/crio-" + id + ".scope":                                              {ID: id, Runtime: "cri-o", PodUID: uid},
		"/../../kubepods/burstable/pod" + uid + "/" + id:                                                                    {ID: id, PodUID: uid}, // seen from a private cgroup namespace
	} {
		got, ok := FromCgroupPath(path)
		if !ok || got != want {
			t.Errorf("%s: got %+v %v, want %+v", path, got, ok, want)
		}
	}
	for _, path := range []string{"/", "/user.slice/user-0.slice/session-1.scope", "/system.slice/ssh.service",
		"/machine.slice/libpod-conmon-" + id + ".scope", "/kubepods.slice/crio-conmon-" + id + ".scope"} {
		if got, ok := FromCgroupPath(path); ok {
			t.Errorf("%s: not a container, got %+v", path, got)
		}
	}
}

func TestFromCgroupFilePrefersV2AndFallsBackToV1(t *testing.T) {
	hybrid := "9:name=systemd:/libpod_parent/libpod-" + id + "\n4:memory:/libpod_parent/libpod-" + id + "\n0::/\n"
	if got, ok := FromCgroupFile(hybrid); !ok || got.ID != id || got.Runtime != "podman" {
		t.Fatalf("hybrid host: got %+v %v", got, ok)
	}
	if _, ok := FromCgroupFile("0::/init.scope\n"); ok {
		t.Fatal("a host process named a container")
	}
}

// fakeProc makes /proc/<pid>/{ns/mnt,cgroup} for each pid.
func fakeProc(t *testing.T, procs map[string][2]string) string {
	dir := t.TempDir()
	for pid, v := range procs {
		if err := os.MkdirAll(filepath.Join(dir, pid, "ns"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(v[0], filepath.Join(dir, pid, "ns", "mnt")); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, pid, "cgroup"), []byte(v[1]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestResolverFindsAContainerByMountNamespaceWithRateLimitedScans(t *testing.T) {
	proc := fakeProc(t, map[string][2]string{
		"1":   {"mnt:[4026531841]", "0::/init.scope\n"},
		"200": {"mnt:[4026532178]", "0::/libpod_parent/libpod-" + id + "\n"},
		"300": {"mnt:[4026532500]", "0::/system.slice/private-tmp.service\n"}, // its own namespace, no container
	})
	now := time.Unix(1000, 0)
	r := New(Config{Proc: proc, Endpoints: []string{}})
	r.now = func() time.Time { return now }
	if _, ok := r.ByMntns(4026531841); ok {
		t.Fatal("the host's namespace named a container")
	}
	if got, ok := r.ByMntns(4026532178); !ok || got.ID != id {
		t.Fatalf("container namespace: %+v %v", got, ok)
	}
	if _, ok := r.ByMntns(4026532500); ok {
		t.Fatal("a non-container namespace named a container")
	}
	// A new container appears: a miss within a second of the last scan does not rescan, the next does.
	if err := os.MkdirAll(filepath.Join(proc, "400", "ns"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Symlink("mnt:[4026532600]", filepath.Join(proc, "400", "ns", "mnt"))
	os.WriteFile(filepath.Join(proc, "400", "cgroup"), []byte("0::/docker/"+id+"\n"), 0o644)
	if _, ok := r.ByMntns(4026532600); ok {
		t.Fatal("rescanned within the rate limit")
	}
	now = now.Add(rescanEvery)
	if got, ok := r.ByMntns(4026532600); !ok || got.Runtime != "docker" {
		t.Fatalf("after the rate limit: %+v %v", got, ok)
	}
	// The container's processes exit: its entry stays while used, and goes once unused for forgetAfter.
	os.RemoveAll(filepath.Join(proc, "200"))
	now = now.Add(forgetAfter + 2*rescanEvery)
	r.ByMntns(1) // a miss: rescans
	if _, ok := r.byNS[4026532178]; ok {
		t.Fatal("an unused namespace with no process was kept")
	}
}

func TestRuntimeAPINamesPodmanAndDockerContainers(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "podman.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/containers/"+id+"/json" {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"Name": "/web", "ImageName": "localhost/web:1", "Config": map[string]any{"Image": "web"}})
	})}
	go srv.Serve(l)
	defer srv.Close()

	proc := fakeProc(t, map[string][2]string{"1": {"mnt:[1]", "0::/\n"}, "7": {"mnt:[2]", "0::/libpod_parent/libpod-" + id + "\n"}})
	r := New(Config{Proc: proc, Endpoints: []string{filepath.Join(t.TempDir(), "absent.sock"), "unix://" + sock}})
	got, ok := r.ByPid(7)
	if !ok || got.Name != "web" || got.Image != "localhost/web:1" {
		t.Fatalf("got %+v %v", got, ok)
	}
	tags := map[string]string{}
	got.AddTags(tags)
	if tags["container_id"] != id || tags["container_name"] != "web" || tags["container_image"] != "localhost/web:1" {
		t.Fatalf("tags %v", tags)
	}
}
