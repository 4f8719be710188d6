// Command bench measures what the collector costs real workloads on this host and how true its numbers
// are: nginx HTTP (keep-alive and connection churn), HTTPS (nginx's OpenSSL, and Go's net/http on
// crypto/tls), DNS against dnsmasq, and an interactive-bash exec storm, each without the collector (base),
// with every hook of "all" attached to programs that return at once (floor), with the network plugin alone:
// netflow and dnsflow (netflow), with netflow, dnsflow, httpflow, httpflow-tls and bash (all), and with
// ebpf-process alone (process), interleaved in random order.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// process is ebpf-process alone (off by default: this is its cost).
var configs = []string{"base", "floor", "netflow", "all", "process"}

// measured are the configurations that collect data: their footprint and fidelity are reported.
var measured = []string{"netflow", "all"}

// workload is one W of the issue: how to load it, and what ground truth the collector must match.
type workload struct {
	ID, Name string
	// saturate runs the load as fast as it goes; clientCPU is a separate load generator's CPU seconds.
	saturate func(d time.Duration) (r loadResult, clientCPU float64, err error)
	// fixed runs the load at rate per second (nil: saturation only).
	fixed     func(rate float64, d time.Duration) loadResult
	serverPID func() int
	// checks compares what the collector stored with the run's ground truth.
	checks func(mode string, r loadResult, c collected) []check
	// before is called right before the load (ground-truth bookkeeping); after, if set, right after it
	// and before the collector stops: it waits until the server has finished with the run.
	before, after func()
	// goTLS: the server is a Go program on crypto/tls, which configs floor and all must have probed.
	goTLS bool
}

// collected is what the collector stored during a measured run: flows (netflow) and dns (dnsflow) in
// every measured configuration; http (httpflow) and bash (category logging) when the configuration ran
// them (all), else nil.
type collected struct {
	flows, dns stored
	http, bash *stored
}

// check is one fidelity comparison.
type check struct {
	What      string
	Want, Got int64
}

// run is one measured run.
type run struct {
	Workload, Mode, Config string
	Rep                    int
	Seconds                float64
	Load                   loadResult
	ServerCPU              float64 // seconds
	OtherCores             float64 // CPU other processes used during the run, in cores
	Discarded              bool
	CollectorCPU           float64 // seconds (collector process only; in a peer's run, the peer's: bench/peers.go)
	CollectorRSSMB         float64
	Seen                   int64 `json:",omitempty"` // a peer's count of what it saw (peer.Saw)
	Points, Bytes          int64 // collector points stored during the run and their line-protocol bytes
	Intervals              float64
	// Ring-buffer records lost, map inserts failed (or in-flight entries evicted): netflow's and dnsflow's,
	// plus httpflow's and bash's in "all".
	Lost, MapFull int64
	// httpflow (config all): exchanges stored (both sides, every port) and the collector's counters.
	HTTPExchanges, TLSHits, TLSCalls, Desyncs, Unanswered int64
	// dnsflow (netflow and all): queries stored (the count of every point, every process) and the
	// collector's timeouts and malformed messages; bash (all): lines stored (every shell).
	DNSQueries, DNSTimeouts, DNSMalformed, BashLines int64
	Checks                                           []check `json:",omitempty"`
}

