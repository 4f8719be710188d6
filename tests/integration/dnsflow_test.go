package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsDefaultTimeout is dnsflow's documented default query timeout; the tests do not set it, to check it.
const dnsDefaultTimeout = 6 * time.Second

// isTestName tells the names of these tests (zone dk.test) from any other DNS the host does meanwhile.
func isTestName(qname string) bool { return strings.HasSuffix(qname, ".dk.test") }

func dnsPointKey(p lpPoint) dnsKey {
	port, _ := strconv.Atoi(p.Tags["server_port"])
	return dnsKey{Process: p.Tags["process_name"], Transport: p.Tags["transport"], Server: p.Tags["server_ip"], Port: port,
		QName: p.Tags["qname"], QType: p.Tags["qtype"], RCode: intField(p, "rcode"), RCodeName: p.Tags["rcode_name"]}
}

// observedDNS sums the counts of the dnsflow points of the tests' names by key.
func observedDNS(pts []lpPoint) (dnsCounts, []lpPoint) {
	got := dnsCounts{}
	var mine []lpPoint
	for _, p := range pts {
		if !isTestName(p.Tags["qname"]) {
			continue
		}
		got[dnsPointKey(p)] += intField(p, "count")
		mine = append(mine, p)
	}
	return got, mine
}

// dnsPointProblems lists what is wrong with a point of the tests' names besides its count: addresses and
// ports (the client's ephemeral port is "*"), pid and netns, field types, latency against the client's
// measured round trip, and when an unanswered query was reported.
func dnsPointProblems(p lpPoint, truth *dnsTruth) []string {
	var bad []string
	k := dnsPointKey(p)
	hostname, _ := os.Hostname()
	server, err := netip.ParseAddr(k.Server)
	if err != nil {
		return []string{fmt.Sprintf("server_ip=%q is no address", k.Server)}
	}
	family := "IPv4"
	if !server.Is4() {
		family = "IPv6"
	}
	clientPort := "*"
	want := map[string]string{"direction": "outgoing", "conn_side": "client", "family": family,
		"src_ip": k.Server, "client_ip": k.Server, "dst_ip": k.Server, // loopback: the client's address is the server's
		"dst_port": strconv.Itoa(k.Port), "src_port": clientPort, "client_port": clientPort,
		"pid": truth.pids[k.Process], "host": hostname, "qname": strings.ToLower(k.QName)}
	if allowed := truth.netns[k.Process]; !slices.Contains(allowed, p.Tags["netns"]) {
		bad = append(bad, fmt.Sprintf("netns=%q, want one of %v (process_name %q)", p.Tags["netns"], allowed, k.Process))
	}
	if !truth.ports[k.Port] {
		bad = append(bad, fmt.Sprintf("server_port=%q is not a DNS port of the config %v", p.Tags["server_port"], slices.Sorted(maps.Keys(truth.ports))))
	}
	for _, n := range slices.Sorted(maps.Keys(want)) {
		if p.Tags[n] != want[n] {
			bad = append(bad, fmt.Sprintf("%s=%q, want %q", n, p.Tags[n], want[n]))
		}
	}
	for _, f := range []string{"rcode", "count", "latency", "latency_max"} {
		if _, ok := p.Fields[f].(int64); !ok {
			if _, ok := p.Fields[f].(uint64); !ok {
				bad = append(bad, fmt.Sprintf("field %s=%#v, want an integer", f, p.Fields[f]))
			}
		}
	}
	if want := rcodeNames[k.RCode]; k.RCodeName != want {
		bad = append(bad, fmt.Sprintf("rcode_name=%q with rcode %d, want %q", k.RCodeName, k.RCode, want))
	}
	latency, latencyMax := time.Duration(intField(p, "latency")), time.Duration(intField(p, "latency_max"))
	if intField(p, "count") <= 0 {
		bad = append(bad, fmt.Sprintf("count=%v, want > 0", p.Fields["count"]))
	}
	if k.RCode == -1 {
		if latency != 0 || latencyMax != 0 {
			bad = append(bad, fmt.Sprintf("latency=%v latency_max=%v for an unanswered query, want 0", latency, latencyMax))
		}
		// Reported once the timeout has passed since the query (the point is stamped at the flush that
		// reports it), and within a flush or two after.
		if w, ok := truth.sentAt[k]; ok {
			earliest, latest := w[0].Add(truth.timeout-50*time.Millisecond), w[1].Add(truth.timeout+2*interval+3*time.Second)
			if p.Time.Before(earliest) || p.Time.After(latest) {
				bad = append(bad, fmt.Sprintf("reported at %s, %v after the first query was sent; want between the timeout %v and %v after the last",
					p.Time.Format("15:04:05.000"), p.Time.Sub(w[0]).Round(time.Millisecond), truth.timeout, latest.Sub(w[1])))
			}
		}
	} else {
		if latency <= 0 || latencyMax < latency {
			bad = append(bad, fmt.Sprintf("latency=%v latency_max=%v, want 0 < latency <= latency_max", latency, latencyMax))
		}
		if bound, ok := truth.maxRTT[k]; ok && latencyMax > bound {
			bad = append(bad, fmt.Sprintf("latency_max=%v, more than the longest round trip the client measured, %v", latencyMax, bound))
		}
	}
	return bad
}

