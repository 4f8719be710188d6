// Command datakit-ebpf is the external collector the datakit agent's ebpf input spawns: CO-RE BPF
// programs, per-interval aggregation, line protocol posted to the agent.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"syscall"

	"dkebpf/collector/cli"
	"dkebpf/collector/daemon"
	"dkebpf/collector/run"
	"dkebpf/options"
)

// Set at build time with -ldflags -X.
var (
	version   = "dev"
	buildDate = "unknown"
)

func main() { os.Exit(mainCode()) }

// gcPercent is the collector's GOGC. Its live Go heap is small (about 1 MB: one interval's aggregates and
// the decoders' buffers), and with Go's default of 100 the heap grows to twice that before a collection;
// that slack is resident memory, counted in the collector's footprint (README "Benchmark"). At 50 it
// keeps about 1 MB less, for collections of a 1 MB heap twice as often (well under a millisecond each).
// GOGC in the environment wins.
const gcPercent = 50

func mainCode() int {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	cmd, err := cli.Parse(os.Args[1:], os.Stderr)
	if errors.Is(err, cli.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "datakit-ebpf:", err)
		return 2
	}
	switch cmd.Name {
	case "version":
		fmt.Printf("datakit-ebpf version %s %s/%s %s\n", version, runtime.GOOS, runtime.GOARCH, buildDate)
		return 0
	case "check":
		if !run.Check(os.Stdout) {
			return 1
		}
		return 0
	}
	cfg := cmd.Run

	logFile := cfg.Log
	if logFile == "" {
		logFile = daemon.DefaultLogFile()
	}
	out, closeLog, logErr := daemon.LogOutput(logFile)
	defer closeLog()
	level := slog.LevelInfo
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: level}))
	if logErr != nil {
		log.Warn("logging to stderr only", "err", logErr)
	}
	if cfg.PidFile != "" {
		remove, err := daemon.WritePidFile(cfg.PidFile)
		if err != nil {
			log.Error(err.Error())
			return 1
		}
		defer remove()
	}
	if cfg.PprofPort > 0 {
		stop, err := daemon.ServePprof(net.JoinHostPort(cfg.PprofHost, strconv.Itoa(cfg.PprofPort)), log)
		if err != nil {
			log.Warn("no pprof server", "err", err)
		} else {
			defer stop()
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// When the agent dies, its end of our stdout and stderr goes with it: a log line must not kill the
	// collector (Go exits on SIGPIPE from fds 1 and 2) before it has spooled what it holds.
	signal.Ignore(syscall.SIGPIPE)
	limits := daemon.Limits{CPU: cfg.ResCPU, Mem: cfg.ResMem, Net: cfg.ResBandwidth}
	limits.Apply()
	ctx, breach := context.WithCancelCause(ctx)
	go func() {
		if err := limits.Watch(ctx, daemon.ReadUsage); err != nil {
			log.Error(err.Error() + "; exiting")
			breach(err)
		}
	}()

	err = run.Main(ctx, cfg, log)
	switch {
	case errors.Is(err, run.ErrNothingRuns):
		return options.ExitUnfit // the agent retries at its backoff cap
	case err != nil, errors.Is(context.Cause(ctx), daemon.ErrLimit):
		return 1
	}
	return 0
}