func main() {
	quick := flag.Bool("quick", false, "about 3 minutes: 3 repetitions of 2 s")
	reps := flag.Int("reps", 5, "repetitions of each (workload, mode, configuration)")
	dur := flag.Duration("duration", 5*time.Second, "length of each saturation run (fixed-rate runs: 4/5 of it)")
	noise := flag.Float64("max-other-cores", 0.25, "discard a run when other processes used more CPU than this")
	out := flag.String("out", "bench-results", "directory for the JSON and markdown results")
	only := flag.String("workloads", "W1,W2,W3,W4,W5,W6", "comma-separated workloads to run")
	hold := flag.Duration("outage", 0, "instead: one saturated run of each workload (config all) with the agent hung this long in the middle; fails unless every check is exact and nothing is dropped")
	flag.Parse()
	if *quick {
		*reps, *dur = 3, 2*time.Second
	}
	if os.Getenv("DKEBPF_BENCH_PINNED") != "1" && ncpu() < 2 {
		fatalf("needs 2 CPUs (server on CPU0, load and collector on CPU1)")
	}
	pinSelf()

	root, err := filepath.Abs(".")
	if err != nil {
		fatalf("%v", err)
	}
	for _, b := range []string{"datakit", "externals/datakit-ebpf"} {
		if _, err := os.Stat(filepath.Join(root, b)); err != nil {
			fatalf("%s missing: run `make build` first", b)
		}
	}
	if *scaleRun { // bench/scale.go: its own nginx, its own flags
		if !runScale(root, *out, *quick, *noise) {
			os.Exit(1)
		}
		return
	}
	work, err := os.MkdirTemp("", "bench-")
	if err != nil {
		fatalf("%v", err)
	}
	defer os.RemoveAll(work)

	ws, stop, err := setupWorkloads(root, work, wanted(*only))
	if err != nil {
		fatalf("%v", err)
	}
	defer stop()

	if *hold > 0 {
		if !runOutages(root, ws, *hold, *out) {
			os.Exit(1)
		}
		return
	}
	peerRuns := loadPeers(ws, work) // by workload: the peers that load here, interleaved with ours

	started := time.Now()
	// Fixed rates: half of what the Go generator itself reaches at saturation without the collector,
	// so the generator is never the bottleneck of a latency run.
	rates := map[string]float64{}
	for _, w := range ws {
		if w.fixed != nil {
			r := w.fixed(1e6, 2*time.Second) // as fast as it goes
			rates[w.ID] = max(r.Rate/2, 100)
			fmt.Printf("%s: fixed-rate runs at %.0f/s (half of the generator's %.0f/s)\n", w.ID, rates[w.ID], r.Rate)
		}
	}

	var runs []run
	total := 0
	for _, w := range ws {
		total += (len(configs) + len(peerRuns[w.ID])) * *reps
		if w.fixed != nil {
			total += (len(configs) + len(peerRuns[w.ID])) * *reps
		}
	}
	for rep := 1; rep <= *reps; rep++ {
		for _, w := range ws {
			for _, mode := range []string{"saturation", "half"} {
				if mode == "half" && w.fixed == nil {
					continue
				}
				order := append(slices.Clone(configs), peerRuns[w.ID]...)
				rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
				for _, cfg := range order {
					d := *dur
					if mode == "half" {
						d = *dur * 4 / 5
					}
					r, err := measure(root, w, mode, cfg, rates[w.ID], d)
					if err != nil {
						fatalf("%s %s %s: %v", w.ID, mode, cfg, err)
					}
					r.Rep = rep
					r.Discarded = r.OtherCores > *noise
					runs = append(runs, r)
					fmt.Printf("[%3d/%d] %s %-10s %-7s %10.0f/s other=%.2f cores%s\n", len(runs), total, w.ID, mode, cfg,
						r.Load.Rate, r.OtherCores, map[bool]string{true: " DISCARDED", false: ""}[r.Discarded])
				}
			}
		}
	}

	rep := report(ws, runs, *noise, time.Since(started))
	fmt.Println()
	fmt.Print(rep)
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fatalf("%v", err)
	}
	stamp := time.Now().UTC().Format("20060102-150405")
	js, _ := json.MarshalIndent(map[string]any{"date": time.Now().UTC(), "rates": rates, "runs": runs}, "", "  ")
	os.WriteFile(filepath.Join(*out, "bench-"+stamp+".json"), js, 0o644)
	os.WriteFile(filepath.Join(*out, "bench-"+stamp+".md"), []byte(rep), 0o644)
	fmt.Printf("\nresults: %s/bench-%s.{json,md}\n", *out, stamp)
}

// measure runs one (workload, mode, configuration) and reads back what the collector stored.
func measure(root string, w workload, mode, cfg string, rate float64, d time.Duration) (run, error) {
	r, _, err := measureWith(root, w, mode, cfg, rate, d, nil)
	return r, err
}

