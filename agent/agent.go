// Package agent runs the datakit parent agent: it loads the configuration,
// opens the local store, serves the HTTP API, runs the inputs, and shuts them
// down in order (inputs, then the HTTP server, then the store).
package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/influxdata/line-protocol/v2/lineprotocol"
	"golang.org/x/net/netutil"

	"dkebpf/agent/api"
	"dkebpf/agent/config"
	"dkebpf/agent/sink"
	"dkebpf/agent/store"
	"dkebpf/agent/view"
	"dkebpf/inputs/external"
)

// Version is the agent's version, set at build time with
// -ldflags "-X dkebpf/agent.Version=...".
var Version = "dev"

// retentionInterval is how often the store's bounds are enforced.
const retentionInterval = time.Minute

// Bounds of the HTTP API's connections: how many are open at once, how long a request may take to arrive
// (its body included: 64 MiB at 3 MB/s) and how long an answer may take to be read.
const (
	maxConns     = 256
	readTimeout  = 30 * time.Second
	writeTimeout = time.Minute
)

// Options configure Run.
type Options struct {
	Dir    string                      // install dir
	Log    *log.Logger                 // default log.Default()
	Lookup func(string) (string, bool) // environment; default os.LookupEnv
	Ready  func(addr net.Addr)         // called once the API listens (tests)
}

// Run runs the agent until ctx is cancelled. It returns an error, and starts
// nothing, if the configuration is invalid.
func Run(ctx context.Context, opts Options) error {
	logger := opts.Log
	if logger == nil {
		logger = log.Default()
	}
	cfg, err := config.Load(opts.Dir, config.Options{Lookup: opts.Lookup, Log: logger})
	if err != nil {
		return fmt.Errorf("invalid configuration, not starting:\n%w", err)
	}

	st, err := store.Open(cfg.StorePath, store.Options{MaxSize: cfg.MaxSize, MaxAge: cfg.MaxAge, Log: logger})
	if err != nil {
		return err
	}
	defer func() {
		if err := st.Close(); err != nil {
			logger.Printf("agent: %v", err)
		}
		logger.Printf("agent: store closed")
	}()
	logger.Printf("agent: store %s (max %d MiB, max age %s)", cfg.StorePath, cfg.MaxSize>>20, cfg.MaxAge)

	var states []interface{ State() external.State }
	for _, in := range cfg.Inputs {
		if s, ok := in.Input.(interface{ State() external.State }); ok {
			states = append(states, s)
		}
	}
	var running atomic.Pointer[[]*sink.Sink] // the sinks once started, for GET /v1/monitor
	handler := api.New(api.Options{
		Store:      st,
		Version:    Version,
		Log:        logger,
		GlobalTags: cfg.GlobalTags,
		Token:      cfg.Token,
		Externals: func() []external.State {
			out := make([]external.State, len(states))
			for i, s := range states {
				out[i] = s.State()
			}
			return out
		},
		Listen: cfg.Listen,
		StoreStatus: func() api.StoreStatus {
			used, _ := st.UsedSize()
			return api.StoreStatus{Path: cfg.StorePath, UsedBytes: used, MaxBytes: cmp.Or(cfg.MaxSize, store.DefaultMaxSize)}
		},
		Sinks: func() []api.SinkStatus {
			if s := running.Load(); s != nil {
				return sinkStatuses(st, *s)
			}
			return nil
		},
	})

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("http api: listen %s: %w", cfg.Listen, err)
	}
	// A client that is slow to send its request, or to read the answer, or that opens connections without
	// end, holds at most maxConns connections and each for a bounded time.
	ln = netutil.LimitListener(ln, maxConns)
	// The local page at / and /view/ (it checks the token itself); every other path is the API.
	srv := &http.Server{Handler: view.Mount(handler, view.Options{Store: st, Token: cfg.Token, Log: logger}), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: readTimeout,
		WriteTimeout: writeTimeout, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Serve(ln) }()
	logger.Printf("agent: version %s, install dir %s, http api listening on %s", Version, cfg.Dir, ln.Addr())
	if opts.Ready != nil {
		opts.Ready(ln.Addr())
	}

	bg, stopBG := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); st.RunRetention(bg, retentionInterval, logger) }()
	sinks, err := startSinks(bg, &wg, st, cfg.Main.Sinks.Sink, logger)
	if err != nil {
		srv.Close()
		stopBG()
		wg.Wait()
		return err
	}
	running.Store(&sinks)
	if len(sinks) > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); reportSinks(bg, st, sinks, cfg.GlobalTags, logger) }()
	}

	inputsCtx, stopInputs := context.WithCancel(context.Background())
	var inputsWG sync.WaitGroup
	for _, in := range cfg.Inputs {
		inputsWG.Add(1)
		go func() {
			defer inputsWG.Done()
			if err := in.Input.Run(inputsCtx); err != nil {
				logger.Printf("agent: input %s (%s) stopped: %v", in.Name, in.File, err)
			}
		}()
	}
	if len(cfg.Inputs) == 0 {
		logger.Printf("agent: no inputs configured (add conf.d/host/ebpf.conf or set ENV_ENABLE_INPUTS=ebpf)")
	} else {
		logger.Printf("agent: started inputs: %s", strings.Join(cfg.InputNames, ", "))
	}

	var runErr error
	select {
	case <-ctx.Done():
		logger.Printf("agent: shutting down")
	case err := <-srvDone:
		runErr = fmt.Errorf("http api: %w", err)
	}

	stopInputs()
	inputsWG.Wait()
	logger.Printf("agent: inputs stopped")

	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		logger.Printf("agent: http api shutdown: %v", err)
	}
	logger.Printf("agent: http api closed")
	stopBG()
	wg.Wait()
	return runErr
}