// settleDNSFlows polls the agent until the dnsflow points of the tests' names add up to the truth (or a
// deadline passes: the timeout after the last unanswered query, then as long as a slow machine needs),
// waits two more intervals for late points, then reports every key whose count differs and every point
// with wrong tags or fields.
func settleDNSFlows(t *testing.T, a *agent, what string, truth *dnsTruth) []lpPoint {
	t.Helper()
	observe := func() (dnsCounts, []lpPoint, []lpPoint) {
		all := a.query("dnsflow", "15m")
		got, mine := observedDNS(all)
		return got, mine, all
	}
	slack := max(10*interval, 30*time.Second)
	deadline := time.Now().Add(slack)
	for _, w := range truth.sentAt {
		if d := w[1].Add(truth.timeout + slack); d.After(deadline) {
			deadline = d
		}
	}
	got, _, _ := observe()
	for len(truth.want.diff(got)) > 0 && time.Now().Before(deadline) {
		time.Sleep(interval / 4)
		got, _, _ = observe()
	}
	time.Sleep(2 * interval)
	got, mine, all := observe()
	t.Logf("%s: %d keys in %d dnsflow points of dk.test (%d queries); ground truth %d keys, %d queries",
		what, len(got), len(mine), got.total(), len(truth.want), truth.want.total())
	if d := truth.want.diff(got); len(d) > 0 {
		t.Errorf("%s: dnsflow counts per key (process transport server qname qtype rcode) differ from ground truth:\n  %s",
			what, strings.Join(d, "\n  "))
		logPoints(t, "dnsflow points of dk.test", mine)
		var others []lpPoint
		for _, p := range all {
			if !isTestName(p.Tags["qname"]) {
				others = append(others, p)
			}
		}
		logPoints(t, "other dnsflow points", others)
	}
	for _, p := range mine {
		if bad := dnsPointProblems(p, truth); len(bad) > 0 {
			t.Errorf("%s: point %v %v at %s: %s", what, p.Tags, p.Fields, p.Time.Format("15:04:05.000"), strings.Join(bad, "; "))
		}
	}
	return mine
}

// TestDNSFlowCountsEveryLookupOfDnsmasq runs dnsmasq in a network namespace of the test's own (UDP and
// TCP on 127.0.0.1:53 and [::1]:53, a local zone) and clients in that namespace: this process's dnsmessage
// client (connected and unconnected UDP, TCP with one query per connection, pipelined, and the length
// written apart from the message; NOERROR, NODATA, NXDOMAIN, TXT; queries to a DNS port where nothing
// answers) and glibc's getaddrinfo (python3). Per (process, transport, server, qname, qtype, rcode) the
// counts must equal what the clients sent (and dnsmasq logged), unanswered queries reported with rcode -1
// after the default 6 s timeout, and each point's tags and latency must fit.
func TestDNSFlowCountsEveryLookupOfDnsmasq(t *testing.T) {
	env := startDnsmasqEnv(t)
	a := startAgent(t, fmt.Sprintf("  dnsflow_ports = [53, %d]", lostPort))
	settleDNSFlows(t, a, "dnsmasq", runDnsmasqWorkload(t, env))
}

// lostPort is a DNS port of the dnsmasq test's config where nothing answers.
const lostPort = 5353

// dnsmasqEnv is the dnsmasq test's namespace and servers.
type dnsmasqEnv struct {
	ns                   *testNetns
	dm                   *dnsmasqServer
	silentUDP, silentTCP *silentServers
}

// startDnsmasqEnv makes the namespace, its resolv.conf, dnsmasq on port 53, and servers on lostPort that
// read and never answer: UDP on [::1] and TCP on 127.0.0.1 (nothing on UDP 127.0.0.1: the kernel answers
// ICMP).
func startDnsmasqEnv(t *testing.T) *dnsmasqEnv {
	ns := newTestNetns(t)
	env := &dnsmasqEnv{ns: ns, dm: startDnsmasq(t, ns)}
	writeNetnsResolvConf(t, ns)
	env.silentUDP = startSilent(t, ns.sockets, "udp6", netip.MustParseAddrPort(fmt.Sprintf("[::1]:%d", lostPort)))
	env.silentTCP = startSilent(t, ns.sockets, "tcp4", netip.MustParseAddrPort(fmt.Sprintf("127.0.0.1:%d", lostPort)))
	return env
}

