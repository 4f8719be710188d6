// Package api serves the agent's DataKit-compatible HTTP API: it validates
// line protocol written to /v1/write/:category, commits it to the local store
// before answering, and serves queries, last errors and supervisor state.
package api

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

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
	Commit(b *store.Batch) (duplicate bool, err error)
	Query(q store.Query) ([]store.Point, error)
	Evicted() int64 // points removed to stay under the size bound
	Damaged() int64 // points lost to a damaged file
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
	// Token, when set, is required of every request but GET /v1/ping: "Authorization: Bearer <token>" or
	// DataKit's "X-Token: <token>".
	Token string
	// For GET /v1/monitor: the configured listen address, the store's path and sizes, and each sink's
	// status; the functions may be nil.
	Listen      string
	StoreStatus func() StoreStatus
	Sinks       func() []SinkStatus
}

// Limits of the API: one client can neither stall it nor exhaust the agent's memory.
const (
	// MaxConcurrentWrites are decoded and stored at once; more are answered 429 with Retry-After.
	MaxConcurrentWrites = 4
	// MaxConcurrentQueries likewise.
	MaxConcurrentQueries = 4
	// DefaultQueryLimit is the most recent points a query returns without a limit; MaxQueryLimit is the
	// largest limit accepted.
	DefaultQueryLimit = 10000
	MaxQueryLimit     = 100000
	// maxLastErrors is the inputs whose last error is kept (the oldest is forgotten beyond), and
	// maxLastErrorLen the bytes kept of each.
	maxLastErrors   = 100
	maxLastErrorLen = 4096
	// retryAfter is what a client refused for load is told to wait, in seconds.
	retryAfter = "1"
)

// BatchIDHeader carries a client's id for a write: a write with an id already stored is answered 200 and
// stored again nowhere, so a client may retry a write whose answer it did not get.
const BatchIDHeader = "X-Batch-Id"

// TruncatedHeader is set on a query's answer when older matches were left out by the limit.
const TruncatedHeader = "X-Datakit-Truncated"

// Server is the API's http.Handler.
type Server struct {
	opts    Options
	mux     *http.ServeMux
	started time.Time

	writes, queries chan struct{} // semaphores

	mu        sync.Mutex
	lastError map[string]LastError
	// points written per (category, measurement), for GET /v1/monitor (monitor.go)
	measurements      map[measurementKey]*measurementCounter
	otherMeasurements *measurementCounter
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
	s := &Server{opts: opts, mux: http.NewServeMux(), started: opts.Now(), lastError: map[string]LastError{},
		writes: make(chan struct{}, MaxConcurrentWrites), queries: make(chan struct{}, MaxConcurrentQueries)}
	s.mux.HandleFunc("POST /v1/write/{category}", s.write)
	s.mux.HandleFunc("POST /v1/lasterror", s.lastErr)
	s.mux.HandleFunc("GET /v1/ping", s.ping)
	s.mux.HandleFunc("GET /v1/query", s.query)
	s.mux.HandleFunc("GET /v1/externals", s.externals)
	s.mux.HandleFunc("GET /v1/lasterror", s.lastErrors)
	s.mux.HandleFunc("GET /v1/monitor", s.monitor)
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.opts.Log.Printf("api: %s %s: panic: %v\n%s", r.Method, r.URL.Path, v, debug.Stack())
			fail(w, http.StatusInternalServerError, "internalError", "internal error: %v", v)
		}
	}()
	if s.opts.Token != "" && !(r.Method == http.MethodGet && r.URL.Path == "/v1/ping") && !s.authorized(r) {
		fail(w, http.StatusUnauthorized, "unauthorized", "this API needs a token: send Authorization: Bearer <token> or X-Token: <token>")
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) authorized(r *http.Request) bool {
	return subtle.ConstantTimeCompare([]byte(RequestToken(r)), []byte(s.opts.Token)) == 1
}

// RequestToken is the token a request sends: DataKit's "X-Token: <token>", else "Authorization: Bearer <token>".
func RequestToken(r *http.Request) string {
	if t := r.Header.Get("X-Token"); t != "" {
		return t
	}
	if a := r.Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "Bearer ") {
		return a[7:]
	}
	return ""
}

