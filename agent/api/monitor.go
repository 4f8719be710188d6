package api

import (
	"errors"
	"io/fs"
	"net/http"
	"os"
	"sort"
	"strconv"
	"time"
)

// Monitor is the document of GET /v1/monitor: the agent, its inputs, the points written through the API per
// (category, measurement), and the sinks, in one read. `datakit monitor` renders it.
type Monitor struct {
	Time          time.Time    `json:"time"`           // the agent's clock when the document was made
	WindowSeconds int          `json:"window_seconds"` // the window of MeasurementStats.WindowPoints
	Agent         AgentStatus  `json:"agent"`
	Inputs        []InputState `json:"inputs"`
	// Measurements are sorted by category, then measurement. Past MaxMonitorMeasurements distinct keys, the
	// points of new keys are counted in one entry with Other set, and MeasurementsOverflow is true.
	Measurements         []MeasurementStats `json:"measurements"`
	MeasurementsOverflow bool               `json:"measurements_overflow"`
	Sinks                []SinkStatus       `json:"sinks"`
}

// AgentStatus is the agent's part of Monitor.
type AgentStatus struct {
	Version       string      `json:"version"`
	Started       time.Time   `json:"started"`
	UptimeSeconds int64       `json:"uptime_seconds"`
	Listen        string      `json:"listen"` // [http_api] listen, as configured
	Store         StoreStatus `json:"store"`
}

// StoreStatus is the local store's part of Monitor; Options.Store fills in the counters.
type StoreStatus struct {
	Path          string `json:"path"`
	UsedBytes     int64  `json:"used_bytes"`
	MaxBytes      int64  `json:"max_bytes"`
	EvictedPoints int64  `json:"evicted_points"` // since the agent started, to stay under MaxBytes
	DamagedPoints int64  `json:"damaged_points"` // since the agent started, lost to a damaged file
}

// InputState is one input: a supervised child (GET /v1/externals) with the last error it reported
// (GET /v1/lasterror), or an input that only reported an error.
type InputState struct {
	Name string `json:"name"`
	// State is "running" (a child process is up), "starting" (not started yet), "restarting" (the child
	// exited; the supervisor starts it again after its backoff), "missing" (the executable is not there:
	// `datakit install --<input>`), or "reporting" (no supervised child: the input only posted last errors).
	State           string    `json:"state"`
	PID             int       `json:"pid"`
	Restarts        int       `json:"restarts"`  // starts after the first
	LastExit        string    `json:"last_exit"` // "" if the child never exited
	LastError       string    `json:"last_error"`
	LastErrorSource string    `json:"last_error_source"`
	LastErrorTime   time.Time `json:"last_error_time,omitzero"` // absent without a last error
}

// MeasurementStats counts the points of one (category, measurement) written through the API since the
// agent started.
type MeasurementStats struct {
	Category     string    `json:"category"`
	Measurement  string    `json:"measurement"`
	Other        bool      `json:"other,omitempty"` // the keys past MaxMonitorMeasurements, together
	WindowPoints int64     `json:"window_points"`   // in the last WindowSeconds
	TotalPoints  int64     `json:"total_points"`
	LastWritten  time.Time `json:"last_written"`
}

// SinkStatus is one sink's counters since the agent started and its backlog in the store.
type SinkStatus struct {
	ID             string `json:"id"`
	Target         string `json:"target"`
	SentPoints     int64  `json:"sent_points"`
	FailedRequests int64  `json:"failed_requests"`
	RetriedPoints  int64  `json:"retried_points"`
	DroppedPoints  int64  `json:"dropped_points"` // refused by the engine as bad
	DamagedPoints  int64  `json:"damaged_points"` // of damaged blocks, skipped
	LostPoints     int64  `json:"lost_points"`    // evicted by the store's size bound before delivery
	BacklogPoints  int64  `json:"backlog_points"` // stored after the sink's cursor
	// BacklogOldest is the time of the oldest point of the backlog (absent when none).
	BacklogOldest time.Time `json:"backlog_oldest,omitzero"`
	Error         string    `json:"error,omitempty"` // the store could not tell the sink's state
}

// Bounds of GET /v1/monitor's counters.
const (
	// MaxMonitorMeasurements is the distinct (category, measurement) keys counted apart.
	MaxMonitorMeasurements = 1000
	// MaxMonitorWindow is the largest ?window= (and the history each key keeps, one slot per second).
	MaxMonitorWindow = 60 * time.Second
	// DefaultMonitorWindow is the window without ?window=.
	DefaultMonitorWindow = 5 * time.Second
	// OtherMeasurement names the entry of the keys past MaxMonitorMeasurements.
	OtherMeasurement = "(other)"
)

const windowSlots = int64(MaxMonitorWindow / time.Second)

type measurementKey struct{ category, measurement string }

// measurementCounter counts one key's points: in total, and per second over the last windowSlots seconds.
type measurementCounter struct {
	total  int64
	last   time.Time
	perSec [windowSlots]int64
	secOf  [windowSlots]int64 // the Unix second each slot of perSec counts
}

func (c *measurementCounter) add(n int64, now time.Time) {
	sec := now.Unix()
	i := sec % windowSlots
	if c.secOf[i] != sec {
		c.secOf[i], c.perSec[i] = sec, 0
	}
	c.perSec[i] += n
	c.total += n
	c.last = now
}