// runDnsmasqWorkload runs the clients in the namespace and returns the ground truth, checked against
// dnsmasq's log.
func runDnsmasqWorkload(t *testing.T, env *dnsmasqEnv) *dnsTruth {
	t.Helper()
	ns, dm := env.ns, env.dm
	started := time.Now()
	v4, v6 := netip.MustParseAddrPort("127.0.0.1:53"), netip.MustParseAddrPort("[::1]:53")
	lost4, lost6 := netip.AddrPortFrom(v4.Addr(), lostPort), netip.AddrPortFrom(v6.Addr(), lostPort)
	truth := newDNSTruth(dnsDefaultTimeout, 53, lostPort)
	// Its sockets are the namespace's, its threads (which send) this one's: either is the flow's netns.
	c := newDNSClient(t, truth, ns.sockets, ns.inode, netnsInode(t, "/proc/self/ns/net"))

	// First the queries nothing answers: their timeout runs while the rest is asked.
	c.unansweredUDP(lost4, false, times(2, qA("lost4.dk.test"))...) // no listener: the kernel answers ICMP
	c.unansweredUDP(lost6, true, qA("lost6.dk.test"), qAAAA("lost6.dk.test"))
	c.unansweredTCP(lost4, qA("losttcp.dk.test"))

	c.udpConnected(v4, slices.Concat(times(5, qA("udp.dk.test")), times(3, qAAAA("udp.dk.test")), times(2, qTXT("txt.dk.test")),
		times(2, qAAAA("v4only.dk.test")), times(4, qA("nx-udp.dk.test")), times(1, qAAAA("nx-udp.dk.test")))...)
	c.udpConnected(v6, slices.Concat(times(2, qA("udp6.dk.test")), times(3, qAAAA("udp6.dk.test")), times(2, qAAAA("nx-udp6.dk.test")))...)
	c.udpUnconnected(v4, times(3, qA("unconn.dk.test"))...)
	c.udpUnconnected(v6, times(2, qAAAA("unconn.dk.test"))...)
	c.tcpEach(v4, qA("tcp.dk.test"), qA("tcp.dk.test"), qA("nx-tcp.dk.test"))
	c.tcpEach(v6, qAAAA("tcp.dk.test"))
	c.tcpPipelined(v4, qA("pipe.dk.test"), qAAAA("pipe.dk.test"), qA("pipe.dk.test"))
	c.tcpPipelined(v6, qA("tcp.dk.test"), qAAAA("nx-tcp.dk.test"))
	c.tcpSplit(v4, qA("split.dk.test"), qAAAA("split.dk.test"))
	c.tcpSplit(v6, qA("split.dk.test"))

	// glibc, in the namespace, with its resolv.conf naming dnsmasq: A and AAAA of each name (one sendmmsg).
	glibcNames := []string{"glibc.dk.test.", "nx-glibc.dk.test."}
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns.name, "/usr/bin/python3", "-c", glibcClient}, glibcNames...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("harness: python3 getaddrinfo: %v\n%s", err, out)
	}
	var gr glibcRun
	if err := json.Unmarshal(out, &gr); err != nil || len(gr.Calls) != len(glibcNames) {
		t.Fatalf("harness: python3 getaddrinfo said %q (%v)", out, err)
	}
	for _, call := range gr.Calls {
		if nx := wantRCode(call.Name) != 0; nx != (call.Err != 0) || !nx && !slices.Equal(call.Addrs, []string{"10.1.2.11", "fd00::11"}) {
			t.Fatalf("harness: getaddrinfo(%s) = %v, error %d", call.Name, call.Addrs, call.Err)
		}
	}

	// Ground truth checks: the silent servers got their queries; dnsmasq logged exactly the queries the Go
	// client sent it; glibc's queries are what dnsmasq logged of its names.
	for deadline := time.Now().Add(10 * time.Second); env.silentUDP.total() == 0 || env.silentTCP.total() == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("harness: the silent servers read %d and %d bytes", env.silentUDP.total(), env.silentTCP.total())
		}
	}
	goLogged := map[loggedQuery]int64{}
	for k, n := range truth.want {
		if k.Port == 53 {
			goLogged[loggedQuery{k.QName, k.QType, k.Server}] += n
		}
	}
	var logged map[loggedQuery]int64
	var mismatch []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		logged, mismatch = dm.queries(t), nil
		for q, n := range goLogged {
			if logged[q] != n {
				mismatch = append(mismatch, fmt.Sprintf("%v: Go client sent %d, dnsmasq logged %d", q, n, logged[q]))
			}
		}
		if len(mismatch) == 0 || time.Now().After(deadline) {
			break
		}
	}
	glibcRTT := map[string]time.Duration{}
	for _, call := range gr.Calls {
		glibcRTT[strings.TrimSuffix(call.Name, ".")] = time.Duration(call.NS)
	}
	truth.pids[gr.Comm] = strconv.Itoa(gr.PID)
	truth.netns[gr.Comm] = []string{ns.inode} // the whole process runs in the namespace
	for q, n := range logged {
		switch {
		case q.QName == "ready.probe":
		case glibcRTT[q.QName] > 0:
			if q.From != "127.0.0.1" {
				mismatch = append(mismatch, fmt.Sprintf("%v: glibc asked from %s", q, q.From))
			}
			k := dnsKey{Process: gr.Comm, Transport: "udp", Server: q.From, Port: 53, QName: q.QName, QType: q.QType,
				RCode: wantRCode(q.QName), RCodeName: rcodeNames[wantRCode(q.QName)]}
			for range n {
				truth.answered(k, glibcRTT[q.QName])
			}
		case goLogged[q] == 0:
			mismatch = append(mismatch, fmt.Sprintf("%v: dnsmasq logged %d queries nobody sent", q, n))
		}
	}
	for name := range glibcRTT {
		for _, qt := range []string{"A", "AAAA"} {
			if logged[loggedQuery{name, qt, "127.0.0.1"}] == 0 {
				mismatch = append(mismatch, fmt.Sprintf("glibc did not ask %s %s", name, qt))
			}
		}
	}
	if len(mismatch) > 0 {
		slices.Sort(mismatch)
		t.Fatalf("harness: the workload's accounts disagree with dnsmasq's log:\n  %s", strings.Join(mismatch, "\n  "))
	}
	t.Logf("workload: %d queries of %d keys in %v (glibc: %s pid %d)", truth.want.total(), len(truth.want),
		time.Since(started).Round(time.Millisecond), gr.Comm, gr.PID)
	return truth
}

