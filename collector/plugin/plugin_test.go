package plugin

import (
	"slices"
	"testing"
	"time"

	"dkebpf/collector/point"
)

type recorder struct {
	name string
	log  *[]string
}

func (r recorder) Name() string       { return r.name }
func (r recorder) Category() string   { return "network" }
func (r recorder) Input() string      { return "x/" + r.name }
func (r recorder) Drain()             { *r.log = append(*r.log, "drain "+r.name) }
func (r recorder) Counters() Counters { return Counters{} }
func (r recorder) Close()             { *r.log = append(*r.log, "close "+r.name) }
func (r recorder) Flush(time.Time) []point.Point {
	*r.log = append(*r.log, "flush "+r.name)
	return []point.Point{{Name: r.name}}
}

func TestFlushDrainsEveryPluginBeforeAnyFlushes(t *testing.T) {
	var log []string
	ps := []Plugin{recorder{"netflow", &log}, recorder{"dnsflow", &log}}
	batches := Flush(ps, time.Now())
	want := []string{"drain netflow", "drain dnsflow", "flush netflow", "flush dnsflow"}
	if !slices.Equal(log, want) {
		t.Errorf("calls %q, want %q", log, want)
	}
	if len(batches) != 2 || batches[1].Plugin.Name() != "dnsflow" || batches[1].Points[0].Name != "dnsflow" {
		t.Errorf("batches %+v", batches)
	}
	log = nil
	CloseAll(ps)
	if want := []string{"close dnsflow", "close netflow"}; !slices.Equal(log, want) {
		t.Errorf("close order %q, want %q", log, want)
	}
}
