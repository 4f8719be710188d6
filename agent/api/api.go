// Package api serves the agent's DataKit-compatible HTTP API: it validates
// line protocol written to /v1/write/:category, commits it to the local store
// before answering, and serves queries, last errors and supervisor state.
package api

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	lp "github.com/influxdata/line-protocol/v2/lineprotocol"

	"dkebpf/agent/store"
	"dkebpf/inputs/external"
)

// Categories accepted by POST /v1/write/:category.
var Categories = []string{"metric", "network", "keyevent", "object", "custom_object",
	"logging", "tracing", "rum", "security", "profiling"}

// maxBody bounds a decoded write body.
const maxBody = 64 << 20

// Store is what the API needs from the local store.
type Store interface {
	Write(points []store.Point) error
	Query(q store.Query) ([]store.Point, error)
}

// Options configure a Server.
type Options struct {
	Store     Store
	Version   string
	Externals func() []external.State // supervised children; may be nil
	Log       *log.Logger
	Now       func() time.Time // default time.Now
	// GlobalTags are added to every point written, where the point lacks the key, unless the request says
	// ignore_global_host_tags (or the deprecated ignore_global_tags), as DataKit does.
	GlobalTags map[string]string
}

// Server is the API's http.Handler.
type Server struct {
	opts    Options
	mux     *http.ServeMux
	started time.Time

	mu        sync.Mutex
	lastError map[string]LastError
}

// LastError is the last error an input reported through /v1/lasterror.
type LastError struct {
	Input   string    `json:"input"`
	Source  string    `json:"source"`
	Content string    `json:"err_content"`
	Time    time.Time `json:"time"`
}

