package integration

// Real time-series engines on loopback for the sink tests: Debian's victoria-metrics (single node) and
// influxdb (1.x), each on a fresh data directory, stopped at the end of the test.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// engine is a running engine process.
type engine struct {
	t    *testing.T
	name string
	addr string
	cmd  *exec.Cmd
	args []string
	log  *syncBuffer
	done chan struct{}
}

func (e *engine) start() {
	e.t.Helper()
	e.cmd = exec.Command(e.args[0], e.args[1:]...)
	e.cmd.Stdout, e.cmd.Stderr = e.log, e.log
	must(e.t, e.cmd.Start())
	done := make(chan struct{})
	e.done = done
	go func() { e.cmd.Wait(); close(done) }()
	deadline := time.Now().Add(60 * time.Second)
	last := ""
	for {
		if resp, err := http.Get("http://" + e.addr + e.readyPath()); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, b)
		} else {
			last = err.Error()
		}
		select {
		case <-done:
			e.t.Fatalf("%s exited at start (%v):\n%s", e.name, e.cmd.ProcessState, logTail(e.log))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s not ready in 60 s (last: %s):\n%s", e.name, last, logTail(e.log))
		}
	}
}

// readyPath answers 2xx once the engine takes writes and queries.
func (e *engine) readyPath() string {
	switch {
	case e.name == "influxdb":
		return "/ping"
	case strings.HasPrefix(e.name, "thanos"):
		return "/-/ready"
	}
	return "/health"
}

// kill stops the engine at once (SIGKILL) and waits for it.
func (e *engine) kill() {
	e.cmd.Process.Kill()
	<-e.done
}

// pause and resume hang the engine (SIGSTOP): its port still accepts connections, nothing answers.
func (e *engine) pause()  { must(e.t, e.cmd.Process.Signal(syscall.SIGSTOP)) }
func (e *engine) resume() { must(e.t, e.cmd.Process.Signal(syscall.SIGCONT)) }

func newEngine(t *testing.T, name string, args ...string) *engine {
	e := &engine{t: t, name: name, addr: args[0], args: args[1:], log: &syncBuffer{}}
	e.start()
	t.Cleanup(func() {
		e.cmd.Process.Signal(syscall.SIGCONT)
		e.kill()
	})
	return e
}

// startVictoriaMetrics runs a single-node VictoriaMetrics without deduplication, so a point sent twice is
// seen twice.
func startVictoriaMetrics(t *testing.T) *engine {
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	return newEngine(t, "victoria-metrics", addr, "victoria-metrics", "-httpListenAddr="+addr,
		"-storageDataPath="+t.TempDir(), "-retentionPeriod=100y", "-loggerLevel=ERROR")
}

// vmSamples returns, per series (its labels, sorted) the timestamps VictoriaMetrics holds for the metrics
// matching match, e.g. `{__name__="sinktest_v"}`.
func vmSamples(t *testing.T, e *engine, match string) map[string][]int64 {
	t.Helper()
	if resp, err := http.Get("http://" + e.addr + "/internal/force_flush"); err == nil {
		resp.Body.Close() // what was written is searchable now
	}
	resp, err := http.Get("http://" + e.addr + "/api/v1/export?" + url.Values{"match[]": {match}}.Encode())
	must(t, err)
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("victoria-metrics export: %d %s", resp.StatusCode, b)
	}
	out := map[string][]int64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var row struct {
			Metric     map[string]string `json:"metric"`
			Timestamps []int64           `json:"timestamps"`
		}
		must(t, json.Unmarshal(sc.Bytes(), &row))
		var labels []string
		for k, v := range row.Metric {
			labels = append(labels, k+"="+v)
		}
		slices.Sort(labels)
		key := strings.Join(labels, ",")
		out[key] = append(out[key], row.Timestamps...)
	}
	must(t, sc.Err())
	return out
}

// startInfluxDB runs InfluxDB 1.x with its data in a temporary directory and creates database db0.
func startInfluxDB(t *testing.T) *engine {
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	conf := fmt.Sprintf(`reporting-disabled = true
bind-address = "127.0.0.1:%d"
[meta]
  dir = %q
[data]
  dir = %q
  wal-dir = %q
  query-log-enabled = false
  max-values-per-tag = 0 # the outage test's key tag has a value per point (140 000 in make faults)
[monitor]
  store-enabled = false
[http]
  bind-address = %q
  log-enabled = false
`, freePort(t), filepath.Join(dir, "meta"), filepath.Join(dir, "data"), filepath.Join(dir, "wal"), addr)
	path := filepath.Join(dir, "influxdb.conf")
	must(t, os.WriteFile(path, []byte(conf), 0o644))
	e := newEngine(t, "influxdb", addr, "influxd", "-config", path)
	influxQuery(t, e, "CREATE DATABASE db0")
	return e
}

// influxQuery runs q on db0 and returns the rows of its first series (nil when there is none).
func influxQuery(t *testing.T, e *engine, q string) [][]any {
	t.Helper()
	resp, err := http.PostForm("http://"+e.addr+"/query", url.Values{"db": {"db0"}, "q": {q}, "epoch": {"ns"}})
	must(t, err)
	defer resp.Body.Close()
	var r struct {
		Results []struct {
			Error  string `json:"error"`
			Series []struct {
				Values [][]any `json:"values"`
			} `json:"series"`
		} `json:"results"`
	}
	must(t, json.NewDecoder(resp.Body).Decode(&r))
	if len(r.Results) == 0 || r.Results[0].Error != "" {
		t.Fatalf("influxdb %q: %+v", q, r)
	}
	if len(r.Results[0].Series) == 0 {
		return nil
	}
	return r.Results[0].Series[0].Values
}
