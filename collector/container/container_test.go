package container

import (
	"strings"
	"testing"
)

const (
	id   = "51bf00f92182852101d7b04e1435dd8a7751dc6dc65297eb79ea99423e99ab71"
	id2  = "9a0c3d1e2f4b5a6978c0d1e2f3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6"
	uid  = "0d3e5c1a-1b2c-4d5e-8f90-a1b2c3d4e5f6"
	uidU = "0d3e5c1a_1b2c_4d5e_8f90_a1b2c3d4e5f6"
)

// Every runtime's layout, each tried as the v2 line of a pure v2 host and as a v1 line of a hybrid one
// (whose v2 line is "/").
func TestIDFromCgroupKnowsEveryRuntimesLayout(t *testing.T) {
	for _, tc := range []struct {
		path            string
		runtime, podUID string
	}{
		{"/docker/" + id, "docker", ""},
		{"/system.slice/docker-" + id + ".scope", "docker", ""},
		{"/libpod_parent/libpod-" + id, "podman", ""},
		{"/machine.slice/libpod-" + id + ".scope", "podman", ""},
		{"/machine.slice/libpod-" + id + ".scope/container", "podman", ""},
		{"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + id + ".scope", "podman", ""},
		{"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + id + ".scope/container", "podman", ""},
		// cgroupfs driver under Kubernetes: containerd's or dockershim's alike, so the runtime is not said.
		{"/kubepods/burstable/pod" + uid + "/" + id, "", uid},
		{"/kubepods/besteffort/pod" + uid + "/" + id, "", uid},
		{"/kubepods/pod" + uid + "/" + id, "", uid},
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/cri-containerd-" + id + ".scope", "containerd", uid},
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidU + ".slice/cri-containerd-" + id + ".scope", "containerd", uid},
		{"/kubepods.slice/kubepods-pod" + uidU + ".slice/cri-containerd-" + id + ".scope", "containerd", uid},
		{"/system.slice/containerd.service/kubepods-burstable-pod" + uidU + ".slice:cri-containerd:" + id, "containerd", uid},
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/crio-" + id + ".scope", "cri-o", uid},
		{"/kubepods/burstable/pod" + uid + "/crio-" + id, "cri-o", uid},
		{"/docker/" + id2 + "/docker/" + id, "docker", ""}, // docker in docker: the innermost
		{"/docker/" + id + "/system.slice/cron.service", "docker", ""},
		// Seen from a private cgroup namespace.
		{"/../../kubepods/burstable/pod" + uid + "/" + id, "", uid},
		{"/../../../libpod_parent/libpod-" + id, "podman", ""},
		{"/../docker-" + id + ".scope", "docker", ""},
	} {
		for _, content := range []string{
			"0::" + tc.path + "\n",
			"12:pids:" + tc.path + "\n11:memory:" + tc.path + "\n1:name=systemd:" + tc.path + "\n0::/\n",
		} {
			gotID, runtime, podUID, ok := IDFromCgroup(content)
			if !ok || gotID != id || runtime != tc.runtime || podUID != tc.podUID {
				t.Errorf("%q: got %q %q %q %v, want %q %q %q", content, gotID, runtime, podUID, ok, id, tc.runtime, tc.podUID)
			}
		}
	}
}

func TestIDFromCgroupRejectsHostsAndMonitors(t *testing.T) {
	for _, path := range []string{
		"/",
		"/init.scope",
		"/user.slice/user-0.slice/session-1.scope",
		"/system.slice/ssh.service",
		"/system.slice/containerd.service",
		"/machine.slice/libpod-conmon-" + id + ".scope", // podman's monitor, not the container
		"/libpod_parent/conmon",
		"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/crio-conmon-" + id + ".scope",
		"/kubepods/burstable/pod" + uid, // the pod's own cgroup holds no container process
		"/docker/" + id[:63],            // not a full id
		"/docker/" + strings.ToUpper(id),
		"/process_api/f6323715bcb2146c5c3ff01188e8e3c9",
	} {
		for _, content := range []string{"0::" + path + "\n", "4:memory:" + path + "\n0::/\n"} {
			if gotID, runtime, podUID, ok := IDFromCgroup(content); ok {
				t.Errorf("%q named a container: %q %q %q", content, gotID, runtime, podUID)
			}
		}
	}
	if _, _, _, ok := IDFromCgroup(""); ok {
		t.Error("an empty file named a container")
	}
}

// The v2 line wins when it names a container; on a hybrid host whose v2 line is "/", a v1 line does.
func TestIDFromCgroupPrefersTheV2Line(t *testing.T) {
	got, _, _, _ := IDFromCgroup("4:memory:/docker/" + id2 + "\n0::/system.slice/docker-" + id + ".scope\n")
	if got != id {
		t.Errorf("got %.12s, want the v2 line's %.12s", got, id)
	}
	got, runtime, _, ok := IDFromCgroup("9:name=systemd:/\n4:memory:/libpod_parent/libpod-" + id + "\n0::/\n")
	if !ok || got != id || runtime != "podman" {
		t.Errorf("hybrid host: got %.12s %q %v", got, runtime, ok)
	}
}

func TestAddTagsOnlyWhatIsKnown(t *testing.T) {
	tags := map[string]string{"pid": "7"}
	Info{ID: id, Runtime: "containerd"}.AddTags(tags)
	if len(tags) != 2 || tags["container_id"] != id {
		t.Errorf("id only: %v", tags)
	}
	Info{ID: id, Name: "web", Image: "nginx:1"}.AddTags(tags)
	if len(tags) != 4 || tags["container_name"] != "web" || tags["container_image"] != "nginx:1" {
		t.Errorf("named: %v", tags)
	}
}