// startSinks makes the configured sinks the store's (a new one forwards what is stored from now on, one no
// longer configured is forgotten) and runs each until ctx ends.
func startSinks(ctx context.Context, wg *sync.WaitGroup, st *store.Store, cfgs []sink.Config, logger *log.Logger) ([]*sink.Sink, error) {
	ids := make([]string, len(cfgs))
	for i, c := range cfgs {
		ids[i] = c.ID
	}
	added, removed, err := st.SetSinks(ids)
	if err != nil {
		return nil, fmt.Errorf("store: sinks: %w", err)
	}
	for _, id := range removed {
		logger.Printf("agent: sink %s is no longer configured: its cursor is forgotten", id)
	}
	for _, id := range added {
		logger.Printf("agent: sink %s is new: it forwards the points stored from now on", id)
	}
	var out []*sink.Sink
	for _, c := range cfgs {
		s := sink.New(c, st, logger)
		out = append(out, s)
		wg.Add(1)
		go func() { defer wg.Done(); s.Run(ctx) }()
		logger.Printf("agent: sink %s (%s) forwarding", c.ID, c.Target)
	}
	return out, nil
}

// sinkReportInterval is how often each sink's health is stored as a `datakit` point.
const sinkReportInterval = 10 * time.Second

// reportSinks stores, every sinkReportInterval until ctx ends, one `datakit` point per sink (category metric,
// forwarded like any other point) with its counters since the agent started, what the store's size bound
// took from it, and its backlog: the points stored after its cursor and the age of the oldest.
func reportSinks(ctx context.Context, st *store.Store, sinks []*sink.Sink, globalTags map[string]string, logger *log.Logger) {
	t := time.NewTicker(sinkReportInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			var pts []store.Point
			for _, c := range sinkStatuses(st, sinks) {
				if c.Error != "" {
					continue
				}
				age := int64(0)
				if !c.BacklogOldest.IsZero() {
					age = max(0, now.Sub(c.BacklogOldest).Nanoseconds()) / int64(time.Second)
				}
				p := store.Point{Category: "metric", Input: "datakit", Measurement: "datakit", Time: now,
					Tags: []store.Tag{{Key: "sink", Value: c.ID}, {Key: "sink_target", Value: c.Target}}}
				for k, v := range globalTags {
					if k != "sink" && k != "sink_target" {
						p.Tags = append(p.Tags, store.Tag{Key: k, Value: v})
					}
				}
				for _, f := range []struct {
					k string
					v int64
				}{{"sink_points_sent", c.SentPoints}, {"sink_requests_failed", c.FailedRequests}, {"sink_points_retried", c.RetriedPoints},
					{"sink_points_dropped", c.DroppedPoints}, {"sink_points_damaged", c.DamagedPoints}, {"sink_points_lost", c.LostPoints},
					{"sink_backlog_points", c.BacklogPoints}, {"sink_backlog_age_seconds", age}} {
					p.Fields = append(p.Fields, store.Field{Key: f.k, Value: lineprotocol.IntValue(f.v)})
				}
				pts = append(pts, p)
			}
			if err := st.Write(pts); err != nil {
				logger.Printf("agent: store sink health: %v", err)
			}
		}
	}
}

// sinkStatuses returns each sink's counters since the agent started, what the store's size bound took from
// it, and its backlog: the points stored after its cursor and the time of the oldest.
func sinkStatuses(st *store.Store, sinks []*sink.Sink) []api.SinkStatus {
	out := make([]api.SinkStatus, 0, len(sinks))
	for _, s := range sinks {
		c := s.Stats()
		ss := api.SinkStatus{ID: s.ID(), Target: s.Target(), SentPoints: c.Sent, FailedRequests: c.Failed,
			RetriedPoints: c.Retried, DroppedPoints: c.Dropped, DamagedPoints: c.Damaged}
		state, err := st.Sink(s.ID())
		if err == nil {
			ss.LostPoints = state.Lost
			var oldest int64
			if ss.BacklogPoints, oldest, err = st.Backlog(s.ID()); err == nil && oldest != 0 {
				ss.BacklogOldest = time.Unix(0, oldest)
			}
		}
		if err != nil {
			ss.Error = err.Error()
		}
		out = append(out, ss)
	}
	return out
}
