// Package monitor is `datakit monitor`: it reads the agent's GET /v1/monitor every refresh and renders it as
// plain-text tables, redrawn in place on a terminal.
package monitor

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"dkebpf/agent/api"
)

// Options configure Run.
type Options struct {
	Base     string        // the agent's API, e.g. http://127.0.0.1:9529
	Token    string        // sent as Authorization: Bearer <token> when set
	Refresh  time.Duration // between frames; also the window of the points counts (at most api.MaxMonitorWindow)
	Once     bool          // print one frame and return; an unreachable agent is an error
	Terminal bool          // redraw each frame in place with ANSI escapes
	Out      io.Writer
	Client   *http.Client // default: a client with a 10 s timeout
}

// ANSI escapes of a redraw in place: cursor home, erase to the end of the line, erase to the end of the screen.
const (
	ansiHome      = "\x1b[H"
	ansiClearLine = "\x1b[K"
	ansiClearDown = "\x1b[J"
)

// Run renders a frame every o.Refresh until ctx ends (then it returns nil), or once with o.Once. When the
// agent does not answer, the frame says so (with the last answer, if any) and the next refresh tries again.
func Run(ctx context.Context, o Options) error {
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if o.Refresh <= 0 {
		o.Refresh = api.DefaultMonitorWindow
	}
	f := Frame{Base: o.Base, Refresh: o.Refresh, Live: !o.Once}
	for {
		m, err := Fetch(ctx, o.Client, o.Base, o.Token, o.Refresh)
		if ctx.Err() != nil {
			return nil
		}
		f.Now, f.Err = time.Now(), err
		if err == nil {
			f.M, f.Answered = m, f.Now
		}
		if o.Once {
			if err != nil {
				return err
			}
			var buf bytes.Buffer
			Render(&buf, f)
			_, err = o.Out.Write(buf.Bytes())
			return err
		}
		if err := draw(o.Out, f, o.Terminal); err != nil {
			return err
		}
		t := time.NewTimer(o.Refresh)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// draw writes one frame: in place on a terminal, else after the previous one.
func draw(w io.Writer, f Frame, terminal bool) error {
	var buf bytes.Buffer
	Render(&buf, f)
	if !terminal {
		buf.WriteByte('\n')
		_, err := w.Write(buf.Bytes())
		return err
	}
	out := []byte(ansiHome)
	for line := range strings.Lines(buf.String()) {
		out = append(out, strings.TrimSuffix(line, "\n")...)
		out = append(out, ansiClearLine+"\n"...)
	}
	out = append(out, ansiClearDown...)
	_, err := w.Write(out)
	return err
}

// Fetch reads GET /v1/monitor of the agent at base, with points counted over window.
func Fetch(ctx context.Context, client *http.Client, base, token string, window time.Duration) (*api.Monitor, error) {
	window = min(max(window, time.Second), api.MaxMonitorWindow).Truncate(time.Second)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/monitor?window="+window.String(), nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("agent at %s: %w", base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("agent at %s: read answer: %w", base, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Message string `json:"message"`
		}
		msg := strings.TrimSpace(string(body))
		if json.Unmarshal(body, &e) == nil && e.Message != "" {
			msg = e.Message
		}
		if resp.StatusCode == http.StatusUnauthorized {
			msg += " (the token is [http_api] token of datakit.conf, or ENV_HTTP_TOKEN)"
		}
		return nil, fmt.Errorf("agent at %s: GET /v1/monitor: %s: %s", base, resp.Status, msg)
	}
	var m api.Monitor
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("agent at %s: GET /v1/monitor: decode: %w", base, err)
	}
	return &m, nil
}

// Frame is what one screen shows.
type Frame struct {
	Base     string
	Refresh  time.Duration
	Live     bool         // refreshing (not --once): the header says how to quit
	Now      time.Time    // when the frame was made
	M        *api.Monitor // the last answer; nil if none yet
	Answered time.Time    // when M came
	Err      error        // the agent did not answer this time
}