// goServerTruth is the Go server's final record with the clients' own accounts checked against it: every
// query of the dnsmessage client (cli) and every answered query of the Go resolver (res) exactly, and a
// send window for every unanswered key. The count of every key is the server's.
func goServerTruth(t *testing.T, s *goDNSServer, process string, cli, res *dnsTruth) *dnsTruth {
	t.Helper()
	var got dnsCounts
	readAll := func() bool {
		got, _ = s.snapshot()
		for k, n := range cli.want {
			k.Process = ""
			if got[k] < n {
				return false
			}
		}
		return true
	}
	for deadline := time.Now().Add(10 * time.Second); !readAll() && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond) // the server's goroutines read what the kernel already holds
	}
	truth := newDNSTruth(cli.timeout, slices.Collect(maps.Keys(cli.ports))...)
	maps.Copy(truth.pids, cli.pids)
	maps.Copy(truth.netns, cli.netns)
	for k, n := range got {
		k.Process = process
		truth.want[k] = n
	}
	var bad []string
	for _, acct := range []*dnsTruth{cli, res} {
		maps.Copy(truth.maxRTT, acct.maxRTT)
		for k, w := range acct.sentAt {
			truth.window(k, w[0], w[1])
		}
	}
	for k, n := range cli.want {
		if res.want[k] > 0 || truth.want[k] != n {
			bad = append(bad, fmt.Sprintf("%v: the dnsmessage client sent %d, the server got %d (the resolver %d)", k, n, truth.want[k], res.want[k]))
		}
	}
	for k, n := range res.want {
		if truth.want[k] != n {
			bad = append(bad, fmt.Sprintf("%v: the Go resolver had %d answered, the server got %d", k, n, truth.want[k]))
		}
	}
	for k := range truth.want {
		_, answered := truth.maxRTT[k]
		_, sent := truth.sentAt[k]
		if answered == (k.RCode == -1) || sent != (k.RCode == -1 && !cli.retried[k]) {
			bad = append(bad, fmt.Sprintf("%v: the server got it, no client accounts for it", k))
		}
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		t.Fatalf("harness: the clients' accounts disagree with the Go server's record:\n  %s", strings.Join(bad, "\n  "))
	}
	return truth
}

// checkServerUnchanged fails when the server got queries after the truth was taken from it.
func checkServerUnchanged(t *testing.T, s *goDNSServer, truth *dnsTruth) {
	t.Helper()
	got, _ := s.snapshot()
	for k, n := range got {
		k.Process = selfComm(t)
		if truth.want[k] != n {
			t.Errorf("harness: the Go server got %d queries of %v after the truth was taken (%d)", n, k, truth.want[k])
		}
	}
}

// TestDNSFlowGoResolverAndServer needs no program but this one (it runs in minimal guests with only lo):
// a DNS server in this process on 127.0.0.1 and [::1] (UDP and TCP, a free port listed in dnsflow_ports
// beside 53) answers by the name (NOERROR, NXDOMAIN, REFUSED, truncated over UDP, or no answer at all),
// and records every query it gets: the ground truth. Its clients are the dnsmessage client (UDP connected
// and not, TCP per query, pipelined and split, queries dropped on UDP and TCP) and Go's own resolver
// (PreferGo; A+AAAA lookups, TXT, NXDOMAIN, a UDP answer truncated so it asks again over TCP, a dropped
// name). Counts per key must equal the server's record exactly.
func TestDNSFlowGoResolverAndServer(t *testing.T) {
	s := startGoDNSServer(t)
	a := startAgent(t, fmt.Sprintf("  dnsflow_ports = [53, %d]", s.port))
	truth := runGoDNSWorkload(t, s)
	settleDNSFlows(t, a, "Go resolver and server", truth)
	checkServerUnchanged(t, s, truth)

	// Every UDP query of the workload has one plain question: the kernel paired it, not the collector. Its
	// count covers the host's other lookups too, hence at least.
	var udp int64
	for k, n := range truth.want {
		if k.Transport == "udp" {
			udp += n
		}
	}
	if self, ok := latestSelfPoint(a); !ok || intField(self, "dnsflow_kernel_queries") < udp {
		t.Errorf("dnsflow_kernel_queries = %d, want at least the workload's %d UDP queries (paired in the kernel)",
			intField(self, "dnsflow_kernel_queries"), udp)
	}
}