// acquire takes a slot of sem, or answers 429 and returns false.
func acquire(w http.ResponseWriter, sem chan struct{}, what string) bool {
	select {
	case sem <- struct{}{}:
		return true
	default:
		w.Header().Set("Retry-After", retryAfter)
		fail(w, http.StatusTooManyRequests, "tooManyRequests", "%d %s are in progress, retry after %s s", cap(sem), what, retryAfter)
		return false
	}
}

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
	if !acquire(w, s.writes, "writes") {
		return
	}
	defer func() { <-s.writes }()
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
	rd, err := bodyReader(r)
	if err != nil {
		fail(w, http.StatusBadRequest, "decodeBodyFailed", "read body: %v", err)
		return
	}
	defer rd.Close()
	batch := store.NewBatch(r.Header.Get(BatchIDHeader))
	global := s.opts.GlobalTags
	if isTrue(q.Get("ignore_global_host_tags")) || isTrue(q.Get("ignore_global_tags")) {
		global = nil
	}
	var counts writeCounts // for GET /v1/monitor
	add := func(p *store.Point) error {
		addTags(p, global)
		counts.add(p.Measurement)
		return batch.Add(p)
	}
	code := "invalidLinePoint" // DataKit's error code for a bad point of each format
	switch media, _ := parseMediaType(r.Header.Get("Content-Type")); media {
	case mediaJSON, mediaProtobuf:
		code = map[string]string{mediaJSON: "invalidJSONPoint", mediaProtobuf: "invalidProtobufPoint"}[media]
		var body []byte
		if body, err = io.ReadAll(rd); err == nil {
			var points []store.Point
			points, err = decodeBody(r.Header.Get("Content-Type"), body, category, input, prec, s.opts.Now())
			for i := 0; err == nil && i < len(points); i++ {
				err = add(&points[i])
			}
		}
	default:
		// Line protocol is decoded as it arrives, point by point into the batch: the body is never held whole.
		err = decodeLineProtocol(lp.NewDecoder(rd), category, input, prec, s.opts.Now(), add)
	}
	if rd.err != nil { // the body itself was bad (too large, bad gzip, cut short): that is the error to report
		fail(w, http.StatusBadRequest, "decodeBodyFailed", "read body: %v", rd.err)
		return
	}
	if err != nil {
		fail(w, http.StatusBadRequest, code, "%v", err)
		return
	}
	if rd.n == 0 || rd.blank {
		fail(w, http.StatusBadRequest, "emptyBody", "empty body")
		return
	}
	if batch.Len() == 0 {
		fail(w, http.StatusBadRequest, "noPoints", "no points in body")
		return
	}
	dup, err := s.opts.Store.Commit(batch)
	if err != nil {
		s.opts.Log.Printf("api: %s from %s: %v", r.URL.Path, input, err)
		if errors.Is(err, store.ErrTooLarge) {
			fail(w, http.StatusRequestEntityTooLarge, "bodyTooLarge", "%v", err)
			return
		}
		fail(w, http.StatusInternalServerError, "storeFailed", "%v", err)
		return
	}
	if !dup {
		s.counted(category, &counts)
	}
	w.WriteHeader(http.StatusOK)
}

func isTrue(v string) bool { b, _ := strconv.ParseBool(v); return b }

