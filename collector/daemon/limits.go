package daemon

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Limits are the collector's resource limits (cpu_limit / --res-cpu in cores, mem_limit / --res-mem in bytes,
// net_limit / --res-bandwidth in bytes per second; 0 = none). They are held as DataKit holds them, by measuring, so they work on any host and in any container
// without a cgroup of their own: Go keeps its heap under Mem and its threads at CPU rounded up, and past either
// limit the collector exits (the agent restarts it with backoff) rather than starve the host.
type Limits struct {
	CPU float64
	Mem int64
	Net int64 // bytes per second received or sent on any interface but lo (DataKit's bandwidth limit)
}

// CPUWindow is how long CPU use is averaged over before it counts against the limit: long enough that
// loading the BPF objects at start does not count as a breach.
const CPUWindow = 30 * time.Second

// checkEvery is how often usage is read (DataKit polls every 3 s).
const checkEvery = 3 * time.Second

// ErrLimit: the collector went past a resource limit.
var ErrLimit = errors.New("resource limit exceeded")

// Apply sets what Go itself holds to: GOMAXPROCS at the CPU limit rounded up, Go's soft memory limit at Mem.
func (l Limits) Apply() {
	if l.CPU > 0 {
		runtime.GOMAXPROCS(int(math.Ceil(l.CPU)))
	}
	if l.Mem > 0 {
		debug.SetMemoryLimit(l.Mem)
	}
}

// Usage is what the process has used by At: CPU time since it started, and resident memory; and the bytes
// each network interface has received and sent.
type Usage struct {
	At  time.Time
	CPU time.Duration
	RSS int64
	Net map[string][2]uint64 // interface -> bytes received, sent (lo left out: it is not the host's bandwidth)
}

// ReadUsage reads this process's usage from getrusage(2) and /proc/self/statm.
func ReadUsage() (Usage, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return Usage{}, fmt.Errorf("getrusage: %w", err)
	}
	statm, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return Usage{}, err
	}
	f := strings.Fields(string(statm))
	if len(f) < 2 {
		return Usage{}, fmt.Errorf("/proc/self/statm: %q", statm)
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return Usage{}, fmt.Errorf("/proc/self/statm: %w", err)
	}
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	netDev, err := os.ReadFile("/proc/net/dev")
	if err != nil {
		return Usage{}, err
	}
	return Usage{At: time.Now(), CPU: cpu, RSS: pages * int64(os.Getpagesize()), Net: parseNetDev(string(netDev))}, nil
}

// parseNetDev reads /proc/net/dev: "iface: rx_bytes packets ... (8 receive columns) tx_bytes ...".
func parseNetDev(s string) map[string][2]uint64 {
	out := map[string][2]uint64{}
	for _, line := range strings.Split(s, "\n") {
		name, counters, ok := strings.Cut(line, ":")
		f := strings.Fields(counters)
		if name = strings.TrimSpace(name); !ok || name == "lo" || len(f) < 9 {
			continue
		}
		rx, err1 := strconv.ParseUint(f[0], 10, 64)
		tx, err2 := strconv.ParseUint(f[8], 10, 64)
		if err1 == nil && err2 == nil {
			out[name] = [2]uint64{rx, tx}
		}
	}
	return out
}

// Watch reads usage every 3 s until ctx ends. It returns an error wrapping ErrLimit, saying which limit and
// by how much, as soon as resident memory is over Mem or CPU use averaged over CPUWindow is over CPU cores.
func (l Limits) Watch(ctx context.Context, read func() (Usage, error)) error {
	if l.CPU <= 0 && l.Mem <= 0 && l.Net <= 0 {
		return nil
	}
	tick := time.NewTicker(checkEvery)
	defer tick.Stop()
	var w window
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		u, err := read()
		if err != nil {
			return fmt.Errorf("%w: cannot read usage: %v", ErrLimit, err) // DataKit: an unreadable stat is a breach
		}
		if err := l.check(&w, u); err != nil {
			return err
		}
	}
}

// window holds the usage samples of the last CPUWindow.
type window []Usage

// check adds a sample and tells whether a limit is passed.
func (l Limits) check(w *window, u Usage) error {
	if l.Mem > 0 && u.RSS > l.Mem {
		return fmt.Errorf("%w: resident memory %d bytes is over mem_limit %d bytes", ErrLimit, u.RSS, l.Mem)
	}
	if n := len(*w); l.Net > 0 && n > 0 {
		if err := l.checkNet((*w)[n-1], u); err != nil {
			return err
		}
	}
	*w = append(*w, u)
	for len(*w) > 2 && u.At.Sub((*w)[1].At) >= CPUWindow { // keep the oldest sample at least CPUWindow old
		*w = (*w)[1:]
	}
	first := (*w)[0]
	if elapsed := u.At.Sub(first.At); l.CPU > 0 && elapsed >= CPUWindow {
		cores := float64(u.CPU-first.CPU) / float64(elapsed)
		if cores > l.CPU {
			return fmt.Errorf("%w: %.2f cores used over the last %s, over cpu_limit %g", ErrLimit, cores, elapsed.Round(time.Second), l.CPU)
		}
	}
	return nil
}

// checkNet tells whether an interface received or sent more than Net bytes per second since the last sample.
func (l Limits) checkNet(prev, u Usage) error {
	elapsed := u.At.Sub(prev.At).Seconds()
	if elapsed <= 0 {
		return nil
	}
	for name, now := range u.Net {
		before, ok := prev.Net[name]
		for i, dir := range []string{"received", "sent"} {
			if !ok || now[i] < before[i] {
				continue // a new interface, or its counters reset
			}
			if rate := float64(now[i]-before[i]) / elapsed; rate > float64(l.Net) {
				return fmt.Errorf("%w: %s %s %.0f bytes/s, over net_limit %d bytes/s", ErrLimit, name, dir, rate, l.Net)
			}
		}
	}
	return nil
}
