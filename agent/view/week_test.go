package view

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	lp "github.com/influxdata/line-protocol/v2/lineprotocol"

	"dkebpf/agent/store"
)

// TestWeekOfABusyHost fills a store with a week of a busy host and times every answer over 1 h, 24 h and
// 7 d. Slow (minutes): run with DKEBPF_VIEW_WEEK=1; DKEBPF_VIEW_WEEK_DIR keeps (and reuses) the store there.
//
//	DKEBPF_VIEW_WEEK=1 go test -count=1 -run TestWeekOfABusyHost -v -timeout 30m ./agent/view
func TestWeekOfABusyHost(t *testing.T) {
	if os.Getenv("DKEBPF_VIEW_WEEK") != "1" {
		t.Skip("slow: set DKEBPF_VIEW_WEEK=1 to fill a store with a week of a busy host and time the page's answers")
	}
	dir := os.Getenv("DKEBPF_VIEW_WEEK_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	path := filepath.Join(dir, "week.db")
	end := time.Now().Truncate(10 * time.Second)
	_, statErr := os.Stat(path)
	st, err := store.Open(path, store.Options{MaxSize: 16 << 30})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var out strings.Builder
	say := func(format string, args ...any) {
		fmt.Fprintf(&out, format+"\n", args...)
		t.Logf(format, args...)
	}
	if statErr == nil {
		// A kept store: its week ends when it was written.
		pts, err := st.Query(store.Query{Measurement: "datakit_ebpf", Limit: 1})
		if err != nil || len(pts) == 0 {
			t.Fatalf("reused store %s has no datakit_ebpf point (%v): remove it", path, err)
		}
		end = pts[0].Time
		say("reusing %s (week ending %s)", path, end.Format(time.RFC3339))
	} else {
		begin := time.Now()
		n := fillWeek(t, st, end)
		fi, _ := os.Stat(path)
		say("generated a week in %s: %s points (%s), store %s: %.0f MiB (%.1f bytes/point)", time.Since(begin).Round(time.Second),
			n.total(), n, path, float64(fi.Size())/(1<<20), float64(fi.Size())/float64(n.sum()))
	}
	h := New(Options{Store: st, Now: func() time.Time { return end }})
	say("%-9s %-5s %10s %10s %9s %s", "answer", "range", "scanned", "ms", "pts/s", "note")
	for _, api := range []string{"netflow", "httpflow", "dnsflow", "bash", "health"} {
		for _, rng := range []string{"1h", "24h", "7d"} {
			start := time.Now()
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest("GET", "/view/api/"+api+"?range="+rng, nil))
			el := time.Since(start)
			if w.Code != 200 {
				t.Fatalf("%s %s: %d %s", api, rng, w.Code, w.Body)
			}
			var m Meta
			if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil {
				t.Fatal(err)
			}
			note := ""
			if m.Truncated {
				note = fmt.Sprintf("cut at %d points: covers %s of %s", m.MaxScan, end.Sub(time.Unix(m.CoveredSince, 0)).Round(time.Minute), rng)
			}
			say("%-9s %-5s %10d %10d %9.0f %s (answer %d KiB)", api, rng, m.Scanned, el.Milliseconds(),
				float64(m.Scanned)/el.Seconds(), note, w.Body.Len()>>10)
		}
	}
	if p := os.Getenv("DKEBPF_VIEW_WEEK_OUT"); p != "" {
		if err := os.WriteFile(p, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

type weekCounts map[string]int

func (c weekCounts) sum() int {
	n := 0
	for _, v := range c {
		n += v
	}
	return n
}

func (c weekCounts) total() string { return strconv.Itoa(c.sum()) }

func (c weekCounts) String() string {
	var parts []string
	for _, m := range []string{"netflow", "httpflow", "dnsflow", "bash", "datakit_ebpf"} {
		parts = append(parts, fmt.Sprintf("%s %d", m, c[m]))
	}
	return strings.Join(parts, ", ")
}

// fillWeek writes the week before end: every 10 s, 200 netflow points (with the collector's tags), 50 httpflow
// endpoints, 50 dnsflow names and a datakit_ebpf point; and a bash line in one interval of three. One commit per hour.
func fillWeek(t *testing.T, st *store.Store, end time.Time) weekCounts {
	rng := rand.New(rand.NewPCG(1, 2))
	procs := []string{"nginx", "curl", "postgres", "redis-server", "java", "python3", "node", "sshd", "envoy", "chronyd"}
	domains := []string{"api.example.com", "db.internal", "cdn.example.net", "auth.example.org", "", "", "", ""}
	paths := []string{"/", "/api/v1/users", "/api/v1/orders", "/healthz", "/metrics", "/login", "/static/app.js", "/api/v1/search", "/api/v2/items", "/favicon.ico"}
	users := []string{"root", "alice", "bob", "deploy"}
	cmds := []string{"ls -la", "systemctl status nginx", "tail -f /var/log/syslog", "git pull", "make test", "vim /etc/hosts", "ps aux | grep java", "df -h", "kubectl get pods -A", "curl -s localhost:9529/v1/ping"}
	val := func(v any) lp.Value {
		x, ok := lp.NewValue(v)
		if !ok {
			panic(v)
		}
		return x
	}
	counts := weekCounts{}
	begin := end.Add(-7 * 24 * time.Hour)
	var batch []store.Point
	flush := func() {
		if err := st.Write(batch); err != nil {
			t.Fatal(err)
		}
		batch = batch[:0]
	}
	var lost int64
	for at := begin; !at.After(end); at = at.Add(10 * time.Second) {
		for f := 0; f < 200; f++ {
			proc := procs[f%len(procs)]
			dip := fmt.Sprintf("10.1.%d.%d", f/50, f%50)
			dport := []string{"443", "80", "5432", "6379", "53", "8080"}[f%6]
			dir := []string{"outgoing", "incoming"}[f%2]
			tags := tagsOf("client_ip", "10.0.0.5", "client_port", "*", "conn_side", "client", "direction", dir,
				"dst_ip", dip, "dst_ip_type", "private", "dst_nat_ip", "N/A", "dst_nat_port", "N/A", "dst_port", dport,
				"family", "IPv4", "host", "busy-host", "netns", "4026531840", "pid", strconv.Itoa(1000+f%40),
				"process_name", proc, "server_ip", dip, "server_ip_type", "private", "server_port", dport,
				"src_ip", "10.0.0.5", "src_ip_type", "private", "src_port", "*", "transport", "tcp")
			if d := domains[f%len(domains)]; d != "" {
				tags = append(tags, tagsOf("dst_domain", d, "server_domain", d)...)
			}
			rd, wr := rng.Int64N(1<<20), rng.Int64N(1<<16)
			batch = append(batch, store.Point{Category: "network", Input: "ebpf-net/netflow", Measurement: "netflow", Time: at, Tags: tags,
				Fields: fieldsOf("bytes_read", val(rd), "bytes_written", val(wr), "client_sent", val(wr), "server_sent", val(rd),
					"retransmits", val(rng.Int64N(3)), "rtt", val(100+rng.Int64N(5000)), "rtt_var", val(rng.Int64N(500)),
					"tcp_closed", val(rng.Int64N(5)), "tcp_established", val(rng.Int64N(5)))})
		}
		for e := 0; e < 50; e++ {
			code := int64(200)
			switch r := rng.IntN(100); {
			case r < 5:
				code = 500
			case r < 12:
				code = 404
			case r < 15:
				code = 302
			}
			tags := tagsOf("client_ip", "10.0.0.5", "client_port", "*", "conn_side", "server", "direction", "incoming",
				"dst_ip", "10.0.0.5", "dst_port", "80", "family", "IPv4", "host", "busy-host", "http_host", fmt.Sprintf("svc%d.local", e/10),
				"pid", "1001", "process_name", "nginx", "server_ip", "10.0.0.5", "server_port", "80", "src_ip", "10.2.0.7",
				"src_port", "*", "transport", "tcp")
			batch = append(batch, store.Point{Category: "network", Input: "ebpf-net/httpflow", Measurement: "httpflow", Time: at, Tags: tags,
				Fields: fieldsOf("method", val("GET"), "path", val(paths[e%len(paths)]), "status_code", val(code), "http_version", val("1.1"),
					"latency", val(1e5+rng.Int64N(5e7)), "count", val(1+rng.Int64N(40)), "bytes_read", val(rng.Int64N(4096)),
					"bytes_written", val(rng.Int64N(65536)), "truncated", val(false))})
		}
		for d := 0; d < 50; d++ {
			rc, rcName := int64(0), "NOERROR"
			switch r := rng.IntN(100); {
			case r < 3:
				rc, rcName = -1, "TIMEOUT"
			case r < 8:
				rc, rcName = 3, "NXDOMAIN"
			}
			tags := tagsOf("client_ip", "10.0.0.5", "client_port", "*", "conn_side", "client", "direction", "outgoing",
				"dst_ip", "10.0.0.2", "dst_port", "53", "family", "IPv4", "host", "busy-host", "pid", "1002",
				"process_name", procs[d%len(procs)], "qname", fmt.Sprintf("name%02d.example.com", d), "qtype", "A", "rcode_name", rcName,
				"server_ip", "10.0.0.2", "server_port", "53", "src_ip", "10.0.0.5", "src_port", "*", "transport", "udp")
			lat := 2e5 + rng.Int64N(2e7)
			if rc < 0 {
				lat = 0
			}
			batch = append(batch, store.Point{Category: "network", Input: "ebpf-net/dnsflow", Measurement: "dnsflow", Time: at, Tags: tags,
				Fields: fieldsOf("rcode", val(rc), "count", val(1+rng.Int64N(20)), "latency", val(lat), "latency_max", val(lat*2))})
		}
		if rng.IntN(1000) == 0 {
			lost += rng.Int64N(50)
		}
		batch = append(batch, store.Point{Category: "metric", Input: "datakit-ebpf", Measurement: "datakit_ebpf", Time: at,
			Tags: tagsOf("host", "busy-host"),
			Fields: fieldsOf("uptime_seconds", val(int64(at.Sub(begin).Seconds())), "hooks_refused", val(int64(1)),
				"parts_fallback", val(int64(1)), "parts_off", val(int64(0)), "netflow_events_lost", val(lost),
				"netflow_map_full_drops", val(int64(0)), "httpflow_events_lost", val(int64(0)), "dnsflow_events_lost", val(int64(0)))})
		counts["netflow"] += 200
		counts["httpflow"] += 50
		counts["dnsflow"] += 50
		counts["datakit_ebpf"]++
		// About 2900 bash lines a day: one interval in three.
		if rng.IntN(3) == 0 {
			u := users[rng.IntN(len(users))]
			cmd := cmds[rng.IntN(len(cmds))]
			batch = append(batch, store.Point{Category: "logging", Input: "ebpf-bash", Measurement: "bash", Time: at,
				Tags: tagsOf("host", "busy-host"),
				Fields: fieldsOf("cmd", val(cmd), "pid", val("4242"), "user", val(u),
					"message", val(fmt.Sprintf("%s pid:`4242` user:`%s` cmd:`%s`", at.Format(time.RFC3339), u, cmd)))})
			counts["bash"]++
		}
		if at.Sub(begin)%time.Hour == 0 {
			flush()
		}
	}
	flush()
	return counts
}

func tagsOf(kv ...string) []store.Tag {
	var out []store.Tag
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, store.Tag{Key: kv[i], Value: kv[i+1]})
	}
	return out
}

func fieldsOf(kv ...any) []store.Field {
	var out []store.Field
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, store.Field{Key: kv[i].(string), Value: kv[i+1].(lp.Value)})
	}
	return out
}
