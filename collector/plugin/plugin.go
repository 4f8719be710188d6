// Package plugin is the contract between the collector's main loop and its plugins (netflow, httpflow,
// dnsflow, bash): each drains discrete events from its kernel side, aggregates them, and flushes points
// every interval. A plugin reads the kernel through a small interface of its own, which collector/bpf
// satisfies and a fake satisfies in unit tests.
package plugin

import (
	"time"

	"dkebpf/collector/point"
)

// Plugin is one measurement: its kernel side and its aggregator.
type Plugin interface {
	Name() string     // "netflow"
	Category() string // DataKit category of its points
	Input() string    // the input= value, e.g. "ebpf-net/netflow"
	// Drain takes the discrete events the kernel handed over since the last drain. It runs often (every
	// 20 ms) and before every Flush.
	Drain()
	// Flush returns the interval's points. Every plugin has drained when it runs (see Flush), so a plugin
	// may use what another one drained.
	Flush(now time.Time) []point.Point
	Counters() Counters
	Close()
}

// Pauser is a plugin whose Flush can outlast the rings' room (netflow reads every live connection: about
// 1.5 µs of CPU each): it calls the function it is given between batches, where the main loop drains.
type Pauser interface {
	SetPause(fn func())
}

// Counters are a plugin's cumulative health numbers since start.
type Counters struct {
	Events       uint64 // records received from the kernel
	Lost         uint64 // records the kernel could not hand over (ring buffer full)
	MapFull      uint64 // kernel map inserts that failed
	DecodeErrors uint64
	Extra        map[string]uint64 // the plugin's own numbers, reported as <plugin>_<name>
}

// Batch is one plugin's points of an interval.
type Batch struct {
	Plugin Plugin
	Points []point.Point
}

// Flush drains every plugin, then flushes each, in order: no plugin flushes before all have drained,
// because a plugin's points may depend on another's events (netflow names remote addresses from the DNS
// answers dnsflow has drained).
func Flush(plugins []Plugin, now time.Time) []Batch {
	for _, p := range plugins {
		p.Drain()
	}
	out := make([]Batch, len(plugins))
	for i, p := range plugins {
		out[i] = Batch{Plugin: p, Points: p.Flush(now)}
	}
	return out
}

// Drain drains every plugin (between flushes).
func Drain(plugins []Plugin) {
	for _, p := range plugins {
		p.Drain()
	}
}

// CloseAll closes the plugins last opened first (httpflow and dnsflow read netflow's kernel object).
func CloseAll(plugins []Plugin) {
	for i := len(plugins) - 1; i >= 0; i-- {
		plugins[i].Close()
	}
}

// Stat reads counter i of a kernel's per-plugin counters, 0 when the kernel side has fewer (a part that
// is off has none).
func Stat(counters []uint64, i int) uint64 {
	if i < len(counters) {
		return counters[i]
	}
	return 0
}

// Record is a pointer to a Go mirror of a kernel record that decodes itself.
type Record[T any] interface {
	*T
	UnmarshalBinary([]byte) error
}

// DrainRecords takes the records a kernel ring hands over (drain), decodes each and adds it; it counts every
// record in c.Events and every one that does not decode in c.DecodeErrors, which it does not add.
func DrainRecords[T any, P Record[T]](c *Counters, drain func(func([]byte)) int, add func(*T)) {
	var rec T
	drain(func(b []byte) {
		c.Events++
		if err := P(&rec).UnmarshalBinary(b); err != nil {
			c.DecodeErrors++
			return
		}
		add(&rec)
	})
}