// Render writes f as plain text (no escape codes).
func Render(w io.Writer, f Frame) {
	fmt.Fprintf(w, "datakit monitor: agent at %s, %s, refresh %s", f.Base, f.Now.UTC().Format("2006-01-02 15:04:05 MST"), f.Refresh)
	if f.Live {
		fmt.Fprint(w, " (Ctrl-C quits)")
	}
	fmt.Fprintln(w)
	if f.Err != nil {
		fmt.Fprintf(w, "\nAGENT UNREACHABLE: %v\nretrying every %s", oneLine(f.Err.Error(), 300), f.Refresh)
		if f.M != nil {
			fmt.Fprintf(w, "; below is its last answer, from %s ago", age(f.Now.Sub(f.Answered)))
		}
		fmt.Fprintln(w)
	}
	m := f.M
	if m == nil {
		return
	}

	a := m.Agent
	fmt.Fprintln(w, "\nAGENT")
	tw := table(w)
	fmt.Fprintf(tw, "version\t%s\n", a.Version)
	fmt.Fprintf(tw, "uptime\t%s (since %s)\n", time.Duration(a.UptimeSeconds)*time.Second, a.Started.UTC().Format("2006-01-02 15:04:05 MST"))
	fmt.Fprintf(tw, "listen\t%s\n", dash(a.Listen))
	used := ""
	if a.Store.MaxBytes > 0 {
		used = fmt.Sprintf(" (%.1f%%)", 100*float64(a.Store.UsedBytes)/float64(a.Store.MaxBytes))
	}
	fmt.Fprintf(tw, "store\t%s: %s of %s used%s; points evicted %d, damaged %d\n", dash(a.Store.Path),
		bytesStr(a.Store.UsedBytes), bytesStr(a.Store.MaxBytes), used, a.Store.EvictedPoints, a.Store.DamagedPoints)
	tw.Flush()

	fmt.Fprintln(w, "\nINPUTS")
	if len(m.Inputs) == 0 {
		fmt.Fprintln(w, "(no supervised input, no error reported)")
	} else {
		tw = table(w)
		fmt.Fprintln(tw, "NAME\tSTATE\tRESTARTS\tPID\tLAST EXIT\tLAST ERROR\tWHEN")
		for _, in := range m.Inputs {
			pid, when := "-", "-"
			if in.PID != 0 {
				pid = fmt.Sprint(in.PID)
			}
			if !in.LastErrorTime.IsZero() {
				when = age(m.Time.Sub(in.LastErrorTime)) + " ago"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", in.Name, in.State, in.Restarts, pid, dash(oneLine(in.LastExit, 40)),
				dash(oneLine(in.LastError, 60)), when)
		}
		tw.Flush()
	}

	win := (time.Duration(m.WindowSeconds) * time.Second).String()
	fmt.Fprintf(w, "\nPOINTS WRITTEN (last %s, since start)\n", win)
	if len(m.Measurements) == 0 {
		fmt.Fprintln(w, "(none yet)")
	} else {
		tw = table(w)
		fmt.Fprintf(tw, "CATEGORY\tMEASUREMENT\tLAST %s\tTOTAL\tLAST WRITTEN\n", win)
		var sumWin, sumTotal int64
		for _, c := range m.Measurements {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s ago\n", c.Category, c.Measurement, c.WindowPoints, c.TotalPoints, age(m.Time.Sub(c.LastWritten)))
			sumWin += c.WindowPoints
			sumTotal += c.TotalPoints
		}
		if len(m.Measurements) > 1 {
			fmt.Fprintf(tw, "\t(all)\t%d\t%d\n", sumWin, sumTotal)
		}
		tw.Flush()
		if m.MeasurementsOverflow {
			fmt.Fprintf(w, "more than %d measurements: the points of the rest are counted together as %s\n",
				api.MaxMonitorMeasurements, api.OtherMeasurement)
		}
	}

	fmt.Fprintln(w, "\nSINKS")
	if len(m.Sinks) == 0 {
		fmt.Fprintln(w, "(none configured)")
		return
	}
	tw = table(w)
	fmt.Fprintln(tw, "ID\tTARGET\tSENT\tFAILED REQS\tRETRIED\tDROPPED\tLOST\tBACKLOG\tOLDEST")
	var errs []string
	for _, s := range m.Sinks {
		oldest := "-"
		if !s.BacklogOldest.IsZero() {
			oldest = age(m.Time.Sub(s.BacklogOldest)) + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", s.ID, s.Target, s.SentPoints, s.FailedRequests,
			s.RetriedPoints, s.DroppedPoints, s.LostPoints, s.BacklogPoints, oldest)
		if s.Error != "" {
			errs = append(errs, fmt.Sprintf("sink %s: %s", s.ID, oneLine(s.Error, 200)))
		}
	}
	tw.Flush()
	for _, e := range errs {
		fmt.Fprintln(w, e)
	}
}

func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0) }

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine makes s one line of at most n runes (tabs and newlines would break the table).
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-3]) + "..."
}

// age is d in whole seconds ("0s", "1m5s").
func age(d time.Duration) string { return max(d, 0).Truncate(time.Second).String() }

func bytesStr(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
