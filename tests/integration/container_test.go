package integration

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testImage is made from Debian's packages by scripts/test-rootfs.sh (make test-rootfs): no registry.
const testImage = "localhost/dkebpf-test:latest"

// podmanSocket is where the tests run podman's Docker-compatible API, the collector's default.
const podmanSocket = "/run/podman/podman.sock"

// podman runs podman and returns its trimmed output, failing the test on error.
func podman(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("podman", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// startContainer runs cmd in a detached container of the test image on the host's network and returns
// its full id. runc, because crun refuses this VM's hybrid cgroup layout; explicit ulimits, because
// podman's defaults exceed the VM's hard limits.
func startContainer(t *testing.T, name string, cmd ...string) string {
	t.Helper()
	return startContainerWith(t, name, nil, cmd...)
}

// startContainerWith is startContainer with more options of podman run.
func startContainerWith(t *testing.T, name string, opts []string, cmd ...string) string {
	t.Helper()
	exec.Command("podman", "rm", "-f", "-t", "0", name).Run()
	args := append([]string{"--runtime", "runc", "run", "-d", "--name", name, "--network", "host",
		"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"}, opts...)
	args = append(append(args, testImage), cmd...)
	id := podman(t, args...)
	t.Cleanup(func() { exec.Command("podman", "rm", "-f", "-t", "0", name).Run() })
	return id
}

// startPodmanService serves podman's API on its default socket until the test ends, so the collector
// can name containers.
func startPodmanService(t *testing.T) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(podmanSocket), 0o755))
	os.Remove(podmanSocket)
	svc := exec.Command("podman", "system", "service", "--time=0", "unix://"+podmanSocket)
	must(t, svc.Start())
	t.Cleanup(func() { svc.Process.Kill(); svc.Wait(); os.Remove(podmanSocket) })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("unix", podmanSocket); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("podman system service did not open " + podmanSocket)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestContainerProcessesAreTaggedWithTheirContainer: a TCP flow and HTTP exchanges made by short-lived
// processes inside a podman container arrive with its id, name and image (the processes are gone at the
// flush: the mount namespace the kernel recorded names the container), counts exact, and the host's own
// side of the same connections carries no container tag.
func TestContainerProcessesAreTaggedWithTheirContainer(t *testing.T) {
	startPodmanService(t)
	a := startAgent(t, httpflowConf)

	// Ground truth on the host's side: a server counting what it reads, and an HTTP server counting requests.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	t.Cleanup(func() { l.Close() })
	var tcpRead, tcpConns atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			tcpConns.Add(1)
			n, _ := io.Copy(io.Discard, c)
			tcpRead.Add(n)
			c.Close()
		}
	}()
	tcpPort := l.Addr().(*net.TCPAddr).Port
	var requests atomic.Int64
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		fmt.Fprint(w, "hello from the host\n")
	})}
	go hs.Serve(hl)
	t.Cleanup(func() { hs.Close() })
	httpPort := hl.Addr().(*net.TCPAddr).Port

	const name, conns, size, reqs = "dkebpf-ctr-flows", 3, 5000, 4
	id := startContainer(t, name, "sleep", "600")
	script := fmt.Sprintf(`set -e
for i in $(seq %d); do exec 3<>/dev/tcp/127.0.0.1/%d; head -c %d /dev/zero >&3; exec 3>&-; done
for i in $(seq %d); do curl -sS -o /dev/null http://127.0.0.1:%d/container/path; done`, conns, tcpPort, size, reqs, httpPort)
	podman(t, "exec", name, "bash", "-c", script)
	a.waitFor("the host's side of the container's connections", 10*time.Second, func() bool {
		return tcpConns.Load() == conns && tcpRead.Load() == conns*size && requests.Load() == reqs
	})

	port := fmt.Sprint(tcpPort)
	client := settle(t, a, "netflow of the container's client", totals{written: conns * size, established: conns, closed: conns}, func() flowSum {
		return sumFlows(a.query("netflow", "5m", "dst_port:"+port, "direction:outgoing"))
	})
	for _, p := range client.points {
		checkContainer(t, "container client flow", p, id, name)
	}
	server := settle(t, a, "netflow of the host's server", totals{read: conns * size, established: conns, closed: conns}, func() flowSum {
		return sumFlows(a.query("netflow", "5m", "src_port:"+port, "direction:incoming"))
	})
	for _, p := range server.points {
		if v, ok := p.Tags["container_id"]; ok {
			t.Errorf("the host's server flow is tagged container_id=%s: %v", v, p.Tags)
		}
	}

	for _, p := range settleExchanges(t, a, httpPort, "", reqs) {
		checkContainer(t, "container curl exchange", p, id, name)
		if p.Tags["process_name"] != "curl" {
			t.Errorf("httpflow process_name %q, want curl", p.Tags["process_name"])
		}
	}
}

// settleExchanges waits until the outgoing httpflow points to port (of path, if not "") count want
// exchanges, waits two intervals more, and returns them; any other count fails the test.
func settleExchanges(t *testing.T, a *agent, port int, path string, want int64) []lpPoint {
	t.Helper()
	var got int64
	count := func() []lpPoint {
		got = 0
		var pts []lpPoint
		for _, p := range a.query("httpflow", "5m", "direction:outgoing") {
			if onPort(p, port) && (path == "" || p.Fields["path"] == path) {
				got += intField(p, "count")
				pts = append(pts, p)
			}
		}
		return pts
	}
	for deadline := time.Now().Add(6*interval + 10*time.Second); time.Now().Before(deadline) && got != want; {
		count()
		time.Sleep(interval / 4)
	}
	time.Sleep(2 * interval)
	pts := count()
	if got != want {
		t.Errorf("httpflow: %d exchanges to port %d %s, want %d; points:", got, port, path, want)
		for _, p := range pts {
			t.Logf("  %v %v", p.Tags, p.Fields)
		}
	}
	return pts
}

