package api

import (
	"testing"

	"github.com/GuanceCloud/cliutils/point"

	"dkebpf/agent/store"
)

// FuzzDecodeBody feeds each body as protobuf, JSON and line protocol: no
// panic, and every point accepted must be stored as line protocol that reads
// back as the same point.
func FuzzDecodeBody(f *testing.F) {
	for _, enc := range []point.Encoding{point.Protobuf, point.LineProtocol} {
		f.Add(encodePoints(f, point.Protobuf, collectorPoints(f, enc)))
		f.Add(encodePoints(f, point.JSON, collectorPoints(f, enc)))
	}
	f.Add([]byte(`[{"measurement":"m","tags":{"t":"v"},"fields":{"f":1.0,"s":"x","b":true},"time":1700000000000000000}]`))
	f.Add([]byte(`[{"name":"m","fields":[{"key":"t","s":"v","is_tag":true},{"key":"i","i":"-1"},{"key":"u","u":"2"},{"key":"d","d":"aGk="}],"time":"5"}]`))
	f.Add([]byte("m,t=v f=1i,s=\"x\" 1700000000000000000\nn g=2.5"))
	f.Add(pbBody(f, goodPB(), &point.PBPoint{Name: "m", Fields: []*point.Field{pbTag("t", "a\\"), pbField("f", 1.0)}}))
	f.Add([]byte(`[{"measurement":"#m","fields":{"f":1}}]`)) // was stored as a line protocol comment

	contentTypes := []string{ctProtobuf, ctJSON, "text/plain"}
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) > 64<<10 {
			t.Skip()
		}
		for _, ct := range contentTypes {
			points, err := decodeBody(ct, body, "metric", "fuzz", 0, fmtNow)
			if err != nil {
				continue
			}
			for i := range points {
				p := &points[i]
				if p.Category != "metric" || p.Input != "fuzz" {
					t.Fatalf("%s: point %d: category %q, input %q", ct, i, p.Category, p.Input)
				}
				line, err := p.AppendLineProtocol(nil)
				if err != nil {
					t.Fatalf("%s: point %d accepted but not writable as line protocol: %v\n%+v", ct, i, err, *p)
				}
				back, err := decode(line, "metric", "fuzz", 1, fmtNow)
				if err != nil || len(back) != 1 {
					t.Fatalf("%s: point %d stored as %q, which reads back as %d points: %v", ct, i, line, len(back), err)
				}
				if d := diffPoint(p, &back[0]); d != "" {
					t.Fatalf("%s: point %d stored as %q reads back different: %s", ct, i, line, d)
				}
			}
		}
	})
}

// diffPoint says how b differs from a, or "".
func diffPoint(a, b *store.Point) string {
	switch {
	case a.Measurement != b.Measurement:
		return "measurement " + a.Measurement + " vs " + b.Measurement
	case !a.Time.Equal(b.Time):
		return "time " + a.Time.String() + " vs " + b.Time.String()
	case len(a.Tags) != len(b.Tags):
		return "tag count"
	case len(a.Fields) != len(b.Fields):
		return "field count"
	}
	for i := range a.Tags {
		if a.Tags[i] != b.Tags[i] {
			return "tag " + a.Tags[i].Key + " vs " + b.Tags[i].Key
		}
	}
	for i := range a.Fields {
		fa, fb := a.Fields[i], b.Fields[i]
		if fa.Key != fb.Key || fa.Value.Kind() != fb.Value.Kind() || !fa.Value.Equal(fb.Value) {
			return "field " + fa.Key + "=" + fa.Value.String() + " vs " + fb.Key + "=" + fb.Value.String()
		}
	}
	return ""
}
