// Package integration runs the real datakit agent and datakit-ebpf collector against the real kernel
// with workloads on loopback, and compares what reaches the agent's store with ground truth.
// It needs root and the binaries `make build` produces. It never skips, except when a developer sets
// DKEBPF_SKIP_ROOT_TESTS=1 (CI never does).
package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/influxdata/line-protocol/v2/lineprotocol"
)

// interval is the collector's flush interval in these tests (DKEBPF_TEST_INTERVAL overrides it, for
// slow emulated guests).
var interval = func() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("DKEBPF_TEST_INTERVAL")); err == nil && d >= time.Second {
		return d
	}
	return time.Second
}()

// repoRoot holds ./datakit and externals/datakit-ebpf: this checkout, or DKEBPF_ROOT (the kernel-matrix
// guests run the compiled test binary far from the sources).
var repoRoot = func() string {
	if r := os.Getenv("DKEBPF_ROOT"); r != "" {
		return r
	}
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}()

func TestMain(m *testing.M) {
	if os.Getenv("DKEBPF_SKIP_ROOT_TESTS") == "1" {
		fmt.Println("DKEBPF_SKIP_ROOT_TESTS=1: root integration tests not run")
		os.Exit(0)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "integration tests need root (BPF); set DKEBPF_SKIP_ROOT_TESTS=1 to opt out on a laptop")
		os.Exit(1)
	}
	for _, b := range []string{"datakit", "externals/datakit-ebpf"} {
		if _, err := os.Stat(filepath.Join(repoRoot, b)); err != nil {
			fmt.Fprintf(os.Stderr, "%s missing: run `make build` first\n", b)
			os.Exit(1)
		}
	}
	code := m.Run()
	printFaults()
	os.Exit(code)
}

// agent is a running datakit with its own install dir and port.
type agent struct {
	t    *testing.T
	dir  string
	addr string
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{}
	env  []string // added to the environment by start
}

// freePort is a loopback TCP port nobody listens on, for a server a test starts later. It comes from below the
// kernel's ephemeral range and is never handed out twice: a port the kernel picked for "127.0.0.1:0" may be
// picked again for any connect before the server binds it (CI saw a Thanos node's gRPC port taken by one of
// its peers dialling it, "bind: address already in use").
func freePort(t *testing.T) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range portsBelow {
		nextPort = portsBelow/2 + (nextPort+1)%(portsBelow/2)
		if portsGiven[nextPort] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", nextPort))
		if err != nil {
			continue
		}
		l.Close()
		portsGiven[nextPort] = true
		return nextPort
	}
	t.Fatalf("no free loopback port below %d", portsBelow)
	return 0
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
	portsBelow = ephemeralLow()
	nextPort   = rand.IntN(portsBelow / 2)
)

// ephemeralLow is the first port of the kernel's ephemeral range (ip_local_port_range).
func ephemeralLow() int {
	var low, high int
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		_, err = fmt.Sscan(string(b), &low, &high)
	}
	if err != nil || low < 2048 {
		return 32768
	}
	return low
}

// writeInstallDir lays out conf.d for an agent on addr with the given ebpf.conf body.
func writeInstallDir(t *testing.T, addr, ebpfConf string) string {
	dir := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(dir, "conf.d", "host"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "conf.d", "datakit.conf"), []byte(fmt.Sprintf(
		"[http_api]\n  listen = %q\n[store]\n  path = \"data/points.db\"\n", addr)), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "conf.d", "host", "ebpf.conf"), []byte(ebpfConf), 0o644))
	return dir
}

// ebpfConf is an ebpf input config running the built collector every interval.
func ebpfConf(extra string) string {
	return fmt.Sprintf(`[[inputs.ebpf]]
  daemon = true
  name = "ebpf"
  cmd = %q
  interval = %q
  enabled_plugins = ["ebpf-net"]
  grace_period = "5s"
%s
  [inputs.ebpf.tags]
    suite = "integration"
    run = "%d"
`, filepath.Join(repoRoot, "externals", "datakit-ebpf"), interval.String(), extra, os.Getpid())
}

// firstPointTimeout bounds the collector's start: loading is slow in an emulated guest, and slower still
// when it refuses several hooks, each costing one more load of the object (the kernel matrix's fallbacks
// run took 25 s on 5.10 under TCG).
var firstPointTimeout = 60*time.Second + 5*interval

// startAgent runs datakit on a fresh install dir and waits until the collector posts its first points.
func startAgent(t *testing.T, extraConf string) *agent {
	t.Helper()
	return startAgentWith(t, ebpfConf(extraConf))
}

// startAgentWith is startAgent with a whole ebpf.conf.
func startAgentWith(t *testing.T, conf string) *agent {
	t.Helper()
	a := launchAgent(t, conf)
	a.waitFor("the collector's first datakit_ebpf point", firstPointTimeout, func() bool {
		return len(a.query("datakit_ebpf", "1m")) > 0
	})
	return a
}

// launchAgent runs datakit on a fresh install dir with this ebpf.conf, without waiting for anything.
func launchAgent(t *testing.T, conf string) *agent {
	t.Helper()
	return launchAgentMain(t, conf, "")
}

