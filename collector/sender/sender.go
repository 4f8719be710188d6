// Package sender is the last stage of the pipeline: it buffers encoded line protocol and posts it to the parent
// datakit's HTTP API, retrying with backoff and counting what it sends, fails, rejects, drops and spools.
//
// Wire contract with the parent:
//   - POST /v1/write/<category>?input=<input>, Content-Type text/plain; charset=utf-8, the body the batch's
//     lines joined by \n, and X-Batch-Id: <32 lowercase hex digits>, 128 random bits fixed when the batch is
//     formed. Every retry of a batch, in this run or from the spool after a restart, sends the same id and
//     the same body. The parent stores the id with the points in one transaction and answers 2xx to an id it
//     has already stored, without storing again: a retry after a timeout does not duplicate points.
//   - Authorization: Bearer <Token> on every request (write, lasterror, ping) when Token is set.
//   - 2xx: sent. 408, 429, 5xx, 401, 403 or no answer: retried, after MinBackoff doubling up to MaxBackoff;
//     a 429 or 503 carrying Retry-After (seconds or an HTTP date) is retried after that long instead, at
//     most MaxRetryAfter. 401 and 403 are retried because the batch is fine and the token is not (the agent
//     restarts its collector with the new token, which then sends what was spooled). Any other status:
//     rejected, dropped and counted, not retried (a bug on our side).
//   - While it waits after no answer at all (refused, timed out) for longer than a second, it asks
//     GET /v1/ping every second and retries as soon as that answers 200: the parent is back, so the batch
//     goes within 2 s, not after up to 30 s of backoff. After an answer (5xx, 429) the parent is up but
//     unwilling, so the backoff or Retry-After is kept.
//
// Nothing is lost silently. Every point enqueued, or found in the spool at start (Resumed), ends Sent,
// Rejected or Dropped, or is still Queued (in memory, or in the spool waiting to be resent) or Spooled (on
// disk when Run returned): Enqueued + Resumed = Sent + Rejected + Dropped + Queued + Spooled.
//
// The spool (SpoolDir set) carries the buffer across a restart of either program. When Run stops, what the
// 2 s flush window could not post is written to one new segment file, fsynced once, instead of dropped; it
// holds too the spooled batches of the previous run not sent yet, so the old segments are deleted after it
// is written. The next Run posts the spooled batches first, oldest first, with their ids (a batch the parent
// stored just before a crash is answered 200 and not stored twice), and deletes a segment once all its
// batches are acknowledged (a restart mid-segment resends the acknowledged ones, which the ids make
// harmless). Beyond SpoolMaxBytes the oldest batches are dropped, counted, and logged once. Damaged or
// truncated records (a kill -9 mid-write) are skipped, logged and counted (Dropped when their header names
// the input, and in SpoolCorrupt), never fatal.
//
// While running, with a spool, an outage spills to disk: while posts fail and the queued lines pass spillAt
// (or half of MaxBufferedPoints), Run writes them all, as batches, to a new segment (one fsync per spill,
// not per batch) and posts them, like any spooled batch, before anything queued later. The spool's bound
// (SpoolMaxBytes) then drops its oldest batches, counted. MaxBufferedPoints stays the hard bound of memory:
// beyond it (no spool, or lines coming faster than a spill writes them) the oldest lines are dropped, counted.
package sender

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults for zero Config fields.
const (
	DefaultMaxBufferedPoints = 100000
	DefaultBatchSize         = 256
	DefaultTimeout           = 10 * time.Second
	DefaultMinBackoff        = time.Second
	DefaultMaxBackoff        = 30 * time.Second
	DefaultMaxRetryAfter     = 30 * time.Second
	DefaultSpoolMaxBytes     = 64 << 20
)

// While posts fail, queued lines beyond this many go to the spool: memory stays small however long the
// outage (a few MB of lines; one fsync per spill, every few seconds at the busiest bench load).
const spillAt = 4096

// How long Run keeps flushing after its context is cancelled.
const shutdownFlushTimeout = 2 * time.Second

// How often GET /v1/ping asks whether the parent is back, and that request's timeout.
const probeEvery = time.Second

// At most this many distinct rejection messages are remembered (and so logged).
const maxRejectMessages = 100

// BatchIDHeader carries a batch's id on POST /v1/write.
const BatchIDHeader = "X-Batch-Id"

