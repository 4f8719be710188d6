package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/influxdata/line-protocol/v2/lineprotocol"
)

// benchInterval is the collector's flush interval in the bench: short, so each run pays for several
// flushes (the default, 60 s, would hide them).
const benchInterval = 2 * time.Second

// agent is a datakit with its ebpf input, running for one measured run.
type agent struct {
	root, dir, addr string
	cmd             *exec.Cmd
	collectorPID    int
	started         time.Time
}

// agentOptions are ebpf.conf settings beyond a configuration's (the zero value: the collector's defaults).
type agentOptions struct {
	MaxSockets int // netflow_max_sockets, nf_socks' size (0: not written; the default is 65 536)
}

// nextAgent is the options of the agents started from now on. measureWith (main.go) starts its agent with
// startAgent(root, cfg) alone, so the scale run sets them around its runs; the normal bench leaves them zero.
var nextAgent agentOptions

// running is the agent started last and not stopped yet (nil: none).
var running *agent

// l7net is the ebpf.conf line that picks each configuration's L7 plugins. It must be explicit: without
// l7net_enabled or l7net_disabled the agent enables httpflow. dnsflow is part of ebpf-net in every
// configuration (it reads the DNS packets of netflow's own cgroup_skb programs and has no switch).
var l7net = map[string]string{
	"floor":   `l7net_enabled = ["httpflow", "httpflow-tls"]`, // every hook of "all"
	"netflow": `l7net_disabled = ["httpflow", "httpflow-tls"]`,
	"all":     `l7net_enabled = ["httpflow", "httpflow-tls"]`,
	"process": `l7net_disabled = ["httpflow", "httpflow-tls"]`,
}

// plugins is each configuration's enabled_plugins. "netflow" stays the network plugin alone (netflow
// and dnsflow): ebpf-bash is not a network plugin, and its uretprobe costs the interactive shell, not
// the network workloads; "floor" has every hook of "all", so bash's too.
var plugins = map[string]string{
	"floor":   `["ebpf-net", "ebpf-bash"]`,
	"netflow": `["ebpf-net"]`,
	"all":     `["ebpf-net", "ebpf-bash"]`,
	"process": `["ebpf-process"]`,
}

// startAgent runs datakit from root (the repository) on a fresh install dir with configuration cfg
// (floor: the hooks of "all" with programs that return at once) and nextAgent's options. It returns once
// the collector says it runs.
func startAgent(root, cfg string) (*agent, error) {
	dir, err := os.MkdirTemp("", "bench-agent-")
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	args := fmt.Sprintf(`["--datakit-apiserver", %q]`, addr)
	if cfg == "floor" {
		args = fmt.Sprintf(`["--datakit-apiserver", %q, "--bpf-floor"]`, addr)
	}
	extra := ""
	if o := nextAgent; o.MaxSockets > 0 {
		extra += fmt.Sprintf("  netflow_max_sockets = %d\n", o.MaxSockets)
	}
	os.MkdirAll(filepath.Join(dir, "conf.d", "host"), 0o755)
	os.WriteFile(filepath.Join(dir, "conf.d", "datakit.conf"), []byte(fmt.Sprintf("[http_api]\n  listen = %q\n", addr)), 0o644)
	os.WriteFile(filepath.Join(dir, "conf.d", "host", "ebpf.conf"), []byte(fmt.Sprintf(`[[inputs.ebpf]]
  cmd = %q
  args = %s
  interval = %q
  enabled_plugins = %s
  %s
%s`, filepath.Join(root, "externals", "datakit-ebpf"), args, benchInterval, plugins[cfg], l7net[cfg], extra)), 0o644)

	a := &agent{root: root, dir: dir, addr: addr, started: time.Now()}
	a.cmd = exec.Command(filepath.Join(root, "datakit"), "run", "--dir", dir)
	stderr, err := a.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := a.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start datakit: %w", err)
	}
	ready := make(chan error, 1)
	var logBuf bytes.Buffer
	go func() {
		sc := bufio.NewScanner(stderr)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			logBuf.WriteString(line + "\n")
			if !signalled && strings.Contains(line, "collector running") {
				ready <- nil
				signalled = true
			}
			if !signalled && (strings.Contains(line, "level=ERROR") || strings.Contains(line, "FAILED")) {
				ready <- fmt.Errorf("collector failed: %s", line)
				signalled = true
			}
		}
	}()
	select {
	case err := <-ready:
		if err != nil {
			a.stop()
			return nil, err
		}
	case <-time.After(30 * time.Second):
		a.stop()
		return nil, fmt.Errorf("collector did not start within 30s; log:\n%s", logBuf.String())
	}
	if a.collectorPID, err = a.collector(); err != nil {
		a.stop()
		return nil, err
	}
	running = a
	return a, nil
}

