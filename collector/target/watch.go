package target

import (
	"log/slog"
	"sync"
	"time"
)

// Source is where a Watcher gets files: a Finder, or a fake in tests.
type Source interface {
	Host() ([]File, []error)
	Scan() ([]File, []error)
	Check(pid uint32) ([]File, []error)
	Spec() Spec
}

// Watcher attaches a plugin's probes to each new target file: our root's at start, every process's at start
// and at every rescan, and a reported process's at once.
type Watcher struct {
	f      Source
	attach func(File) error
	log    *slog.Logger

	stop     chan struct{}
	done     chan struct{} // closed when the rescan goroutine has returned
	stopOnce sync.Once

	mu                          sync.Mutex
	probed, failed, unprobeable uint64
}

// Counts are what a Watcher did since it started.
type Counts struct {
	Probed      uint64 // files attached to
	Failed      uint64 // files whose attach failed
	Unprobeable uint64 // files that are not targets (no symbol, not ELF), each counted once
}

// Watch attaches to the files f finds in our root and in every process now, then rescans every `every`
// until Stop.
func Watch(f Source, every time.Duration, attach func(File) error, log *slog.Logger) *Watcher {
	w := &Watcher{f: f, attach: attach, log: log, stop: make(chan struct{}), done: make(chan struct{})}
	w.take(f.Host())
	w.take(f.Scan())
	go w.loop(every)
	return w
}

// Check attaches to a process's files at once (the kernel reported it exec'd a target).
func (w *Watcher) Check(pid uint32) { w.take(w.f.Check(pid)) }

// Counts returns what the Watcher did so far.
func (w *Watcher) Counts() Counts {
	w.mu.Lock()
	defer w.mu.Unlock()
	return Counts{Probed: w.probed, Failed: w.failed, Unprobeable: w.unprobeable}
}

// Stop ends the rescans and waits for the last one: the probes attach to a kernel object its owner closes next.
func (w *Watcher) Stop() {
	w.stopOnce.Do(func() { close(w.stop) })
	<-w.done
}

func (w *Watcher) loop(every time.Duration) {
	defer close(w.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			w.take(w.f.Scan())
		}
	}
}

// take attaches to each new file; files that are not targets are named once.
func (w *Watcher) take(files []File, errs []error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.f.Spec()
	for _, err := range errs {
		w.unprobeable++
		w.log.Info(s.Plugin+": not probed", "err", err)
	}
	for _, file := range files {
		if err := w.attach(file); err != nil {
			w.failed++
			w.log.Warn(s.Plugin+": cannot probe "+s.What, "path", file.Path, "err", err)
			continue
		}
		w.probed++
		w.log.Info(s.Plugin+": probing "+s.What, "path", file.Path, "inode", file.Ino)
	}
}