// Config configures a Sender. Zero fields take the defaults above.
type Config struct {
	BaseURL           string        // the parent datakit, e.g. "http://0.0.0.0:9529"
	Token             string        // sent as Authorization: Bearer <Token> when set
	MaxBufferedPoints int           // lines buffered in memory across all queues, the oldest are dropped beyond
	BatchSize         int           // lines per POST
	Timeout           time.Duration // per POST
	MinBackoff        time.Duration // first wait after a failed POST, doubled on each further failure
	MaxBackoff        time.Duration
	MaxRetryAfter     time.Duration // bound of a wait the parent asks for with Retry-After
	SpoolDir          string        // where what is left at shutdown is kept for the next run; "" = dropped
	SpoolMaxBytes     int64         // bound of the spool, the oldest batches are dropped beyond
	Client            *http.Client  // default: a plain http.Client
	Logger            *slog.Logger  // default: slog.Default()
}

// InputStats counts the points of one input.
type InputStats struct {
	Sent     int64 // points acknowledged with 2xx
	Failed   int64 // failed POST attempts (no answer, 5xx, 429, 408, 401, 403), retried
	Rejected int64 // points in batches the parent refused with another 4xx, dropped
	Dropped  int64 // points dropped: buffer overflow, stopped without a spool, spool full or damaged
	Queued   int64 // points waiting now, in memory or in the spool
	Spooled  int64 // points left in the spool when Run returned, for the next run
	Spilled  int64 // points moved from memory to the spool while running (an outage longer than memory holds)
	Resumed  int64 // points found in the spool when Run started, then counted like enqueued ones
}

// Sender buffers lines per category and input and posts them in batches. Enqueue, Stats and SpoolCorrupt are
// safe for concurrent use; Run is called once.
type Sender struct {
	cfg          Config
	log          *slog.Logger
	flushTimeout time.Duration
	probeEvery   time.Duration

	wake chan struct{} // signalled, without blocking, when lines are enqueued

	// Only Run's goroutine uses these.
	segments     []*segment // spool files found at start
	spool        []*record  // spooled batches not yet taken, oldest first
	lastStamp    int64      // of the newest segment seen
	spoolFullLog bool       // "spool full" was logged

	mu       sync.Mutex
	queues   []*queue // one per category and input
	total    int      // lines in queues plus the batch from memory being posted
	seq      uint64   // enqueue order across queues, to find the oldest line
	stats    map[string]*InputStats
	corrupt  int64           // spool records skipped as damaged
	rejected map[string]bool // rejection messages already logged
	closed   bool
}

type queue struct {
	category, input string
	lines           []line
}

type line struct {
	seq uint64
	b   []byte
}

// batch is up to BatchSize lines of one queue, or a spooled record. It does not change once formed: every
// retry posts the same id and body.
type batch struct {
	id              string
	category, input string
	points          int
	body            []byte
	rec             *record // the spool record it was read from; nil for a batch from memory
}

// New returns a Sender for cfg.
func New(cfg Config) *Sender {
	if cfg.MaxBufferedPoints <= 0 {
		cfg.MaxBufferedPoints = DefaultMaxBufferedPoints
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	// The batch being posted is never dropped, so it must leave room in the buffer.
	cfg.BatchSize = min(cfg.BatchSize, cfg.MaxBufferedPoints)
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(DefaultMaxBackoff, cfg.MinBackoff)
	}
	if cfg.MaxRetryAfter <= 0 {
		cfg.MaxRetryAfter = DefaultMaxRetryAfter
	}
	if cfg.SpoolMaxBytes <= 0 {
		cfg.SpoolMaxBytes = DefaultSpoolMaxBytes
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	cfg.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Sender{
		cfg:          cfg,
		log:          log,
		flushTimeout: shutdownFlushTimeout,
		probeEvery:   probeEvery,
		wake:         make(chan struct{}, 1),
		stats:        make(map[string]*InputStats),
		rejected:     make(map[string]bool),
	}
}

// Enqueue queues lines of line protocol (one point each, with or without the trailing newline) for
// POST /v1/write/<category>?input=<input>. The Sender keeps the slices, so the caller must not modify them.
// It never blocks: beyond MaxBufferedPoints the oldest lines of all queues are dropped and counted.
func (s *Sender) Enqueue(category, input string, lines [][]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.statsLocked(input)
	var q *queue
	for _, b := range lines {
		b = bytes.TrimRight(b, "\n")
		if len(b) == 0 {
			continue
		}
		if s.closed {
			st.Dropped++
			continue
		}
		if q == nil {
			q = s.queueLocked(category, input)
		}
		s.seq++
		q.lines = append(q.lines, line{seq: s.seq, b: b})
		st.Queued++
		s.total++
		if s.total > s.cfg.MaxBufferedPoints {
			s.dropOldestLocked()
		}
	}
	if q != nil {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// Stats returns a snapshot of the counters, by input.
func (s *Sender) Stats() map[string]InputStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]InputStats, len(s.stats))
	for input, st := range s.stats {
		out[input] = *st
	}
	return out
}

