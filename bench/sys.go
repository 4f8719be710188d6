package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// clockTick is USER_HZ, the unit of /proc CPU times.
const clockTick = 100

// cpuBusy returns the seconds all CPUs spent busy since boot (everything but idle and iowait).
func cpuBusy() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])[1:]
	var busy float64
	for i, v := range f {
		n, _ := strconv.ParseFloat(v, 64)
		if i != 3 && i != 4 && i < 8 { // user nice system idle iowait irq softirq steal
			busy += n
		}
	}
	return busy / clockTick
}

// procCPU returns the CPU seconds (user+system) a process used, and with children also its reaped
// children (a shell's commands). The bench itself is counted without: the wrk and agent processes it
// reaps are counted on their own.
func procCPU(pid int, children bool) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	fields := []int{11, 12} // utime stime
	if children {
		fields = append(fields, 13, 14) // cutime cstime
	}
	var t float64
	for _, i := range fields {
		n, _ := strconv.ParseFloat(f[i], 64)
		t += n
	}
	return t / clockTick
}

// treeCPU sums procCPU over a process and all its live descendants.
func treeCPU(root int) float64 {
	total := 0.0
	for _, pid := range descendants(root) {
		total += procCPU(pid, true)
	}
	return total
}

// descendants returns root and every live process below it.
func descendants(root int) []int {
	parent := map[int]int{}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		parent[pid], _ = strconv.Atoi(f[1])
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		for pid, pp := range parent {
			if pp == out[i] {
				out = append(out, pid)
			}
		}
	}
	return out
}

// peakRSS returns a process's peak resident set (VmHWM) in MiB.
func peakRSS(pid int) float64 { return statusMiB(pid, "VmHWM") }

// rssNow returns a process's resident set now (VmRSS) in MiB.
func rssNow(pid int) float64 { return statusMiB(pid, "VmRSS") }

// statusMiB reads a kB field of /proc/PID/status in MiB (0 if the process or the field is gone).
func statusMiB(pid int, field string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				kb, _ := strconv.ParseFloat(f[0], 64)
				return kb / 1024
			}
		}
	}
	return 0
}

// pinned starts cmd on one CPU (children inherit it).
func pinned(cpu int, name string, args ...string) *exec.Cmd {
	return exec.Command("taskset", append([]string{"-c", strconv.Itoa(cpu), name}, args...)...)
}

// pinSelf re-executes the bench on CPU 1 (with the load generators and the collector), once, and
// raises its autogroup priority so other tenants' processes disturb it less.
func pinSelf() {
	if os.Getenv("DKEBPF_BENCH_PINNED") == "1" {
		os.WriteFile("/proc/self/autogroup", []byte("-10"), 0o644)
		return
	}
	exe, err := os.Executable()
	if err != nil {
		fatalf("find own executable: %v", err)
	}
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		fatalf("taskset not found: %v", err)
	}
	env := append(os.Environ(), "DKEBPF_BENCH_PINNED=1")
	fatalf("re-exec pinned: %v", syscall.Exec(taskset, append([]string{"taskset", "-c", "1", exe}, os.Args[1:]...), env))
}

// stopProcess sends SIGINT (or SIGTERM) and waits, killing after grace.
func stopProcess(cmd *exec.Cmd, sig syscall.Signal, grace time.Duration) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	cmd.Process.Signal(sig)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		cmd.Process.Kill()
		<-done
	}
}

func ncpu() int {
	var set unix.CPUSet
	if unix.SchedGetaffinity(0, &set) == nil {
		return set.Count()
	}
	return 1
}

func fatalf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", a...)
	os.Exit(1)
}
