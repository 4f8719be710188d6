package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// flowMeasurements are the measurements whose exact cases the engines must hold as the local store does.
var flowMeasurements = []string{"netflow", "httpflow", "dnsflow"}

// valueString formats a field's value the same way for every engine: numbers as float64 (exact below 2^53),
// so 3i, 3 and "3" read back from JSON are one value.
func valueString(v any) string {
	switch x := v.(type) {
	case int64:
		return strconv.FormatFloat(float64(x), 'g', -1, 64)
	case uint64:
		return strconv.FormatFloat(float64(x), 'g', -1, 64)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return x.String()
		}
		return strconv.FormatFloat(f, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	}
	return fmt.Sprint(v)
}

// pointKeys are the points as InfluxDB holds them: "measurement k=v k=v … @ns", tags and fields together,
// keys sorted, counted.
func pointKeys(pts []lpPoint) map[string]int {
	out := map[string]int{}
	for _, p := range pts {
		var kv []string
		for k, v := range p.Tags {
			kv = append(kv, k+"="+v)
		}
		for k, v := range p.Fields {
			if v != "" { // httpflow's empty http_version: no tag (docs/agent.md, Sinks)
				kv = append(kv, k+"="+valueString(v))
			}
		}
		slices.Sort(kv)
		out[fmt.Sprintf("%s %s @%d", p.Name, strings.Join(kv, " "), p.Time.UnixNano())]++
	}
	return out
}

// httpflowIdentity are the httpflow fields the sinks forward as tags (docs/agent.md, Sinks).
var httpflowIdentity = []string{"method", "path", "http_version", "status_code"}

// sampleKeys are the points as a Prometheus-style engine holds them: one sample per numeric or boolean
// field, in series <measurement>_<field> labelled by the tags (and httpflow's identity fields), at the
// point's millisecond, counted: "name{k=v,…} @ms value".
func sampleKeys(pts []lpPoint) map[string]int {
	out := map[string]int{}
	for _, p := range pts {
		if p.Name == "httpflow" {
			p.Tags = maps.Clone(p.Tags)
			for _, f := range httpflowIdentity {
				if v, ok := p.Fields[f]; ok && v != "" {
					p.Tags[f] = valueString(v)
				}
			}
		}
		for f, v := range p.Fields {
			if _, isString := v.(string); isString || (p.Name == "httpflow" && slices.Contains(httpflowIdentity, f)) {
				continue
			}
			if b, ok := v.(bool); ok {
				v = map[bool]float64{false: 0, true: 1}[b]
			}
			out[seriesKey(p.Name+"_"+f, p.Tags)+fmt.Sprintf(" @%d %s", p.Time.UnixMilli(), valueString(v))]++
		}
	}
	return out
}

func seriesKey(name string, labels map[string]string) string {
	var kv []string
	for k, v := range labels {
		if k != "__name__" {
			kv = append(kv, k+"="+v)
		}
	}
	slices.Sort(kv)
	return name + "{" + strings.Join(kv, ",") + "}"
}

// keysDiff lists what want has that got lacks and what got has more (at most 20 of each).
func keysDiff(want, got map[string]int) (missing, extra []string) {
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if n := want[k] - got[k]; n > 0 && len(missing) < 20 {
			missing = append(missing, fmt.Sprintf("%dx %s", n, k))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if n := got[k] - want[k]; n > 0 && len(extra) < 20 {
			extra = append(extra, fmt.Sprintf("%dx %s", n, k))
		}
	}
	return missing, extra
}