// SpoolCorrupt returns how many damaged or truncated spool records (or unreadable rests of files) were
// skipped. Their points are counted as Dropped when the header naming their input could be read.
func (s *Sender) SpoolCorrupt() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.corrupt
}

// Run loads the spool, then posts spooled and queued lines until ctx is cancelled, then tries for a short
// while to flush what is left and spools (or, without a spool, drops and counts) the rest, and returns.
// Lines enqueued after Run returned are dropped.
func (s *Sender) Run(ctx context.Context) {
	s.loadSpool()
	// A POST in flight is not cancelled by ctx: cancelling one the parent has already stored would only make
	// the flush send it again. But it, and the final flush, end flushTimeout after ctx does, so the rest is
	// spooled well before the agent's SIGKILL (a batch cut short is resent with its id, so not duplicated).
	dctx, stopDrain := s.drainContext(ctx)
	defer stopDrain()
	var (
		b       *batch
		backoff time.Duration
		failing bool
	)
	for {
		if failing {
			s.spillIfDue()
		}
		if b == nil {
			b = s.next()
		}
		if b == nil {
			select {
			case <-ctx.Done():
				s.shutdown(dctx, nil)
				return
			case <-s.wake:
				continue
			}
		}
		if ctx.Err() != nil {
			s.shutdown(dctx, b)
			return
		}
		f := s.post(dctx, b)
		if f == nil {
			if failing {
				s.log.Info("post to datakit recovered")
			}
			b, backoff, failing = nil, 0, false
			continue
		}
		if !failing {
			s.log.Warn("post to datakit failed, retrying", "input", b.input, "err", f.err)
			failing = true
		}
		wait := f.retryAfter
		if wait <= 0 {
			backoff = min(max(2*backoff, s.cfg.MinBackoff), s.cfg.MaxBackoff)
			wait = backoff
		}
		if !s.pause(ctx, wait, !f.answered) {
			s.shutdown(dctx, b)
			return
		}
	}
}

// drainContext returns a context that is not cancelled with ctx but ends flushTimeout after it.
func (s *Sender) drainContext(ctx context.Context) (context.Context, context.CancelFunc) {
	dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var t *time.Timer
	var mu sync.Mutex
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		t = time.AfterFunc(s.flushTimeout, cancel)
		mu.Unlock()
	})
	return dctx, func() {
		stop()
		mu.Lock()
		if t != nil {
			t.Stop()
		}
		mu.Unlock()
		cancel()
	}
}

// pause waits d and reports true, or false as soon as ctx ends. With probe set and d longer than a probe
// period, it asks GET /v1/ping every period and returns early once the parent answers 200.
func (s *Sender) pause(ctx context.Context, d time.Duration, probe bool) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	var tick <-chan time.Time
	if probe && d > s.probeEvery {
		tk := time.NewTicker(s.probeEvery)
		defer tk.Stop()
		tick = tk.C
	}
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case <-tick:
			if s.ping(ctx) {
				return true
			}
		case <-s.wake: // lines enqueued: a long wait may have to spill them
			s.spillIfDue()
		}
	}
}

// ping reports whether the parent answers GET /v1/ping with 200 within a probe period.
func (s *Sender) ping(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, s.probeEvery)
	defer cancel()
	a, err := s.do(ctx, http.MethodGet, s.cfg.BaseURL+"/v1/ping", "", nil, nil)
	return err == nil && a.status == http.StatusOK
}

