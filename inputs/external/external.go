// Package external supervises one long-lived child process for an input:
// it starts it, copies its output into the agent's log, restarts it with
// capped exponential backoff when it exits, and stops it with SIGTERM then
// SIGKILL.
//
// Unlike DataKit, whose child gets only the listed variables, the child here
// inherits the agent's environment (os.Environ()) with Config.Env appended, so
// variables such as HOST_ROOT or HOST_PROC set on the agent reach the child.
package external

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// Defaults of Config's timing fields.
const (
	DefaultGracePeriod   = 10 * time.Second
	DefaultBackoffMin    = 1 * time.Second
	DefaultBackoffMax    = 30 * time.Second
	DefaultResetAfter    = 60 * time.Second
	DefaultMissingRetry  = 10 * time.Second
	maxLogLine           = 1 << 20
	drainOutputAfterExit = time.Second
)

// Config describes the child and how to supervise it.
type Config struct {
	Name        string   // input name: log prefix "[<Name>] " and state name
	Path        string   // executable
	Args        []string // arguments, without the program name
	Env         []string // KEY=VALUE appended to os.Environ(); later entries win
	InstallHint string   // command to suggest when Path is missing, e.g. "datakit install --ebpf"
	UnfitExit   int      // exit code by which the child says it cannot run on this host: retry at the cap

	GracePeriod  time.Duration // SIGTERM → SIGKILL delay (default 10s)
	BackoffMin   time.Duration // first restart delay (default 1s)
	BackoffMax   time.Duration // restart delay cap (default 30s)
	ResetAfter   time.Duration // a run this long resets the backoff (default 60s)
	MissingRetry time.Duration // re-check period while Path is missing (default 10s)

	Log *log.Logger // the agent's log (default: log.Default())
}

// State is a snapshot of the supervised child, served by GET /v1/externals.
type State struct {
	Name     string `json:"name"`
	Path     string `json:"path"`
	PID      int    `json:"pid"`       // 0 when not running
	Starts   int    `json:"starts"`    // successful starts so far
	LastExit string `json:"last_exit"` // e.g. "exit status 1", "signal: killed"; "" if never exited
}

// Supervisor runs one child; create it with New and call Run once.
type Supervisor struct {
	cfg Config

	mu    sync.Mutex
	state State
}

// New returns a supervisor for cfg, filling in default timings.
func New(cfg Config) *Supervisor {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.GracePeriod, DefaultGracePeriod)
	def(&cfg.BackoffMin, DefaultBackoffMin)
	def(&cfg.BackoffMax, DefaultBackoffMax)
	def(&cfg.ResetAfter, DefaultResetAfter)
	def(&cfg.MissingRetry, DefaultMissingRetry)
	if cfg.Log == nil {
		cfg.Log = log.Default()
	}
	if cfg.InstallHint == "" {
		cfg.InstallHint = "datakit install --" + cfg.Name
	}
	return &Supervisor{cfg: cfg, state: State{Name: cfg.Name, Path: cfg.Path}}
}

// State returns a snapshot of the child's state.
func (s *Supervisor) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// Run supervises the child until ctx is cancelled, then stops it and returns nil.
func (s *Supervisor) Run(ctx context.Context) error {
	// Pdeathsig is delivered when the thread that forked the child exits:
	// keep this goroutine on one thread so the child outlives no thread but
	// the agent itself (kill -9 of the agent then sends SIGTERM to the child).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	backoff := s.cfg.BackoffMin
	missingLogged := false
	for {
		if ctx.Err() != nil {
			return nil
		}
		if _, err := os.Stat(s.cfg.Path); errors.Is(err, fs.ErrNotExist) {
			if !missingLogged {
				s.cfg.Log.Printf("%s: %s not found, please run `%s`", s.cfg.Name, s.cfg.Path, s.cfg.InstallHint)
				missingLogged = true
			}
			if !sleep(ctx, s.cfg.MissingRetry) {
				return nil
			}
			continue
		}
		missingLogged = false

		started := time.Now()
		status, err := s.runOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		ran := time.Since(started)
		if ran >= s.cfg.ResetAfter {
			backoff = s.cfg.BackoffMin
		}
		unfit := s.cfg.UnfitExit != 0 && status == fmt.Sprintf("exit status %d", s.cfg.UnfitExit)
		if unfit {
			// Nothing will change soon (a kernel refusing every hook): retry rarely, not in a tight loop.
			backoff = s.cfg.BackoffMax
		}
		switch {
		case err != nil:
			s.cfg.Log.Printf("%s: start %s: %v; retrying in %s", s.cfg.Name, s.cfg.Path, err, backoff)
		case unfit:
			s.cfg.Log.Printf("%s: child cannot run on this host (%s; its reason is logged above); retrying in %s", s.cfg.Name, status, backoff)
		default:
			s.cfg.Log.Printf("%s: child exited (%s) after %s; restarting in %s", s.cfg.Name, status, ran.Round(time.Millisecond), backoff)
		}
		if !sleep(ctx, backoff) {
			return nil
		}
		backoff = min(backoff*2, s.cfg.BackoffMax)
	}
}

