package integration

// A real distributed engine on loopback for the remote-write sink: Thanos v0.42.5 (`make thanos` builds it
// once into /var/cache/dkebpf-thanos), three `thanos receive` nodes in one hashring, each both router and
// ingestor, and one `thanos query` in front of their gRPC stores that deduplicates the replicas.
//
// Replication factor: 3 on 3 nodes. Thanos acknowledges a remote write once a write quorum of the series'
// replicas took it: floor(RF/2)+1, except that v0.42.5 special-cases RF=2 to a quorum of 1
// (pkg/receive/handler.go, writeQuorum). So RF=2 does keep accepting writes with a node stopped, but an
// acknowledged sample may then exist on one node only, and a receive that comes back does not get what it
// missed (no hinted handoff). Measured against this binary, 3 nodes, RF=2: node 1 killed, 30 series written
// through node 0 (all 200), node 1 restarted, node 0 killed: the querier returned 14 of the 30 series. With
// RF=3 (quorum 2 of 3) every acknowledged sample is on at least two nodes, so any one node stopped at any
// time still leaves a copy: the same sequence returned 30 of 30, and writes with one node down still get 2xx.
//
// Deduplication: each receive has its own external label receive_replica="<i>"; the querier drops that
// label (--query.replica-label=receive_replica) and merges the replicas with --deduplication.func=chain,
// sample by sample, each timestamp once: exact for receive replicas, which hold the same samples (or a subset,
// for a node that was down). The default "penalty" algorithm is a heuristic for HA Prometheus pairs whose
// scrapes do not line up.
//
// Timing seen with v0.42.5 (the querier refreshes its endpoints every 5 s): what is written to a fresh cluster
// is visible through the querier only after up to 5 s (the nodes advertised an empty time range until then);
// a killed node is dropped by the querier after 5-10 s, and until then it answers with no series and no
// error, even without partial responses, so stop waits for that.

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/easyproto"
	"github.com/klauspost/compress/snappy"
)

const (
	thanosVersion  = "0.42.5"
	thanosReplicas = 3 // receive nodes
	thanosRF       = 3 // see the top of this file
)

// thanosCluster is a running receive hashring and its querier.
type thanosCluster struct {
	t       *testing.T
	receive []*engine // engine.addr is the node's HTTP address (/-/ready)
	rwAddr  []string  // the nodes' remote-write addresses
	grpc    []string  // the nodes' gRPC addresses, as the hashring lists them
	querier *engine
}

// thanosBin is the cached thanos binary scripts/thanos.sh builds.
func thanosBin(t *testing.T) string {
	t.Helper()
	cache := os.Getenv("DKEBPF_THANOS_CACHE")
	if cache == "" {
		cache = "/var/cache/dkebpf-thanos"
	}
	bin := filepath.Join(cache, "thanos-v"+thanosVersion)
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("thanos v%s missing (%v): run `make thanos` first", thanosVersion, err)
	}
	return bin
}

// startThanos runs the cluster on loopback with free ports and fresh directories; it is killed at the end of
// the test.
func startThanos(t *testing.T) *thanosCluster {
	return startThanosRF(t, thanosRF)
}