// window returns the points of the last secs seconds, the current one included.
func (c *measurementCounter) window(now time.Time, secs int64) int64 {
	var n int64
	for sec := now.Unix() - secs + 1; sec <= now.Unix(); sec++ {
		if i := sec % windowSlots; c.secOf[i] == sec {
			n += c.perSec[i]
		}
	}
	return n
}

// writeCounts counts one request's points by measurement, before its commit. Consecutive points of one
// measurement (the usual body) cost no map access.
type writeCounts struct {
	last  string
	lastN int64
	m     map[string]int64
}

func (w *writeCounts) add(measurement string) {
	if measurement == w.last && w.lastN > 0 {
		w.lastN++
		return
	}
	w.flush()
	w.last, w.lastN = measurement, 1
}

func (w *writeCounts) flush() {
	if w.lastN == 0 {
		return
	}
	if w.m == nil {
		w.m = map[string]int64{}
	}
	w.m[w.last] += w.lastN
	w.lastN = 0
}

// counted adds the points of a committed write of category.
func (s *Server) counted(category string, w *writeCounts) {
	w.flush()
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.measurements == nil {
		s.measurements = map[measurementKey]*measurementCounter{}
	}
	for m, n := range w.m {
		k := measurementKey{category, m}
		c := s.measurements[k]
		if c == nil {
			if len(s.measurements) >= MaxMonitorMeasurements {
				if c = s.otherMeasurements; c == nil {
					c = &measurementCounter{}
					s.otherMeasurements = c
				}
			} else {
				c = &measurementCounter{}
				s.measurements[k] = c
			}
		}
		c.add(n, now)
	}
}

// MonitorStatus returns GET /v1/monitor's document, with points counted over the last window (at most
// MaxMonitorWindow; whole seconds).
func (s *Server) MonitorStatus(window time.Duration) Monitor {
	now := s.opts.Now()
	secs := int64(min(max(window, time.Second), MaxMonitorWindow) / time.Second)
	m := Monitor{Time: now, WindowSeconds: int(secs), Inputs: []InputState{}, Measurements: []MeasurementStats{},
		Sinks: []SinkStatus{}}
	m.Agent = AgentStatus{Version: s.opts.Version, Started: s.started, UptimeSeconds: int64(now.Sub(s.started) / time.Second),
		Listen: s.opts.Listen}
	if s.opts.StoreStatus != nil {
		m.Agent.Store = s.opts.StoreStatus()
	}
	m.Agent.Store.EvictedPoints, m.Agent.Store.DamagedPoints = s.opts.Store.Evicted(), s.opts.Store.Damaged()

	errs := map[string]LastError{}
	for _, le := range s.LastErrors() {
		errs[le.Input] = le
	}
	if s.opts.Externals != nil {
		for _, x := range s.opts.Externals() {
			in := InputState{Name: x.Name, PID: x.PID, Restarts: max(x.Starts-1, 0), LastExit: x.LastExit}
			switch _, err := os.Stat(x.Path); {
			case x.PID != 0:
				in.State = "running"
			case errors.Is(err, fs.ErrNotExist):
				in.State = "missing"
			case x.Starts == 0 && x.LastExit == "":
				in.State = "starting"
			default:
				in.State = "restarting"
			}
			if le, ok := errs[x.Name]; ok {
				in.LastError, in.LastErrorSource, in.LastErrorTime = le.Content, le.Source, le.Time
				delete(errs, x.Name)
			}
			m.Inputs = append(m.Inputs, in)
		}
	}
	for _, le := range errs {
		m.Inputs = append(m.Inputs, InputState{Name: le.Input, State: "reporting", LastError: le.Content,
			LastErrorSource: le.Source, LastErrorTime: le.Time})
	}
	sort.SliceStable(m.Inputs, func(i, j int) bool { return m.Inputs[i].Name < m.Inputs[j].Name })

	s.mu.Lock()
	for k, c := range s.measurements {
		m.Measurements = append(m.Measurements, MeasurementStats{Category: k.category, Measurement: k.measurement,
			WindowPoints: c.window(now, secs), TotalPoints: c.total, LastWritten: c.last})
	}
	sort.Slice(m.Measurements, func(i, j int) bool {
		a, b := m.Measurements[i], m.Measurements[j]
		return a.Category < b.Category || a.Category == b.Category && a.Measurement < b.Measurement
	})
	if c := s.otherMeasurements; c != nil {
		m.MeasurementsOverflow = true
		m.Measurements = append(m.Measurements, MeasurementStats{Category: "*", Measurement: OtherMeasurement, Other: true,
			WindowPoints: c.window(now, secs), TotalPoints: c.total, LastWritten: c.last})
	}
	s.mu.Unlock()

	if s.opts.Sinks != nil {
		m.Sinks = append(m.Sinks, s.opts.Sinks()...)
	}
	return m
}

// monitor serves GET /v1/monitor[?window=5s] (a duration, or seconds).
func (s *Server) monitor(w http.ResponseWriter, r *http.Request) {
	window := DefaultMonitorWindow
	if v := r.URL.Query().Get("window"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			n, nerr := strconv.Atoi(v)
			d, err = time.Duration(n)*time.Second, nerr
		}
		if err != nil || d < time.Second || d > MaxMonitorWindow {
			fail(w, http.StatusBadRequest, "invalidWindow", "window: invalid %q, want a duration from 1s to %s", v, MaxMonitorWindow)
			return
		}
		window = d
	}
	writeJSON(w, s.MonitorStatus(window))
}
