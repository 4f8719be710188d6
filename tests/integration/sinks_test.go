package integration

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// sinksConf is the [sinks] of datakit.conf forwarding to vm (line protocol), influx, and rw (Prometheus
// remote write, another VictoriaMetrics: its series would mix with vm's).
func sinksConf(vm, influx, rw *engine) string {
	return fmt.Sprintf(`
[sinks]
  [[sinks.sink]]
    id = "vm"
    target = "victoriametrics"
    host = %q
    timeout = "2s"
  [[sinks.sink]]
    id = "influx"
    target = "influxdb"
    host = %q
    database = "db0"
    categories = ["M", "N", "L"]
    timeout = "2s"
  [[sinks.sink]]
    id = "rw"
    target = "prometheus"
    host = %q
    timeout = "2s"
`, vm.addr, influx.addr, rw.addr)
}

// postSinkPoints posts batches of 100 points of measurement sinktest, keys from first, and returns the next
// key. Every batch must be acknowledged.
func postSinkPoints(t *testing.T, a *agent, base time.Time, first, batches int) int {
	t.Helper()
	k := first
	for b := 0; b < batches; b++ {
		var body strings.Builder
		for i := 0; i < 100; i++ {
			fmt.Fprintf(&body, "sinktest,key=%d v=%di %d\n", k, k, base.Add(time.Duration(k)*time.Millisecond).UnixNano())
			k++
		}
		if code := a.postBatch("/v1/write/metric?input=sinktest", "", []byte(body.String())); code != 200 {
			t.Fatalf("batch %d: status %d", b, code)
		}
	}
	return k
}

// vmKeys returns how many distinct keys of sinktest VictoriaMetrics holds and how many samples in all.
func vmKeys(t *testing.T, vm *engine) (keys, samples int) {
	for _, ts := range vmSamples(t, vm, `{__name__="sinktest_v"}`) {
		keys++
		samples += len(ts)
	}
	return keys, samples
}

// influxCount returns InfluxDB's count and sum of sinktest's v.
func influxCount(t *testing.T, influx *engine) (count, sum int64) {
	rows := influxQuery(t, influx, `SELECT count("v"), sum("v") FROM "sinktest"`)
	if len(rows) == 0 {
		return 0, 0
	}
	num := func(v any) int64 { f, _ := v.(float64); return int64(f) } // JSON numbers; exact below 2^53
	return num(rows[0][1]), num(rows[0][2])
}