// shutdown posts b and what waits until the first failure or the end of dctx (the flush window), then
// spools the rest, or drops it without a spool.
func (s *Sender) shutdown(dctx context.Context, b *batch) {
	for {
		if b == nil {
			b = s.next()
		}
		if b == nil || s.post(dctx, b) != nil {
			break
		}
		b = nil
	}

	// What is left, oldest first: b if spooled, the records of earlier runs not taken, b if from memory, the
	// records spilled in this run (newer than b: they were queued behind it), the queues.
	var items []spoolItem
	if b != nil && b.rec != nil {
		items = append(items, spoolItem{rec: b.rec, size: b.rec.size})
	}
	s.mu.Lock()
	s.closed = true
	bFromMemory := b != nil && b.rec == nil
	for _, r := range s.spool {
		if r.spilled && bFromMemory {
			items, bFromMemory = append(items, memItem(b)), false
		}
		items = append(items, spoolItem{rec: r, size: r.size})
	}
	s.spool = nil
	if bFromMemory {
		items = append(items, memItem(b))
	}
	for nb := s.takeLocked(); nb != nil; nb = s.takeLocked() {
		items = append(items, memItem(nb))
	}
	if s.cfg.SpoolDir == "" { // then there are no records
		for _, it := range items {
			s.removeLocked(it.b, func(st *InputStats, n int64) { st.Dropped += n })
		}
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	s.spoolOut(items)
}

// spoolOut writes items to a new segment, dropping the oldest beyond SpoolMaxBytes, then deletes the older
// segments (their pending records are in the new one).
func (s *Sender) spoolOut(items []spoolItem) {
	if len(items) == 0 {
		s.removeSegments()
		return
	}
	var size int64
	for _, it := range items {
		size += it.size
	}
	drop := 0
	for size > s.cfg.SpoolMaxBytes && drop < len(items) {
		size -= items[drop].size
		drop++
	}
	keep := items[drop:]
	var unreadable []badRecord
	path, err := "", error(nil)
	if len(keep) > 0 {
		path, unreadable, err = writeSegment(s.cfg.SpoolDir, nextStamp(s.lastStamp), keep)
	}
	if err != nil {
		// The older segments stay as they are, so their records stay spooled; memory is lost.
		s.log.Error("spool failed: points left in memory are dropped", "dir", s.cfg.SpoolDir, "err", err)
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, it := range items {
			if it.rec != nil {
				s.moveLocked(it.rec.input, int64(it.rec.points), func(st *InputStats, n int64) { st.Spooled += n })
			} else {
				s.removeLocked(it.b, func(st *InputStats, n int64) { st.Dropped += n })
			}
		}
		return
	}

	s.mu.Lock()
	var dropped, spooled int64
	for _, it := range items[:drop] {
		dropped += int64(it.points())
		s.countItemLocked(it, func(st *InputStats, n int64) { st.Dropped += n })
	}
	for _, it := range keep {
		spooled += int64(it.points())
		s.countItemLocked(it, func(st *InputStats, n int64) { st.Spooled += n })
	}
	for _, r := range unreadable { // counted Spooled above: correct it
		spooled -= int64(r.points)
		st := s.statsLocked(r.input)
		st.Spooled -= int64(r.points)
		st.Dropped += int64(r.points)
		s.corrupt++
	}
	s.mu.Unlock()
	for _, r := range unreadable {
		s.log.Error("spooled batch unreadable, dropped", "points", r.points, "input", r.input, "err", r.err)
	}
	if drop > 0 {
		s.logSpoolFull(dropped)
	}
	s.removeSegments()
	if spooled > 0 {
		s.log.Info("points spooled for the next run", "points", spooled, "file", path)
	}
}

// spillIfDue spills the queued lines to the spool when they pass spillAt, or half of MaxBufferedPoints if
// less (see Sender). Run calls it only while posts fail: a healthy parent takes them from memory.
func (s *Sender) spillIfDue() {
	if s.cfg.SpoolDir == "" {
		return
	}
	s.mu.Lock()
	if s.total <= min(spillAt, s.cfg.MaxBufferedPoints/2) {
		s.mu.Unlock()
		return
	}
	var items []spoolItem
	for b := s.takeLocked(); b != nil; b = s.takeLocked() {
		items = append(items, memItem(b))
	}
	s.mu.Unlock()
	s.spill(items)
}

// spill writes items (batches taken from memory, oldest first) to a new segment and queues its records
// behind the spooled ones; if the write fails they are dropped and counted.
func (s *Sender) spill(items []spoolItem) {
	stamp := nextStamp(s.lastStamp)
	seg := &segment{stamp: stamp}
	var recs []*record
	var bad []badRecord
	path, _, err := writeSegment(s.cfg.SpoolDir, stamp, items)
	if err == nil {
		seg.path = path
		recs, bad, err = scanSegment(seg)
	}
	s.mu.Lock()
	for _, it := range items {
		if err != nil {
			s.removeLocked(it.b, func(st *InputStats, n int64) { st.Dropped += n })
			continue
		}
		s.total -= it.b.points // out of memory; still Queued, now in the spool
		s.statsLocked(it.b.input).Spilled += int64(it.b.points)
	}
	for _, r := range bad { // written but not readable back: dropped
		s.moveLocked(r.input, int64(r.points), func(st *InputStats, n int64) { st.Dropped += n })
		s.corrupt++
	}
	s.mu.Unlock()
	if err != nil {
		if seg.path != "" {
			s.removeSegment(seg) // counted dropped: it must not be resumed by the next run
		}
		s.log.Error("spill to spool failed: points dropped", "dir", s.cfg.SpoolDir, "err", err)
		return
	}
	s.lastStamp = stamp
	for _, r := range recs {
		r.spilled = true
	}
	seg.pending = len(recs)
	s.segments = append(s.segments, seg)
	s.spool = append(s.spool, recs...)
	if len(recs) == 0 {
		s.removeSegment(seg)
	}
	s.boundSpool()
}

// boundSpool drops the oldest spooled batches beyond SpoolMaxBytes, counted.
func (s *Sender) boundSpool() {
	var size int64
	for _, r := range s.spool {
		size += r.size
	}
	drop := 0
	for size > s.cfg.SpoolMaxBytes && drop < len(s.spool) {
		size -= s.spool[drop].size
		drop++
	}
	if drop == 0 {
		return
	}
	var dropped int64
	s.mu.Lock()
	for _, r := range s.spool[:drop] {
		dropped += int64(r.points)
		s.moveLocked(r.input, int64(r.points), func(st *InputStats, n int64) { st.Dropped += n })
	}
	s.mu.Unlock()
	for _, r := range s.spool[:drop] {
		s.done(r)
	}
	s.spool = s.spool[drop:]
	s.logSpoolFull(dropped)
}

// countItemLocked takes it out of Queued (and of the memory buffer) and counts it with count.
func (s *Sender) countItemLocked(it spoolItem, count func(st *InputStats, n int64)) {
	if it.rec != nil {
		s.moveLocked(it.rec.input, int64(it.rec.points), count)
	} else {
		s.removeLocked(it.b, count)
	}
}

// moveLocked takes n points of input out of Queued and counts them with count.
func (s *Sender) moveLocked(input string, n int64, count func(st *InputStats, n int64)) {
	st := s.statsLocked(input)
	st.Queued -= n
	count(st, n)
}

func (s *Sender) logSpoolFull(points int64) {
	if s.spoolFullLog {
		return
	}
	s.spoolFullLog = true
	s.log.Error("spool full: oldest batches dropped (logged once)", "points", points,
		"dir", s.cfg.SpoolDir, "max_bytes", s.cfg.SpoolMaxBytes)
}

// removeSegments deletes the segments found at start.
func (s *Sender) removeSegments() {
	for _, seg := range s.segments {
		if err := os.Remove(seg.path); err != nil && !os.IsNotExist(err) {
			s.log.Warn("remove spool segment", "err", err)
		}
	}
	s.segments = nil
}

// loadSpool reads the spool: its batches are sent before anything queued, oldest first.
func (s *Sender) loadSpool() {
	if s.cfg.SpoolDir == "" {
		return
	}
	sc, err := scanSpool(s.cfg.SpoolDir)
	if err != nil {
		s.log.Error("spool unreadable, not resumed", "dir", s.cfg.SpoolDir, "err", err)
		return
	}
	s.segments = sc.segments
	for _, seg := range sc.segments {
		s.lastStamp = max(s.lastStamp, seg.stamp)
	}
	s.mu.Lock()
	for _, r := range sc.records {
		st := s.statsLocked(r.input)
		st.Resumed += int64(r.points)
		st.Queued += int64(r.points)
	}
	for _, bad := range sc.bad {
		s.corrupt++
		if bad.input != "" {
			st := s.statsLocked(bad.input)
			st.Resumed += int64(bad.points)
			st.Dropped += int64(bad.points)
		}
	}
	s.mu.Unlock()
	for _, bad := range sc.bad {
		s.log.Error("damaged spool record skipped", "points", bad.points, "input", bad.input, "err", bad.err)
	}
	s.spool = sc.records
	for _, seg := range sc.segments {
		if seg.pending == 0 { // nothing valid left in it
			s.removeSegment(seg)
		}
	}
	s.boundSpool() // beyond the bound (lowered since they were written), the oldest are dropped
	var resumed int64
	for _, r := range s.spool {
		resumed += int64(r.points)
	}
	if resumed > 0 {
		s.log.Info("resuming spooled points", "points", resumed, "batches", len(s.spool), "dir", s.cfg.SpoolDir)
	}
}

// done marks r as acknowledged or dropped; its segment goes when it has no pending record left.
func (s *Sender) done(r *record) {
	r.seg.pending--
	if r.seg.pending == 0 {
		s.removeSegment(r.seg)
	}
}

func (s *Sender) removeSegment(seg *segment) {
	if err := os.Remove(seg.path); err != nil && !os.IsNotExist(err) {
		s.log.Warn("remove spool segment", "err", err)
	}
}

// next returns the batch to post: the oldest spooled one, else one from the queues, else nil. A spooled
// batch that cannot be read back is skipped and counted.
func (s *Sender) next() *batch {
	for len(s.spool) > 0 {
		r := s.spool[0]
		s.spool = s.spool[1:]
		body, err := r.read()
		if err == nil {
			return &batch{id: r.id, category: r.category, input: r.input, points: r.points, body: body, rec: r}
		}
		s.log.Error("spooled batch unreadable, dropped", "points", r.points, "input", r.input, "err", err)
		s.mu.Lock()
		s.moveLocked(r.input, int64(r.points), func(st *InputStats, n int64) { st.Dropped += n })
		s.corrupt++
		s.mu.Unlock()
		s.done(r)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.takeLocked()
}

// failure is why a POST must be retried.
type failure struct {
	err        error
	answered   bool          // the parent answered with a status: it is up
	retryAfter time.Duration // the wait it asked for with a 429 or 503, bounded; 0 if none
}

// post sends b once. It returns nil when b is done with (accepted or rejected) and why when b must be
// retried. It updates the counters either way.
func (s *Sender) post(ctx context.Context, b *batch) *failure {
	u := s.cfg.BaseURL + "/v1/write/" + url.PathEscape(b.category) + "?input=" + url.QueryEscape(b.input)
	a, err := s.do(ctx, http.MethodPost, u, "text/plain; charset=utf-8", b.body, http.Header{BatchIDHeader: {b.id}})
	var f *failure
	switch {
	case err != nil:
		f = &failure{err: err}
	case a.status == http.StatusTooManyRequests || a.status == http.StatusRequestTimeout || a.status >= 500 ||
		a.status == http.StatusUnauthorized || a.status == http.StatusForbidden: // the token, not the batch
		f = &failure{err: fmt.Errorf("post %s: http status %d %s", u, a.status, a.body), answered: true}
		if a.status == http.StatusTooManyRequests || a.status == http.StatusServiceUnavailable {
			if d, ok := parseRetryAfter(a.retryAfter, time.Now()); ok {
				f.retryAfter = min(d, s.cfg.MaxRetryAfter)
			}
		}
	}

	s.mu.Lock()
	switch {
	case f != nil:
		if ctx.Err() == nil { // not the parent's fault
			s.statsLocked(b.input).Failed++
		}
		s.mu.Unlock()
		return f
	case a.status >= 200 && a.status < 300:
		s.removeLocked(b, func(st *InputStats, n int64) { st.Sent += n })
	default:
		// The parent refused the body (a bug on our side): retrying cannot help.
		s.removeLocked(b, func(st *InputStats, n int64) { st.Rejected += n })
		msg := fmt.Sprintf("%d %s", a.status, a.body)
		if !s.rejected[msg] && len(s.rejected) < maxRejectMessages {
			s.rejected[msg] = true
			s.log.Error("datakit rejected points, dropped", "input", b.input, "points", b.points,
				"status", a.status, "body", a.body)
		}
	}
	s.mu.Unlock()
	if b.rec != nil {
		s.done(b.rec)
	}
	return nil
}

// parseRetryAfter reads a Retry-After value: seconds, or an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		return time.Duration(min(n, int64(time.Hour/time.Second))) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// answer is what do read of a response.
type answer struct {
	status     int
	body       string // its start
	retryAfter string // the Retry-After header
}

// do sends one request with the per-request timeout, the token and hdr.
func (s *Sender) do(ctx context.Context, method, u, contentType string, body []byte, hdr http.Header) (answer, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return answer{}, fmt.Errorf("%s %s: %w", strings.ToLower(method), u, err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if s.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+s.cfg.Token)
	}
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		return answer{}, fmt.Errorf("%s %s: %w", strings.ToLower(method), u, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // so the connection can be reused
	return answer{status: resp.StatusCode, body: strings.TrimSpace(string(msg)), retryAfter: resp.Header.Get("Retry-After")}, nil
}

// PostLastError reports msg as the last error of input to the parent (POST /v1/lasterror).
func (s *Sender) PostLastError(ctx context.Context, input, msg string) error {
	body, err := json.Marshal(struct {
		Input      string `json:"input"`
		Source     string `json:"source"`
		ErrContent string `json:"err_content"`
	}{input, "", msg})
	if err != nil {
		return fmt.Errorf("encode last error: %w", err)
	}
	u := s.cfg.BaseURL + "/v1/lasterror"
	a, err := s.do(ctx, http.MethodPost, u, "application/json", body, nil)
	if err != nil {
		return err
	}
	if a.status != http.StatusOK {
		return fmt.Errorf("post %s: http status %d %s", u, a.status, a.body)
	}
	return nil
}

// takeLocked removes up to BatchSize lines from the queue whose head is the oldest line and forms a batch
// of them, with its id. They stay counted in total and Queued until removeLocked.
func (s *Sender) takeLocked() *batch {
	q := s.oldestLocked()
	if q == nil {
		return nil
	}
	n := min(len(q.lines), s.cfg.BatchSize)
	size := n - 1
	for _, l := range q.lines[:n] {
		size += len(l.b)
	}
	body := make([]byte, 0, size)
	for i, l := range q.lines[:n] {
		if i > 0 {
			body = append(body, '\n')
		}
		body = append(body, l.b...)
	}
	clear(q.lines[:n])
	q.lines = q.lines[n:]
	if len(q.lines) == 0 {
		q.lines = nil // release the backing array
	}
	return &batch{id: newBatchID(), category: q.category, input: q.input, points: n, body: body}
}

// newBatchID returns 128 random bits in hex.
func newBatchID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand crashes the program instead)
	return hex.EncodeToString(b[:])
}

