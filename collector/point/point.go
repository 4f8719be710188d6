// Package point is the encoding stage of the pipeline: it turns the aggregators' measurement points into
// InfluxDB line protocol for the sender.
package point

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/influxdata/line-protocol/v2/lineprotocol"
)

// Point is one measurement point. Field values are int64, uint64, float64, bool or string (int is accepted and
// encoded as int64). A zero Time is encoded without a timestamp, so the receiver stamps the point.
type Point struct {
	Name   string
	Tags   map[string]string
	Fields map[string]any
	Time   time.Time
	// Mntns is the mount namespace of the process the point names (0: none or unknown). It is not
	// encoded: the collector turns it into container tags before sending.
	Mntns uint32
}

// ErrNoFields is returned for a point without fields, which line protocol cannot carry.
var ErrNoFields = errors.New("point has no fields")

// Encoder encodes points as line protocol, adding global tags the points do not carry themselves.
// It reuses its buffers and is not safe for concurrent use.
type Encoder struct {
	global map[string]string
	enc    lineprotocol.Encoder
	tags   map[string]string
}

// NewEncoder returns an Encoder that adds global to every point; a point's own tags win over global ones.
func NewEncoder(global map[string]string) *Encoder {
	e := &Encoder{global: global, tags: make(map[string]string)}
	e.enc.SetPrecision(lineprotocol.Nanosecond)
	return e
}

// Encode returns p as one line of line protocol ending in a newline. The returned slice is a fresh copy that
// the caller owns.
func (e *Encoder) Encode(p Point) ([]byte, error) {
	if err := e.encode(p); err != nil {
		return nil, err
	}
	return bytes.Clone(e.enc.Bytes()), nil
}

// Encode appends p, with the global tags it lacks, to w as one line of line protocol.
func Encode(w *bytes.Buffer, p Point, global map[string]string) error {
	e := NewEncoder(global)
	if err := e.encode(p); err != nil {
		return err
	}
	w.Write(e.enc.Bytes())
	return nil
}

func (e *Encoder) encode(p Point) error {
	if len(p.Fields) == 0 {
		return fmt.Errorf("encode point %q: %w", p.Name, ErrNoFields)
	}

	// Merge tags: per-measurement tags first, then global ones they lack. Empty values cannot be encoded.
	clear(e.tags)
	for k, v := range p.Tags {
		if v != "" {
			e.tags[k] = v
		}
	}
	for k, v := range e.global {
		if _, ok := p.Tags[k]; !ok && v != "" {
			e.tags[k] = v
		}
	}

	e.enc.Reset()
	e.enc.StartLine(p.Name)
	for _, k := range slices.Sorted(maps.Keys(e.tags)) {
		e.enc.AddTag(k, e.tags[k])
	}
	for _, k := range slices.Sorted(maps.Keys(p.Fields)) {
		v, err := fieldValue(p.Fields[k])
		if err != nil {
			return fmt.Errorf("encode point %q: field %q: %w", p.Name, k, err)
		}
		e.enc.AddField(k, v)
	}
	e.enc.EndLine(p.Time)
	if err := e.enc.Err(); err != nil {
		return fmt.Errorf("encode point %q: %w", p.Name, err)
	}
	return nil
}

func fieldValue(x any) (lineprotocol.Value, error) {
	if i, ok := x.(int); ok {
		x = int64(i)
	}
	switch x.(type) {
	case int64, uint64, float64, bool, string:
	default:
		return lineprotocol.Value{}, fmt.Errorf("unsupported type %T", x)
	}
	v, ok := lineprotocol.NewValue(x)
	if !ok {
		return lineprotocol.Value{}, fmt.Errorf("invalid value %v", x)
	}
	return v, nil
}