// measureWith is measure, with the agent hung during the load when o is set; it also returns the
// collector's health points.
func measureWith(root string, w workload, mode, cfg string, rate float64, d time.Duration, o *outage) (run, stored, error) {
	r := run{Workload: w.ID, Mode: mode, Config: cfg}
	var a *agent
	var pr *peerRun
	if p, ok := peerNamed(cfg); ok {
		var err error
		if pr, err = p.start(); err != nil {
			return r, stored{}, err
		}
		defer pr.stop() // if the load fails
	} else if cfg != "base" {
		var err error
		if a, err = startAgent(root, cfg); err != nil {
			return r, stored{}, err
		}
		defer a.cleanup()
	}
	w.before()
	self, server := os.Getpid(), w.serverPID()
	busy0, self0, server0 := cpuBusy(), procCPU(self, false), treeCPU(server)
	agent0, coll0 := 0.0, 0.0
	if a != nil {
		agent0, coll0 = treeCPU(a.cmd.Process.Pid), procCPU(a.collectorPID, false)
	}
	if pr != nil {
		coll0 = procCPU(pr.pid(), false)
	}
	if o != nil {
		o.begin(a)
	}
	start := time.Now()
	var clientCPU float64
	var err error
	if mode == "half" {
		r.Load = w.fixed(rate, d)
	} else if r.Load, clientCPU, err = w.saturate(d); err != nil {
		return r, stored{}, err
	}
	r.Seconds = time.Since(start).Seconds()
	busy := cpuBusy() - busy0
	ours := procCPU(self, false) - self0 + treeCPU(server) - server0 + clientCPU
	r.ServerCPU = treeCPU(server) - server0
	if a != nil {
		ours += treeCPU(a.cmd.Process.Pid) - agent0
		r.CollectorCPU = procCPU(a.collectorPID, false) - coll0
		r.CollectorRSSMB = peakRSS(a.collectorPID)
	}
	if pr != nil {
		r.CollectorCPU, r.CollectorRSSMB = procCPU(pr.pid(), false)-coll0, peakRSS(pr.pid())
		ours += r.CollectorCPU
		if w.after != nil {
			w.after() // the server ends the run's connections before the peer stops
		}
		r.Seen, err = pr.stop()
	}
	r.OtherCores = max(0, busy-ours) / r.Seconds
	if a == nil {
		return r, stored{}, err // base, or a peer and its stop's error
	}
	if w.after != nil {
		w.after()
	}
	if o != nil {
		if err := o.finish(); err != nil {
			return r, stored{}, err
		}
	}
	a.stop()
	r.Intervals = time.Since(a.started).Seconds() / benchInterval.Seconds()
	flows, err := a.query("netflow")
	if err != nil {
		return r, stored{}, err
	}
	self1, err := a.query("datakit_ebpf")
	if err != nil {
		return r, stored{}, err
	}
	// The configuration must be what ran: httpflow's and bash's counters exist only when the collector ran
	// them (floor and all), dnsflow's with ebpf-net, process's only in "process"; "all" and "floor" must
	// have found a libssl and a bash to probe.
	full := cfg == "floor" || cfg == "all"
	for _, pl := range []struct {
		prefix string
		want   bool
	}{{"httpflow_", full}, {"bash_", full}, {"dnsflow_", cfg != "process"}, {"process_", cfg == "process"}} {
		if got := self1.hasField(pl.prefix); got != pl.want {
			return r, stored{}, fmt.Errorf("config %s: collector has %s* self-metrics: %v, want %v", cfg, pl.prefix, got, pl.want)
		}
	}
	if full && self1.last("httpflow_tls_libs_probed") == 0 {
		return r, stored{}, fmt.Errorf("config %s: httpflow-tls probed no libssl", cfg)
	}
	if full && w.goTLS && self1.last("httpflow_tls_go_probed") == 0 {
		return r, stored{}, fmt.Errorf("config %s: httpflow-tls probed no Go program", cfg)
	}
	if full && self1.last("bash_binaries_probed") == 0 {
		return r, stored{}, fmt.Errorf("config %s: bash probed no bash binary", cfg)
	}
	dns, err := a.query("dnsflow")
	if err != nil {
		return r, stored{}, err
	}
	r.Points = int64(len(flows.points) + len(dns.points) + len(self1.points))
	r.Bytes = flows.bytes + dns.bytes + self1.bytes
	r.Lost = self1.last("netflow_events_lost") + self1.last("dnsflow_events_lost")
	r.MapFull = self1.last("netflow_map_full_drops") + self1.last("dnsflow_map_full_drops")
	r.DNSQueries = dns.sum("count", nil)
	r.DNSTimeouts, r.DNSMalformed = self1.last("dnsflow_timeouts"), self1.last("dnsflow_malformed")
	c := collected{flows: flows, dns: dns}
	if cfg == "all" {
		h, err := a.query("httpflow")
		if err != nil {
			return r, stored{}, err
		}
		c.http = &h
		r.Points, r.Bytes = r.Points+int64(len(h.points)), r.Bytes+h.bytes
		r.Lost += self1.last("httpflow_events_lost")
		r.MapFull += self1.last("httpflow_map_full_drops")
		r.HTTPExchanges = h.sum("count", nil)
		r.TLSHits, r.TLSCalls = self1.last("httpflow_tls_uprobe_hits"), self1.last("httpflow_tls_calls")
		r.Desyncs, r.Unanswered = self1.last("httpflow_desyncs"), self1.last("httpflow_unanswered")

		b, err := a.queryIn("bash", "logging")
		if err != nil {
			return r, stored{}, err
		}
		c.bash = &b
		r.Points, r.Bytes = r.Points+int64(len(b.points)), r.Bytes+b.bytes
		r.Lost += self1.last("bash_events_lost") + self1.last("bash_dropped_lines") // lines lost in the ring or to a full buffer
		r.MapFull += self1.last("bash_map_full_drops")
		r.BashLines = int64(len(b.points))
	}
	if slices.Contains(measured, cfg) {
		r.Checks = w.checks(mode, r.Load, c)
	}
	return r, self1, nil
}

