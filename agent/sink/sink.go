package sink

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"dkebpf/agent/store"
)

// Store is what a sink needs of the agent's store (agent/store.Store).
type Store interface {
	Pending(name string, maxPoints int, keep func(category string) bool) (store.Pending, error)
	Advance(name string, through uint64) error
	Watch() <-chan struct{}
}

// Defaults of the forwarding loop.
const (
	batchPoints = 5000             // points per request (whole blocks: a little more)
	minBackoff  = time.Second      // after a failed request, doubled up to maxBackoff, with jitter
	maxBackoff  = 30 * time.Second //
	idlePoll    = time.Second      // a store without Watch signals is still looked at this often
)

// Stats counts a sink's points and requests since the agent started.
type Stats struct {
	Sent    int64 // points the engine acknowledged (2xx)
	Failed  int64 // requests that failed (no answer, 5xx, 429, 408, 401, 403) and were retried
	Retried int64 // points sent again after a failed request
	Dropped int64 // points the engine refused as bad (another 4xx), alone in their request; skipped
	Damaged int64 // points of blocks skipped as damaged in the store
}

// Sink forwards the store's points to one engine.
type Sink struct {
	cfg   Config
	store Store
	log   *log.Logger
	http  *http.Client

	sent, failed, retried, dropped, damaged atomic.Int64
}

// New returns the sink of cfg (checked by Config.Check) reading st.
func New(cfg Config, st Store, logger *log.Logger) *Sink {
	return &Sink{cfg: cfg, store: st, log: logger, http: &http.Client{Timeout: cfg.timeout}}
}

// ID is the sink's name.
func (s *Sink) ID() string { return s.cfg.ID }

// Target is the sink's kind of engine.
func (s *Sink) Target() string { return s.cfg.Target }

// Stats returns the sink's counters.
func (s *Sink) Stats() Stats {
	return Stats{Sent: s.sent.Load(), Failed: s.failed.Load(), Retried: s.retried.Load(),
		Dropped: s.dropped.Load(), Damaged: s.damaged.Load()}
}

// Run forwards until ctx ends. What is not delivered when it returns stays pending in the store.
func (s *Sink) Run(ctx context.Context) {
	wake := s.store.Watch()
	backoff := time.Duration(0)
	failing := false
	for ctx.Err() == nil {
		p, err := s.store.Pending(s.cfg.ID, batchPoints, s.cfg.wants)
		if err == nil && p.Damaged > 0 {
			s.damaged.Add(int64(p.Damaged))
			s.log.Printf("sink %s: %d points of damaged blocks skipped", s.cfg.ID, p.Damaged)
		}
		if err == nil && len(p.Points) > 0 {
			err = s.deliver(ctx, p.Points, failing)
		}
		if err == nil {
			// Delivered, or nothing of this sink's categories: the cursor moves past it all.
			err = s.store.Advance(s.cfg.ID, p.Through)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if !failing {
				s.log.Printf("sink %s: %v; retrying", s.cfg.ID, err)
			}
			failing = true
			backoff = min(max(2*backoff, minBackoff), maxBackoff)
			sleep(ctx, backoff/2+rand.N(backoff/2+1)) // jitter: a fleet's agents do not retry in step
			continue
		}
		if failing {
			s.log.Printf("sink %s: delivering again", s.cfg.ID)
		}
		failing, backoff = false, 0
		if len(p.Points) == 0 {
			select {
			case <-ctx.Done():
			case <-wake:
			case <-time.After(idlePoll):
			}
		}
	}
}

// deliver posts pts. A refusal of bad points (4xx) splits the request until each bad point is alone, and
// drops that one; any other failure returns an error, and the whole batch is tried again later.
func (s *Sink) deliver(ctx context.Context, pts []store.Point, retry bool) error {
	status, msg, err := s.post(ctx, pts)
	if err == nil && retry {
		s.retried.Add(int64(len(pts)))
	}
	switch {
	case err != nil:
		s.failed.Add(1)
		return err
	case status >= 200 && status < 300:
		s.sent.Add(int64(len(pts)))
		return nil
	case retryable(status):
		s.failed.Add(1)
		return fmt.Errorf("http status %d: %s", status, msg)
	case len(pts) == 1:
		s.dropped.Add(1)
		s.log.Printf("sink %s: point refused (http status %d: %s), dropped: %.200s", s.cfg.ID, status, msg, lineOf(pts[0]))
		return nil
	}
	half := len(pts) / 2
	if err := s.deliver(ctx, pts[:half], false); err != nil {
		return err
	}
	return s.deliver(ctx, pts[half:], false)
}

// retryable says whether a status means "try again" rather than "these points are bad".
func retryable(status int) bool {
	return status >= 500 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout ||
		status == http.StatusUnauthorized || status == http.StatusForbidden || status == http.StatusNotFound
}

// post sends pts (as line protocol, or a remote write request) and returns the engine's status and the
// start of its answer.
func (s *Sink) post(ctx context.Context, stored []store.Point) (int, string, error) {
	pts := make([]store.Point, len(stored))
	for i, p := range stored {
		pts[i] = forwardForm(p)
	}
	hdr := http.Header{}
	var body []byte
	if s.cfg.Target == "prometheus" {
		var samples int
		if body, samples = remoteWriteBody(pts); samples == 0 {
			return http.StatusNoContent, "", nil // no numeric field: nothing to send
		}
		hdr.Set("Content-Type", "application/x-protobuf")
		hdr.Set("Content-Encoding", "snappy")
		hdr.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	} else {
		var err error
		for i := range pts {
			if body, err = pts[i].AppendLineProtocol(body); err != nil {
				return 0, "", fmt.Errorf("encode %s: %w", pts[i].Measurement, err)
			}
			body = append(body, '\n')
		}
		hdr.Set("Content-Type", "text/plain; charset=utf-8")
		if s.cfg.gzip {
			var z bytes.Buffer
			zw := gzip.NewWriter(&z)
			zw.Write(body)
			zw.Close()
			body = z.Bytes()
			hdr.Set("Content-Encoding", "gzip")
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.writeURL, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header = hdr
	if s.cfg.Token != "" {
		scheme := "Bearer"
		if s.cfg.Target == "influxdb2" {
			scheme = "Token"
		}
		req.Header.Set("Authorization", scheme+" "+s.cfg.Token)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("post %d points: %w", len(pts), err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, strings.TrimSpace(string(msg)), nil
}

func lineOf(p store.Point) string {
	b, _ := p.AppendLineProtocol(nil)
	return string(b)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
