package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/influxdata/line-protocol/v2/lineprotocol"
)

// outage hangs the agent (SIGSTOP) for hold, from after into a measured run, while the collector goes on
// under the workload: it must keep what it cannot post (memory, then the spool) and post it all once the
// agent is back, so that the run's fidelity checks hold exactly as without the outage.
type outage struct {
	after, hold time.Duration
	resumed     time.Time     // when the agent was continued
	recovered   time.Duration // from then until the collector's backlog was posted
	done        chan error
}

// backlogDone is more than any workload makes in one interval (W5 at saturation: about 1000, queued when the
// health point is made), far less than an outage leaves: below it the backlog is posted.
const backlogDone = 5000

func newOutage(hold time.Duration) *outage {
	return &outage{after: 2 * benchInterval, hold: hold, done: make(chan error, 1)}
}

// runLength is the load's duration: the outage, with intervals before it and after it to recover in.
func (o *outage) runLength() time.Duration { return o.after + o.hold + 6*benchInterval }

// begin starts the outage timeline of a's agent process (its collector keeps running), and then, while the
// load goes on, watches for the collector to have posted its backlog: its latest health point, made after
// the agent came back, queues fewer than backlogDone points.
func (o *outage) begin(a *agent) {
	go func() {
		time.Sleep(o.after)
		if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			o.done <- fmt.Errorf("stop the agent: %w", err)
			return
		}
		fmt.Printf("  agent stopped for %v\n", o.hold)
		time.Sleep(o.hold)
		if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
			o.done <- fmt.Errorf("continue the agent: %w", err)
			return
		}
		o.resumed = time.Now()
		for deadline := o.resumed.Add(10 * time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			p, ok, err := a.latest("datakit_ebpf")
			if err != nil {
				o.done <- err
				return
			}
			if ok && p.time.After(o.resumed) && sumSuffix(p.lpPoint, "_points_queued") < backlogDone {
				o.recovered = p.time.Sub(o.resumed)
				o.done <- nil
				return
			}
		}
		o.done <- fmt.Errorf("the collector's backlog was not posted within 10 minutes of the agent's return")
	}()
}

// finish waits for begin's timeline to end.
func (o *outage) finish() error { return <-o.done }

// sumSuffix sums p's integer fields named *suffix.
func sumSuffix(p lpPoint, suffix string) int64 {
	var n int64
	for k, v := range p.Fields {
		if strings.HasSuffix(k, suffix) {
			n += v
		}
	}
	return n
}

// timedPoint is a point with its time.
type timedPoint struct {
	lpPoint
	time time.Time
}

// latest returns the newest point of measurement through the running agent's API.
func (a *agent) latest(measurement string) (timedPoint, bool, error) {
	v := url.Values{"measurement": {measurement}, "since": {"1h"}, "limit": {"1"}}
	resp, err := http.Get("http://" + a.addr + "/v1/query?" + v.Encode())
	if err != nil {
		return timedPoint{}, false, nil // busy catching up: ask again
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return timedPoint{}, false, fmt.Errorf("query %s: %d %s", measurement, resp.StatusCode, body)
	}
	dec := lineprotocol.NewDecoderWithBytes(body)
	if !dec.Next() {
		return timedPoint{}, false, nil
	}
	p := timedPoint{lpPoint: lpPoint{Fields: map[string]int64{}}}
	if _, err := dec.Measurement(); err != nil {
		return p, false, err
	}
	for k, _, err := dec.NextTag(); err == nil && k != nil; k, _, err = dec.NextTag() {
	}
	for k, v, err := dec.NextField(); err == nil && k != nil; k, v, err = dec.NextField() {
		if v.Kind() == lineprotocol.Int {
			p.Fields[string(k)] = v.IntV()
		}
	}
	t, err := dec.Time(lineprotocol.Nanosecond, time.Time{})
	if err != nil {
		return p, false, err
	}
	p.time = t
	return p, true, nil
}

// runOutages measures each workload once, saturated, in configuration "all", with the agent hung for hold
// in the middle; it prints and writes a table and returns whether every check held and nothing was dropped.
func runOutages(root string, ws []workload, hold time.Duration, out string) bool {
	var b bytes.Buffer
	fmt.Fprintf(&b, "Agent hung (SIGSTOP) %v under each workload at saturation, collector config `all` (interval %v)\n\n", hold, benchInterval)
	b.WriteString("| workload | load | points posted | spilled to spool | dropped | recovered in | collector peak RSS MB | checks |\n|---|---:|---:|---:|---:|---:|---:|---|\n")
	ok := true
	for _, w := range ws {
		o := newOutage(hold)
		fmt.Printf("%s: %v of load, agent hung %v from %v\n", w.ID, o.runLength(), hold, o.after)
		r, self, err := measureWith(root, w, "saturation", "all", 0, o.runLength(), o)
		if err != nil {
			fatalf("%s outage: %v", w.ID, err)
		}
		var failed []string
		for _, c := range r.Checks {
			if c.Got != c.Want {
				failed = append(failed, fmt.Sprintf("%s: reported %d, truth %d", c.What, c.Got, c.Want))
			}
		}
		last := lpPoint{Fields: map[string]int64{}}
		if len(self.points) > 0 {
			last = self.points[len(self.points)-1]
		}
		dropped := sumSuffix(last, "_points_dropped")
		if dropped != 0 {
			failed = append(failed, fmt.Sprintf("%d points dropped", dropped))
		}
		verdict := fmt.Sprintf("%d exact", len(r.Checks))
		if len(failed) > 0 {
			ok = false
			verdict = "FAIL: " + strings.Join(failed, "; ")
		}
		fmt.Fprintf(&b, "| %s %s | %d ops in %.0f s | %d | %d | %d | %v | %.1f | %s |\n", w.ID, w.Name, r.Load.Requests, r.Seconds,
			sumSuffix(last, "_points_sent"), sumSuffix(last, "_points_spilled"), dropped, o.recovered.Round(100*time.Millisecond),
			r.CollectorRSSMB, verdict)
	}
	fmt.Print("\n" + b.String())
	os.MkdirAll(out, 0o755)
	path := filepath.Join(out, "outage-"+time.Now().UTC().Format("20060102-150405")+".md")
	os.WriteFile(path, b.Bytes(), 0o644)
	fmt.Printf("\nresults: %s\n", path)
	return ok
}