// runGoDNSWorkload runs the dnsmessage client and Go's resolver against s and returns the ground truth:
// the server's record, checked against the clients' accounts.
func runGoDNSWorkload(t *testing.T, s *goDNSServer) *dnsTruth {
	t.Helper()
	started := time.Now()
	process := selfComm(t)
	netns := netnsInode(t, "/proc/self/ns/net")
	cli, res := newDNSTruth(dnsDefaultTimeout, 53, s.port), newDNSTruth(dnsDefaultTimeout, 53, s.port)
	c := newDNSClient(t, cli, nil, netns)
	v4, v6 := s.addr("127.0.0.1"), s.addr("::1")
	r4, r6 := goResolver(v4), goResolver(v6)

	// Unanswered first: the server reads them and answers nothing.
	c.unansweredUDP(v4, true, qA("drop.cli.dk.test"), qAAAA("drop.cli.dk.test"))
	c.unansweredUDP(v6, false, qA("drop.cli.dk.test"))
	c.unansweredTCP(v6, qA("drop-tcp.cli.dk.test"), qTXT("drop-tcp.cli.dk.test"))
	resolverCall(t, s, res, process, "A of a dropped name", time.Second, true, func(ctx context.Context) error {
		_, err := r4.LookupNetIP(ctx, "ip4", "drop.res.dk.test.")
		return err
	})

	c.udpConnected(v4, slices.Concat(times(4, qA("www.cli.dk.test")), times(2, qAAAA("www.cli.dk.test")), times(2, qTXT("txt.cli.dk.test")),
		times(3, qA("nx.cli.dk.test")), times(1, qA("refused.cli.dk.test")))...)
	c.udpConnected(v6, slices.Concat(times(2, qAAAA("www6.cli.dk.test")), times(2, qAAAA("nx6.cli.dk.test")))...)
	c.retriedUDP(v4, qA("retry.cli.dk.test"), qA("retry.cli.dk.test"), qAAAA("retry.cli.dk.test"))
	c.retriedUDP(v6, qA("retry.cli.dk.test"))
	c.udpUnconnected(v4, times(3, qA("unconn.cli.dk.test"))...)
	c.udpUnconnected(v6, times(2, qA("unconn.cli.dk.test"))...)
	c.tcpEach(v4, qA("tcp.cli.dk.test"), qA("tcp.cli.dk.test"), qAAAA("nx-tcp.cli.dk.test"))
	c.tcpEach(v6, qTXT("tcp.cli.dk.test"))
	c.tcpPipelined(v4, qA("pipe.cli.dk.test"), qAAAA("pipe.cli.dk.test"), qA("nx-pipe.cli.dk.test"))
	c.tcpPipelined(v6, qA("pipe.cli.dk.test"), qA("pipe.cli.dk.test"))
	c.tcpSplit(v4, qA("split.cli.dk.test"), qA("nx-split.cli.dk.test"))
	c.tcpSplit(v6, qAAAA("split.cli.dk.test"))

	lookupHost := func(r *net.Resolver, name string, wantErr bool) {
		resolverCall(t, s, res, process, "host "+name, max(30*time.Second, 10*interval), wantErr, func(ctx context.Context) error {
			addrs, err := r.LookupHost(ctx, name)
			slices.Sort(addrs) // the resolver orders them by the host's routes (RFC 6724): a guest with only lo differs
			if err == nil && !slices.Equal(addrs, []string{"10.9.0.1", "fd00::9:1"}) {
				return fmt.Errorf("addresses %v", addrs)
			}
			return err
		})
	}
	lookupHost(r4, "www.res.dk.test.", false)
	lookupHost(r4, "www.res.dk.test.", false)
	lookupHost(r6, "www6.res.dk.test.", false)
	lookupHost(r4, "nx.res.dk.test.", true)
	lookupHost(r6, "tc.res.dk.test.", false) // truncated over UDP: asked again over TCP
	resolverCall(t, s, res, process, "TXT", max(30*time.Second, 10*interval), false, func(ctx context.Context) error {
		txt, err := r4.LookupTXT(ctx, "txt.res.dk.test.")
		if err == nil && !slices.Equal(txt, []string{"dkebpf"}) {
			return fmt.Errorf("TXT %q", txt)
		}
		return err
	})
	resolverCall(t, s, res, process, "AAAA of a truncated name", max(30*time.Second, 10*interval), false, func(ctx context.Context) error {
		ips, err := r4.LookupNetIP(ctx, "ip6", "tc4.res.dk.test.")
		if err == nil && (len(ips) != 1 || ips[0] != netip.MustParseAddr("fd00::9:1")) {
			return fmt.Errorf("addresses %v", ips)
		}
		return err
	})

	truth := goServerTruth(t, s, process, cli, res)
	for _, want := range []string{"udp", "tcp"} {
		found := false
		for k := range truth.want {
			found = found || strings.HasPrefix(k.QName, "tc") && strings.HasSuffix(k.QName, ".res.dk.test") && k.Transport == want
		}
		if !found {
			t.Fatalf("harness: the Go resolver did not ask a truncated name over %s", want)
		}
	}
	t.Logf("workload: %d queries of %d keys in %v", truth.want.total(), len(truth.want), time.Since(started).Round(time.Millisecond))
	return truth
}

