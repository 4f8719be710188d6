package main

// The scale run (`bench -scale`, `make bench-scale`): what the collector costs as the work grows.
//  1. N concurrent HTTP/1.1 keep-alive connections to nginx (10, 1 000, 100 000), opened first and then
//     loaded round-robin at saturation by the bench's own Go generator, in base / netflow / all
//     (interleaved in random order, a few repetitions), with the fidelity checks where the truth is exact.
//     One process holds at most perProcess() connections (RLIMIT_NOFILE): the generator runs in that many
//     child processes of the bench (bench/scaleclient.go), nginx with as many workers (reuseport), and
//     nf_socks is sized for both ends of every connection (netflow_max_sockets).
//  2. New connections (`Connection: close`) at a fixed rate (1 000/s) for minutes in config all: the
//     collector's RSS, the BPF maps' entry counts and its drop counters every 10 s, then the exact checks.
//  3. The state each connection costs in the kernel, per plugin, from the maps' definitions and what the
//     kernel accounts for them.

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

var (
	scaleRun     = flag.Bool("scale", false, "instead: the scale run: cost at -scale-conns concurrent keep-alive connections, -churn-rate new connections/s for -churn, state per connection")
	scaleConns   = flag.String("scale-conns", "10,1000,100000", "scale run: comma-separated numbers of concurrent keep-alive connections")
	scaleConfigs = flag.String("scale-configs", "base,netflow,all", "scale run: configurations of the keep-alive runs (floor too if wanted)")
	scaleReps    = flag.Int("scale-reps", 3, "scale run: repetitions of each (connections, configuration)")
	scaleDur     = flag.Duration("scale-duration", 5*time.Second, "scale run: length of each keep-alive load (after its connections are open)")
	churnDur     = flag.Duration("churn", 3*time.Minute, "scale run: how long the new-connection rate is held (0: skip)")
	churnRate    = flag.Float64("churn-rate", 1000, "scale run: new connections per second (Connection: close)")
)

// scaleWorkers is how many requests are in flight at once in the keep-alive runs (wrk's -c of W1): the
// number of connections grows, the concurrency does not.
const scaleWorkers = 32

// connsPerSource is the most connections from one loopback source address (its ephemeral ports).
const connsPerSource = 10000

// maxScaleProcs is the most client processes (and nginx workers) a keep-alive run may use: 32 × 18 000
// connections here, and each child has at least one request in flight.
const maxScaleProcs = scaleWorkers

// defaultMaxSockets is nf_socks' size when ebpf.conf does not set netflow_max_sockets.
const defaultMaxSockets = 65536

// maxSocketsFor is the netflow_max_sockets a run at n connections sets (0: the default fits): both ends of
// every connection, and room for the host's other sockets.
func maxSocketsFor(n int) int {
	if m := 2*n + 8192; m > defaultMaxSockets {
		return m
	}
	return 0
}

// scaleResult is one keep-alive run at Conns connections.
type scaleResult struct {
	Conns int
	run
	OpenSeconds  float64          // opening the connections (before the measured load)
	CloseSeconds float64          // closing them, until nginx holds none (after the load)
	ClientProcs  int              // the bench's client children holding the connections
	NginxWorkers int              // nginx's worker processes
	MaxSockets   int              // netflow_max_sockets the collector ran with (0: its default, 65 536)
	Untracked    int64            // netflow_connections_untracked: sockets nf_socks had no room for
	Stale        int64            // netflow_connections_stale
	HTTPFull     int64            // httpflow_map_full_drops
	Entries      map[string]int64 // BPF maps' entries at the end of the load (-1: not enumerable)
}

// churnSample is one 10 s sample of the new-connection run.
type churnSample struct {
	T                 float64 // seconds since the load started
	Accepted          int64   // nginx's accepted connections since the start
	RSSMB, PeakRSSMB  float64
	Entries           map[string]int64
	Untracked, Stale  int64 // netflow_connections_untracked, _stale (cumulative)
	HTTPFull, Lost    int64 // httpflow_map_full_drops; events lost, netflow+httpflow
	CollectorCPUTotal float64
}

type churnResult struct {
	Rate, Seconds float64
	Load          loadResult
	CollectorCPU  float64
	Samples       []churnSample
	Checks        []check
	Untracked     int64
	Stale         int64
	HTTPFull      int64
	Lost          int64
}