// storedCount counts the points of measurement the agent holds in [from, to], a minute at a time (a query
// returns at most 100 000 points).
func storedCount(t *testing.T, a *agent, measurement string, from, to time.Time) int {
	n := 0
	for start := from; !start.After(to); start = start.Add(time.Minute) {
		end := start.Add(time.Minute - time.Nanosecond)
		if end.After(to) {
			end = to
		}
		v := url.Values{"measurement": {measurement}, "since": {start.Format(time.RFC3339Nano)},
			"until": {end.Format(time.RFC3339Nano)}, "limit": {"100000"}}
		resp, err := http.Get("http://" + a.addr + "/v1/query?" + v.Encode())
		must(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("X-Datakit-Truncated") != "" {
			t.Fatalf("query %s [%s, %s]: %d %s", measurement, start, end, resp.StatusCode, body)
		}
		n += len(decodeLP(t, body))
	}
	return n
}

// TestFaultSinksDeliverEveryAcknowledgedPointThroughOutagesAndAKill forwards to a real VictoriaMetrics and a real
// InfluxDB while VictoriaMetrics hangs (SIGSTOP: connections accepted, no answer) and InfluxDB is killed
// and restarted, then kills the agent (SIGKILL) while it forwards a backlog, and restarts it. Every point
// the API acknowledged must be in both engines: VictoriaMetrics (no deduplication) shows any point sent
// twice, InfluxDB overwrites a point written again (same series and time).
func TestFaultSinksDeliverEveryAcknowledgedPointThroughOutagesAndAKill(t *testing.T) {
	vm, influx, rw := startVictoriaMetrics(t), startInfluxDB(t), startVictoriaMetrics(t)
	a := launchAgentMain(t, "", sinksConf(vm, influx, rw))
	a.waitPing(30 * time.Second)
	base := time.Now().Add(-time.Hour).Truncate(time.Second)

	n := postSinkPoints(t, a, base, 0, 20)

	// Outage: VictoriaMetrics hung, InfluxDB gone, while the API acknowledges 100 points every 500 ms
	// (`make faults`: for 10 minutes).
	vm.pause()
	influx.kill()
	outage := 5 * time.Second
	if faultsLong {
		outage = 10 * time.Minute
	}
	for end := time.Now().Add(outage); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		n = postSinkPoints(t, a, base, n, 1)
	}
	vm.resume()
	influx.start()

	// A backlog of 20 000 points (VictoriaMetrics hung again: four requests' worth), then the agent killed
	// while it forwards them.
	vm.pause()
	n = postSinkPoints(t, a, base, n, 200)
	time.Sleep(3 * time.Second)
	vm.resume()
	time.Sleep(100 * time.Millisecond)
	a.kill()
	a.start()
	a.waitPing(30 * time.Second)
	restarted := time.Now()

	var keys, samples, rwKeys, rwSamples int
	var count, sum int64
	deadline := time.Now().Add(90*time.Second + outage/2)
	for time.Now().Before(deadline) {
		keys, samples = vmKeys(t, vm)
		rwKeys, rwSamples = vmKeys(t, rw)
		count, sum = influxCount(t, influx)
		if keys == n && count == int64(n) && rwKeys == n {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	took := time.Since(restarted)
	wantSum := int64(n) * int64(n-1) / 2
	t.Logf("%d points acknowledged; VictoriaMetrics: %d keys, %d samples (%d sent twice); remote write: %d keys; InfluxDB: count %d, sum %d; all in %v after the restart",
		n, keys, samples, samples-keys, rwKeys, count, sum, took.Round(100*time.Millisecond))
	if keys != n || samples < n {
		t.Errorf("VictoriaMetrics holds %d of the %d keys (%d samples)", keys, n, samples)
	}
	if rwKeys != n || rwSamples < n {
		t.Errorf("remote write: VictoriaMetrics holds %d of the %d keys in %d samples", rwKeys, n, rwSamples)
	}
	if count != int64(n) || sum != wantSum {
		t.Errorf("InfluxDB holds count %d, sum %d; want %d and %d", count, sum, n, wantSum)
	}
	if stored := storedCount(t, a, "sinktest", base, base.Add(time.Duration(n)*time.Millisecond)); stored != n {
		t.Errorf("the local store holds %d points, want %d", stored, n)
	}
	// Each sink's health, stored every 10 s as a datakit point: nothing left behind, nothing lost or dropped.
	for _, id := range []string{"vm", "influx", "rw"} {
		var p lpPoint
		a.waitFor("sink "+id+"'s health with an empty backlog", 30*time.Second, func() bool {
			pts := a.query("datakit", "1m", "sink:"+id)
			if len(pts) == 0 {
				return false
			}
			p = pts[len(pts)-1]
			return intField(p, "sink_backlog_points") == 0
		})
		if intField(p, "sink_points_lost") != 0 || intField(p, "sink_points_dropped") != 0 {
			t.Errorf("sink %s health: %v", id, p.Fields)
		}
		t.Logf("sink %s after the restart: %d points sent, %d requests failed", id, intField(p, "sink_points_sent"), intField(p, "sink_requests_failed"))
	}
	addFault(t, faultRow{Case: "sinks: engines down, agent kill -9 mid-forward",
		Done:  fmt.Sprintf("VictoriaMetrics hung and InfluxDB killed %v, 100 points acknowledged every 500 ms; VictoriaMetrics hung 3 s under a 20 000-point backlog, resumed, the agent SIGKILLed 100 ms later and restarted", outage),
		Acked: fmt.Sprint(n), Found: fmt.Sprintf("VictoriaMetrics %d, InfluxDB %d, remote write %d", keys, count, rwKeys),
		Lost: fmt.Sprintf("%d, %d, %d", max(0, n-keys), max(0, int64(n)-count), max(0, n-rwKeys)), Dup: fmt.Sprintf("VictoriaMetrics %d, remote write %d (InfluxDB overwrites)", samples-keys, rwSamples-rwKeys),
		Recovered: took.Round(100 * time.Millisecond).String(),
		Detail:    "duplicates: batches the engine stored while the sink had timed out, or before the kill moved the cursor"})
}
