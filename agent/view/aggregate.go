package view

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	lp "github.com/influxdata/line-protocol/v2/lineprotocol"

	"dkebpf/agent/store"
)

// Ranges the page offers.
var Ranges = map[string]time.Duration{"15m": 15 * time.Minute, "1h": time.Hour, "6h": 6 * time.Hour,
	"24h": 24 * time.Hour, "7d": 7 * 24 * time.Hour}

const (
	// topN rows are returned per table.
	topN = 25
	// maxKeys bounds the distinct keys of one table; further keys count under otherKey.
	maxKeys  = 100_000
	otherKey = "(other)"
	// maxUsers and maxPerUser bound the bash answer; maxHealthPoints the self-metric points read.
	maxUsers        = 100
	maxPerUser      = 20
	maxHealthPoints = 200_000
)

// window is an answer's time range and chart buckets.
type window struct {
	name         string
	since, until time.Time
	step         time.Duration
}

func newWindow(name string, now time.Time) (window, error) {
	if name == "" {
		name = "1h"
	}
	d, ok := Ranges[name]
	if !ok {
		return window{}, fmt.Errorf("range: invalid %q, want one of 15m, 1h, 6h, 24h, 7d", name)
	}
	return window{name: name, since: now.Add(-d), until: now, step: d / Buckets}, nil
}

func (w window) bucket(t time.Time) int {
	return min(max(int(t.Sub(w.since)/w.step), 0), Buckets-1)
}

// Meta is what every answer says about its range and how much of it was read.
type Meta struct {
	Range        string `json:"range"`
	Since        int64  `json:"since"` // unix seconds
	Until        int64  `json:"until"`
	StepSeconds  int64  `json:"step_seconds"`
	Scanned      int    `json:"scanned"`  // points read
	MaxScan      int    `json:"max_scan"` // the cap
	Truncated    bool   `json:"truncated"`
	CoveredSince int64  `json:"covered_since,omitempty"` // when truncated: about how far back the answer reaches
	ElapsedMs    int64  `json:"elapsed_ms"`
}

// Chart is time series over the window's buckets: T holds each bucket's start (unix seconds).
type Chart struct {
	T      []int64  `json:"t"`
	Series []Series `json:"series"`
}

// Series is one line of a chart.
type Series struct {
	Name   string    `json:"name"`
	Values []float64 `json:"values"`
}

func (w window) chart(names ...string) Chart {
	c := Chart{T: make([]int64, Buckets)}
	for i := range c.T {
		c.T[i] = w.since.Add(time.Duration(i) * w.step).Unix()
	}
	for _, n := range names {
		c.Series = append(c.Series, Series{Name: n, Values: make([]float64, Buckets)})
	}
	return c
}

func (w window) meta(start time.Time) Meta {
	return Meta{Range: w.name, Since: w.since.Unix(), Until: w.until.Unix(), StepSeconds: int64(w.step / time.Second)}
}

// scan streams the window's points of q through fn, at most MaxScan of them, newest blocks first.
func (h *Handler) scan(w window, q store.Query, keys []string, maxScan int, m *Meta, fn func(p *store.Point)) error {
	q.Since, q.Until = w.since, w.until
	oldest := int64(math.MaxInt64)
	m.MaxScan = maxScan
	err := h.opts.Store.Scan(q, keys, func(p *store.Point) error {
		if m.Scanned >= maxScan {
			m.Truncated = true
			return store.ErrStopScan
		}
		m.Scanned++
		oldest = min(oldest, p.Time.UnixNano())
		fn(p)
		return nil
	})
	if m.Truncated {
		m.CoveredSince = time.Unix(0, oldest).Unix()
	}
	return err
}

func num(p *store.Point, key string) (float64, bool) {
	for _, f := range p.Fields {
		if f.Key == key {
			switch f.Value.Kind() {
			case lp.Int:
				return float64(f.Value.IntV()), true
			case lp.Uint:
				return float64(f.Value.UintV()), true
			case lp.Float:
				return f.Value.FloatV(), true
			}
			return 0, false
		}
	}
	return 0, false
}

func str(p *store.Point, key string) string {
	for _, f := range p.Fields {
		if f.Key == key {
			if f.Value.Kind() == lp.String {
				return f.Value.StringV()
			}
			return f.Value.String()
		}
	}
	return ""
}