// runScale runs the scale bench; it returns false if it could not run (not if a check is inexact: at
// 100 000 connections some cannot be tracked, and the report says so).
func runScale(root, out string, quick bool, noise float64) bool {
	conns := []int{}
	for _, s := range splitComma(*scaleConns) {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			fatalf("-scale-conns: %q is not a positive number", s)
		}
		conns = append(conns, n)
	}
	cfgs := splitComma(*scaleConfigs)
	for _, c := range cfgs {
		if !slices.Contains(configs, c) {
			fatalf("-scale-configs: %q is not one of %v", c, configs)
		}
	}
	reps, dur, churn := *scaleReps, *scaleDur, *churnDur
	if quick {
		reps, dur, churn = 1, 3*time.Second, min(churn, time.Minute)
	}
	// One process holds at most perProcess() connections (RLIMIT_NOFILE's hard limit, which cannot be raised
	// here): the client side is spread over child processes, nginx's side over its workers.
	most := slices.Max(conns)
	if need := processesFor(most); need > maxScaleProcs {
		fatalf("-scale-conns: %d connections need %d client processes and %d nginx workers of at most %d connections each "+
			"(RLIMIT_NOFILE's hard limit); more than %d is not supported", most, need, need, perProcess(), maxScaleProcs)
	}
	if sources := (most + connsPerSource - 1) / connsPerSource; sources > 254 {
		fatalf("-scale-conns: %d connections need %d loopback source addresses (%d each), more than 254", most, sources, connsPerSource)
	}
	work, err := os.MkdirTemp("", "bench-scale-")
	if err != nil {
		fatalf("%v", err)
	}
	defer os.RemoveAll(work)
	// nginx runs apart for each N (processesFor(N) workers), one at a time: they would share the port.
	var ng *nginx
	stopNginx := func() {
		if ng != nil {
			ng.stop()
			ng = nil
		}
	}
	defer stopNginx()
	cs := &clientSet{}
	startNg := func(n int) {
		dir, err := os.MkdirTemp(work, "nginx-")
		if err == nil {
			ng, err = startNginxWith(dir, n)
		}
		if err == nil {
			cs.respLen, err = probeResponse([]byte(scaleRequest))
			if err != nil {
				err = fmt.Errorf("probe nginx: %w", err)
			}
		}
		if err != nil {
			stopNginx() // fatalf exits without running the deferred stop
			fatalf("%v", err)
		}
	}
	started := time.Now()

	// 1. Keep-alive connections.
	var results []scaleResult
	total := reps * len(conns) * len(cfgs)
	states := map[string]mapInfo{}
	for rep := 1; rep <= reps; rep++ {
		for _, n := range conns {
			startNg(n)
			order := slices.Clone(cfgs)
			rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			for _, cfg := range order {
				res, err := scaleOne(root, ng, cs, n, cfg, dur, states)
				if err != nil {
					stopNginx()
					fatalf("scale %d connections, %s: %v", n, cfg, err)
				}
				res.Rep = rep
				res.Discarded = res.OtherCores > noise
				results = append(results, res)
				fmt.Printf("[%3d/%d] %6d conns %-7s %8.0f/s (opened in %.1fs, closed in %.1fs; %d client processes, %d nginx workers) collector %.1f%% rss %.1f MB nf_socks %s untracked %d other=%.2f cores%s\n",
					len(results), total, n, cfg, res.Load.Rate, res.OpenSeconds, res.CloseSeconds, res.ClientProcs, res.NginxWorkers, res.CollectorCPU/res.Seconds*100, res.CollectorRSSMB,
					entries(res.Entries, "nf_socks"), res.Untracked, res.OtherCores, map[bool]string{true: " DISCARDED", false: ""}[res.Discarded])
			}
			stopNginx()
		}
	}

	// 2. New connections at a fixed rate (one nginx worker: few connections are open at once).
	var ch *churnResult
	if churn > 0 {
		fmt.Printf("new connections: %.0f/s (Connection: close) for %v, config all, a sample every 10 s\n", *churnRate, churn)
		startNg(4096)
		c, err := runChurn(root, ng, churn, *churnRate, states)
		stopNginx()
		if err != nil {
			fatalf("churn: %v", err)
		}
		ch = &c
	}

	rep := scaleReport(conns, cfgs, results, ch, states, noise, time.Since(started))
	fmt.Println()
	fmt.Print(rep)
	if err := os.MkdirAll(out, 0o755); err != nil {
		fatalf("%v", err)
	}
	stamp := time.Now().UTC().Format("20060102-150405")
	js, _ := json.MarshalIndent(map[string]any{"date": time.Now().UTC(), "keepalive": results, "churn": ch, "maps": states}, "", "  ")
	os.WriteFile(filepath.Join(out, "scale-"+stamp+".json"), js, 0o644)
	os.WriteFile(filepath.Join(out, "scale-"+stamp+".md"), []byte(rep), 0o644)
	fmt.Printf("\nresults: %s/scale-%s.{json,md}\n", out, stamp)
	return true
}

