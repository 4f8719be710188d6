// Command datakit-ebpf is the external collector the datakit agent's ebpf input spawns: CO-RE BPF
// programs, per-interval aggregation, line protocol posted to the agent.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"dkebpf/collector/cli"
	"dkebpf/collector/run"
	"dkebpf/options"
)

// Set at build time with -ldflags -X.
var (
	version   = "dev"
	buildDate = "unknown"
)

func main() {
	cmd, err := cli.Parse(os.Args[1:], os.Stderr)
	if errors.Is(err, cli.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "datakit-ebpf:", err)
		os.Exit(2)
	}
	if cmd.Name == "version" {
		fmt.Printf("datakit-ebpf version %s %s/%s %s\n", version, runtime.GOOS, runtime.GOARCH, buildDate)
		return
	}
	if cmd.Name == "check" {
		if !run.Check(os.Stdout) {
			os.Exit(1)
		}
		return
	}
	level := slog.LevelInfo
	_ = level.UnmarshalText([]byte(cmd.Run.LogLevel))
	// Logs go to stderr: the agent copies them into its own log, prefixed with the input's name.
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run.Main(ctx, cmd.Run, log); errors.Is(err, run.ErrNothingRuns) {
		os.Exit(options.ExitUnfit) // the agent retries at its backoff cap
	} else if err != nil {
		os.Exit(1)
	}
}
