package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
)

// TestCollectorInAContainerAsTheDaemonSetRunsIt runs datakit and datakit-ebpf from the image of
// scripts/build-image.sh the way deploy/datakit-ebpf.yaml runs them (host PID and network, its own cgroup
// namespace, all capabilities dropped but the manifest's list, seccomp unconfined as the manifest says), and
// checks the exact-count TCP and UDP flows of the host, that it attached to the host's cgroup root, that no
// part is off and that the bash uprobe attached.
func TestCollectorInAContainerAsTheDaemonSetRunsIt(t *testing.T) {
	out, err := exec.Command(filepath.Join(repoRoot, "scripts", "build-image.sh")).CombinedOutput()
	if err != nil {
		t.Fatalf("build the image: %v\n%s", err, out)
	}
	image := strings.TrimSpace(string(out))

	var ds appsv1.DaemonSet
	fromUnstructured(t, find(t, readManifest(t, filepath.Join(repoRoot, deployManifest)), "DaemonSet"), &ds)
	c := ds.Spec.Template.Spec.Containers[0]
	var caps []string
	for _, cp := range c.SecurityContext.Capabilities.Add {
		caps = append(caps, string(cp))
	}
	if !ds.Spec.Template.Spec.HostPID || !ds.Spec.Template.Spec.HostNetwork {
		t.Fatal("the manifest no longer runs on the host's PID and network namespaces: update this test")
	}

	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	// The flow checks select this test's points by the run tag, which the agent adds as a global host tag.
	conf := filepath.Join(t.TempDir(), "datakit.conf")
	must(t, os.WriteFile(conf, []byte(fmt.Sprintf("[global_host_tags]\n  run = \"%d\"\n", os.Getpid())), 0o644))
	const name = "dkebpf-daemonset"
	exec.Command("podman", "rm", "-f", "-t", "0", name).Run()
	podman(t, "--runtime", "runc", "run", "-d", "--name", name, "--pid", "host", "--network", "host", "--cgroupns", "private",
		"--cap-drop", "all", "--cap-add", strings.Join(caps, ","), "--security-opt", "seccomp=unconfined",
		"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
		"-v", conf+":/usr/local/datakit/conf.d/datakit.conf:ro",
		"-e", "ENV_ENABLE_INPUTS=ebpf", "-e", "ENV_INPUT_EBPF_ENABLED_PLUGINS=ebpf-net,ebpf-bash", "-e", "ENV_INPUT_EBPF_L7NET_ENABLED=httpflow,httpflow-tls",
		"-e", "ENV_INPUT_EBPF_INTERVAL="+interval.String(), "-e", "ENV_HTTP_LISTEN="+addr,
		image)
	a := &agent{t: t, addr: addr, log: &syncBuffer{}, done: make(chan struct{})}
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := exec.Command("podman", "logs", name).CombinedOutput()
			t.Logf("container log:\n%s", tail(string(logs)))
		}
		exec.Command("podman", "rm", "-f", "-t", "5", name).Run()
	})
	a.waitFor("the containerized collector's first datakit_ebpf point", firstPointTimeout, func() bool {
		return len(a.query("datakit_ebpf", "1m")) > 0
	})
	logs := podman(t, "logs", name)
	if !strings.Contains(logs, `cgroup2="/proc/2/root/`) {
		t.Errorf("the collector did not attach to the host's cgroup root through pid 2; its log:\n%s", tail(logs))
	}
	if strings.Contains(logs, " OFF") {
		t.Errorf("a part is off in the container; its log:\n%s", tail(logs))
	}
	// Uprobes need the manifest's capabilities too (SYS_ADMIN: perf_event_open refuses them without it).
	if !strings.Contains(logs, "bash: probing readline") || strings.Contains(logs, "cannot probe") {
		t.Errorf("the bash uprobe did not attach in the container; its log:\n%s", tail(logs))
	}
	checkTCPFlows(t, a, "tcp4", "127.0.0.1", "IPv4")
	checkUDPFlows(t, a, "udp4", "127.0.0.1", "IPv4")
}