func wanted(list string) map[string]bool {
	m := map[string]bool{}
	for _, w := range splitComma(list) {
		m[w] = true
	}
	return m
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			if i > start {
				out = append(out, s[start:i])
			}
			start = i + 1
		}
	}
	return out
}

// httpServer is the server of an HTTP workload and its ground truth.
type httpServer struct {
	name     string // in the checks' names
	accepted string // where its count of accepted connections comes from
	port     string // its port, httpflow's server_port
	pid      func() int
	// begin starts a run's truth: truth returns, since begin, the requests the server answered (its log)
	// and the connections it accepted.
	begin  func()
	truth  func() (accessLog, int64)
	settle func(time.Duration) error
}

// setupWorkloads starts the servers and describes W1–W6; root is the repository (W6 builds its server there).
func setupWorkloads(root, dir string, want map[string]bool) ([]workload, func(), error) {
	var stops []func()
	stopAll := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	ng, err := startNginx(dir)
	if err != nil {
		return nil, nil, err
	}
	stops = append(stops, ng.stop)
	// Ground truth of a run: the access log lines and nginx's accepted-connections counter since before.
	var acceptedBefore int64
	ngBefore := func() {
		ng.drainLog()
		acceptedBefore, _ = ng.accepted()
	}
	ngTruth := func() (accessLog, int64) {
		after, err := ng.accepted()
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: nginx stub_status:", err)
		}
		return ng.drainLog(), after - acceptedBefore
	}
	nginxSide := map[string]string{"direction": "incoming", "src_port": "18080", "transport": "tcp"}
	nginxTLS := map[string]string{"direction": "incoming", "src_port": "18443", "transport": "tcp"}
	nginxOn := func(port string) httpServer {
		return httpServer{name: "nginx", accepted: "stub_status", port: port, pid: ng.pid, begin: ngBefore, truth: ngTruth, settle: ng.settle}
	}

	// exchanges compares httpflow's points on one side of port with the access log. Its window is the
	// collector's: the run's connections are its own (opened after before(), all closed in after(), so every
	// request is answered and logged before the collector stops and makes its last flush).
	exchanges := func(t accessLog, st stored, srv httpServer, side, of string) []check {
		m := map[string]string{"direction": "incoming", "server_port": srv.port}
		read, written := "$request_length", "$bytes_sent"
		readN, writtenN := t.RequestBytes, t.ResponseBytes
		if side == "client" {
			m["direction"] = "outgoing"
			read, written, readN, writtenN = written, read, writtenN, readN
		}
		p := side + " (" + m["direction"] + "): httpflow "
		return []check{
			{p + "count (access log requests" + of + ")", t.Requests, st.sum("count", m)},
			{p + "count with status_code 200 (every request" + of + ": " + srv.name + " answers 200)", t.Requests, st.sumIf("count", m, "status_code", 200)},
			{p + "bytes_read (access log " + read + of + ")", readN, st.sum("bytes_read", m)},
			{p + "bytes_written (access log " + written + of + ")", writtenN, st.sum("bytes_written", m)},
		}
	}

	// httpWorkload: flowChecks are netflow's (every measured config), exchanges httpflow's (config all);
	// tls says the client side is seen in OpenSSL's calls, not in TCP segments.
	httpWorkload := func(id, name, url string, srv httpServer, closeConn, tls bool, flowChecks func(accessLog, int64, stored) []check) workload {
		const conns = 32
		get, idle := httpGetter(url, !closeConn, conns)
		return workload{ID: id, Name: name, serverPID: srv.pid,
			before: func() { idle(); srv.begin() }, // every run opens its own connections
			after: func() {
				if err := srv.settle(5 * time.Second); err != nil {
					fmt.Fprintf(os.Stderr, "bench: %s: %v\n", id, err)
				}
			},
			saturate: func(d time.Duration) (loadResult, float64, error) { return runWrk(url, conns, d, closeConn) },
			fixed: func(rate float64, d time.Duration) loadResult {
				r := fixedRate(rate, d, conns, get)
				idle() // the run's connections end with it, as wrk's do
				return r
			},
			checks: func(mode string, r loadResult, c collected) []check {
				log, accepted := srv.truth()
				cs := flowChecks(log, accepted, c.flows)
				if c.http == nil {
					return cs
				}
				http := c.http
				cs = append(cs, exchanges(log, *http, srv, srv.name, "")...)
				switch {
				case !tls:
					// Plain HTTP: the client's kernel receives every response nginx sent, read or not.
					cs = append(cs, exchanges(log, *http, srv, "client", "")...)
				case mode == "saturation":
					// wrk stops at its deadline without reading the answers to its last requests (at most one
					// per connection). nginx sent them, but a TLS client's exchange ends in its SSL_read, which
					// never comes: the truth is the requests wrk completed (the number it reports), each
					// weighing what every request of the run weighs in the access log.
					cs = append(cs, exchanges(log.of(r.Requests), *http, srv, "client", ", of those wrk completed")...)
				default:
					// half: the client is the bench's Go generator, seen through its crypto/tls; its runs end
					// with every answer read (idle() closes the connections after the last).
					cs = append(cs, exchanges(log, *http, srv, "client", "")...)
				}
				return cs
			},
		}
	}
	var ws []workload
	accepts := func(srv httpServer, accepted int64, st stored, side map[string]string) []check {
		return []check{
			{srv.name + ": connections accepted (" + srv.accepted + ")", accepted, st.sum("tcp_established", side)},
			{srv.name + ": connections closed (all accepted ones close before the collector stops)", accepted, st.sum("tcp_closed", side)},
		}
	}
	// Plain HTTP: connections, and bytes each way as nginx logs them.
	plainHTTP := func(t accessLog, accepted int64, st stored) []check {
		return append(accepts(nginxOn("18080"), accepted, st, nginxSide),
			check{"nginx: bytes read (access log $request_length)", t.RequestBytes, st.sum("bytes_read", nginxSide)},
			check{"nginx: bytes written (access log $bytes_sent)", t.ResponseBytes, st.sum("bytes_written", nginxSide)})
	}
	if want["W1"] {
		ws = append(ws, httpWorkload("W1", "nginx HTTP/1.1 keep-alive", "http://"+httpAddr+"/api", nginxOn("18080"), false, false, plainHTTP))
	}
	if want["W2"] {
		ws = append(ws, httpWorkload("W2", "nginx HTTP/1.1 Connection: close", "http://"+httpAddr+"/api", nginxOn("18080"), true, false, plainHTTP))
	}
	if want["W3"] {
		ws = append(ws, httpWorkload("W3", "nginx HTTPS keep-alive (OpenSSL)", "https://"+httpsAddr+"/api", nginxOn("18443"), false, true,
			func(t accessLog, accepted int64, st stored) []check {
				// TLS records are larger than the logged plaintext: netflow's bytes are not comparable here.
				return accepts(nginxOn("18443"), accepted, st, nginxTLS)
			}))
	}
	if want["W6"] {
		// W3's load on Go's net/http over crypto/tls (bench/gotlsserver): wrk (OpenSSL) at saturation, the
		// bench's Go client (crypto/tls) at half rate, the server's own account of each exchange the truth.
		// The collector probes every Go program running when it starts, the server included, before it
		// says it runs (startAgent waits for that); the exact counts on the server's side say it did.
		g, err := startGoTLS(root, dir)
		if err != nil {
			stopAll()
			return nil, nil, err
		}
		stops = append(stops, g.stop)
		var acceptedBefore int64
		_, port, _ := net.SplitHostPort(goTLSAddr)
		srv := httpServer{name: "Go server", accepted: "its listener's count", port: port, pid: g.pid, settle: g.settle,
			begin: func() {
				if _, err := g.drain(); err != nil {
					fmt.Fprintln(os.Stderr, "bench: W6:", err)
				}
				acceptedBefore, _, _ = g.status()
			},
			truth: func() (accessLog, int64) {
				log, err := g.drain()
				if err != nil {
					fmt.Fprintln(os.Stderr, "bench: W6:", err)
				}
				after, _, err := g.status()
				if err != nil {
					fmt.Fprintln(os.Stderr, "bench: W6:", err)
				}
				return log, after - acceptedBefore
			}}
		side := map[string]string{"direction": "incoming", "src_port": port, "transport": "tcp"}
		w := httpWorkload("W6", "Go net/http HTTPS keep-alive (crypto/tls)", "https://"+goTLSAddr+"/api", srv, false, true,
			func(t accessLog, accepted int64, st stored) []check {
				// As W3: TLS records are larger than the plaintext the server counts.
				return accepts(srv, accepted, st, side)
			})
		w.goTLS = true
		ws = append(ws, w)
	}
	if want["W4"] {
		dm, err := startDnsmasq()
		if err != nil {
			stopAll()
			return nil, nil, err
		}
		stops = append(stops, dm.stop)
		const workers = 8
		dc, err := newDNSClient(workers)
		if err != nil {
			stopAll()
			return nil, nil, err
		}
		stops = append(stops, dc.close)
		pid := strconv.Itoa(os.Getpid())
		server := map[string]string{"direction": "incoming", "src_ip": dnsIP, "src_port": "53", "transport": "udp"}
		client := map[string]string{"direction": "outgoing", "dst_port": "53", "transport": "udp", "pid": pid}
		// dnsflow's points of the bench's queries: its name without the trailing dot, type A, answered NOERROR.
		qname := strings.TrimSuffix(dnsName, ".")
		asked := map[string]string{"pid": pid, "qname": qname, "qtype": "A", "transport": "udp", "server_port": "53"}
		noError := map[string]string{"pid": pid, "qname": qname, "qtype": "A", "transport": "udp", "server_port": "53", "rcode_name": "NOERROR"}
		ws = append(ws, workload{ID: "W4", Name: "DNS over UDP against dnsmasq", serverPID: dm.pid,
			// Late answers of the previous run (base has no after) are not this run's.
			before: func() { dc.settle(2 * time.Second); dc.reset() },
			// Answers still on their way when the load stopped are read before the collector stops.
			after: func() { dc.settle(2 * time.Second) },
			saturate: func(d time.Duration) (loadResult, float64, error) {
				r := saturate(d, workers, dc.query)
				r.Sent = dc.sent.Load()
				return r, 0, nil
			},
			checks: func(_ string, r loadResult, c collected) []check {
				// The client's truth: answers its sockets received, in time (r.Requests, the rate's count) or
				// late (after its 1 s deadline, read later: none in a normal run, but a stalled CPU makes them).
				ok, other := dc.answered.Load(), dc.other.Load()
				st, dns := c.flows, c.dns
				return []check{
					{"client: queries sent", r.Sent, st.sum("datagrams_written", client)},
					{"client: answers received (in time or late)", ok + other, st.sum("datagrams_read", client)},
					{"dnsmasq: queries received", r.Sent, st.sum("datagrams_read", server)},
					{"dnsmasq: answers sent", ok + other, st.sum("datagrams_written", server)},
					// dnsmasq answers every query (from --address, at most 8 in flight): no query of the run is
					// left unanswered, so none can be reported TIMEOUT. If one were, dnsflow would report it only
					// 6 s after it was sent, if the collector still runs then: this check says the truth below holds.
					{"client: queries left unanswered (workload self-check: truth of dnsflow's rcode checks)", 0, r.Sent - ok - other},
					{"client: dnsflow count, qname " + qname + " qtype A rcode 0 NOERROR (NOERROR answers the client received)",
						ok, dns.sumIf("count", noError, "rcode", 0)},
					{"client: dnsflow count with another rcode or TIMEOUT (answers of another rcode the client received)",
						other, dns.sumWhere("count", map[string]string{"pid": pid}, func(p lpPoint) bool { return p.Fields["rcode"] != 0 })},
					{"client: dnsflow count of another qname, qtype, transport or port (none asked)",
						0, dns.sumWhere("count", map[string]string{"pid": pid}, func(p lpPoint) bool { return !p.matches(asked) })},
					{"client: dnsflow points with 0 < latency <= latency_max (every answered point)",
						dns.count(noError, func(p lpPoint) bool { return p.Fields["count"] > 0 }),
						dns.count(noError, func(p lpPoint) bool {
							return p.Fields["count"] > 0 && p.Fields["latency"] > 0 && p.Fields["latency"] <= p.Fields["latency_max"]
						})},
				}
			}})
	}
	if want["W5"] {
		sh, err := startShell()
		if err != nil {
			stopAll()
			return nil, nil, err
		}
		stops = append(stops, sh.stop)
		const line = "/bin/true"
		ws = append(ws, workload{ID: "W5", Name: "interactive bash exec storm (each line runs " + line + ")", serverPID: sh.pid,
			// The shell waits in a readline call it entered before the collector started, whose return a
			// uretprobe attached since cannot see: one line ends it, so that every line of the run is read by
			// a call entered after the attach. That line is not part of the truth (nor, being ":", a /bin/true).
			before: func() {
				if err := sh.run(":"); err != nil {
					fmt.Fprintln(os.Stderr, "bench: W5:", err)
				}
			},
			saturate: func(d time.Duration) (loadResult, float64, error) {
				return saturate(d, 1, func(int) error { return sh.run(line) }), 0, nil
			},
			checks: func(_ string, r loadResult, c collected) []check {
				if c.bash == nil {
					return nil // no network traffic; bash lines are checked in config all
				}
				pid := strconv.Itoa(sh.pid())
				mine := func(p lpPoint) bool { return p.Strs["pid"] == pid }
				return []check{
					{"bash: lines of the shell's pid (lines typed)", r.Requests, c.bash.count(nil, mine)},
					{"bash: lines of the shell's pid with cmd " + line + ", not truncated (every line typed)", r.Requests,
						c.bash.count(nil, func(p lpPoint) bool { return mine(p) && p.Strs["cmd"] == line && !p.Bools["truncated"] })},
				}
			},
		})
	}
	return ws, stopAll, nil
}