// scaleOne measures one keep-alive run (measureWith: the collector starts, the connections open, the load
// runs, the connections close and nginx settles, the collector stops and its points are read back).
func scaleOne(root string, ng *nginx, cs *clientSet, n int, cfg string, d time.Duration, states map[string]mapInfo) (scaleResult, error) {
	res := scaleResult{Conns: n, ClientProcs: processesFor(n), NginxWorkers: ng.workers, MaxSockets: maxSocketsFor(n)}
	// measureWith starts the agent with startAgent(root, cfg): nf_socks' size reaches it through nextAgent.
	nextAgent = agentOptions{MaxSockets: res.MaxSockets}
	defer func() { nextAgent = agentOptions{} }()
	var acceptedBefore int64
	var openErr error
	var clientEst int64
	closeAll := func() {
		t := time.Now()
		cs.close()
		if err := ng.settle(60 * time.Second); err != nil {
			fmt.Fprintln(os.Stderr, "bench: scale:", err)
		}
		res.CloseSeconds = time.Since(t).Seconds()
	}
	w := workload{ID: fmt.Sprintf("K%d", n), Name: fmt.Sprintf("nginx HTTP/1.1 keep-alive, %d connections", n), serverPID: ng.pid,
		before: func() {
			ng.drainLog()
			acceptedBefore, _ = ng.accepted()
			t := time.Now()
			openErr = cs.open(n, ng)
			res.OpenSeconds = time.Since(t).Seconds()
		},
		saturate: func(d time.Duration) (loadResult, float64, error) {
			if openErr != nil {
				return loadResult{}, 0, openErr
			}
			r, clientCPU := cs.load(d)
			return r, clientCPU, nil
		},
		// Only with a collector: the maps at their fullest, then every connection closes.
		after: func() {
			if pid := collectorPID(); pid != 0 {
				maps := collectorMaps(pid)
				res.Entries = countAll(maps)
				addStates(states, maps)
				closeMaps(maps)
			}
			closeAll()
		},
		checks: func(_ string, _ loadResult, c collected) []check {
			log := ng.drainLog()
			after, _ := ng.accepted()
			accepted := after - acceptedBefore
			side := map[string]string{"direction": "incoming", "src_port": "18080", "transport": "tcp"}
			clientEst = 0
			for _, pid := range cs.pids { // the client children's sockets
				client := map[string]string{"direction": "outgoing", "dst_port": "18080", "transport": "tcp", "pid": strconv.Itoa(pid)}
				clientEst += c.flows.sum("tcp_established", client)
			}
			out := []check{
				{"nginx: connections accepted (stub_status) = tcp_established", accepted, c.flows.sum("tcp_established", side)},
				{"nginx: connections closed = tcp_closed", accepted, c.flows.sum("tcp_closed", side)},
				{"nginx: bytes read (access log $request_length)", log.RequestBytes, c.flows.sum("bytes_read", side)},
				{"nginx: bytes written (access log $bytes_sent)", log.ResponseBytes, c.flows.sum("bytes_written", side)},
			}
			if c.http != nil {
				out = append(out,
					check{"nginx (incoming): httpflow count (access log requests)", log.Requests,
						c.http.sum("count", map[string]string{"direction": "incoming", "server_port": "18080"})},
					check{"client (outgoing): httpflow count (access log requests)", log.Requests,
						c.http.sum("count", map[string]string{"direction": "outgoing", "server_port": "18080"})})
			}
			return out
		},
	}
	r, self, err := measureWith(root, w, "saturation", cfg, 0, d, nil)
	if cs.isOpen() { // base: no collector, so after() did not run
		closeAll()
	}
	if err != nil {
		return res, err
	}
	res.run = r
	if cfg != "base" {
		res.Untracked = self.last("netflow_connections_untracked")
		res.Stale = self.last("netflow_connections_stale")
		res.HTTPFull = self.last("httpflow_map_full_drops")
	}
	if slices.Contains(measured, cfg) {
		// Every socket of the run (two per connection: a client child's and nginx's) is tracked or refused.
		// The counter is the host's: another connection opened meanwhile while nf_socks was full adds to it.
		res.Checks = append(res.Checks, check{"sockets opened (2 per connection) = tcp_established of both ends + connections untracked (map full)",
			2 * int64(n), r.Checks[0].Got + clientEst + res.Untracked})
	}
	return res, nil
}

var contentLength = regexp.MustCompile(`(?i)\r\ncontent-length:\s*(\d+)`)

