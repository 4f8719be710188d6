package sink

import (
	"slices"
	"strconv"
	"strings"

	lp "github.com/influxdata/line-protocol/v2/lineprotocol"

	"dkebpf/agent/store"
)

// identityFields are fields that belong to a point's identity in DataKit's schema: the collector sums per
// value of them, so two points of one interval may differ only there (httpflow: one point per method, path,
// HTTP version and status of a flow). The engines key a point by measurement, tags and time (InfluxDB keeps
// the last of two alike; a Prometheus series has no string values at all), so they get these as tags.
var identityFields = map[string][]string{"httpflow": {"method", "path", "http_version", "status_code"}}

// forwardForm returns p as the engines are sent it: its identity fields made tags (an empty one dropped).
// p itself is not changed.
func forwardForm(p store.Point) store.Point {
	names := identityFields[p.Measurement]
	if len(names) == 0 {
		return p
	}
	tags := slices.Clone(p.Tags)
	fields := make([]store.Field, 0, len(p.Fields))
	for _, f := range p.Fields {
		if !slices.Contains(names, f.Key) {
			fields = append(fields, f)
			continue
		}
		if v := valueText(f.Value); v != "" && !slices.ContainsFunc(tags, func(t store.Tag) bool { return t.Key == f.Key }) {
			tags = append(tags, store.Tag{Key: f.Key, Value: v})
		}
	}
	slices.SortFunc(tags, func(a, b store.Tag) int { return strings.Compare(a.Key, b.Key) })
	p.Tags, p.Fields = tags, fields
	return p
}

// valueText is a field's value as a tag's text.
func valueText(v lp.Value) string {
	switch v.Kind() {
	case lp.String:
		return v.StringV()
	case lp.Int:
		return strconv.FormatInt(v.IntV(), 10)
	case lp.Uint:
		return strconv.FormatUint(v.UintV(), 10)
	case lp.Float:
		return strconv.FormatFloat(v.FloatV(), 'g', -1, 64)
	case lp.Bool:
		return strconv.FormatBool(v.BoolV())
	}
	return ""
}