func (a *agent) collector() (int, error) {
	resp, err := http.Get("http://" + a.addr + "/v1/externals")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var st []struct {
		Name string `json:"name"`
		PID  int    `json:"pid"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return 0, err
	}
	for _, s := range st {
		if s.Name == "ebpf" && s.PID != 0 {
			return s.PID, nil
		}
	}
	return 0, fmt.Errorf("no running collector in %+v", st)
}

// stop ends the agent; the collector makes a final flush on SIGTERM, so every point of the run is stored.
func (a *agent) stop() {
	if running == a {
		running = nil
	}
	stopProcess(a.cmd, 2, 20*time.Second)
}

func (a *agent) cleanup() { os.RemoveAll(a.dir) }

// stored is what reached the agent's store during a run.
type stored struct {
	points []lpPoint
	bytes  int64 // line protocol bytes of the collector's points
}

type lpPoint struct {
	Name   string
	Tags   map[string]string
	Fields map[string]int64  // integer fields
	Strs   map[string]string // string fields (bash's cmd, pid, user, message)
	Bools  map[string]bool   // boolean fields (bash's truncated)
}

// query reads a measurement back from the stopped agent's store (offline), in any category.
func (a *agent) query(measurement string) (stored, error) { return a.queryIn(measurement, "") }

// maxQueryPoints is the most points one `datakit query` prints (api.MaxQueryLimit).
const maxQueryPoints = 100000

// queryIn is query restricted to one category ("": any). A run that stored more points than one query
// prints (an outage run of W5) is read a minute at a time, oldest first.
func (a *agent) queryIn(measurement, category string) (stored, error) {
	s, err := a.queryRange(measurement, category, "1h", "")
	if err != nil || len(s.points) < maxQueryPoints {
		return s, err
	}
	s = stored{}
	for t := a.started.Add(-time.Minute).Truncate(time.Minute); t.Before(time.Now()); t = t.Add(time.Minute) {
		w, err := a.queryRange(measurement, category, t.Format(time.RFC3339Nano), t.Add(time.Minute-1).Format(time.RFC3339Nano))
		if err != nil {
			return s, err
		}
		if len(w.points) >= maxQueryPoints {
			return s, fmt.Errorf("datakit query %s: %d points or more in the minute from %v", measurement, maxQueryPoints, t)
		}
		s.points, s.bytes = append(s.points, w.points...), s.bytes+w.bytes
	}
	return s, nil
}

// queryRange reads the points of measurement from since to until (both inclusive; until "" is now).
func (a *agent) queryRange(measurement, category, since, until string) (stored, error) {
	args := []string{"query", measurement, "--since", since, "--limit", fmt.Sprint(maxQueryPoints), "--dir", a.dir}
	if until != "" {
		args = append(args, "--until", until)
	}
	if category != "" {
		args = append(args, "--category", category)
	}
	out, err := exec.Command(filepath.Join(a.root, "datakit"), args...).Output()
	if err != nil {
		return stored{}, fmt.Errorf("datakit query %s: %w", measurement, err)
	}
	s := stored{bytes: int64(len(out))}
	dec := lineprotocol.NewDecoderWithBytes(out)
	for dec.Next() {
		m, err := dec.Measurement()
		if err != nil {
			return s, err
		}
		p := lpPoint{Name: string(m), Tags: map[string]string{}, Fields: map[string]int64{},
			Strs: map[string]string{}, Bools: map[string]bool{}}
		for {
			k, v, err := dec.NextTag()
			if err != nil || k == nil {
				break
			}
			p.Tags[string(k)] = string(v)
		}
		for {
			k, v, err := dec.NextField()
			if err != nil || k == nil {
				break
			}
			switch v.Kind() {
			case lineprotocol.Int:
				p.Fields[string(k)] = v.IntV()
			case lineprotocol.String:
				p.Strs[string(k)] = v.StringV()
			case lineprotocol.Bool:
				p.Bools[string(k)] = v.BoolV()
			}
		}
		s.points = append(s.points, p)
	}
	return s, nil
}

// sum adds field over the points whose tags all match.
func (s stored) sum(field string, match map[string]string) int64 {
	var t int64
	for _, p := range s.points {
		if p.matches(match) {
			t += p.Fields[field]
		}
	}
	return t
}

// sumIf is sum over the points whose integer field key also equals value (httpflow's status_code is a field).
func (s stored) sumIf(field string, match map[string]string, key string, value int64) int64 {
	var t int64
	for _, p := range s.points {
		if v, ok := p.Fields[key]; ok && v == value && p.matches(match) {
			t += p.Fields[field]
		}
	}
	return t
}

func (p lpPoint) matches(tags map[string]string) bool {
	for k, v := range tags {
		if p.Tags[k] != v {
			return false
		}
	}
	return true
}

// sumWhere is sum over the points that also satisfy ok.
func (s stored) sumWhere(field string, match map[string]string, ok func(lpPoint) bool) int64 {
	var t int64
	for _, p := range s.points {
		if p.matches(match) && ok(p) {
			t += p.Fields[field]
		}
	}
	return t
}

// count returns how many points match tags and satisfy ok.
func (s stored) count(match map[string]string, ok func(lpPoint) bool) int64 {
	var n int64
	for _, p := range s.points {
		if p.matches(match) && ok(p) {
			n++
		}
	}
	return n
}

// hasField reports whether any point has a field starting with prefix.
func (s stored) hasField(prefix string) bool {
	for _, p := range s.points {
		for k := range p.Fields {
			if strings.HasPrefix(k, prefix) {
				return true
			}
		}
	}
	return false
}

// last returns the last point's field (the self-metrics are cumulative).
func (s stored) last(field string) int64 {
	if len(s.points) == 0 {
		return 0
	}
	return s.points[len(s.points)-1].Fields[field]
}