// addTags adds the tags a point lacks; the batch sorts them.
func addTags(p *store.Point, tags map[string]string) {
	for k, v := range tags {
		if !slices.ContainsFunc(p.Tags, func(t store.Tag) bool { return t.Key == k }) {
			p.Tags = append(p.Tags, store.Tag{Key: k, Value: v})
		}
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

// body reads a request's body, decompressed, counting it: more than maxBody bytes is an error.
type body struct {
	rd     io.Reader
	closer io.Closer
	n      int64 // bytes read
	blank  bool  // only white space so far
	err    error // the first error other than io.EOF
}

func bodyReader(r *http.Request) (*body, error) {
	b := &body{rd: r.Body, blank: true}
	enc := r.Header.Get("Content-Encoding")
	if e := r.URL.Query().Get("encoding"); e != "" {
		enc = e
	}
	switch enc {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(r.Body)
		if err == io.EOF {
			return b, nil // an empty body: said as such by the caller
		}
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		b.rd, b.closer = zr, zr
	default:
		return nil, fmt.Errorf("unsupported content encoding %q, want gzip", enc)
	}
	return b, nil
}

func (b *body) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.rd.Read(p)
	b.n += int64(n)
	if b.blank && len(bytes.TrimSpace(p[:n])) > 0 {
		b.blank = false
	}
	switch {
	case b.n > maxBody:
		b.err = fmt.Errorf("body larger than %d bytes", maxBody)
		return n, b.err
	case err != nil && err != io.EOF:
		b.err = err
	}
	return n, err
}

func (b *body) Close() {
	if b.closer != nil {
		b.closer.Close()
	}
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

// decode is decodeLineProtocol of a whole body into a slice.
func decode(body []byte, category, input string, prec int64, now time.Time) ([]store.Point, error) {
	var out []store.Point
	err := decodeLineProtocol(lp.NewDecoderWithBytes(body), category, input, prec, now, func(p *store.Point) error {
		out = append(out, *p)
		return nil
	})
	return out, err
}

// decodeLineProtocol parses the whole body, passing each point to add; any invalid line rejects the whole body
// (the caller stores nothing then).
func decodeLineProtocol(dec *lp.Decoder, category, input string, prec int64, now time.Time, add func(*store.Point) error) error {
	for line := 1; dec.Next(); line++ {
		p, err := decodePoint(dec, prec, now)
		if err == nil {
			p.Category, p.Input = category, input
			err = add(&p)
		}
		if err != nil {
			return fmt.Errorf("point %d: %w", line, err)
		}
	}
	return dec.Err()
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
	le.Input, le.Source, le.Content = truncate(le.Input, 256), truncate(le.Source, 256), truncate(le.Content, maxLastErrorLen)
	s.mu.Lock()
	if _, known := s.lastError[le.Input]; !known && len(s.lastError) >= maxLastErrors {
		oldest := ""
		for in, e := range s.lastError {
			if oldest == "" || e.Time.Before(s.lastError[oldest].Time) {
				oldest = in
			}
		}
		delete(s.lastError, oldest)
	}
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

// truncate cuts s to at most n bytes, on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func (s *Server) lastErrors(w http.ResponseWriter, _ *http.Request) { writeJSON(w, s.LastErrors()) }

func (s *Server) ping(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, map[string]any{"content": map[string]any{
		"version": s.opts.Version,
		"uptime":  s.opts.Now().Sub(s.started).Round(time.Second).String(),
		// since the agent started: what the store gave up, so that no loss goes uncounted
		"store_evicted_points": s.opts.Store.Evicted(),
		"store_damaged_points": s.opts.Store.Damaged(),
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
	if !acquire(w, s.queries, "queries") {
		return
	}
	defer func() { <-s.queries }()
	v := r.URL.Query()
	q, err := ParseQuery(v.Get("measurement"), v.Get("since"), v.Get("until"), v["tag"], v.Get("category"), v.Get("limit"), s.opts.Now())
	if err != nil {
		fail(w, http.StatusBadRequest, "invalidQuery", "%v", err)
		return
	}
	limit := q.Limit
	q.Limit++ // one more tells whether older matches were left out
	points, err := s.opts.Store.Query(q)
	if err != nil {
		fail(w, http.StatusInternalServerError, "queryFailed", "%v", err)
		return
	}
	if len(points) > limit {
		points = points[len(points)-limit:]
		w.Header().Set(TruncatedHeader, strconv.Itoa(limit))
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	bw := bufio.NewWriterSize(w, 64<<10)
	var line []byte
	for i := range points {
		if line, err = points[i].AppendLineProtocol(line[:0]); err != nil {
			s.opts.Log.Printf("api: query %s: %v", q.Measurement, err)
			return // the client sees a short answer: the status is already sent
		}
		if _, err := bw.Write(append(line, '\n')); err != nil {
			return
		}
	}
	_ = bw.Flush()
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
// RFC 3339 time; until "" is now; tags are "k:v" (or "k=v"); limit "" is
// DefaultQueryLimit, and at most MaxQueryLimit.
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
	q.Limit = DefaultQueryLimit
	if limit != "" {
		if q.Limit, err = strconv.Atoi(limit); err != nil || q.Limit <= 0 || q.Limit > MaxQueryLimit {
			return q, fmt.Errorf("limit: invalid %q, want 1 to %d (default %d)", limit, MaxQueryLimit, DefaultQueryLimit)
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