// probeResponse asks nginx once and returns the size of its whole answer.
func probeResponse(req []byte) (int, error) {
	c, err := net.DialTimeout("tcp", httpAddr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(req); err != nil {
		return 0, err
	}
	var buf []byte
	chunk := make([]byte, 4096)
	for {
		n, err := c.Read(chunk)
		buf = append(buf, chunk[:n]...)
		if h := bytes.Index(buf, []byte("\r\n\r\n")); h >= 0 {
			m := contentLength.FindSubmatch(buf[:h+2])
			if m == nil {
				return 0, fmt.Errorf("no Content-Length in %q", buf[:h])
			}
			cl, _ := strconv.Atoi(string(m[1]))
			if len(buf) >= h+4+cl {
				return h + 4 + cl, nil
			}
		}
		if err != nil {
			return 0, err
		}
	}
}

// collectorPID is the collector of the agent running now (0: none).
func collectorPID() int {
	if running == nil {
		return 0
	}
	return running.collectorPID
}

// runChurn holds rate new connections per second (Connection: close) for d in config all, sampling the
// collector every 10 s, then checks netflow's and httpflow's counts against nginx's.
func runChurn(root string, ng *nginx, d time.Duration, rate float64, states map[string]mapInfo) (churnResult, error) {
	res := churnResult{Rate: rate}
	a, err := startAgent(root, "all")
	if err != nil {
		return res, err
	}
	defer a.cleanup()
	ng.drainLog()
	acc0, err := ng.accepted()
	if err != nil {
		a.stop()
		return res, err
	}
	pid := a.collectorPID
	cpu0 := procCPU(pid, false)
	var maps []mapInfo
	sample := func(t float64) churnSample {
		if maps == nil {
			maps = collectorMaps(pid)
			addStates(states, maps)
		}
		acc, _ := ng.accepted()
		s := churnSample{T: t, Accepted: acc - acc0, RSSMB: rssNow(pid), PeakRSSMB: peakRSS(pid), Entries: countAll(maps),
			CollectorCPUTotal: procCPU(pid, false) - cpu0}
		if p, ok, _ := a.latest("datakit_ebpf"); ok {
			s.Untracked, s.Stale = p.Fields["netflow_connections_untracked"], p.Fields["netflow_connections_stale"]
			s.HTTPFull = p.Fields["httpflow_map_full_drops"]
			s.Lost = p.Fields["netflow_events_lost"] + p.Fields["httpflow_events_lost"]
		}
		fmt.Printf("  t=%4.0fs accepted %7d rss %5.1f MB (peak %5.1f) nf_socks %s hf_tls %s untracked %d stale %d httpflow map-full %d lost %d\n",
			s.T, s.Accepted, s.RSSMB, s.PeakRSSMB, entries(s.Entries, "nf_socks"), entries(s.Entries, "hf_tls"), s.Untracked, s.Stale, s.HTTPFull, s.Lost)
		return s
	}
	res.Samples = append(res.Samples, sample(0))
	get, idle := httpGetter("http://"+httpAddr+"/api", false, scaleWorkers)
	start := time.Now()
	done := make(chan struct{})
	var samplerDone sync.WaitGroup
	samplerDone.Add(1)
	go func() {
		defer samplerDone.Done()
		tick := time.NewTicker(10 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				res.Samples = append(res.Samples, sample(time.Since(start).Seconds()))
			}
		}
	}()
	res.Load = fixedRate(rate, d, scaleWorkers, get)
	res.Seconds = time.Since(start).Seconds()
	idle()
	close(done)
	samplerDone.Wait()
	if err := ng.settle(30 * time.Second); err != nil {
		fmt.Fprintln(os.Stderr, "bench: churn:", err)
	}
	res.Samples = append(res.Samples, sample(time.Since(start).Seconds()))
	res.CollectorCPU = procCPU(pid, false) - cpu0
	closeMaps(maps)
	a.stop()
	flows, err := a.query("netflow")
	if err != nil {
		return res, err
	}
	http, err := a.query("httpflow")
	if err != nil {
		return res, err
	}
	self, err := a.query("datakit_ebpf")
	if err != nil {
		return res, err
	}
	res.Untracked, res.Stale = self.last("netflow_connections_untracked"), self.last("netflow_connections_stale")
	res.HTTPFull = self.last("httpflow_map_full_drops")
	res.Lost = self.last("netflow_events_lost") + self.last("httpflow_events_lost")
	log := ng.drainLog()
	acc, _ := ng.accepted()
	accepted := acc - acc0
	side := map[string]string{"direction": "incoming", "src_port": "18080", "transport": "tcp"}
	res.Checks = []check{
		{"nginx: connections accepted (stub_status) = tcp_established", accepted, flows.sum("tcp_established", side)},
		{"nginx: connections accepted = tcp_closed (all closed before the collector stops)", accepted, flows.sum("tcp_closed", side)},
		{"nginx: bytes read (access log $request_length)", log.RequestBytes, flows.sum("bytes_read", side)},
		{"nginx: bytes written (access log $bytes_sent)", log.ResponseBytes, flows.sum("bytes_written", side)},
		{"nginx (incoming): httpflow count (access log requests)", log.Requests,
			http.sum("count", map[string]string{"direction": "incoming", "server_port": "18080"})},
		{"client (outgoing): httpflow count (access log requests)", log.Requests,
			http.sum("count", map[string]string{"direction": "outgoing", "server_port": "18080"})},
		{"client: requests completed = access log requests", res.Load.Requests, log.Requests},
	}
	return res, nil
}

// --- BPF maps, read through the bpf(2) syscall (no libbpf in the bench) ---

// mapInfo is one of the collector's BPF maps.
type mapInfo struct {
	ID                             uint32
	Name                           string
	Type                           uint32
	KeySize, ValueSize, MaxEntries uint32
	Flags                          uint32
	Memlock                        int64 // what the kernel accounts for it (fdinfo memlock, bpftool's bytes_memlock)
	fd                             int
}

var mapTypes = map[uint32]string{1: "hash", 2: "array", 5: "percpu_hash", 6: "percpu_array", 9: "lru_hash",
	10: "lru_percpu_hash", 24: "sk_storage", 27: "ringbuf"}

func (m mapInfo) typeName() string {
	if t, ok := mapTypes[m.Type]; ok {
		return t
	}
	return fmt.Sprintf("type %d", m.Type)
}

func (m mapInfo) perCPU() bool { return m.Type == 5 || m.Type == 6 || m.Type == 10 }

const (
	bpfMapGetNextKey  = 4
	bpfMapGetFDByID   = 14
	bpfObjGetInfoByFD = 15
)

// mapInfoBuf receives struct bpf_map_info (one caller at a time).
var mapInfoBuf = make([]byte, 256)

func bpfSys(cmd uintptr, attr unsafe.Pointer, size uintptr) (uintptr, error) {
	r, _, e := unix.Syscall(unix.SYS_BPF, cmd, uintptr(attr), size)
	if e != 0 {
		return 0, e
	}
	return r, nil
}