// New returns the API handler.
func New(opts Options) *Server {
	if opts.Log == nil {
		opts.Log = log.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{opts: opts, mux: http.NewServeMux(), started: opts.Now(), lastError: map[string]LastError{}}
	s.mux.HandleFunc("POST /v1/write/{category}", s.write)
	s.mux.HandleFunc("POST /v1/lasterror", s.lastErr)
	s.mux.HandleFunc("GET /v1/ping", s.ping)
	s.mux.HandleFunc("GET /v1/query", s.query)
	s.mux.HandleFunc("GET /v1/externals", s.externals)
	s.mux.HandleFunc("GET /v1/lasterror", s.lastErrors)
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// apiError is DataKit's JSON error body.
type apiError struct {
	Code    string `json:"error_code"`
	Message string `json:"message"`
}

func fail(w http.ResponseWriter, status int, code, format string, args ...any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(apiError{Code: "datakit." + code, Message: fmt.Sprintf(format, args...)})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) write(w http.ResponseWriter, r *http.Request) {
	category := r.PathValue("category")
	if !validCategory(category) {
		fail(w, http.StatusBadRequest, "invalidCategory", "invalid category %q, want one of %s", category, strings.Join(Categories, ", "))
		return
	}
	q := r.URL.Query()
	input := q.Get("input")
	if input == "" {
		input = category
	}
	if strings.ContainsFunc(input, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		fail(w, http.StatusBadRequest, "invalidInput", "input %q contains control characters", input)
		return
	}
	prec, ok := precisions[q.Get("precision")]
	if !ok {
		fail(w, http.StatusBadRequest, "invalidPrecision", "invalid precision %q, want one of n, u, ms, s, m, h", q.Get("precision"))
		return
	}
	body, err := readBody(r)
	if err != nil {
		fail(w, http.StatusBadRequest, "decodeBodyFailed", "read body: %v", err)
		return
	}
	if len(bytes.TrimSpace(body)) == 0 {
		fail(w, http.StatusBadRequest, "emptyBody", "empty body")
		return
	}
	points, err := decode(body, category, input, prec, s.opts.Now())
	if err != nil {
		fail(w, http.StatusBadRequest, "invalidLinePoint", "%v", err)
		return
	}
	if !isTrue(q.Get("ignore_global_host_tags")) && !isTrue(q.Get("ignore_global_tags")) {
		for i := range points {
			addTags(&points[i], s.opts.GlobalTags)
		}
	}
	if len(points) == 0 {
		fail(w, http.StatusBadRequest, "noPoints", "no points in body")
		return
	}
	if err := s.opts.Store.Write(points); err != nil {
		s.opts.Log.Printf("api: %s from %s: %v", r.URL.Path, input, err)
		fail(w, http.StatusInternalServerError, "storeFailed", "%v", err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func isTrue(v string) bool { b, _ := strconv.ParseBool(v); return b }

// addTags adds the tags a point lacks, keeping its tags sorted.
func addTags(p *store.Point, tags map[string]string) {
	added := false
	for k, v := range tags {
		if !slices.ContainsFunc(p.Tags, func(t store.Tag) bool { return t.Key == k }) {
			p.Tags = append(p.Tags, store.Tag{Key: k, Value: v})
			added = true
		}
	}
	if added {
		sort.Slice(p.Tags, func(i, j int) bool { return p.Tags[i].Key < p.Tags[j].Key })
	}
}

func validCategory(c string) bool {
	for _, k := range Categories {
		if c == k {
			return true
		}
	}
	return false
}

func readBody(r *http.Request) ([]byte, error) {
	var rd io.Reader = r.Body
	enc := r.Header.Get("Content-Encoding")
	if e := r.URL.Query().Get("encoding"); e != "" {
		enc = e
	}
	switch enc {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		defer zr.Close()
		rd = zr
	default:
		return nil, fmt.Errorf("unsupported content encoding %q, want gzip", enc)
	}
	body, err := io.ReadAll(io.LimitReader(rd, maxBody+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxBody {
		return nil, fmt.Errorf("body larger than %d bytes", maxBody)
	}
	return body, nil
}

// precisions maps the precision query value to a multiplier to nanoseconds;
// 0 means "guess from the timestamp's magnitude" (DataKit's dynamic precision).
var precisions = map[string]int64{
	"": 0, "n": 1, "ns": 1, "u": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9,
}

// autoScale guesses a timestamp's unit from its magnitude: for dates after
// 1973, seconds have at most 12 digits, milliseconds 15, microseconds 18.
func autoScale(ts int64) int64 {
	a := ts
	if a < 0 {
		a = -a
	}
	switch {
	case a < 1e12:
		return 1e9
	case a < 1e15:
		return 1e6
	case a < 1e18:
		return 1e3
	}
	return 1
}

// decode parses the whole body; any invalid line rejects the whole body.
func decode(body []byte, category, input string, prec int64, now time.Time) ([]store.Point, error) {
	dec := lp.NewDecoderWithBytes(body)
	var points []store.Point
	for line := 1; dec.Next(); line++ {
		p, err := decodePoint(dec, prec, now)
		if err != nil {
			return nil, fmt.Errorf("point %d: %w", line, err)
		}
		p.Category, p.Input = category, input
		points = append(points, p)
	}
	if err := dec.Err(); err != nil {
		return nil, err
	}
	return points, nil
}

func decodePoint(dec *lp.Decoder, prec int64, now time.Time) (store.Point, error) {
	p, err := store.DecodeLine(dec)
	if err != nil {
		return p, err
	}
	tb, err := dec.TimeBytes()
	if err != nil {
		return p, err
	}
	if tb == nil {
		p.Time = now
	} else {
		ts, err := strconv.ParseInt(string(tb), 10, 64)
		if err != nil {
			return p, fmt.Errorf("invalid timestamp %q", tb)
		}
		scale := prec
		if scale == 0 {
			scale = autoScale(ts)
		}
		ns := ts * scale
		if scale != 0 && ns/scale != ts {
			return p, fmt.Errorf("timestamp %d out of range", ts)
		}
		p.Time = time.Unix(0, ns)
	}
	sort.Slice(p.Tags, func(i, j int) bool { return p.Tags[i].Key < p.Tags[j].Key })
	return p, nil
}

func (s *Server) lastErr(w http.ResponseWriter, r *http.Request) {
	var le LastError
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&le); err != nil {
		fail(w, http.StatusBadRequest, "decodeBodyFailed", "decode last error: %v", err)
		return
	}
	if le.Input == "" || le.Content == "" {
		fail(w, http.StatusBadRequest, "invalidLastError", "input and err_content are required")
		return
	}
	le.Time = s.opts.Now()
	s.mu.Lock()
	s.lastError[le.Input] = le
	s.mu.Unlock()
	s.opts.Log.Printf("api: last error from %s (source %q): %s", le.Input, le.Source, le.Content)
	w.WriteHeader(http.StatusOK)
}

// LastErrors returns the last error of each input, sorted by input.
func (s *Server) LastErrors() []LastError {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]LastError, 0, len(s.lastError))
	for _, le := range s.lastError {
		out = append(out, le)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Input < out[j].Input })
	return out
}

func (s *Server) lastErrors(w http.ResponseWriter, _ *http.Request) { writeJSON(w, s.LastErrors()) }

func (s *Server) ping(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, map[string]any{"content": map[string]string{
		"version": s.opts.Version,
		"uptime":  s.opts.Now().Sub(s.started).Round(time.Second).String(),
	}})
}

func (s *Server) externals(w http.ResponseWriter, _ *http.Request) {
	states := []external.State{}
	if s.opts.Externals != nil {
		states = append(states, s.opts.Externals()...)
	}
	writeJSON(w, states)
}

func (s *Server) query(w http.ResponseWriter, r *http.Request) {
	v := r.URL.Query()
	q, err := ParseQuery(v.Get("measurement"), v.Get("since"), v.Get("until"), v["tag"], v.Get("category"), v.Get("limit"), s.opts.Now())
	if err != nil {
		fail(w, http.StatusBadRequest, "invalidQuery", "%v", err)
		return
	}
	points, err := s.opts.Store.Query(q)
	if err != nil {
		fail(w, http.StatusInternalServerError, "queryFailed", "%v", err)
		return
	}
	body, err := FormatPoints(points)
	if err != nil {
		fail(w, http.StatusInternalServerError, "queryFailed", "%v", err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write(body)
}

// FormatPoints renders points as line protocol, one per line.
func FormatPoints(points []store.Point) ([]byte, error) {
	var buf []byte
	for i := range points {
		var err error
		if buf, err = points[i].AppendLineProtocol(buf); err != nil {
			return nil, err
		}
		buf = append(buf, '\n')
	}
	return buf, nil
}

// ParseQuery builds a store query from the /v1/query parameters (shared with
// `datakit query`). since and until are a duration before now ("5m") or an
// RFC 3339 time; until "" is now; tags are "k:v" (or "k=v"); limit "" is none.
func ParseQuery(measurement, since, until string, tags []string, category, limit string, now time.Time) (store.Query, error) {
	q := store.Query{Measurement: measurement, Category: category}
	if measurement == "" {
		return q, errors.New("measurement is required")
	}
	if category != "" && !validCategory(category) {
		return q, fmt.Errorf("category: invalid %q, want one of %s", category, strings.Join(Categories, ", "))
	}
	var err error
	if since != "" {
		if q.Since, err = ParseTime(since, now); err != nil {
			return q, fmt.Errorf("since: %w", err)
		}
	}
	if until != "" {
		if q.Until, err = ParseTime(until, now); err != nil {
			return q, fmt.Errorf("until: %w", err)
		}
	}
	for _, t := range tags {
		k, v, ok := strings.Cut(t, ":")
		if !ok {
			k, v, ok = strings.Cut(t, "=")
		}
		if !ok || k == "" {
			return q, fmt.Errorf("tag: invalid %q, want key:value", t)
		}
		if q.Tags == nil {
			q.Tags = map[string]string{}
		}
		q.Tags[k] = v
	}
	if limit != "" {
		if q.Limit, err = strconv.Atoi(limit); err != nil || q.Limit < 0 {
			return q, fmt.Errorf("limit: invalid %q, want a non-negative integer", limit)
		}
	}
	return q, nil
}

// ParseTime parses a duration before now ("5m", "2h") or an RFC 3339 time.
func ParseTime(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("invalid time %q, want a duration before now (5m) or an RFC 3339 time", s)
	}
	return t, nil
}