func startThanosRF(t *testing.T, rf int) *thanosCluster {
	t.Helper()
	bin := thanosBin(t)
	dir := t.TempDir()
	c := &thanosCluster{t: t}
	for i := 0; i < thanosReplicas; i++ {
		c.grpc = append(c.grpc, fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	}
	hashring, err := json.Marshal([]map[string]any{{"hashring": "default", "endpoints": c.grpc}})
	must(t, err)
	hashringFile := filepath.Join(dir, "hashring.json")
	must(t, os.WriteFile(hashringFile, hashring, 0o644))
	for i := 0; i < thanosReplicas; i++ {
		httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		rw := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		e := &engine{t: t, name: fmt.Sprintf("thanos receive %d", i), addr: httpAddr, log: &syncBuffer{}, args: []string{
			bin, "receive",
			"--log.level=warn",
			"--http-address=" + httpAddr,
			"--grpc-address=" + c.grpc[i],
			"--remote-write.address=" + rw,
			// Replication between the nodes goes over gRPC (protobuf, the default); the Cap'n Proto server
			// still listens, on 0.0.0.0:19391 unless told otherwise.
			fmt.Sprintf("--receive.capnproto-address=127.0.0.1:%d", freePort(t)),
			"--tsdb.path=" + filepath.Join(dir, fmt.Sprintf("receive-%d", i)),
			// No retention: Thanos v0.42.5 prunes tenants in the first minute of every fourth hour (00:00,
			// 04:00, ... UTC) and dereferences a tenant whose TSDB is still opening (nil) if it starts then.
			// A CI run that began at 00:00:26 died of it. Retention 0 turns the pruning job off.
			"--tsdb.retention=0d",
			fmt.Sprintf(`--label=receive_replica="%d"`, i),
			"--receive.local-endpoint=" + c.grpc[i],
			"--receive.hashrings-file=" + hashringFile,
			"--receive.replication-factor=" + strconv.Itoa(rf),
		}}
		c.receive = append(c.receive, e)
		c.rwAddr = append(c.rwAddr, rw)
	}
	qaddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	qargs := []string{bin, "query",
		"--log.level=warn",
		"--http-address=" + qaddr,
		fmt.Sprintf("--grpc-address=127.0.0.1:%d", freePort(t)),
		"--query.replica-label=receive_replica",
		"--deduplication.func=chain",
	}
	for _, g := range c.grpc { // --endpoint is marked deprecated in favour of --endpoint.sd-config but works
		qargs = append(qargs, "--endpoint="+g)
	}
	c.querier = &engine{t: t, name: "thanos query", addr: qaddr, log: &syncBuffer{}, args: qargs}
	t.Cleanup(func() {
		for _, e := range append(slices.Clone(c.receive), c.querier) {
			if e.done != nil {
				e.kill()
			}
		}
		if t.Failed() {
			for _, e := range append(slices.Clone(c.receive), c.querier) {
				t.Logf("%s log (tail):\n%s", e.name, logTail(e.log))
			}
		}
	})
	for _, e := range c.receive {
		e.start()
	}
	c.querier.start()
	c.waitStores(thanosReplicas)
	return c
}

func logTail(b *syncBuffer) string {
	s := b.String()
	if len(s) > 6000 {
		s = "…" + s[len(s)-6000:]
	}
	return s
}

// remoteWriteURL is receive node i's Prometheus remote-write endpoint.
func (c *thanosCluster) remoteWriteURL(i int) string {
	return "http://" + c.rwAddr[i] + "/api/v1/receive"
}

// stop kills receive node i (SIGKILL, as a crash); its tsdb directory is kept for restart. It returns once the
// querier has dropped the node (see the top of this file).
func (c *thanosCluster) stop(i int) {
	c.t.Helper()
	c.receive[i].kill()
	c.waitStores(c.running())
}

// running is the number of receive nodes whose process is alive.
func (c *thanosCluster) running() int {
	n := 0
	for _, e := range c.receive {
		select {
		case <-e.done:
		default:
			n++
		}
	}
	return n
}

// restart starts receive node i again on the same ports and tsdb directory and waits until it is ready and
// the querier sees it again.
func (c *thanosCluster) restart(i int) {
	c.t.Helper()
	c.receive[i].start()
	c.waitStores(c.running())
}

// waitStores waits until the querier has exactly n healthy receive stores.
func (c *thanosCluster) waitStores(n int) {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for {
		healthy := 0
		if resp, err := http.Get("http://" + c.querier.addr + "/api/v1/stores"); err == nil {
			var r struct {
				Data map[string][]struct {
					Name      string `json:"name"`
					LastError any    `json:"lastError"`
				} `json:"data"`
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			last = string(b)
			if json.Unmarshal(b, &r) == nil {
				for _, s := range r.Data["receive"] {
					if s.LastError == nil {
						healthy++
					}
				}
			}
		} else {
			last = err.Error()
		}
		if healthy == n {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("thanos query has %d healthy receive stores of %d after 60 s: %s\n%s", healthy, n, last, logTail(c.querier.log))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// rwSeries is one series of a remote-write request.
type rwSeries struct {
	labels  map[string]string // with __name__
	samples []rwSample
}

type rwSample struct {
	ms int64
	v  float64
}

// remoteWrite encodes a Prometheus remote-write v1 request (snappy-compressed protobuf WriteRequest) with its
// labels sorted, POSTs it to url and returns the HTTP status and body (status 0 and the error when the
// request did not get through).
func remoteWrite(url string, series []rwSeries) (int, string) {
	var m easyproto.Marshaler
	req := m.MessageMarshaler()
	for _, s := range series {
		ts := req.AppendMessage(1)
		names := make([]string, 0, len(s.labels))
		for k := range s.labels {
			names = append(names, k)
		}
		slices.Sort(names)
		for _, k := range names {
			l := ts.AppendMessage(1)
			l.AppendString(1, k)
			l.AppendString(2, s.labels[k])
		}
		for _, p := range s.samples {
			sm := ts.AppendMessage(2)
			sm.AppendDouble(1, p.v)
			sm.AppendInt64(2, p.ms)
		}
	}
	hreq, err := http.NewRequest("POST", url, strings.NewReader(string(snappy.Encode(nil, m.Marshal(nil)))))
	if err != nil {
		return 0, err.Error()
	}
	hreq.Header.Set("Content-Encoding", "snappy")
	hreq.Header.Set("Content-Type", "application/x-protobuf")
	hreq.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	client := http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(hreq)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// thanosSample is one element of an instant vector.
type thanosSample struct {
	Labels map[string]string
	Value  float64
}

// thanosSeries is one series of a range vector (every raw sample in the range), timestamps in ms.
type thanosSeries struct {
	Labels  map[string]string
	Samples []rwSample
}

// apiQuery runs promql as an instant query now on the querier (deduplicated, no partial responses) and returns
// the raw "data" or the error.
func (c *thanosCluster) apiQuery(promql string) (string, []json.RawMessage, error) {
	v := url.Values{"query": {promql}, "dedup": {"true"}, "partial_response": {"false"},
		"time": {strconv.FormatFloat(float64(time.Now().UnixMilli())/1000, 'f', 3, 64)}}
	resp, err := http.Get("http://" + c.querier.addr + "/api/v1/query?" + v.Encode())
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var r struct {
		Status string `json:"status"`
		Data   struct {
			ResultType string            `json:"resultType"`
			Result     []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &r); err != nil || resp.StatusCode != 200 || r.Status != "success" {
		return "", nil, fmt.Errorf("thanos query %q: %d %s", promql, resp.StatusCode, b)
	}
	return r.Data.ResultType, r.Data.Result, nil
}

func parsePoint(p [2]any) (rwSample, error) {
	sec, ok := p[0].(float64)
	str, ok2 := p[1].(string)
	if !ok || !ok2 {
		return rwSample{}, fmt.Errorf("bad sample %v", p)
	}
	v, err := strconv.ParseFloat(str, 64)
	return rwSample{ms: int64(math.Round(sec * 1000)), v: v}, err
}

// queryErr is query returning the error instead of failing the test.
func (c *thanosCluster) queryErr(promql string) ([]thanosSample, error) {
	typ, res, err := c.apiQuery(promql)
	if err != nil {
		return nil, err
	}
	if typ != "vector" {
		return nil, fmt.Errorf("thanos query %q: result type %s, want vector", promql, typ)
	}
	var out []thanosSample
	for _, raw := range res {
		var r struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		}
		if err := json.Unmarshal(raw, &r); err != nil {
			return nil, err
		}
		p, err := parsePoint(r.Value)
		if err != nil {
			return nil, err
		}
		out = append(out, thanosSample{Labels: r.Metric, Value: p.v})
	}
	return out, nil
}

// query runs an instant query and returns its vector.
func (c *thanosCluster) query(t *testing.T, promql string) []thanosSample {
	t.Helper()
	out, err := c.queryErr(promql)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// seriesErr returns every raw sample of the series matching selector (e.g. `my_metric{job="x"}`) in the last
// window, read with the range selector selector[window].
func (c *thanosCluster) seriesErr(selector, window string) ([]thanosSeries, error) {
	typ, res, err := c.apiQuery(selector + "[" + window + "]")
	if err != nil {
		return nil, err
	}
	if typ != "matrix" {
		return nil, fmt.Errorf("thanos query %s[%s]: result type %s, want matrix", selector, window, typ)
	}
	var out []thanosSeries
	for _, raw := range res {
		var r struct {
			Metric map[string]string `json:"metric"`
			Values [][2]any          `json:"values"`
		}
		if err := json.Unmarshal(raw, &r); err != nil {
			return nil, err
		}
		s := thanosSeries{Labels: r.Metric}
		for _, v := range r.Values {
			p, err := parsePoint(v)
			if err != nil {
				return nil, err
			}
			s.Samples = append(s.Samples, p)
		}
		out = append(out, s)
	}
	return out, nil
}

// series is seriesErr failing the test on error.
func (c *thanosCluster) series(t *testing.T, selector, window string) []thanosSeries {
	t.Helper()
	out, err := c.seriesErr(selector, window)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestThanosHashringKeepsEverySampleWithOneNodeStopped writes 300 series (two samples each) to the hashring,
// the middle 100 while node 1 is killed, and reads every sample back through the deduplicating querier: with
// node 1 down, after its restart, and with node 0 down after that.
func TestThanosHashringKeepsEverySampleWithOneNodeStopped(t *testing.T) {
	c := startThanos(t)
	const metric = "dkebpf_thanos_smoke"
	base := time.Now().Add(-time.Minute).UnixMilli()
	want := map[string][]rwSample{} // id -> samples
	mk := func(id int) rwSeries {
		s := []rwSample{{base + int64(id)*10, float64(id) + 0.25}, {base + int64(id)*10 + 1000, -float64(id) * 1.5}}
		want[strconv.Itoa(id)] = s
		return rwSeries{labels: map[string]string{"__name__": metric, "id": strconv.Itoa(id), "job": "thanos-smoke"}, samples: s}
	}
	// write sends series [from, to) in batches of 25, through the given nodes in turn; every request must
	// be acknowledged with 2xx.
	write := func(from, to int, nodes ...int) {
		t.Helper()
		for b, k := from, 0; b < to; b, k = b+25, k+1 {
			var batch []rwSeries
			for id := b; id < min(b+25, to); id++ {
				batch = append(batch, mk(id))
			}
			node := nodes[k%len(nodes)]
			if code, body := remoteWrite(c.remoteWriteURL(node), batch); code/100 != 2 {
				t.Fatalf("remote write of series %d.. to node %d: %d %s", b, node, code, body)
			}
		}
	}
	// check waits (up to 20 s: a fresh node's data shows after the querier's next 5 s refresh) until the
	// querier returns exactly the series written so far, each once, with every sample and the latest value.
	check := func(phase string) {
		t.Helper()
		start := time.Now()
		deadline := start.Add(20 * time.Second)
		for tries := 1; ; tries++ {
			problem := func() string {
				got, err := c.seriesErr(`{__name__="`+metric+`"}`, "1h")
				if err != nil {
					return err.Error()
				}
				if len(got) != len(want) {
					return fmt.Sprintf("%d series, want %d", len(got), len(want))
				}
				seen := map[string]bool{}
				for _, s := range got {
					id := s.Labels["id"]
					if _, ok := s.Labels["receive_replica"]; ok {
						return fmt.Sprintf("series %v kept the replica label", s.Labels)
					}
					if seen[id] {
						return fmt.Sprintf("series id=%s twice", id)
					}
					seen[id] = true
					if !slices.Equal(s.Samples, want[id]) {
						return fmt.Sprintf("series id=%s: samples %v, want %v", id, s.Samples, want[id])
					}
				}
				inst, err := c.queryErr(metric)
				if err != nil {
					return err.Error()
				}
				if len(inst) != len(want) {
					return fmt.Sprintf("instant query: %d series, want %d", len(inst), len(want))
				}
				for _, s := range inst {
					if w := want[s.Labels["id"]]; len(w) == 0 || s.Value != w[len(w)-1].v {
						return fmt.Sprintf("instant query: %v = %v, want %v", s.Labels, s.Value, w)
					}
				}
				return ""
			}()
			if problem == "" {
				t.Logf("%s: all %d series, each once, every sample exact (read %d time(s), %s)", phase, len(want), tries,
					time.Since(start).Round(time.Millisecond))
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s", phase, problem)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}

	write(0, 100, 0, 1, 2)
	check("all nodes up")

	t0 := time.Now()
	c.stop(1)
	t.Logf("node 1 killed; the querier dropped it after %s", time.Since(t0).Round(time.Millisecond))
	if code, _ := remoteWrite(c.remoteWriteURL(1), []rwSeries{}); code != 0 {
		t.Fatalf("node 1 answered remote write with %d after it was killed", code)
	}
	write(100, 200, 0, 2) // every request acknowledged (2xx) with node 1 down
	check("node 1 stopped")

	c.restart(1)
	write(200, 300, 0, 1, 2)
	check("node 1 restarted")

	c.stop(0)
	check("node 0 stopped after node 1's restart")
	write(300, 310, 1, 2)
	check("node 0 stopped, more writes")
}