// collectorMaps lists the plugins' maps the collector holds (nf_*, hf_*, df_*), from its fdinfo; the
// newest of each name (a fallback reload leaves none behind, but be sure).
func collectorMaps(pid int) []mapInfo {
	dir := fmt.Sprintf("/proc/%d/fdinfo", pid)
	ents, _ := os.ReadDir(dir)
	byName := map[string]mapInfo{}
	seen := map[uint32]bool{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil || !bytes.Contains(b, []byte("map_id:")) {
			continue
		}
		kv := map[string]string{}
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok {
				kv[k] = strings.TrimSpace(v)
			}
		}
		id64, _ := strconv.ParseUint(kv["map_id"], 10, 32)
		id := uint32(id64)
		if seen[id] {
			continue
		}
		seen[id] = true
		m := mapInfo{ID: id}
		m.Memlock, _ = strconv.ParseInt(kv["memlock"], 10, 64)
		attr := [3]uint32{id, 0, 0}
		fd, err := bpfSys(bpfMapGetFDByID, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
		if err != nil {
			continue
		}
		info := mapInfoBuf // on the heap: the kernel writes through a pointer held as an integer
		clear(info)
		ia := struct {
			fd, len uint32
			info    uint64
		}{uint32(fd), uint32(len(info)), uint64(uintptr(unsafe.Pointer(&info[0])))}
		if _, err := bpfSys(bpfObjGetInfoByFD, unsafe.Pointer(&ia), unsafe.Sizeof(ia)); err != nil {
			unix.Close(int(fd))
			continue
		}
		u32 := func(off int) uint32 { return *(*uint32)(unsafe.Pointer(&info[off])) }
		m.Type, m.KeySize, m.ValueSize, m.MaxEntries, m.Flags = u32(0), u32(8), u32(12), u32(16), u32(20)
		m.Name = string(bytes.TrimRight(info[24:40], "\x00"))
		m.fd = int(fd)
		if !(strings.HasPrefix(m.Name, "nf_") || strings.HasPrefix(m.Name, "hf_") || strings.HasPrefix(m.Name, "df_")) {
			unix.Close(m.fd)
			continue
		}
		if old, ok := byName[m.Name]; ok {
			if old.ID > m.ID {
				unix.Close(m.fd)
				continue
			}
			unix.Close(old.fd)
		}
		byName[m.Name] = m
	}
	out := make([]mapInfo, 0, len(byName))
	for _, m := range byName {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b mapInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// countEntries walks a hash map's keys (-1: not enumerable: socket storage, ring buffers, arrays are full
// by definition). A key deleted under the walk restarts it: it stops at the first key seen twice.
func countEntries(m mapInfo) int64 {
	switch m.Type {
	case 1, 5, 9, 10:
	default:
		return -1
	}
	key := make([]byte, m.KeySize)
	next := make([]byte, m.KeySize)
	seen := map[string]bool{}
	attr := struct {
		fd, pad   uint32
		key, next uint64
	}{fd: uint32(m.fd), next: uint64(uintptr(unsafe.Pointer(&next[0])))}
	for {
		_, err := bpfSys(bpfMapGetNextKey, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				break
			}
			return -1
		}
		k := string(next)
		if seen[k] || int64(len(seen)) > int64(m.MaxEntries) {
			break
		}
		seen[k] = true
		copy(key, next)
		attr.key = uint64(uintptr(unsafe.Pointer(&key[0])))
	}
	return int64(len(seen))
}

// countAll counts the entries of each enumerable map.
func countAll(maps []mapInfo) map[string]int64 {
	out := map[string]int64{}
	for _, m := range maps {
		if c := countEntries(m); c >= 0 {
			out[m.Name] = c
		}
	}
	return out
}

// addStates keeps each map's largest definition seen (a plugin that is off may have its maps shrunk).
func addStates(states map[string]mapInfo, maps []mapInfo) {
	for _, m := range maps {
		if o, ok := states[m.Name]; !ok || m.MaxEntries > o.MaxEntries || (m.MaxEntries == o.MaxEntries && m.Memlock > o.Memlock) {
			states[m.Name] = m
		}
	}
}

// closeMaps closes the descriptors collectorMaps opened (they would keep the maps alive after the collector).
func closeMaps(maps []mapInfo) {
	for _, m := range maps {
		unix.Close(m.fd)
	}
}

func entries(e map[string]int64, name string) string {
	if v, ok := e[name]; ok {
		return strconv.FormatInt(v, 10)
	}
	return "–"
}

// kernelStructSize is a kernel struct's size from the running kernel's BTF (0: unknown).
func kernelStructSize(name string) int {
	out, err := exec.Command("bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "raw").Output()
	if err != nil {
		return 0
	}
	re := regexp.MustCompile(`(?m)^\[\d+\] STRUCT '` + regexp.QuoteMeta(name) + `' size=(\d+)`)
	if m := re.FindSubmatch(out); m != nil {
		n, _ := strconv.Atoi(string(m[1]))
		return n
	}
	return 0
}

func possibleCPUs() int {
	b, err := os.ReadFile("/sys/devices/system/cpu/possible")
	if err != nil {
		return 1
	}
	n := 0
	for _, r := range strings.Split(strings.TrimSpace(string(b)), ",") {
		lo, hi, ok := strings.Cut(r, "-")
		a, _ := strconv.Atoi(lo)
		z := a
		if ok {
			z, _ = strconv.Atoi(hi)
		}
		n += z - a + 1
	}
	return n
}

// mapRole is what one entry of each plugin map stands for.
var mapRole = map[string]string{
	"nf_socks":          "a TCP socket from connect/accept to close (both ends of a loopback connection)",
	"nf_udp_socks":      "a UDP socket whose owner is known (LRU: ages out)",
	"nf_want_owner":     "the collector asks the socket tracepoints for TCP owners (one flag)",
	"nf_udp":            "a UDP (socket, peer) pair's counters, one copy per CPU",
	"nf_listen":         "a listening port found at start",
	"nf_stats":          "a counter",
	"nf_events":         "ring buffer (bytes)",
	"nf_live_out":       "ring buffer (bytes)",
	"hf_verdict":        "a TCP socket that carried payload: HTTP or not (socket storage: made on use, freed with the socket)",
	"hf_conns":          "a plain-HTTP socket's parser state (socket storage: made on use, freed with the socket)",
	"hf_tls":            "an OpenSSL session's parser state (LRU)",
	"hf_calls":          "a thread inside an SSL call (LRU)",
	"hf_scratch":        "per-CPU scratch",
	"hf_thread_scratch": "a thread's TLS parse scratch (LRU)",
	"hf_thread_h2":      "a thread's HTTP/2 record being filled (LRU)",
	"hf_zero":           "a zeroed template",
	"hf_stats":          "a counter, per CPU",
	"hf_events":         "ring buffer (bytes)",
	"df_events":         "ring buffer (bytes)",
	"df_stats":          "a counter, per CPU",
	"df_scratch":        "per-CPU scratch",
}

func pluginOf(name string) string {
	switch {
	case strings.HasPrefix(name, "nf_"):
		return "netflow"
	case strings.HasPrefix(name, "hf_"):
		return "httpflow"
	default:
		return "dnsflow"
	}
}

// layout says how many client processes and nginx workers each N ran with.
func layout(conns []int, rs []scaleResult) string {
	var parts []string
	for _, n := range conns {
		if i := slices.IndexFunc(rs, func(r scaleResult) bool { return r.Conns == n }); i >= 0 {
			parts = append(parts, fmt.Sprintf("%d connections: %d client processes, %d nginx workers", n, rs[i].ClientProcs, rs[i].NginxWorkers))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, "; ") + ")"
}

// scaleReport renders the scale run as markdown.
func scaleReport(conns []int, cfgs []string, rs []scaleResult, ch *churnResult, states map[string]mapInfo, noise float64, took time.Duration) string {
	var b strings.Builder
	discarded := 0
	for _, r := range rs {
		if r.Discarded {
			discarded++
		}
	}
	fmt.Fprintf(&b, "### bench -scale, %s, %d keep-alive runs in %s (all parts); %d discarded (other processes above %.2f cores)\n\n",
		time.Now().UTC().Format("2006-01-02 15:04"), len(rs), took.Round(time.Second), discarded, noise)
	fmt.Fprintf(&b, "Keep-alive connections: N connections to nginx (CPU 0) opened first (from 127.x.0.y, at most %d per source address), "+
		"then requests round-robin over them, %d in flight, by the bench's Go generator on CPU 1 (with the collector), for %v per run; "+
		"configs interleaved in random order. One process holds at most %d connections (RLIMIT_NOFILE's hard limit here, less a tenth): "+
		"the generator is ceil(N/%[4]d) child processes of the bench (their CPU counted as the generator's, the in-flight requests split "+
		"among them) and nginx has as many workers (`listen … reuseport`)%s. "+
		"Medians; peak RSS, events lost and drops: the most of any run. nf_socks: entries at the end "+
		"of the load (max %d, or netflow_max_sockets = 2N + 8192 when that is more); untracked: netflow's map-full drops "+
		"(sockets nf_socks had no room for, host-wide).\n\n",
		connsPerSource, scaleWorkers, *scaleDur, perProcess(), layout(conns, rs), defaultMaxSockets)
	fmt.Fprintln(&b, "| connections | config | opened in s | rate/s median | min–max | vs base | collector % of a core | collector CPU s per 10k req | peak RSS MB | nf_socks entries | map-full drops | events lost | runs |")
	fmt.Fprintln(&b, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	keptOf := func(n int, cfg string) ([]scaleResult, int) {
		var out []scaleResult
		dropped := 0
		for _, r := range rs {
			if r.Conns == n && r.Config == cfg {
				if r.Discarded {
					dropped++
				} else {
					out = append(out, r)
				}
			}
		}
		return out, dropped
	}
	vals := func(xs []scaleResult, f func(scaleResult) float64) []float64 {
		out := make([]float64, len(xs))
		for i, x := range xs {
			out[i] = f(x)
		}
		return out
	}
	maxOr := func(xs []float64) float64 {
		if len(xs) == 0 {
			return 0
		}
		return slices.Max(xs)
	}
	rssAt := map[string]map[int]float64{}
	socksAt := map[string]map[int]float64{}
	for _, n := range conns {
		base, _ := keptOf(n, "base")
		baseRate := median(vals(base, func(r scaleResult) float64 { return r.Load.Rate }))
		for _, cfg := range cfgs {
			xs, dropped := keptOf(n, cfg)
			rates := vals(xs, func(r scaleResult) float64 { return r.Load.Rate })
			rate := median(rates)
			vs, core, per10k, rss, socks, full, lost := "–", "–", "–", "–", "–", "–", "–"
			if cfg != "base" && len(xs) > 0 {
				if baseRate > 0 {
					vs = fmt.Sprintf("%.3f", rate/baseRate)
				}
				core = fmt.Sprintf("%.1f", median(vals(xs, func(r scaleResult) float64 { return r.CollectorCPU / r.Seconds * 100 })))
				per10k = fmt.Sprintf("%.4f", median(vals(xs, func(r scaleResult) float64 {
					if r.Load.Requests == 0 {
						return 0
					}
					return r.CollectorCPU / float64(r.Load.Requests) * 1e4
				})))
				peak := maxOr(vals(xs, func(r scaleResult) float64 { return r.CollectorRSSMB }))
				rss = fmt.Sprintf("%.1f", peak)
				ns := median(vals(xs, func(r scaleResult) float64 { return float64(r.Entries["nf_socks"]) }))
				socks = fmt.Sprintf("%.0f", ns)
				if rssAt[cfg] == nil {
					rssAt[cfg], socksAt[cfg] = map[int]float64{}, map[int]float64{}
				}
				rssAt[cfg][n], socksAt[cfg][n] = peak, ns
				full = fmt.Sprintf("%.0f", maxOr(vals(xs, func(r scaleResult) float64 { return float64(r.MapFull) })))
				lost = fmt.Sprintf("%.0f", maxOr(vals(xs, func(r scaleResult) float64 { return float64(r.Lost) })))
			}
			open := median(vals(xs, func(r scaleResult) float64 { return r.OpenSeconds }))
			fmt.Fprintf(&b, "| %d | %s | %.1f | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %d (+%d discarded) |\n",
				n, cfg, open, rate, spread(rates), vs, core, per10k, rss, socks, full, lost, len(xs), dropped)
		}
	}
	fmt.Fprintln(&b)
	fmt.Fprintln(&b, "Fidelity of the keep-alive runs (ground truth: nginx's stub_status and access log; every connection of a run opens "+
		"after the collector starts and closes before it stops):")
	fmt.Fprintln(&b)
	for _, n := range conns {
		for _, cfg := range measured {
			xs, _ := keptOf(n, cfg)
			if len(xs) == 0 {
				continue
			}
			runs := make([]run, len(xs))
			for i, x := range xs {
				runs[i] = x.run
			}
			for _, t := range tallyChecks(runs) {
				var worst string
				if r := t.worst; r != nil {
					c := t.worstCheck
					worst = fmt.Sprintf("; e.g. run %d: reported %d, truth %d (%.1f%%; map-full drops %d, events lost %d)",
						r.Rep, c.Got, c.Want, 100*float64(c.Got)/float64(max(c.Want, 1)), r.MapFull, r.Lost)
				}
				name, exact, total := t.name, t.exact, t.total
				fmt.Fprintf(&b, "- %d connections, %s: %s: exact in %d of %d runs%s\n", n, cfg, name, exact, total, worst)
			}
		}
	}

	if ch != nil {
		fmt.Fprintln(&b)
		fmt.Fprintf(&b, "New connections: %.0f/s asked (`Connection: close`, %d workers, open loop), config all, for %.0f s: %.0f/s completed "+
			"(%d requests, %d errors, %d sends the generator could not start on time); collector %.1f%% of a core. Sample every 10 s "+
			"(entries counted by walking each hash map's keys; cumulative counters from the collector's `datakit_ebpf` points):\n\n",
			ch.Rate, scaleWorkers, ch.Seconds, ch.Load.Rate, ch.Load.Requests, ch.Load.Errors, ch.Load.Missed, ch.CollectorCPU/ch.Seconds*100)
		fmt.Fprintln(&b, "| t s | accepted | collector RSS MB | peak RSS MB | nf_socks | nf_udp_socks | nf_udp | hf_tls | hf_calls | untracked (map full) | stale deleted | httpflow map-full | events lost |")
		fmt.Fprintln(&b, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
		for _, s := range ch.Samples {
			fmt.Fprintf(&b, "| %.0f | %d | %.1f | %.1f | %s | %s | %s | %s | %s | %d | %d | %d | %d |\n", s.T, s.Accepted, s.RSSMB, s.PeakRSSMB,
				entries(s.Entries, "nf_socks"), entries(s.Entries, "nf_udp_socks"), entries(s.Entries, "nf_udp"),
				entries(s.Entries, "hf_tls"), entries(s.Entries, "hf_calls"), s.Untracked, s.Stale, s.HTTPFull, s.Lost)
		}
		fmt.Fprintln(&b)
		fmt.Fprintf(&b, "At the end (the collector's last point): untracked %d, stale %d, httpflow map-full %d, events lost %d. Checks:\n\n",
			ch.Untracked, ch.Stale, ch.HTTPFull, ch.Lost)
		exact := 0
		for _, c := range ch.Checks {
			v := "exact"
			if c.Got == c.Want {
				exact++
			} else {
				v = fmt.Sprintf("NOT exact: reported %d, truth %d", c.Got, c.Want)
			}
			fmt.Fprintf(&b, "- %s: %d, %s\n", c.What, c.Want, v)
		}
		fmt.Fprintf(&b, "\n%d of %d exact.\n", exact, len(ch.Checks))
	}

	fmt.Fprintln(&b)
	cpus := possibleCPUs()
	elem, storage := kernelStructSize("bpf_local_storage_elem"), kernelStructSize("bpf_local_storage")
	fmt.Fprintf(&b, "State in the kernel, per plugin (the collector's maps as loaded here; memlock: what the kernel accounts for the map, "+
		"`bpftool map show`'s memlock; per entry: memlock / max_entries, for a preallocated hash all of it paid at load; %d possible CPUs):\n\n", cpus)
	fmt.Fprintln(&b, "| plugin | map | type | key B | value B | max entries | memlock B | memlock per entry B | one entry is |")
	fmt.Fprintln(&b, "|---|---|---|---:|---:|---:|---:|---:|---|")
	var names []string
	for n := range states {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, c string) int {
		if pa, pc := pluginOf(a), pluginOf(c); pa != pc {
			return strings.Compare(pc, pa) // netflow, httpflow, dnsflow
		}
		return strings.Compare(a, c)
	})
	for _, n := range names {
		m := states[n]
		val := fmt.Sprint(m.ValueSize)
		if m.perCPU() {
			val = fmt.Sprintf("%d × %d CPUs", m.ValueSize, cpus)
		}
		per := "–"
		if m.MaxEntries > 0 && m.Type != 27 && m.Type != 24 {
			per = fmt.Sprintf("%.0f", float64(m.Memlock)/float64(m.MaxEntries))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %d | %s | %d | %d | %s | %s |\n", pluginOf(n), n, m.typeName(), m.KeySize, val, m.MaxEntries, m.Memlock, per, mapRole[n])
	}
	fmt.Fprintln(&b)
	if m, ok := states["nf_socks"]; ok {
		fmt.Fprintf(&b, "- netflow, per TCP connection: one nf_socks entry per socket it tracks, %.0f B each (key %d + value %d + the hash's element "+
			"header and bucket share); a loopback connection has two sockets. The map is preallocated: %.1f MiB for %d entries whatever the load, "+
			"and a socket beyond %d is not tracked (counted as untracked, never evicting a live one).\n",
			float64(m.Memlock)/float64(m.MaxEntries), m.KeySize, m.ValueSize, float64(m.Memlock)/(1<<20), m.MaxEntries, m.MaxEntries)
	}
	v, okv := states["hf_verdict"]
	c, okc := states["hf_conns"]
	if okv && okc {
		hdr := "the kernel's element header"
		if elem > 0 {
			hdr = fmt.Sprintf("a %d B bpf_local_storage_elem header (this kernel's BTF)", elem)
		}
		per := ""
		if elem > 0 && storage > 0 {
			per = fmt.Sprintf(": about %d B per plain-HTTP socket before the allocator's rounding, %d B per other TCP socket that carried payload",
				int(v.ValueSize)+int(c.ValueSize)+2*elem+storage, int(v.ValueSize)+elem+storage)
		}
		fmt.Fprintf(&b, "- httpflow, per TCP socket: socket storage, made when a socket first carries payload and freed with it (no max, no "+
			"map-full; memlock above counts only the map's buckets, not the elements): hf_verdict %d B and, for plain HTTP, hf_conns %d B, each with %s, "+
			"plus one bpf_local_storage (%d B) per socket shared by its storages%s. OpenSSL sessions: one hf_tls entry each (LRU, %d at most).\n",
			v.ValueSize, c.ValueSize, hdr, storage, per, states["hf_tls"].MaxEntries)
	}
	// The collector's own memory per tracked connection: RSS growth between the two largest N, per nf_socks entry.
	for _, cfg := range []string{"netflow", "all"} {
		if len(conns) < 2 || rssAt[cfg] == nil {
			continue
		}
		ns := slices.Sorted(func(yield func(int) bool) {
			for n := range rssAt[cfg] {
				if !yield(n) {
					return
				}
			}
		})
		if len(ns) < 2 {
			continue
		}
		lo, hi := ns[len(ns)-2], ns[len(ns)-1]
		if d := socksAt[cfg][hi] - socksAt[cfg][lo]; d > 0 {
			fmt.Fprintf(&b, "- collector (user space), config %s: peak RSS %.1f MB at %d connections, %.1f MB at %d: %.0f B per more tracked socket (%.0f more in nf_socks).\n",
				cfg, rssAt[cfg][lo], lo, rssAt[cfg][hi], hi, (rssAt[cfg][hi]-rssAt[cfg][lo])*(1<<20)/d, d)
		}
	}
	return b.String()
}