func tag(p *store.Point, key string) string {
	v, _ := p.Tag(key)
	return v
}

// table accumulates rows by key, bounded by maxKeys.
type table[R any] struct {
	rows map[string]*R
	mk   func(key string) *R
}

func newTable[R any](mk func(key string) *R) *table[R] {
	return &table[R]{rows: map[string]*R{}, mk: mk}
}

func (t *table[R]) get(key string) *R {
	r := t.rows[key]
	if r == nil {
		if len(t.rows) >= maxKeys {
			key = otherKey
			if r = t.rows[key]; r != nil {
				return r
			}
		}
		r = t.mk(key)
		t.rows[key] = r
	}
	return r
}

// top returns the n rows greatest by less's order, greatest first; ties by key.
func top[R any](t *table[R], n int, greater func(a, b *R) bool, key func(*R) string) []*R {
	out := make([]*R, 0, len(t.rows))
	for _, r := range t.rows {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		if greater(out[i], out[j]) {
			return true
		}
		if greater(out[j], out[i]) {
			return false
		}
		return key(out[i]) < key(out[j])
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// FlowRow is one row of a netflow table.
type FlowRow struct {
	Key          string `json:"key"`
	Bytes        int64  `json:"bytes"`
	BytesRead    int64  `json:"bytes_read"`
	BytesWritten int64  `json:"bytes_written"`
	Points       int64  `json:"points"`
}

// NetflowAnswer is GET /view/api/netflow.
type NetflowAnswer struct {
	Meta
	TotalBytes int64      `json:"total_bytes"`
	Chart      Chart      `json:"chart"` // bytes read, bytes written per bucket
	ByProcess  []*FlowRow `json:"by_process"`
	ByRemote   []*FlowRow `json:"by_remote"`
	ByDomain   []*FlowRow `json:"by_domain"`
}

func (h *Handler) netflow(w window) (any, error) {
	start := time.Now()
	a := &NetflowAnswer{Meta: w.meta(start), Chart: w.chart("bytes read", "bytes written")}
	mk := func(k string) *FlowRow { return &FlowRow{Key: k} }
	proc, remote, domain := newTable(mk), newTable(mk), newTable(mk)
	err := h.scan(w, store.Query{Measurement: "netflow"},
		[]string{"bytes_read", "bytes_written", "process_name", "dst_ip", "dst_port", "dst_domain"}, h.opts.MaxScan, &a.Meta, func(p *store.Point) {
			rd, _ := num(p, "bytes_read")
			wr, _ := num(p, "bytes_written")
			r, wb := int64(rd), int64(wr)
			b := w.bucket(p.Time)
			a.Chart.Series[0].Values[b] += rd
			a.Chart.Series[1].Values[b] += wr
			a.TotalBytes += r + wb
			add := func(row *FlowRow) {
				row.Bytes += r + wb
				row.BytesRead += r
				row.BytesWritten += wb
				row.Points++
			}
			var name, ip, port, dom string
			for _, t := range p.Tags { // one pass: netflow points carry twenty-odd tags
				switch t.Key {
				case "process_name":
					name = t.Value
				case "dst_ip":
					ip = t.Value
				case "dst_port":
					port = t.Value
				case "dst_domain":
					dom = t.Value
				}
			}
			if name == "" {
				name = "(unknown)"
			}
			add(proc.get(name))
			add(remote.get(hostPort(ip, port)))
			if dom != "" {
				add(domain.get(dom))
			}
		})
	if err != nil {
		return nil, err
	}
	greater := func(x, y *FlowRow) bool { return x.Bytes > y.Bytes }
	key := func(r *FlowRow) string { return r.Key }
	a.ByProcess, a.ByRemote, a.ByDomain = top(proc, topN, greater, key), top(remote, topN, greater, key), top(domain, topN, greater, key)
	a.ElapsedMs = time.Since(start).Milliseconds()
	return a, nil
}

func hostPort(ip, port string) string {
	if strings.Contains(ip, ":") {
		return "[" + ip + "]:" + port
	}
	return ip + ":" + port
}

// HTTPRow is one endpoint: a direction, host and path.
type HTTPRow struct {
	Direction  string   `json:"direction"`
	Host       string   `json:"host"`
	Path       string   `json:"path"`
	Count      int64    `json:"count"`
	Status     [5]int64 `json:"status"` // 2xx, 3xx, 4xx, 5xx, other
	LatencyMs  float64  `json:"latency_mean_ms"`
	LatencyMax float64  `json:"latency_max_ms"` // the largest interval mean: httpflow keeps no per-request max
	latSum     float64
	key        string
}

// HTTPAnswer is GET /view/api/httpflow.
type HTTPAnswer struct {
	Meta
	Requests  int64      `json:"requests"`
	Chart     Chart      `json:"chart"` // requests per bucket by status class
	Endpoints []*HTTPRow `json:"endpoints"`
}

func statusClass(code float64) int {
	if code >= 200 && code < 600 {
		return int(code)/100 - 2
	}
	return 4
}

func (h *Handler) httpflow(w window) (any, error) {
	start := time.Now()
	a := &HTTPAnswer{Meta: w.meta(start), Chart: w.chart("2xx", "3xx", "4xx", "5xx", "other")}
	eps := newTable(func(k string) *HTTPRow { return &HTTPRow{key: k} })
	err := h.scan(w, store.Query{Measurement: "httpflow"},
		[]string{"count", "status_code", "latency", "http_host", "server_ip", "server_port", "direction", "path"}, h.opts.MaxScan, &a.Meta, func(p *store.Point) {
			n, _ := num(p, "count")
			code, _ := num(p, "status_code")
			lat, _ := num(p, "latency")
			host := tag(p, "http_host")
			if host == "" {
				host = hostPort(tag(p, "server_ip"), tag(p, "server_port"))
			}
			dir, path := tag(p, "direction"), str(p, "path")
			r := eps.get(dir + "\x00" + host + "\x00" + path)
			if r.key != otherKey && r.Count == 0 {
				r.Direction, r.Host, r.Path = dir, host, path
			}
			c := statusClass(code)
			r.Count += int64(n)
			r.Status[c] += int64(n)
			r.latSum += lat * n
			r.LatencyMax = max(r.LatencyMax, lat/1e6)
			a.Requests += int64(n)
			a.Chart.Series[c].Values[w.bucket(p.Time)] += n
		})
	if err != nil {
		return nil, err
	}
	if r := eps.rows[otherKey]; r != nil {
		r.Path = otherKey
	}
	a.Endpoints = top(eps, topN, func(x, y *HTTPRow) bool { return x.Count > y.Count }, func(r *HTTPRow) string { return r.key })
	for _, r := range a.Endpoints {
		if r.Count > 0 {
			r.LatencyMs = r.latSum / float64(r.Count) / 1e6
		}
	}
	a.ElapsedMs = time.Since(start).Milliseconds()
	return a, nil
}

// APIRow is one API endpoint this host calls (api_endpoint): a service host, method and route.
type APIRow struct {
	Host      string   `json:"host"`
	Service   string   `json:"service"`
	Method    string   `json:"method"`
	Route     string   `json:"route"`
	Count     int64    `json:"count"`
	Status    [5]int64 `json:"status"` // 2xx, 3xx, 4xx, 5xx, other
	ErrorRate float64  `json:"error_rate"`
	LatencyMs float64  `json:"latency_mean_ms"`
	P99Max    float64  `json:"latency_p99_max_ms"` // the largest interval p99
	FirstSeen int64    `json:"first_seen"`         // unix seconds
	LastSeen  int64    `json:"last_seen"`
	latSum    float64
	key       string
}

// APIAnswer is GET /view/api/apis.
type APIAnswer struct {
	Meta
	Calls     int64     `json:"calls"`
	Chart     Chart     `json:"chart"` // calls per bucket by status class
	Endpoints []*APIRow `json:"endpoints"`
}

func (h *Handler) apis(w window) (any, error) {
	start := time.Now()
	a := &APIAnswer{Meta: w.meta(start), Chart: w.chart("2xx", "3xx", "4xx", "5xx", "other")}
	eps := newTable(func(k string) *APIRow { return &APIRow{key: k} })
	classes := []string{"status_2xx", "status_3xx", "status_4xx", "status_5xx", "status_1xx"}
	err := h.scan(w, store.Query{Measurement: "api_endpoint"},
		append([]string{"count", "latency_mean", "latency_p99", "first_seen", "last_seen", "api_host", "service", "method", "route"}, classes...),
		h.opts.MaxScan, &a.Meta, func(p *store.Point) {
			n, _ := num(p, "count")
			lat, _ := num(p, "latency_mean")
			p99, _ := num(p, "latency_p99")
			first, _ := num(p, "first_seen")
			last, _ := num(p, "last_seen")
			host, method, route := tag(p, "api_host"), tag(p, "method"), tag(p, "route")
			r := eps.get(host + "\x00" + method + "\x00" + route)
			if r.Count == 0 {
				r.FirstSeen = int64(first / 1e3) // then the earliest: the min below starts from a real one
				if r.key != otherKey {
					r.Host, r.Service, r.Method, r.Route = host, tag(p, "service"), method, route
				}
			}
			for i, c := range classes {
				v, _ := num(p, c)
				r.Status[i] += int64(v)
				a.Chart.Series[i].Values[w.bucket(p.Time)] += v
			}
			r.Count += int64(n)
			r.latSum += lat * n
			r.P99Max = max(r.P99Max, p99/1e6)
			r.FirstSeen = min(r.FirstSeen, int64(first/1e3))
			r.LastSeen = max(r.LastSeen, int64(last/1e3))
			a.Calls += int64(n)
		})
	if err != nil {
		return nil, err
	}
	if r := eps.rows[otherKey]; r != nil {
		r.Route = otherKey
	}
	a.Endpoints = top(eps, topN, func(x, y *APIRow) bool { return x.Count > y.Count }, func(r *APIRow) string { return r.key })
	for _, r := range a.Endpoints {
		if r.Count > 0 {
			r.LatencyMs = r.latSum / float64(r.Count) / 1e6
			r.ErrorRate = float64(r.Status[2]+r.Status[3]) / float64(r.Count)
		}
	}
	a.ElapsedMs = time.Since(start).Milliseconds()
	return a, nil
}

// DNSRow is one name asked.
type DNSRow struct {
	Name       string           `json:"name"`
	Count      int64            `json:"count"`
	Timeouts   int64            `json:"timeouts"` // rcode -1: no answer
	LatencyMs  float64          `json:"latency_mean_ms"`
	LatencyMax float64          `json:"latency_max_ms"`
	Rcodes     map[string]int64 `json:"rcodes"` // rcode name -> lookups
	latSum     float64
	answered   int64
}

// DNSAnswer is GET /view/api/dnsflow.
type DNSAnswer struct {
	Meta
	Lookups int64     `json:"lookups"`
	Chart   Chart     `json:"chart"` // lookups per bucket: NOERROR, other answers, timeouts
	Names   []*DNSRow `json:"names"`
}

func (h *Handler) dnsflow(w window) (any, error) {
	start := time.Now()
	a := &DNSAnswer{Meta: w.meta(start), Chart: w.chart("NOERROR", "error answers", "timeouts")}
	names := newTable(func(k string) *DNSRow { return &DNSRow{Name: k, Rcodes: map[string]int64{}} })
	err := h.scan(w, store.Query{Measurement: "dnsflow"},
		[]string{"count", "rcode", "latency", "latency_max", "qname", "rcode_name"}, h.opts.MaxScan, &a.Meta, func(p *store.Point) {
			n, _ := num(p, "count")
			rc, _ := num(p, "rcode")
			lat, _ := num(p, "latency")
			latMax, _ := num(p, "latency_max")
			r := names.get(tag(p, "qname"))
			rcName := tag(p, "rcode_name")
			if rcName == "" {
				rcName = strconv.Itoa(int(rc))
			}
			if len(r.Rcodes) < 32 {
				r.Rcodes[rcName] += int64(n)
			}
			r.Count += int64(n)
			s := 0
			switch {
			case rc < 0:
				r.Timeouts += int64(n)
				s = 2
			default:
				r.answered += int64(n)
				r.latSum += lat * n
				r.LatencyMax = max(r.LatencyMax, latMax/1e6)
				if rc > 0 {
					s = 1
				}
			}
			a.Lookups += int64(n)
			a.Chart.Series[s].Values[w.bucket(p.Time)] += n
		})
	if err != nil {
		return nil, err
	}
	a.Names = top(names, topN, func(x, y *DNSRow) bool { return x.Count > y.Count }, func(r *DNSRow) string { return r.Name })
	for _, r := range a.Names {
		if r.answered > 0 {
			r.LatencyMs = r.latSum / float64(r.answered) / 1e6
		}
	}
	a.ElapsedMs = time.Since(start).Milliseconds()
	return a, nil
}

// BashLine is one command.
type BashLine struct {
	Time int64  `json:"time"` // unix ms
	PID  string `json:"pid"`
	Cmd  string `json:"cmd"`
}

// BashUser is a user's last commands, newest first.
type BashUser struct {
	User     string     `json:"user"`
	Commands int        `json:"commands"` // in the range (of the lines read)
	Last     []BashLine `json:"last"`
}

// BashAnswer is GET /view/api/bash.
type BashAnswer struct {
	Meta
	Users []*BashUser `json:"users"`
}

func (h *Handler) bash(w window) (any, error) {
	start := time.Now()
	a := &BashAnswer{Meta: w.meta(start)}
	users := map[string]*BashUser{}
	newest := map[string]int64{}
	err := h.scan(w, store.Query{Measurement: "bash", Category: "logging"}, []string{"user", "pid", "cmd"}, h.opts.MaxScan, &a.Meta, func(p *store.Point) {
		name := str(p, "user")
		if name == "" {
			name = "(unknown)"
		}
		u := users[name]
		if u == nil {
			if len(users) >= maxUsers {
				return
			}
			u = &BashUser{User: name}
			users[name] = u
		}
		u.Commands++
		// The user's maxPerUser newest lines, newest first: blocks come newest first, but only roughly.
		l := BashLine{Time: p.Time.UnixMilli(), PID: str(p, "pid"), Cmd: str(p, "cmd")}
		i, _ := slices.BinarySearchFunc(u.Last, l.Time, func(x BashLine, t int64) int { return cmpDesc(x.Time, t) })
		if i < maxPerUser {
			u.Last = slices.Insert(u.Last, i, l)
			if len(u.Last) > maxPerUser {
				u.Last = u.Last[:maxPerUser]
			}
		}
		newest[name] = max(newest[name], l.Time)
	})
	if err != nil {
		return nil, err
	}
	for _, u := range users {
		a.Users = append(a.Users, u)
	}
	slices.SortFunc(a.Users, func(x, y *BashUser) int { // the user of the newest line first
		if c := cmp.Compare(newest[y.User], newest[x.User]); c != 0 {
			return c
		}
		return strings.Compare(x.User, y.User)
	})
	a.ElapsedMs = time.Since(start).Milliseconds()
	return a, nil
}

// cmpDesc places a line at b after every line at b or newer: lines newest first, equal times in order of
// arrival (for BinarySearchFunc only: it never says equal).
func cmpDesc(a, b int64) int {
	if a >= b {
		return -1
	}
	return 1
}

// HealthField is one of the collector's counters: its latest value and its increase over the range.
type HealthField struct {
	Field    string `json:"field"`
	Latest   int64  `json:"latest"`
	Increase int64  `json:"increase"`
}

// SinkHealth is the latest `datakit` point of one sink.
type SinkHealth struct {
	Sink   string           `json:"sink"`
	Target string           `json:"target"`
	Time   int64            `json:"time"` // unix ms
	Fields map[string]int64 `json:"fields"`
}

// HealthAnswer is GET /view/api/health.
type HealthAnswer struct {
	Meta
	CollectorSeen int64         `json:"collector_seen,omitempty"` // unix ms of the newest datakit_ebpf point
	UptimeSeconds int64         `json:"uptime_seconds"`
	HooksRefused  int64         `json:"hooks_refused"`
	PartsFallback int64         `json:"parts_fallback"`
	PartsOff      int64         `json:"parts_off"`
	Counters      []HealthField `json:"counters"` // loss and drop counters, non-zero first
	Chart         Chart         `json:"chart"`    // events lost, points dropped per bucket
	Sinks         []SinkHealth  `json:"sinks"`
	StoreEvicted  int64         `json:"store_evicted_points"`
	StoreDamaged  int64         `json:"store_damaged_points"`
}

// lossField says whether a datakit_ebpf field counts something lost or dropped.
func lossField(k string) bool {
	for _, s := range []string{"_events_lost", "_map_full_drops", "_decode_errors", "_points_dropped", "_points_rejected",
		"_points_failed_posts", "_points_sampled_out", "spool_corrupt_records"} {
		if strings.HasSuffix(k, s) {
			return true
		}
	}
	return false
}

func (h *Handler) health(w window) (any, error) {
	start := time.Now()
	a := &HealthAnswer{Meta: w.meta(start), Chart: w.chart("events lost", "points dropped"),
		StoreEvicted: h.opts.Store.Evicted(), StoreDamaged: h.opts.Store.Damaged()}
	// The collector's points carry a field per plugin and counter: each is kept compact (its loss counters
	// only), at most maxHealthPoints of them, then put in time order per series (its tags).
	type row struct {
		t      int64
		series string
		vals   map[string]float64
		state  [4]int64 // uptime_seconds, hooks_refused, parts_fallback, parts_off
	}
	var rows []row
	err := h.scan(w, store.Query{Measurement: "datakit_ebpf"}, nil, min(h.opts.MaxScan, maxHealthPoints), &a.Meta, func(p *store.Point) {
		var kb strings.Builder
		for _, t := range p.Tags {
			kb.WriteString(t.Key + "=" + t.Value + ",")
		}
		r := row{t: p.Time.UnixNano(), series: kb.String(), vals: map[string]float64{}}
		for _, f := range p.Fields {
			v, _ := num(p, f.Key)
			switch {
			case lossField(f.Key):
				r.vals[f.Key] = v
			case f.Key == "uptime_seconds":
				r.state[0] = int64(v)
			case f.Key == "hooks_refused":
				r.state[1] = int64(v)
			case f.Key == "parts_fallback":
				r.state[2] = int64(v)
			case f.Key == "parts_off":
				r.state[3] = int64(v)
			}
		}
		rows = append(rows, r)
	})
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(rows, func(x, y row) int { return cmp.Compare(x.t, y.t) })
	// Counters are cumulative per collector run: the increase is the sum of rises between consecutive points of
	// one series, and a fall (a restart) counts the new value whole.
	last := map[string]*row{}
	inc := map[string]float64{}
	for i := range rows {
		r := &rows[i]
		prev := last[r.series]
		b := w.bucket(time.Unix(0, r.t))
		for k, v := range r.vals {
			if prev == nil {
				continue // the range's first point: its counts may predate the range
			}
			d := v - prev.vals[k]
			if d < 0 {
				d = v
			}
			inc[k] += d
			if strings.HasSuffix(k, "_events_lost") {
				a.Chart.Series[0].Values[b] += d
			} else if strings.HasSuffix(k, "_points_dropped") || strings.HasSuffix(k, "_map_full_drops") {
				a.Chart.Series[1].Values[b] += d
			}
		}
		last[r.series] = r
	}
	latest := map[string]int64{}
	for _, r := range last {
		a.CollectorSeen = max(a.CollectorSeen, r.t/1e6)
		a.UptimeSeconds = max(a.UptimeSeconds, r.state[0])
		a.HooksRefused += r.state[1]
		a.PartsFallback += r.state[2]
		a.PartsOff += r.state[3]
		for k, v := range r.vals {
			latest[k] += int64(v)
		}
	}
	for k, v := range latest {
		a.Counters = append(a.Counters, HealthField{Field: k, Latest: v, Increase: int64(inc[k])})
	}
	slices.SortFunc(a.Counters, func(x, y HealthField) int {
		if (x.Latest != 0) != (y.Latest != 0) {
			if x.Latest != 0 {
				return -1
			}
			return 1
		}
		return strings.Compare(x.Field, y.Field)
	})

	sinkPts, err := h.opts.Store.Query(store.Query{Measurement: "datakit", Since: w.since, Until: w.until, Limit: 1000})
	if err != nil {
		return nil, err
	}
	sinks := map[string]int{}
	for i := range sinkPts {
		p := &sinkPts[i]
		id := tag(p, "sink")
		if id == "" {
			continue
		}
		sh := SinkHealth{Sink: id, Target: tag(p, "sink_target"), Time: p.Time.UnixMilli(), Fields: map[string]int64{}}
		for _, f := range p.Fields {
			v, _ := num(p, f.Key)
			sh.Fields[f.Key] = int64(v)
		}
		if j, ok := sinks[id]; ok {
			a.Sinks[j] = sh // points are oldest first: the last one wins
		} else {
			sinks[id] = len(a.Sinks)
			a.Sinks = append(a.Sinks, sh)
		}
	}
	a.ElapsedMs = time.Since(start).Milliseconds()
	return a, nil
}
