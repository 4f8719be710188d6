package apicat

import (
	"time"

	"dkebpf/collector/plugin"
	"dkebpf/collector/point"
)

// Plugins are the catalogue's two outputs, each a plugin of its own (one category each): api_endpoint
// points and unknown_api events. httpflow feeds the catalogue as it drains; they only flush.
func Plugins(c *Catalogue) []plugin.Plugin { return []plugin.Plugin{endpoints{c}, unknowns{c}} }

type endpoints struct{ c *Catalogue }

func (endpoints) Name() string                        { return Endpoint }
func (endpoints) Category() string                    { return "network" }
func (endpoints) Input() string                       { return "ebpf-net/" + Endpoint }
func (endpoints) Drain()                              {}
func (p endpoints) Flush(now time.Time) []point.Point { return p.c.FlushEndpoints(now) }
func (endpoints) Close()                              {}
func (p endpoints) Counters() plugin.Counters {
	st := p.c.Stats()
	return plugin.Counters{Extra: map[string]uint64{"dropped": st.Dropped, "no_host": st.NoHost, "endpoints": uint64(len(p.c.endpoints))}}
}

type unknowns struct{ c *Catalogue }

func (unknowns) Name() string                    { return Unknown }
func (unknowns) Category() string                { return "logging" }
func (unknowns) Input() string                   { return "ebpf-net/" + Unknown }
func (unknowns) Drain()                          {}
func (p unknowns) Flush(time.Time) []point.Point { return p.c.FlushUnknown() }
func (unknowns) Close()                          {}
func (p unknowns) Counters() plugin.Counters {
	return plugin.Counters{Extra: map[string]uint64{"events": p.c.Stats().Unknowns}}
}