// removeLocked forgets the points of b, counting them with count.
func (s *Sender) removeLocked(b *batch, count func(st *InputStats, n int64)) {
	n := b.points
	st := s.statsLocked(b.input)
	st.Queued -= int64(n)
	if b.rec == nil {
		s.total -= n
	}
	count(st, int64(n))
}

// dropOldestLocked drops the oldest queued line. The batch being posted is not in a queue, so is never dropped.
func (s *Sender) dropOldestLocked() {
	q := s.oldestLocked()
	if q == nil {
		return
	}
	q.lines[0] = line{}
	q.lines = q.lines[1:]
	st := s.statsLocked(q.input)
	st.Queued--
	st.Dropped++
	s.total--
}

// oldestLocked returns the queue whose head is the oldest line, or nil when all are empty.
func (s *Sender) oldestLocked() *queue {
	var oldest *queue
	for _, q := range s.queues {
		if len(q.lines) > 0 && (oldest == nil || q.lines[0].seq < oldest.lines[0].seq) {
			oldest = q
		}
	}
	return oldest
}

func (s *Sender) queueLocked(category, input string) *queue {
	for _, q := range s.queues {
		if q.category == category && q.input == input {
			return q
		}
	}
	q := &queue{category: category, input: input}
	s.queues = append(s.queues, q)
	return q
}

func (s *Sender) statsLocked(input string) *InputStats {
	st := s.stats[input]
	if st == nil {
		st = &InputStats{}
		s.stats[input] = st
	}
	return st
}