// runOnce starts the child and waits for it to exit or for ctx to be
// cancelled, in which case it stops the child. It returns the exit status,
// or an error if the child could not be started.
func (s *Supervisor) runOnce(ctx context.Context) (string, error) {
	cmd := exec.Command(s.cfg.Path, s.cfg.Args...)
	cmd.Env = append(os.Environ(), s.cfg.Env...)
	// Own process group, so a terminal's Ctrl-C reaches only the agent, which
	// then stops the child (and anything it forked) in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}

	var readers sync.WaitGroup
	var pipeWriters []*os.File
	for _, stream := range []*io.Writer{&cmd.Stdout, &cmd.Stderr} {
		r, w, err := os.Pipe()
		if err != nil {
			return "", fmt.Errorf("create pipe: %w", err)
		}
		*stream = w
		pipeWriters = append(pipeWriters, w)
		readers.Add(1)
		go func() {
			defer readers.Done()
			defer r.Close()
			s.copyLines(r)
		}()
	}
	err := cmd.Start()
	for _, w := range pipeWriters {
		w.Close() // the child holds its own copies
	}
	if err != nil {
		readers.Wait()
		return "", err
	}

	pid := cmd.Process.Pid
	s.mu.Lock()
	s.state.PID = pid
	s.state.Starts++
	starts := s.state.Starts
	s.mu.Unlock()
	s.cfg.Log.Printf("%s: started %s (pid %d, start #%d)", s.cfg.Name, s.cfg.Path, pid, starts)

	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()

	var werr error
	select {
	case werr = <-waited:
	case <-ctx.Done():
		werr = s.stop(pid, waited)
	}
	status := exitStatus(cmd.ProcessState, werr)

	// Give the readers a moment to log the child's last lines; a grandchild
	// still holding the pipes must not block supervision.
	done := make(chan struct{})
	go func() { readers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(drainOutputAfterExit):
	}

	s.mu.Lock()
	s.state.PID = 0
	s.state.LastExit = status
	s.mu.Unlock()
	return status, nil
}

// stop sends SIGTERM to the child's process group, waits up to the grace
// period, then sends SIGKILL, and returns Wait's result.
func (s *Supervisor) stop(pid int, waited <-chan error) error {
	s.cfg.Log.Printf("%s: stopping pid %d (SIGTERM, SIGKILL after %s)", s.cfg.Name, pid, s.cfg.GracePeriod)
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case err := <-waited:
		s.cfg.Log.Printf("%s: pid %d stopped", s.cfg.Name, pid)
		return err
	case <-time.After(s.cfg.GracePeriod):
	}
	s.cfg.Log.Printf("%s: pid %d still running after %s, sending SIGKILL", s.cfg.Name, pid, s.cfg.GracePeriod)
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	return <-waited
}

// copyLines logs every line read from r with the "[name] " prefix.
func (s *Supervisor) copyLines(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), maxLogLine)
	for sc.Scan() {
		s.cfg.Log.Printf("[%s] %s", s.cfg.Name, sc.Text())
	}
	if err := sc.Err(); err != nil && !errors.Is(err, os.ErrClosed) {
		s.cfg.Log.Printf("%s: read child output: %v", s.cfg.Name, err)
	}
}

func exitStatus(ps *os.ProcessState, err error) string {
	if ps != nil {
		return ps.String()
	}
	if err != nil {
		return err.Error()
	}
	return "unknown"
}

// sleep waits for d or ctx; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
