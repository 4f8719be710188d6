package sink

import (
	"math"
	"slices"
	"strings"

	"github.com/VictoriaMetrics/easyproto"
	lp "github.com/influxdata/line-protocol/v2/lineprotocol"
	"github.com/klauspost/compress/snappy"

	"dkebpf/agent/store"
)

// Prometheus remote write (version 1: a snappy-compressed protobuf WriteRequest), what VictoriaMetrics
// (/api/v1/write), Thanos receive (/api/v1/receive), Mimir and Cortex take. A point becomes one sample per
// numeric field, in the series <measurement>_<field> labelled by its tags, at the point's time in
// milliseconds; booleans are 0 or 1; string fields have no sample (they are not forwarded).

var protoMarshalers easyproto.MarshalerPool

// remoteWriteBody returns the snappy-compressed WriteRequest of pts and the number of samples in it.
func remoteWriteBody(pts []store.Point) ([]byte, int) {
	m := protoMarshalers.Get()
	defer protoMarshalers.Put(m)
	req := m.MessageMarshaler()
	samples := 0
	var labels []string // name, value pairs of one point, sorted by name
	for i := range pts {
		p := &pts[i]
		labels = labels[:0]
		for _, t := range p.Tags {
			labels = append(labels, promName(t.Key, false), t.Value)
		}
		sortPairs(labels)
		at := 0 // where __name__ goes among them: receivers (Thanos) want every label sorted
		for at < len(labels) && labels[at] < "__name__" {
			at += 2
		}
		ms := p.Time.UnixMilli()
		for _, f := range p.Fields {
			v, ok := sampleValue(f.Value)
			if !ok {
				continue
			}
			ts := req.AppendMessage(1)
			label := func(name, value string) {
				l := ts.AppendMessage(1)
				l.AppendString(1, name)
				l.AppendString(2, value)
			}
			for j := 0; j < len(labels); j += 2 {
				if j == at {
					label("__name__", promName(p.Measurement+"_"+f.Key, true))
				}
				label(labels[j], labels[j+1])
			}
			if at == len(labels) {
				label("__name__", promName(p.Measurement+"_"+f.Key, true))
			}
			s := ts.AppendMessage(2)
			s.AppendDouble(1, v)
			s.AppendInt64(2, ms)
			samples++
		}
	}
	return snappy.Encode(nil, m.Marshal(nil)), samples
}

// sampleValue is a field's value as a sample, if it has one.
func sampleValue(v lp.Value) (float64, bool) {
	switch v.Kind() {
	case lp.Int:
		return float64(v.IntV()), true
	case lp.Uint:
		return float64(v.UintV()), true
	case lp.Float:
		f := v.FloatV()
		return f, !math.IsNaN(f)
	case lp.Bool:
		if v.BoolV() {
			return 1, true
		}
		return 0, true
	}
	return 0, false
}

// promName makes s a valid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*) or label name (no colons): any other
// character becomes '_', and a leading digit gets one before it.
func promName(s string, metric bool) string {
	ok := func(i int, r rune) bool {
		return r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || (metric && r == ':') || (i > 0 && r >= '0' && r <= '9')
	}
	clean := true
	for i, r := range s {
		clean = clean && ok(i, r)
	}
	if clean && s != "" {
		return s
	}
	var b strings.Builder
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		b.WriteByte('_')
	}
	for i, r := range s {
		if ok(i, r) || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// sortPairs sorts name, value pairs by name (remote write wants a series' labels sorted).
func sortPairs(kv []string) {
	type pair struct{ k, v string }
	ps := make([]pair, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		ps = append(ps, pair{kv[i], kv[i+1]})
	}
	slices.SortFunc(ps, func(a, b pair) int { return strings.Compare(a.k, b.k) })
	for i, p := range ps {
		kv[2*i], kv[2*i+1] = p.k, p.v
	}
}