// latestSelfPoint is the latest datakit_ebpf point: the collector's counters, cumulative since it started.
func latestSelfPoint(a *agent) (lpPoint, bool) {
	var last lpPoint
	found := false
	for _, p := range a.query("datakit_ebpf", "15m") {
		if !found || p.Time.After(last.Time) {
			last, found = p, true
		}
	}
	return last, found
}

// garbageMessages are payloads sent to a DNS port that are no DNS query: too short for a header, a header
// without a question, a question cut short, a name whose compression pointer points at itself, a label
// longer than 63 bytes.
func garbageMessages() [][]byte {
	hdr := func(qd uint16) []byte {
		return []byte{0x12, 0x34, 0x01, 0x00, byte(qd >> 8), byte(qd), 0, 0, 0, 0, 0, 0}
	}
	return [][]byte{
		[]byte("x"),
		make([]byte, 11),
		hdr(0),
		append(hdr(1), 40, 'a', 'b', 'c'),
		append(hdr(1), 0xc0, 12, 0, 1, 0, 1),
		append(append(hdr(1), 64), []byte(strings.Repeat("z", 64)+"\x00\x00\x01\x00\x01")...),
		[]byte("GET / HTTP/1.1\r\nHost: dk.test\r\n\r\n"),
	}
}

// TestDNSFlowSurvivesMalformedPackets sends datagrams and TCP messages to DNS ports that are no DNS (short,
// cut, pointer loops, HTTP), and a server answers some queries with garbage or with another ID. The
// collector must keep running, count the malformed messages in its self metric, report the queries whose
// answers were garbage as unanswered, and count the valid queries around all of it exactly.
func TestDNSFlowSurvivesMalformedPackets(t *testing.T) {
	garbage := garbageMessages()
	for _, g := range garbage {
		var p dnsmessage.Parser
		if _, err := p.Start(g); err == nil {
			if _, err := p.Question(); err == nil {
				t.Fatalf("harness: garbage %q parses as a DNS query", g)
			}
		}
	}
	s := startGoDNSServer(t)
	a := startAgent(t, fmt.Sprintf("  dnsflow_ports = [53, %d]", s.port))
	before := a.collector()
	self0, _ := latestSelfPoint(a)
	process := selfComm(t)
	netns := netnsInode(t, "/proc/self/ns/net")
	cli := newDNSTruth(dnsDefaultTimeout, 53, s.port)
	c := newDNSClient(t, cli, nil, netns)
	v4, v6 := s.addr("127.0.0.1"), s.addr("::1")

	// Answers that are garbage, or carry another ID: the queries stay unanswered.
	c.unansweredUDP(v4, true, qA("garbage.bad.dk.test"), qAAAA("wrongid.bad.dk.test"))
	c.unansweredUDP(v6, false, qA("garbage.bad.dk.test"))

	// Valid queries, then garbage on the same sockets, then valid queries again.
	sent := 0
	for _, server := range []netip.AddrPort{v4, v6} {
		conn := c.dial(udpNet(server), server)
		c.udpOn(conn, server, qA("before.bad.dk.test"), qAAAA("before.bad.dk.test"))
		for _, g := range garbage {
			_, err := conn.Write(g)
			must(t, err)
			sent++
		}
		c.udpOn(conn, server, qA("after.bad.dk.test"), qA("nx-after.bad.dk.test"))
		conn.Close()

		tcp := c.dial(tcpNet(server), server)
		c.tcpOn(tcp, server, qA("before-tcp.bad.dk.test"))
		for _, g := range garbage {
			_, err := tcp.Write(tcpMsg(g))
			must(t, err)
			sent++
		}
		c.tcpOn(tcp, server, qA("after-tcp.bad.dk.test"), qAAAA("nx-after-tcp.bad.dk.test"))
		tcp.Close()
	}
	a.waitFor("the Go DNS server to read the garbage", 10*time.Second, func() bool { _, bad := s.snapshot(); return bad == sent })
	c.udpConnected(v4, times(3, qA("last.bad.dk.test"))...)

	truth := goServerTruth(t, s, process, cli, newDNSTruth(dnsDefaultTimeout))
	settleDNSFlows(t, a, "around malformed packets", truth)
	checkServerUnchanged(t, s, truth)

	after := a.collector()
	if after.PID != before.PID || after.Starts != before.Starts {
		t.Errorf("the collector restarted: before %+v, after %+v", before, after)
	}
	self1, ok := latestSelfPoint(a)
	if !ok || !self1.Time.After(self0.Time) {
		t.Fatalf("no datakit_ebpf point after the garbage (before %v, after %v)", self0.Time, self1.Time)
	}
	// Every garbage message a client sent, and the garbage answers the clients got, are malformed.
	wantMalformed := int64(sent + 2)
	if d := intField(self1, malformedField) - intField(self0, malformedField); d != wantMalformed {
		t.Errorf("%s went from %d to %d, want %d more (%d garbage messages sent to DNS ports, 2 garbage answers)",
			malformedField, intField(self0, malformedField), intField(self1, malformedField), wantMalformed, sent)
	}
	t.Logf("self metric after: %v", self1.Fields)
}

