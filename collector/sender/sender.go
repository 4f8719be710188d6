// Package sender is the last stage of the pipeline: it buffers encoded line protocol and posts it to the parent
// datakit's HTTP API, retrying with backoff and counting what it sends, fails, rejects and drops.
package sender

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
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
)

// How long Run keeps flushing after its context is cancelled.
const shutdownFlushTimeout = 2 * time.Second

// At most this many distinct rejection messages are remembered (and so logged).
const maxRejectMessages = 100

// Config configures a Sender. Zero fields take the defaults above.
type Config struct {
	BaseURL           string        // the parent datakit, e.g. "http://0.0.0.0:9529"
	MaxBufferedPoints int           // lines buffered across all queues, the oldest are dropped beyond
	BatchSize         int           // lines per POST
	Timeout           time.Duration // per POST
	MinBackoff        time.Duration // first wait after a failed POST, doubled on each further failure
	MaxBackoff        time.Duration
	Client            *http.Client // default: a plain http.Client
	Logger            *slog.Logger // default: slog.Default()
}

// InputStats counts the points of one input.
type InputStats struct {
	Sent     int64 // points acknowledged with 200
	Failed   int64 // failed POST attempts (network error, 5xx, 429), retried
	Rejected int64 // points in batches the parent refused with a 4xx, dropped
	Dropped  int64 // points dropped because the buffer overflowed or the sender stopped
	Queued   int64 // points waiting now
}

// Sender buffers lines per category and input and posts them in batches. Enqueue and Stats are safe for
// concurrent use; Run is called once.
type Sender struct {
	cfg          Config
	log          *slog.Logger
	flushTimeout time.Duration

	wake chan struct{} // signalled, without blocking, when lines are enqueued

	mu       sync.Mutex
	queues   []*queue // one per category and input
	total    int      // lines in queues plus the batch being posted
	seq      uint64   // enqueue order across queues, to find the oldest line
	stats    map[string]*InputStats
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

// batch is up to BatchSize lines taken from the head of one queue.
type batch struct {
	category, input string
	lines           [][]byte
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

// Run posts queued lines until ctx is cancelled, then tries for a short while to flush what is left, counts
// the rest as dropped and returns. Lines enqueued after Run returned are dropped.
func (s *Sender) Run(ctx context.Context) {
	var (
		b       *batch
		backoff time.Duration
	)
	for {
		if b == nil {
			b = s.take()
		}
		if b == nil {
			select {
			case <-ctx.Done():
				s.shutdown(ctx, nil)
				return
			case <-s.wake:
				continue
			}
		}
		if ctx.Err() != nil {
			s.shutdown(ctx, b)
			return
		}
		// A POST in flight is not cancelled by shutdown (only by its own timeout): cancelling one the
		// parent has already stored would make the final flush send the batch again.
		if err := s.post(context.WithoutCancel(ctx), b); err != nil {
			if backoff == 0 {
				s.log.Warn("post to datakit failed, retrying", "input", b.input, "err", err)
			}
			backoff = min(max(2*backoff, s.cfg.MinBackoff), s.cfg.MaxBackoff)
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				s.shutdown(ctx, b)
				return
			case <-t.C:
			}
			continue
		}
		if backoff != 0 {
			s.log.Info("post to datakit recovered")
			backoff = 0
		}
		b = nil
	}
}

// shutdown posts b and the queued lines until the first failure or the flush deadline, then drops the rest.
func (s *Sender) shutdown(ctx context.Context, b *batch) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.flushTimeout)
	defer cancel()
	for {
		if b == nil {
			b = s.take()
		}
		if b == nil || s.post(ctx, b) != nil {
			break
		}
		b = nil
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if b != nil {
		s.removeLocked(b, func(st *InputStats, n int64) { st.Dropped += n })
	}
	for _, q := range s.queues {
		st := s.statsLocked(q.input)
		st.Dropped += int64(len(q.lines))
		st.Queued -= int64(len(q.lines))
		s.total -= len(q.lines)
		q.lines = nil
	}
}

// post sends b once. It returns nil when b is done with (accepted or rejected) and an error when b must be
// retried. It updates the counters either way.
func (s *Sender) post(ctx context.Context, b *batch) error {
	u := s.cfg.BaseURL + "/v1/write/" + url.PathEscape(b.category) + "?input=" + url.QueryEscape(b.input)
	status, body, err := s.do(ctx, u, "text/plain; charset=utf-8", bytes.Join(b.lines, []byte("\n")))
	retry := err != nil || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout || status >= 500
	if err == nil && retry {
		err = fmt.Errorf("post %s: http status %d %s", u, status, body)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case retry:
		if ctx.Err() == nil { // not the parent's fault
			s.statsLocked(b.input).Failed++
		}
		return err
	case status >= 200 && status < 300:
		s.removeLocked(b, func(st *InputStats, n int64) { st.Sent += n })
	default:
		// The parent refused the body (a bug on our side): retrying cannot help.
		s.removeLocked(b, func(st *InputStats, n int64) { st.Rejected += n })
		msg := fmt.Sprintf("%d %s", status, body)
		if !s.rejected[msg] && len(s.rejected) < maxRejectMessages {
			s.rejected[msg] = true
			s.log.Error("datakit rejected points, dropped", "input", b.input, "points", len(b.lines),
				"status", status, "body", body)
		}
	}
	return nil
}

// do POSTs body to u with the per-request timeout and returns the status and the start of the response body.
func (s *Sender) do(ctx context.Context, u, contentType string, body []byte) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return 0, "", fmt.Errorf("post %s: %w", u, err)
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("post %s: %w", u, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // so the connection can be reused
	return resp.StatusCode, strings.TrimSpace(string(msg)), nil
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
	status, resp, err := s.do(ctx, u, "application/json", body)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("post %s: http status %d %s", u, status, resp)
	}
	return nil
}

// take removes up to BatchSize lines from the queue whose head is the oldest line. They stay counted in
// total and Queued until removeLocked.
func (s *Sender) take() *batch {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.oldestLocked()
	if q == nil {
		return nil
	}
	n := min(len(q.lines), s.cfg.BatchSize)
	b := &batch{category: q.category, input: q.input, lines: make([][]byte, n)}
	for i := range n {
		b.lines[i] = q.lines[i].b
	}
	clear(q.lines[:n])
	q.lines = q.lines[n:]
	if len(q.lines) == 0 {
		q.lines = nil // release the backing array
	}
	return b
}

// removeLocked forgets the lines of b, counting them with count.
func (s *Sender) removeLocked(b *batch, count func(st *InputStats, n int64)) {
	n := len(b.lines)
	st := s.statsLocked(b.input)
	st.Queued -= int64(n)
	s.total -= n
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