// checkContainer checks that a point names the test container: its id, name and image.
func checkContainer(t *testing.T, what string, p lpPoint, id, name string) {
	t.Helper()
	for k, v := range map[string]string{"container_id": id, "container_name": name, "container_image": testImage} {
		if p.Tags[k] != v {
			t.Errorf("%s: %s=%q, want %q (tags %v)", what, k, p.Tags[k], v, p.Tags)
		}
	}
}

// TestContainerHTTPSThroughItsOwnLibssl: curl inside a container uses the container's libssl.so.3 (another
// file than the host's); its HTTPS exchanges arrive tagged with the container, counted exactly. Warm-up
// requests run until the collector has found that library (a different path, filtered out of the count).
func TestContainerHTTPSThroughItsOwnLibssl(t *testing.T) {
	startPodmanService(t)
	a := startAgent(t, httpflowConf)
	var requests atomic.Int64
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/counted" {
			requests.Add(1)
		}
		fmt.Fprint(w, "hello over TLS\n")
	}))
	ts.StartTLS() // Go's crypto/tls: only the container's client side is probed
	t.Cleanup(ts.Close)
	port := ts.Listener.Addr().(*net.TCPAddr).Port

	const name, reqs = "dkebpf-ctr-https", 5
	// The container's libssl is found in the maps of a process that keeps it mapped (curl is too brief).
	id := startContainer(t, name, "openssl", "s_server", "-nocert", "-quiet", "-accept", "127.0.0.1:0")
	url := fmt.Sprintf("https://127.0.0.1:%d", port)
	started := time.Now()
	for !reportedFrom(a, port, "curl") {
		if time.Since(started) > max(30*time.Second, 10*interval) {
			t.Fatalf("no httpflow point from curl in the container after %s", time.Since(started).Round(time.Second))
		}
		podman(t, "exec", name, "curl", "-sSk", "-o", "/dev/null", url+"/warmup")
		time.Sleep(500 * time.Millisecond)
	}
	podman(t, "exec", name, "bash", "-c", fmt.Sprintf("for i in $(seq %d); do curl -sSk -o /dev/null %s/counted; done", reqs, url))
	if requests.Load() != reqs {
		t.Fatalf("harness: the server answered %d requests, want %d", requests.Load(), reqs)
	}
	for _, p := range settleExchanges(t, a, port, "/counted", reqs) {
		checkContainer(t, "container HTTPS exchange", p, id, name)
		if p.Tags["process_name"] != "curl" {
			t.Errorf("httpflow process_name %q, want curl", p.Tags["process_name"])
		}
	}
}

// TestContainerInteractiveBash: `podman exec -it <ctr> bash` (the container's own bash binary) is captured
// line by line, each line tagged with the container.
func TestContainerInteractiveBash(t *testing.T) {
	startPodmanService(t)
	a := startBashAgent(t)
	const name = "dkebpf-ctr-bash"
	probed := a.bashBinariesProbed()
	id := startContainer(t, name, "sleep", "600")
	// The container's bash is probed when its root directory is first scanned (every 5 s), before anyone
	// runs it; a bash started before that would lose the lines typed while it waited in readline.
	a.waitFor("the container's bash binary probed", 15*time.Second, func() bool { return a.bashBinariesProbed() > probed })
	argv := []string{"podman", "exec", "-it"}
	for _, e := range shellEnv {
		argv = append(argv, "-e", e)
	}
	argv = append(argv, name, "bash", "--norc", "--noprofile", "-i")
	s := startShell(t, "bash in a container", argv...)
	want := []string{"echo inside-the-container", "true container-line-2", "exit"}
	for _, l := range want {
		s.typeLine(l)
	}
	var got []lpPoint
	ofContainer := func() {
		got = got[:0]
		for _, p := range a.bashPoints() {
			if p.Tags["container_id"] == id {
				got = append(got, p)
			}
		}
	}
	for deadline := time.Now().Add(6*interval + 10*time.Second); time.Now().Before(deadline) && len(got) < len(want); {
		ofContainer()
		time.Sleep(interval / 4)
	}
	time.Sleep(2 * interval)
	ofContainer()
	if len(got) != len(want) {
		for _, p := range a.bashPoints() {
			t.Logf("bash point: %v %v", p.Tags, p.Fields)
		}
		for _, l := range strings.Split(a.log.String(), "\n") {
			if strings.Contains(l, "bash") {
				t.Log(l)
			}
		}
		t.Logf("shell output: %s", tail(s.output()))
		t.Fatalf("%d bash lines tagged with the container, want %d: %v", len(got), len(want), got)
	}
	for i, p := range got {
		if p.Fields["cmd"] != want[i] {
			t.Errorf("line %d: cmd %q, want %q", i, p.Fields["cmd"], want[i])
		}
		checkContainer(t, fmt.Sprintf("bash line %d", i), p, id, name)
	}
}