// launchAgentMain is launchAgent with more of datakit.conf (tables after [http_api] and [store]).
func launchAgentMain(t *testing.T, conf, mainExtra string) *agent {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	a := &agent{t: t, addr: addr, dir: writeInstallDir(t, addr, conf), log: &syncBuffer{}, done: make(chan struct{})}
	if mainExtra != "" {
		f, err := os.OpenFile(filepath.Join(a.dir, "conf.d", "datakit.conf"), os.O_APPEND|os.O_WRONLY, 0)
		must(t, err)
		_, err = f.WriteString(mainExtra)
		must(t, err)
		must(t, f.Close())
	}
	a.cmd = exec.Command(filepath.Join(repoRoot, "datakit"), "run", "--dir", a.dir)
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	must(t, a.cmd.Start())
	go func() { a.cmd.Wait(); close(a.done) }()
	t.Cleanup(a.stop)
	return a
}

// syncBuffer is the agent's output, written by the process and read by the test at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (a *agent) stop() {
	select {
	case <-a.done:
		return
	default:
	}
	if a.t.Failed() {
		a.logCounters()
	}
	a.cmd.Process.Signal(os.Interrupt)
	select {
	case <-a.done:
	case <-time.After(20 * time.Second):
		a.cmd.Process.Kill()
		a.t.Errorf("agent did not stop within 20s of SIGINT")
	}
	if a.t.Failed() {
		a.t.Logf("agent log:\n%s", a.log.String())
	}
}

// logCounters logs the collector's counters that are not 0 in its latest datakit_ebpf point: what it dropped,
// lost or could not parse, beside a failed test's own account.
func (a *agent) logCounters() {
	p, ok := latestSelfPoint(a)
	if !ok {
		return
	}
	var nonzero []string
	for k, v := range p.Fields {
		if n, isInt := v.(int64); !isInt || n != 0 {
			nonzero = append(nonzero, fmt.Sprintf("%s=%v", k, v))
		}
	}
	slices.Sort(nonzero)
	a.t.Logf("collector counters not 0 at %s: %s", p.Time.Format(time.RFC3339), strings.Join(nonzero, " "))
}

func (a *agent) waitFor(what string, timeout time.Duration, ok func() bool) {
	a.t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			a.t.Fatalf("timed out after %s waiting for %s; agent log:\n%s", timeout, what, a.log.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// lpPoint is a point read back from the agent.
type lpPoint struct {
	Name   string
	Tags   map[string]string
	Fields map[string]any
	Time   time.Time
}

// query returns the points of a measurement stored in the last `since`, filtered by tags "k:v".
func (a *agent) query(measurement, since string, tags ...string) []lpPoint {
	a.t.Helper()
	v := url.Values{"measurement": {measurement}, "since": {since}, "tag": tags, "limit": {"100000"}}
	resp, err := http.Get("http://" + a.addr + "/v1/query?" + v.Encode())
	if err != nil {
		return nil // not up yet
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		a.t.Fatalf("query %s: %d %s", measurement, resp.StatusCode, body)
	}
	if n := resp.Header.Get("X-Datakit-Truncated"); n != "" {
		a.t.Fatalf("query %s: more than %s points match: the test must narrow its query", measurement, n)
	}
	return decodeLP(a.t, body)
}

func decodeLP(t *testing.T, body []byte) []lpPoint {
	t.Helper()
	var out []lpPoint
	dec := lineprotocol.NewDecoderWithBytes(body)
	for dec.Next() {
		p := lpPoint{Tags: map[string]string{}, Fields: map[string]any{}}
		m, err := dec.Measurement()
		must(t, err)
		p.Name = string(m)
		for {
			k, v, err := dec.NextTag()
			must(t, err)
			if k == nil {
				break
			}
			p.Tags[string(k)] = string(v)
		}
		for {
			k, v, err := dec.NextField()
			must(t, err)
			if k == nil {
				break
			}
			p.Fields[string(k)] = v.Interface()
		}
		p.Time, err = dec.Time(lineprotocol.Nanosecond, time.Time{})
		must(t, err)
		out = append(out, p)
	}
	return out
}

func (a *agent) post(path, body string) (int, string) {
	a.t.Helper()
	resp, err := http.Post("http://"+a.addr+path, "text/plain", strings.NewReader(body))
	must(a.t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

type externalState struct {
	Name     string `json:"name"`
	PID      int    `json:"pid"`
	Starts   int    `json:"starts"`
	LastExit string `json:"last_exit"`
}

func (a *agent) collector() externalState {
	a.t.Helper()
	resp, err := http.Get("http://" + a.addr + "/v1/externals")
	must(a.t, err)
	defer resp.Body.Close()
	var st []externalState
	must(a.t, json.NewDecoder(resp.Body).Decode(&st))
	for _, s := range st {
		if s.Name == "ebpf" {
			return s
		}
	}
	a.t.Fatalf("no ebpf external in %+v", st)
	return externalState{}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func intField(p lpPoint, name string) int64 {
	switch v := p.Fields[name].(type) {
	case int64:
		return v
	case uint64:
		return int64(v)
	}
	return 0
}
