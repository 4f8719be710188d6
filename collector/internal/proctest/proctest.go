// Package proctest starts helper processes for tests that read /proc.
package proctest

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

// StartHeld starts cmd blocked on a stdin pipe that stays open until the test ends (then it is killed),
// and waits up to 10 s until ready(pid) holds, which says what /proc must show. It returns the pid.
func StartHeld(t *testing.T, cmd *exec.Cmd, what string, ready func(pid int) bool) int {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin = r
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", cmd.Args, err)
	}
	r.Close()
	t.Cleanup(func() {
		w.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	pid := cmd.Process.Pid
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if ready(pid) {
			return pid
		}
	}
	t.Fatalf("%v: %s never happened", cmd.Args, what)
	return 0
}
