package external

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The test binary re-runs itself as the fake child when this variable is set.
const fakeChildEnv = "EXTERNAL_TEST_FAKE_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(fakeChildEnv) {
	case "":
		os.Exit(m.Run())
	case "crash":
		fmt.Fprintln(os.Stderr, "crashing now")
		os.Exit(3)
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
		fmt.Fprintln(os.Stderr, "ready")
		time.Sleep(time.Hour)
	case "echo":
		fmt.Fprintln(os.Stdout, "to stdout")
		fmt.Fprintln(os.Stderr, "to stderr")
		fmt.Fprintln(os.Stderr, "env="+os.Getenv("EXTRA_VAR"))
		time.Sleep(time.Hour)
	}
	os.Exit(0)
}

// syncBuffer is a log sink safe for concurrent writers and readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newSupervisor(t *testing.T, mode string, cfg Config) (*Supervisor, *syncBuffer) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	cfg.Name = "fake"
	cfg.Path = self
	cfg.Env = append(cfg.Env, fakeChildEnv+"="+mode)
	cfg.Log = log.New(logs, "", log.Lmicroseconds)
	return New(cfg), logs
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func runInBackground(s *Supervisor) (cancel func(), done <-chan error) {
	ctx, cancelFn := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() { ch <- s.Run(ctx) }()
	return cancelFn, ch
}

func TestCrashedChildIsRestartedWithGrowingBackoff(t *testing.T) {
	s, logs := newSupervisor(t, "crash", Config{
		BackoffMin: 50 * time.Millisecond,
		BackoffMax: 200 * time.Millisecond,
	})
	cancel, done := runInBackground(s)
	// Between a crash and the next start the state shows the exit and no pid.
	waitFor(t, "4 starts and a crash", func() bool {
		st := s.State()
		return st.Starts >= 4 && st.PID == 0 && st.LastExit == "exit status 3"
	})
	cancel()
	<-done
	if pid := s.State().PID; pid != 0 {
		t.Errorf("PID = %d after stop, want 0", pid)
	}
	out := logs.String()
	if !strings.Contains(out, "[fake] crashing now") {
		t.Errorf("child stderr not prefixed in log:\n%s", out)
	}
	delays := regexp.MustCompile(`child exited \(exit status 3\) after \S+; restarting in (\S+)`).FindAllStringSubmatch(out, -1)
	want := []string{"50ms", "100ms", "200ms"}
	if len(delays) < len(want) {
		t.Fatalf("got %d restart lines, want >= %d:\n%s", len(delays), len(want), out)
	}
	for i, w := range want {
		if delays[i][1] != w {
			t.Errorf("restart %d delay = %s, want %s", i, delays[i][1], w)
		}
	}
}

// A child that says it cannot run here (UnfitExit) is retried at the cap at once, and the log says why.
func TestUnfitChildIsRetriedAtTheCap(t *testing.T) {
	s, logs := newSupervisor(t, "crash", Config{
		BackoffMin: 50 * time.Millisecond,
		BackoffMax: 300 * time.Millisecond,
		UnfitExit:  3, // the fake "crash" child exits 3
	})
	cancel, done := runInBackground(s)
	waitFor(t, "2 starts", func() bool { return s.State().Starts >= 2 })
	cancel()
	<-done
	out := logs.String()
	delays := regexp.MustCompile(`child cannot run on this host \(exit status 3; its reason is logged above\); retrying in (\S+)`).FindAllStringSubmatch(out, -1)
	if len(delays) == 0 || delays[0][1] != "300ms" {
		t.Errorf("want the first retry at the cap (300ms), got %v:\n%s", delays, out)
	}
}

func TestChildIgnoringSIGTERMIsKilledAfterGracePeriod(t *testing.T) {
	grace := 300 * time.Millisecond
	s, logs := newSupervisor(t, "ignore-term", Config{GracePeriod: grace})
	cancel, done := runInBackground(s)
	waitFor(t, "child ready", func() bool { return strings.Contains(logs.String(), "[fake] ready") })
	pid := s.State().PID
	if pid == 0 {
		t.Fatal("PID = 0 while child runs")
	}

	start := time.Now()
	cancel()
	<-done
	took := time.Since(start)

	if took < grace {
		t.Errorf("stopped after %s, before the %s grace period", took, grace)
	}
	if st := s.State(); st.LastExit != "signal: killed" {
		t.Errorf("LastExit = %q, want %q", st.LastExit, "signal: killed")
	}
	out := logs.String()
	for _, want := range []string{"SIGTERM", "sending SIGKILL"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("pid %d still alive", pid)
	}
}

func TestChildOutputIsPrefixedAndEnvInherited(t *testing.T) {
	t.Setenv("EXTRA_VAR", "from-agent")
	s, logs := newSupervisor(t, "echo", Config{GracePeriod: 5 * time.Second})
	cancel, done := runInBackground(s)
	for _, want := range []string{"[fake] to stdout", "[fake] to stderr", "[fake] env=from-agent"} {
		waitFor(t, want, func() bool { return strings.Contains(logs.String(), want) })
	}
	cancel()
	<-done
	if st := s.State(); st.LastExit != "signal: terminated" || st.Starts != 1 {
		t.Errorf("state = %+v, want one start ended by SIGTERM", st)
	}
}

func TestExtraEnvWinsOverInherited(t *testing.T) {
	t.Setenv("EXTRA_VAR", "from-agent")
	s, logs := newSupervisor(t, "echo", Config{Env: []string{"EXTRA_VAR=from-config"}})
	cancel, done := runInBackground(s)
	waitFor(t, "env line", func() bool { return strings.Contains(logs.String(), "[fake] env=from-config") })
	cancel()
	<-done
}

func TestMissingExecutableIsReportedAndRechecked(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "datakit-ebpf")
	logs := &syncBuffer{}
	s := New(Config{
		Name: "ebpf", Path: missing, InstallHint: "datakit install --ebpf",
		MissingRetry: 20 * time.Millisecond, Log: log.New(logs, "", 0),
	})
	cancel, done := runInBackground(s)
	want := fmt.Sprintf("ebpf: %s not found, please run `datakit install --ebpf`", missing)
	waitFor(t, "missing message", func() bool { return strings.Contains(logs.String(), want) })

	// Once the executable appears, it is started.
	script := "#!/bin/sh\necho appeared >&2\nexec sleep 60\n"
	if err := os.WriteFile(missing, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "start after install", func() bool { return strings.Contains(logs.String(), "[ebpf] appeared") })
	cancel()
	<-done
	if n := strings.Count(logs.String(), "not found"); n != 1 {
		t.Errorf("missing message logged %d times, want once", n)
	}
}
