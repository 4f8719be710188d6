// Package daemon is the collector process's housekeeping around the pipeline, as DataKit's --log, --pidfile,
// --pprof-* and --res-* promise: the log file, the pid file, Go's pprof server and the resource limits.
package daemon

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/natefinch/lumberjack.v2"
)

// DefaultLogFile is where the log file goes when --log is not given: datakit-ebpf.log beside the executable,
// which in an install dir is externals/, where DataKit users look for it.
func DefaultLogFile() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	return filepath.Join(filepath.Dir(exe), "datakit-ebpf.log")
}

// LogOutput is stderr (which the agent copies into its own log) and, unless path is "-" or "", the file at
// path, rotated at 32 MiB with 5 old files kept. A file that cannot be opened is reported, not fatal.
func LogOutput(path string) (w io.Writer, closeFn func() error, err error) {
	if path == "" || path == "-" {
		return os.Stderr, func() error { return nil }, nil
	}
	f := &lumberjack.Logger{Filename: path, MaxSize: 32, MaxBackups: 5}
	if _, err := f.Write(nil); err != nil { // opens (or creates) the file now, so a bad path is said at start
		return os.Stderr, func() error { return nil }, fmt.Errorf("log file %s: %w", path, err)
	}
	return io.MultiWriter(os.Stderr, f), f.Close, nil
}

// ErrRunning: the pid file names a live datakit-ebpf.
var ErrRunning = errors.New("ebpf still running")

// WritePidFile writes this process's pid to path (mode 0644). It refuses, as DataKit does, when the file names
// another live process called datakit-ebpf. remove deletes the file on an orderly exit.
func WritePidFile(path string) (remove func(), err error) {
	if b, err := os.ReadFile(path); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid != os.Getpid() && processName(pid) == "datakit-ebpf" {
			return nil, fmt.Errorf("%w, PID %d in %s", ErrRunning, pid, path)
		}
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("pid file: %w", err)
	}
	return func() { os.Remove(path) }, nil
}

// processName is /proc/<pid>/comm, "" if there is no such process.
func processName(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// ServePprof serves Go's profiles (net/http/pprof's routes under /debug/pprof/) on addr until stop.
func ServePprof(addr string, log *slog.Logger) (stop func(), err error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pprof server: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	log.Info("pprof server listening", "addr", "http://"+l.Addr().String()+"/debug/pprof/")
	return func() { srv.Close() }, nil
}