// influxPoints returns InfluxDB's points of measurement in [from, to] as pointKeys does.
func influxPoints(t *testing.T, e *engine, measurement string, from, to time.Time) map[string]int {
	t.Helper()
	q := fmt.Sprintf(`SELECT * FROM %q WHERE time >= %d AND time <= %d`, measurement, from.UnixNano(), to.UnixNano())
	resp, err := http.PostForm("http://"+e.addr+"/query", url.Values{"db": {"db0"}, "q": {q}, "epoch": {"ns"}})
	must(t, err)
	defer resp.Body.Close()
	var r struct {
		Results []struct {
			Error  string `json:"error"`
			Series []struct {
				Name    string   `json:"name"`
				Columns []string `json:"columns"`
				Values  [][]any  `json:"values"`
			} `json:"series"`
		} `json:"results"`
	}
	dec := json.NewDecoder(resp.Body)
	dec.UseNumber()
	must(t, dec.Decode(&r))
	if len(r.Results) == 0 || r.Results[0].Error != "" {
		t.Fatalf("influxdb %q: %+v", q, r)
	}
	out := map[string]int{}
	for _, s := range r.Results[0].Series {
		for _, row := range s.Values {
			var kv []string
			var ns string
			for i, c := range s.Columns {
				switch {
				case c == "time":
					ns = row[i].(json.Number).String()
				case row[i] != nil && row[i] != "":
					kv = append(kv, c+"="+valueString(row[i]))
				}
			}
			slices.Sort(kv)
			out[fmt.Sprintf("%s %s @%s", s.Name, strings.Join(kv, " "), ns)]++
		}
	}
	return out
}

// vmExportSamples returns VictoriaMetrics' samples of the series matching match in [from, to] as sampleKeys
// does.
func vmExportSamples(t *testing.T, e *engine, match string, from, to time.Time) map[string]int {
	t.Helper()
	if resp, err := http.Get("http://" + e.addr + "/internal/force_flush"); err == nil {
		resp.Body.Close()
	}
	v := url.Values{"match[]": {match}, "start": {unixSeconds(from)}, "end": {unixSeconds(to)}}
	resp, err := http.Get("http://" + e.addr + "/api/v1/export?" + v.Encode())
	must(t, err)
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("victoria-metrics export: %d %s", resp.StatusCode, b)
	}
	out := map[string]int{}
	dec := json.NewDecoder(resp.Body)
	dec.UseNumber()
	for dec.More() {
		var row struct {
			Metric     map[string]string `json:"metric"`
			Values     []json.Number     `json:"values"`
			Timestamps []int64           `json:"timestamps"`
		}
		must(t, dec.Decode(&row))
		s := seriesKey(row.Metric["__name__"], row.Metric)
		for i, ts := range row.Timestamps {
			if ts >= from.UnixMilli() && ts <= to.UnixMilli() {
				out[fmt.Sprintf("%s @%d %s", s, ts, valueString(row.Values[i]))]++
			}
		}
	}
	return out
}

func unixSeconds(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', 3, 64)
}

// engineCopy is one engine's view of the flows: got reads it, want turns local points into its form.
type engineCopy struct {
	name string
	want func(pts []lpPoint) map[string]int
	got  func(from, to time.Time) map[string]int
}

// checkEnginesHoldTheStore waits until every engine holds exactly the flow points of the local store in
// [from, to] (the store settled: nothing of that range is still coming), then reports any difference.
func checkEnginesHoldTheStore(t *testing.T, a *agent, from, to time.Time, engines []engineCopy) {
	t.Helper()
	var local []lpPoint
	for _, m := range flowMeasurements {
		for _, p := range a.query(m, "30m") {
			if !p.Time.Before(from) && !p.Time.After(to) {
				local = append(local, p)
			}
		}
	}
	perMeasurement := map[string]int{}
	for _, p := range local {
		perMeasurement[p.Name]++
	}
	t.Logf("local store: %d flow points in [%s, %s] %v", len(local), from.Format("15:04:05"), to.Format("15:04:05"), perMeasurement)
	for _, e := range engines {
		want := e.want(local)
		var got map[string]int
		deadline := time.Now().Add(60 * time.Second)
		for {
			got = e.got(from, to)
			if maps.Equal(want, got) || time.Now().After(deadline) {
				break
			}
			time.Sleep(time.Second)
		}
		missing, extra := keysDiff(want, got)
		total := 0
		for _, n := range want {
			total += n
		}
		t.Logf("%s: holds %d entries for the store's %d", e.name, len(got), total)
		if len(missing) > 0 || len(extra) > 0 {
			t.Errorf("%s differs from the local store:\n  missing:\n    %s\n  extra:\n    %s", e.name,
				strings.Join(missing, "\n    "), strings.Join(extra, "\n    "))
		}
	}
}