// malformedField is the datakit_ebpf field counting dnsflow records and messages that could not be parsed.
const malformedField = "dnsflow_malformed"

// TestDNSFlowWorkloadGroundTruthIsConsistent runs the dnsmasq and Go workloads with no collector and checks
// the harness itself: the clients' accounts agree with dnsmasq's log and the Go server's record.
func TestDNSFlowWorkloadGroundTruthIsConsistent(t *testing.T) {
	t.Run("dnsmasq", func(t *testing.T) {
		truth := runDnsmasqWorkload(t, startDnsmasqEnv(t))
		t.Logf("dnsmasq: %d keys, %d queries", len(truth.want), truth.want.total())
	})
	t.Run("Go", func(t *testing.T) {
		s := startGoDNSServer(t)
		truth := runGoDNSWorkload(t, s)
		checkServerUnchanged(t, s, truth)
		for _, k := range slices.SortedFunc(maps.Keys(truth.want), func(a, b dnsKey) int { return strings.Compare(a.String(), b.String()) }) {
			t.Logf("  %v: %d", k, truth.want[k])
		}
	})
}

// svcName is the name dnsmasq answers with svcAddrs (host record, TTL 0: kept the minimum 60 s), addresses
// the test puts on the namespace's lo (lo answers for all of 127/8); unnamedAddrs are on lo too, and no DNS
// answer gives them.
const svcName = "svc.dk.test"

var (
	svcAddrs     = []netip.Addr{netip.MustParseAddr("127.0.0.7"), netip.MustParseAddr("fd00:d6::7")}
	unnamedAddrs = []netip.Addr{netip.MustParseAddr("127.0.0.8"), netip.MustParseAddr("fd00:d6::8")}
)

// domainOf is the dst_domain/server_domain an address must carry in the test of the names: svcName for
// svcAddrs, none ("") for any other.
func domainOf(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err == nil && slices.Contains(svcAddrs, a) {
		return svcName
	}
	return ""
}

