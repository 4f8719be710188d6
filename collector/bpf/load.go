package bpf

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"runtime/debug"
	"strings"

	libbpfgo "github.com/aquasecurity/libbpfgo"
	"golang.org/x/sys/unix"
)

// hooked is what a plugin's object needs from loadHooked: knobs set before the load, work between the
// load and the attach (filling maps), both optional.
type hooked struct {
	setup  func(*libbpfgo.Module, *attachment) error
	loaded func(*libbpfgo.Module, *attachment) error
}

// loadHooked opens an embedded object, loads every program of its hook table that this kernel offers and
// accepts, and attaches them. libbpf refuses a whole object when the kernel refuses one program, so when a
// load fails the refused program (libbpf names it) is recorded with the kernel's errno and the end of the
// verifier log, the object is opened again without it (its fallback, if it has one, in its place) and
// loaded again. A hook that loads but fails to attach while its ladder has a lower rung is handled the
// same way. Only a load failure that names no program of the table, or a second refusal of one, is an
// error; a part left without a required hook is off (attachment.off).
func loadHooked(name string, obj []byte, hooks []Hook, cb hooked) (*libbpfgo.Module, *attachment, error) {
	missing, refused := availability(hooks), map[string]error{}
	for {
		m, err := openModule(name, obj)
		if err != nil {
			return nil, nil, err
		}
		a, err := preload(m, hooks, missing, refused)
		if err == nil && cb.setup != nil {
			err = cb.setup(m, a)
		}
		if err == nil {
			err = applyTestSizes(name, m) // test-only knobs, unset in production
		}
		if err != nil {
			m.Close()
			return nil, nil, err
		}
		// The load's peak is the collector's: libbpf parses the kernel's BTF (4-4.5 MB) on top of what
		// is resident. Give the Go heap's free pages back first (a collection, a millisecond at start).
		debug.FreeOSMemory()
		log, err := loadCapturing(m)
		trimCHeap() // libbpf freed its parse of the kernel's BTF: give it back before anything else grows
		if err != nil {
			m.Close()
			prog, why := refusal(log, err)
			if prog == "" || refused[prog] != nil || !inTable(hooks, prog) {
				return nil, nil, fmt.Errorf("load %s programs: %w%s", name, err, indent(log))
			}
			refused[prog] = why
			if spec := os.Getenv(refuseEnv); forcedRefusal(spec, hookOf(hooks, prog)) {
				refused[prog] = fmt.Errorf("%w (forced by %s)", why, refuseEnv)
				// The kernel refused one forced program through the path any refusal takes; the other
				// forced ones would each cost one more load of the object: refuse them now.
				for _, h := range hooks {
					if forcedRefusal(spec, h) && refused[h.Prog] == nil && missing[h.Prog] == nil {
						refused[h.Prog] = fmt.Errorf("refused (forced by %s, as the kernel refused %s)", refuseEnv, prog)
					}
				}
			}
			continue
		}
		if cb.loaded != nil {
			if err := cb.loaded(m, a); err != nil {
				a.detach()
				m.Close()
				return nil, nil, err
			}
		}
		a.attach(m, hooks, cgroup2Root)
		if prog, why := a.attachRefusal(hooks); prog != "" && refused[prog] == nil {
			a.detach()
			m.Close()
			refused[prog] = why
			continue
		}
		return m, a, nil
	}
}

// loadCapturing loads the object and returns what libbpf said meanwhile.
func loadCapturing(m *libbpfgo.Module) (string, error) {
	var log strings.Builder
	libbpfLog.Lock()
	libbpfLog.capture = &log
	libbpfLog.Unlock()
	err := m.BPFLoadObject()
	libbpfLog.Lock()
	libbpfLog.capture = nil
	libbpfLog.Unlock()
	return log.String(), err
}

var (
	loadFailedRE = regexp.MustCompile(`prog '([^']+)': BPF program load failed: ([^\n]*)`)
	verifierRE   = regexp.MustCompile(`(?s)prog '[^']+': -- BEGIN PROG LOAD LOG --\n(.*?)-- END PROG LOAD LOG --`)
)

// refusedError is a program the kernel refused to load.
type refusedError struct {
	errno    unix.Errno
	verifier []string // the last lines of the verifier log
}

func (e *refusedError) Error() string {
	s := "refused by the kernel: " + unix.ErrnoName(e.errno)
	if s == "refused by the kernel: " {
		s += e.errno.Error()
	}
	if len(e.verifier) > 0 {
		s += "; verifier: " + strings.Join(e.verifier, " | ")
	}
	return s
}

// refusal reads from libbpf's log which program the kernel refused, with its errno and the last lines
// of the verifier log.
func refusal(log string, err error) (string, error) {
	m := loadFailedRE.FindStringSubmatch(log)
	if m == nil {
		return "", nil
	}
	r := &refusedError{}
	if !errors.As(err, &r.errno) {
		r.errno = unix.EINVAL
	}
	if v := verifierRE.FindStringSubmatch(log); v != nil {
		var lines []string
		for _, l := range strings.Split(v[1], "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "processed ") && !strings.HasPrefix(l, "verification time") {
				lines = append(lines, l)
			}
		}
		r.verifier = lines[max(0, len(lines)-3):]
	}
	return m[1], r
}

func inTable(hooks []Hook, prog string) bool { return hookOf(hooks, prog).Prog != "" }

func hookOf(hooks []Hook, prog string) Hook {
	for _, h := range hooks {
		if h.Prog == prog {
			return h
		}
	}
	return Hook{}
}

func indent(log string) string {
	log = strings.TrimSpace(log)
	if log == "" {
		return ""
	}
	return "\n\t" + strings.ReplaceAll(log, "\n", "\n\t")
}

// tracefsNote says what the collector did about tracefs, for its start-up line.
var tracefsNote = "not needed"

// TracefsNote is "not needed" unless a classic tracepoint needed tracefs: then where it was found or mounted.
func TracefsNote() string { return tracefsNote }

// ensureTracefs makes tracefs reachable for classic tracepoints (libbpf looks in /sys/kernel/tracing,
// then /sys/kernel/debug/tracing), mounting it when the host has not.
func ensureTracefs() error {
	for _, dir := range []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"} {
		if _, err := os.Stat(dir + "/events"); err == nil {
			tracefsNote = "found at " + dir
			return nil
		}
	}
	const dir = "/sys/kernel/tracing"
	if err := unix.Mount("tracefs", dir, "tracefs", 0, ""); err != nil {
		return fmt.Errorf("classic tracepoints need tracefs, and mounting it at %s failed: %w", dir, err)
	}
	tracefsNote = "mounted at " + dir + " (a classic tracepoint needs it)"
	return nil
}