// TestSinksCarryTheExactFlowsToEveryEngine runs the exact netflow (TCP, short and long connections),
// httpflow (nginx, plain) and dnsflow (dnsmasq) cases with the agent forwarding to a real VictoriaMetrics
// (line protocol), a real InfluxDB and a real Thanos (remote write to a hashring of three receive nodes,
// replication factor 3, read through thanos query), one receive node stopped from the httpflow case on. The
// local store must equal the ground truth (as in the cases' own tests), and each engine, read back through
// its own query API, must hold exactly the local store's flow points of the run: InfluxDB every point whole,
// VictoriaMetrics and Thanos every numeric field as a sample. Thanos is read with node 1 stopped, then again
// with node 1 restarted (missing what came while it was down) and node 2 stopped.
func TestSinksCarryTheExactFlowsToEveryEngine(t *testing.T) {
	vm, influx, th := startVictoriaMetrics(t), startInfluxDB(t), startThanos(t)
	n := startNginx(t)
	dns := startDnsmasqEnv(t)
	conf := ebpfConf(httpflowConf + fmt.Sprintf("\n  dnsflow_ports = [53, %d]", lostPort))
	a := launchAgentMain(t, conf, fmt.Sprintf(`
[[sinks.sink]]
  id = "vm"
  target = "victoriametrics"
  host = %q
[[sinks.sink]]
  id = "influx"
  target = "influxdb"
  host = %q
  database = "db0"
[[sinks.sink]]
  id = "thanos"
  target = "prometheus"
  url = %q
`, vm.addr, influx.addr, th.remoteWriteURL(0)))
	a.waitFor("the collector's first datakit_ebpf point", firstPointTimeout, func() bool {
		return len(a.query("datakit_ebpf", "1m")) > 0
	})
	from := time.Now()

	t.Run("netflow", func(t *testing.T) { checkTCPFlows(t, a, "tcp4", "127.0.0.1", "IPv4") })
	th.stop(1) // the hashring keeps taking writes and answering queries whole (replication factor 3)
	t.Run("httpflow", func(t *testing.T) {
		run := runPlainMix(t, n)
		settleHTTPFlows(t, a, "plain HTTP", loggedTruth(t, n, n.httpPort, run))
	})
	t.Run("dnsflow", func(t *testing.T) { settleDNSFlows(t, a, "dnsmasq", runDnsmasqWorkload(t, dns)) })
	if t.Failed() {
		t.Fatal("the local store does not hold the ground truth: the engines are not compared")
	}
	to := time.Now()
	time.Sleep(3 * interval) // a flush of the range posted late is in the store

	thanos := engineCopy{"Thanos", sampleKeys, func(from, to time.Time) map[string]int {
		out := map[string]int{}
		window := strconv.Itoa(int(time.Since(from).Seconds())+60) + "s"
		for _, s := range th.series(t, `{__name__=~"(netflow|httpflow|dnsflow)_.+"}`, window) {
			delete(s.Labels, "tenant_id") // receive's own label: the tenant of the write
			k := seriesKey(s.Labels["__name__"], s.Labels)
			for _, x := range s.Samples {
				if x.ms >= from.UnixMilli() && x.ms <= to.UnixMilli() {
					out[fmt.Sprintf("%s @%d %s", k, x.ms, valueString(x.v))]++
				}
			}
		}
		return out
	}}
	checkEnginesHoldTheStore(t, a, from, to, []engineCopy{thanos}) // receive node 1 stopped
	th.restart(1)
	th.stop(2) // node 1 missed what came while it was down: node 0 alone has all of it now
	checkEnginesHoldTheStore(t, a, from, to, []engineCopy{thanos,
		{"InfluxDB", pointKeys, func(from, to time.Time) map[string]int {
			out := map[string]int{}
			for _, m := range flowMeasurements {
				maps.Copy(out, influxPoints(t, influx, m, from, to))
			}
			return out
		}},
		{"VictoriaMetrics", sampleKeys, func(from, to time.Time) map[string]int {
			return vmExportSamples(t, vm, `{__name__=~"(netflow|httpflow|dnsflow)_.+"}`, from, to)
		}},
	})
}