// TestDNSFlowAnswersNameNetflowServers: Go's resolver, in a namespace of the test's own, asks dnsmasq A
// and AAAA of svcName and gets addresses of the namespace's lo; the test then opens a TCP connection to
// each (a server of its own listens there), and to addresses no answer gave, and exchanges known sizes.
// Every netflow point of the connections (by pid and server port; client and server side) must count the
// exact bytes, and carry dst_domain and server_domain = svcName where its dst or server address is one the
// answers gave, and neither tag otherwise.
func TestDNSFlowAnswersNameNetflowServers(t *testing.T) {
	ns := newTestNetns(t)
	for _, a := range []netip.Addr{svcAddrs[1], unnamedAddrs[1]} {
		run(t, "ip", "-n", ns.name, "addr", "add", a.String()+"/128", "dev", "lo", "nodad")
	}
	startDnsmasq(t, ns)
	a := startAgent(t, "  dnsflow_ports = [53]")
	pid := strconv.Itoa(os.Getpid())

	ctx, cancel := context.WithTimeout(context.Background(), max(30*time.Second, 10*interval))
	defer cancel()
	got, err := nsResolver(ns, netip.MustParseAddrPort("127.0.0.1:53")).LookupNetIP(ctx, "ip", svcName+".")
	slices.SortFunc(got, netip.Addr.Compare)
	if err != nil || !slices.Equal(got, svcAddrs) {
		t.Fatalf("harness: Go resolver in %s: %s = %v (%v), want %v", ns.name, svcName, got, err, svcAddrs)
	}
	// The names are the collector's once dnsflow has taken the answers: its points of them say so. (In one
	// flush netflow is drained and flushed before dnsflow is drained: a connection reported in the flush
	// that follows its answer by less than a drain period goes unnamed in that point.)
	a.waitFor("the dnsflow points of "+svcName, max(30*time.Second, 10*interval), func() bool {
		qtypes := map[string]bool{}
		for _, p := range a.query("dnsflow", "5m") {
			if p.Tags["qname"] == svcName && p.Tags["rcode_name"] == "NOERROR" && p.Tags["pid"] == pid {
				qtypes[p.Tags["qtype"]] = true
			}
		}
		return qtypes["A"] && qtypes["AAAA"]
	})

	type conn struct {
		addr     netip.Addr
		port     int
		cli, srv *counted
	}
	var conns []conn
	for i, addr := range slices.Concat(got, unnamedAddrs) {
		port, srv, wg := nsTCPServer(t, ns, addr)
		server := netip.AddrPortFrom(addr, uint16(port))
		var c net.Conn
		must(t, ns.sockets(func() (err error) {
			c, err = net.DialTimeout(tcpNet(server), server.String(), 10*time.Second)
			return err
		}))
		cli := &counted{}
		must(t, exchange(c, cli, 1000+i*111, 3000+i*333)) // N written, M read: distinct per connection
		c.Close()
		wg.Wait()
		conns = append(conns, conn{addr, port, cli, srv})
	}

	// Both sides of every connection: client (outgoing, dst_port) and server (incoming, src_port).
	type side struct {
		what       string
		c          conn
		dir, ptag  string
		want       totals
		remoteAddr string // the tag that holds the connection's address: dst_ip or src_ip
	}
	var sides []side
	for _, c := range conns {
		p := strconv.Itoa(c.port)
		sides = append(sides,
			side{fmt.Sprintf("client of %s", netip.AddrPortFrom(c.addr, uint16(c.port))), c, "outgoing", "dst_port:" + p,
				totals{written: c.cli.wrote.Load(), read: c.cli.read.Load(), established: 1, closed: 1}, "dst_ip"},
			side{fmt.Sprintf("server at %s", netip.AddrPortFrom(c.addr, uint16(c.port))), c, "incoming", "src_port:" + p,
				totals{written: c.srv.wrote.Load(), read: c.srv.read.Load(), established: 1, closed: 1}, "src_ip"})
	}
	observe := func(s side) flowSum {
		return sumFlows(a.query("netflow", "5m", "pid:"+pid, "run:"+pid, "transport:tcp", "direction:"+s.dir, s.ptag))
	}
	settled := func() bool {
		for _, s := range sides {
			if observe(s).totals != s.want {
				return false
			}
		}
		return true
	}
	for deadline := time.Now().Add(max(6*interval, 20*time.Second)); !settled() && time.Now().Before(deadline); {
		time.Sleep(interval / 4)
	}
	time.Sleep(2 * interval) // nothing more may arrive
	for _, s := range sides {
		g := observe(s)
		var tags []string
		for _, p := range g.points {
			tags = append(tags, fmt.Sprintf("%s->%s dst_domain=%q server_domain=%q", p.Tags["src_ip"], p.Tags["dst_ip"], p.Tags["dst_domain"], p.Tags["server_domain"]))
		}
		t.Logf("%s: %+v in %d points: %s", s.what, g.totals, len(g.points), strings.Join(tags, ", "))
		if g.totals != s.want {
			t.Errorf("%s: reported %+v, want %+v", s.what, g.totals, s.want)
		}
		for _, p := range g.points {
			var bad []string
			if p.Tags[s.remoteAddr] != s.c.addr.String() {
				bad = append(bad, fmt.Sprintf("%s=%q, want %s", s.remoteAddr, p.Tags[s.remoteAddr], s.c.addr))
			}
			if p.Tags["netns"] != ns.inode {
				bad = append(bad, fmt.Sprintf("netns=%q, want %s (%s)", p.Tags["netns"], ns.inode, ns.name))
			}
			for tag, want := range map[string]string{"dst_domain": domainOf(p.Tags["dst_ip"]), "server_domain": domainOf(p.Tags["server_ip"])} {
				if got, ok := p.Tags[tag]; got != want || ok != (want != "") {
					bad = append(bad, fmt.Sprintf("%s=%q (present: %v), want %q", tag, got, ok, want))
				}
			}
			// What the task is about, said outright: the client's point of a named server carries the
			// name twice, that of an unnamed one neither tag.
			if s.dir == "outgoing" {
				named := slices.Contains(svcAddrs, s.c.addr)
				_, hasDst := p.Tags["dst_domain"]
				_, hasSrv := p.Tags["server_domain"]
				if named && (p.Tags["dst_domain"] != svcName || p.Tags["server_domain"] != svcName) || !named && (hasDst || hasSrv) {
					bad = append(bad, fmt.Sprintf("client of a server %s named: dst_domain=%q server_domain=%q", map[bool]string{true: "", false: "not "}[named],
						p.Tags["dst_domain"], p.Tags["server_domain"]))
				}
			}
			if len(bad) > 0 {
				t.Errorf("%s: point %v %v at %s: %s", s.what, p.Tags, p.Fields, p.Time.Format("15:04:05.000"), strings.Join(bad, "; "))
			}
		}
	}
}
