package api

import (
	"bytes"
	"encoding/json"
	"math"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/GuanceCloud/cliutils/point"
	"github.com/gogo/protobuf/jsonpb"
	lp "github.com/influxdata/line-protocol/v2/lineprotocol"

	"dkebpf/agent/store"
)

// fmtNow is the receive time decodeBody gives points without a time.
var fmtNow = time.Date(2025, 6, 1, 12, 0, 0, 123, time.UTC)

// The Content-Type values DataKit's clients send, from the library itself.
var (
	ctProtobuf = point.Protobuf.HTTPContentType()
	ctJSON     = point.JSON.HTTPContentType()
)

const fmtTime = 1700000000123456789 // ns

// collectorPoints builds points as a DataKit collector does, with every field
// kind cliutils has for line protocol; enc is the encoding the collector is
// configured for (it decides the JSON shape).
func collectorPoints(t testing.TB, enc point.Encoding) []*point.Point {
	t.Helper()
	var kvs point.KVs
	kvs = kvs.Add("i", int64(-42), false, true)
	kvs = kvs.Add("u", uint64(math.MaxUint64), false, true)
	kvs = kvs.Add("f", 3.25, false, true)
	kvs = kvs.Add("b", true, false, true)
	kvs = kvs.Add("s", "GET /a b\n\"c\"", false, true)
	kvs = kvs.Add("d", []byte("héllo"), false, true)
	kvs = kvs.AddTag("src_ip", "10.0.0.1")
	kvs = kvs.AddTag("host", "node-1")
	kvs = kvs.AddTag("empty", "")
	p1 := point.NewPointV2("netflow", kvs, point.WithTime(time.Unix(0, fmtTime)), point.WithEncoding(enc))

	var kvs2 point.KVs
	kvs2 = kvs2.Add("count", int64(1), false, true)
	kvs2 = kvs2.AddTag("t", "v")
	p2 := point.NewPointV2("m2", kvs2, point.WithTimestamp(0), point.WithEncoding(enc)) // no time: receive time
	return []*point.Point{p1, p2}
}

func encodePoints(t testing.TB, enc point.Encoding, pts []*point.Point) []byte {
	t.Helper()
	e := point.GetEncoder(point.WithEncEncoding(enc))
	defer point.PutEncoder(e)
	bodies, err := e.Encode(pts)
	if err != nil {
		t.Fatal(err)
	}
	if len(bodies) != 1 {
		t.Fatalf("encoder made %d bodies, want 1", len(bodies))
	}
	return bodies[0]
}

func mustFloat(f float64) lp.Value { v, _ := lp.FloatValue(f); return v }
func mustString(s string) lp.Value { v, _ := lp.StringValue(s); return v }

func assertPoints(t *testing.T, got, want []store.Point) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d points, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Category != w.Category || g.Input != w.Input || g.Measurement != w.Measurement {
			t.Errorf("point %d: got %s/%s/%s, want %s/%s/%s", i, g.Category, g.Input, g.Measurement, w.Category, w.Input, w.Measurement)
		}
		if !g.Time.Equal(w.Time) {
			t.Errorf("point %d: time %d, want %d", i, g.Time.UnixNano(), w.Time.UnixNano())
		}
		if len(g.Tags) != len(w.Tags) {
			t.Errorf("point %d: tags %v, want %v", i, g.Tags, w.Tags)
		} else {
			for j := range w.Tags {
				if g.Tags[j] != w.Tags[j] {
					t.Errorf("point %d: tags %v, want %v", i, g.Tags, w.Tags)
					break
				}
			}
		}
		if len(g.Fields) != len(w.Fields) {
			t.Errorf("point %d: fields %v, want %v", i, g.Fields, w.Fields)
			continue
		}
		for j := range w.Fields {
			gf, wf := g.Fields[j], w.Fields[j]
			if gf.Key != wf.Key || gf.Value.Kind() != wf.Value.Kind() || !gf.Value.Equal(wf.Value) {
				t.Errorf("point %d field %d: got %s=%v (%v), want %s=%v (%v)", i, j,
					gf.Key, gf.Value, gf.Value.Kind(), wf.Key, wf.Value, wf.Value.Kind())
			}
		}
	}
}

// wantPoints is what the collector's points must become. Protobuf keeps the
// collector's field order; plain JSON has none, so its fields come sorted.
func wantPoints(fields []store.Field) []store.Point {
	return []store.Point{
		{Category: "network", Input: "ebpf-net", Measurement: "netflow",
			Tags:   []store.Tag{{Key: "host", Value: "node-1"}, {Key: "src_ip", Value: "10.0.0.1"}},
			Fields: fields, Time: time.Unix(0, fmtTime)},
		{Category: "network", Input: "ebpf-net", Measurement: "m2",
			Tags:   []store.Tag{{Key: "t", Value: "v"}},
			Fields: []store.Field{{Key: "count", Value: lp.IntValue(1)}}, Time: fmtNow},
	}
}

func TestProtobufPointsFromACollectorKeepEveryFieldKind(t *testing.T) {
	body := encodePoints(t, point.Protobuf, collectorPoints(t, point.Protobuf))
	got, err := decodeBody(ctProtobuf, body, "network", "ebpf-net", 0, fmtNow)
	if err != nil {
		t.Fatal(err)
	}
	assertPoints(t, got, wantPoints([]store.Field{
		{Key: "i", Value: lp.IntValue(-42)},
		{Key: "u", Value: lp.UintValue(math.MaxUint64)},
		{Key: "f", Value: mustFloat(3.25)},
		{Key: "b", Value: lp.BoolValue(true)},
		{Key: "s", Value: mustString("GET /a b\n\"c\"")},
		{Key: "d", Value: mustString("héllo")},
	}))
	// Stored points are line protocol: each one must encode.
	if _, err := FormatPoints(got); err != nil {
		t.Fatal(err)
	}
}

func TestProtobufJSONPointsFromACollectorKeepEveryFieldKind(t *testing.T) {
	// A collector whose points are protobuf points encodes JSON as
	// protobuf-JSON ({"name", "fields": [{"key", "i"}...]}).
	body := encodePoints(t, point.JSON, collectorPoints(t, point.Protobuf))
	if !strings.Contains(string(body), `"name":"netflow"`) {
		t.Fatalf("not protobuf-JSON: %s", body)
	}
	got, err := decodeBody(ctJSON, body, "network", "ebpf-net", 0, fmtNow)
	if err != nil {
		t.Fatal(err)
	}
	assertPoints(t, got, wantPoints([]store.Field{
		{Key: "i", Value: lp.IntValue(-42)},
		{Key: "u", Value: lp.UintValue(math.MaxUint64)},
		{Key: "f", Value: mustFloat(3.25)},
		{Key: "b", Value: lp.BoolValue(true)},
		{Key: "s", Value: mustString("GET /a b\n\"c\"")},
		{Key: "d", Value: mustString("héllo")},
	}))
}

func TestPlainJSONPointsFromACollectorHaveFloatNumbersAsInDataKit(t *testing.T) {
	// Other collectors' points encode as DataKit's plain JSON
	// ({"measurement","tags","fields","time"}): encoding/json makes every
	// number a float and bytes a base64 string, in DataKit as here.
	body := encodePoints(t, point.JSON, collectorPoints(t, point.LineProtocol))
	if !strings.Contains(string(body), `"measurement":"netflow"`) {
		t.Fatalf("not plain JSON: %s", body)
	}
	got, err := decodeBody(ctJSON, body, "network", "ebpf-net", 0, fmtNow)
	if err != nil {
		t.Fatal(err)
	}
	want := wantPoints([]store.Field{
		{Key: "b", Value: lp.BoolValue(true)},
		{Key: "d", Value: mustString("aMOpbGxv")}, // base64 of "héllo"
		{Key: "f", Value: mustFloat(3.25)},
		{Key: "i", Value: mustFloat(-42)},
		{Key: "s", Value: mustString("GET /a b\n\"c\"")},
		{Key: "u", Value: mustFloat(math.MaxUint64)},
	})
	want[1].Fields[0].Value = mustFloat(1)
	assertPoints(t, got, want)
}

func TestHandWrittenJSONAsDataKitDocumentsIt(t *testing.T) {
	body := `[{"measurement":"m","tags":{"t":"v","a":"b"},"fields":{"f":1.5,"s":"x","ok":false},"time":1700000000000},
	          {"measurement":"m","fields":{"n":2}}]`
	got, err := decodeBody("application/json; charset=utf-8", []byte(body), "metric", "script", 1e6, fmtNow)
	if err != nil {
		t.Fatal(err)
	}
	assertPoints(t, got, []store.Point{
		{Category: "metric", Input: "script", Measurement: "m",
			Tags:   []store.Tag{{Key: "a", Value: "b"}, {Key: "t", Value: "v"}},
			Fields: []store.Field{{Key: "f", Value: mustFloat(1.5)}, {Key: "ok", Value: lp.BoolValue(false)}, {Key: "s", Value: mustString("x")}},
			Time:   time.UnixMilli(1700000000000)},
		{Category: "metric", Input: "script", Measurement: "m",
			Fields: []store.Field{{Key: "n", Value: mustFloat(2)}}, Time: fmtNow},
	})
}

func TestTimePrecisionPerFormat(t *testing.T) {
	pbBody := func(ts int64) []byte {
		b, err := (&point.PBPoints{Arr: []*point.PBPoint{{Name: "m", Time: ts,
			Fields: []*point.Field{{Key: "f", Val: &point.Field_I{I: 1}}}}}}).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, c := range []struct {
		name, ct string
		body     []byte
		prec     int64
		want     time.Time
	}{
		{"protobuf without precision is ns, however small", ctProtobuf, pbBody(1700000000), 0, time.Unix(0, 1700000000)},
		{"protobuf with a precision, as DataKit applies it", ctProtobuf, pbBody(1700000000), 1e9, time.Unix(1700000000, 0)},
		{"json without precision is guessed", ctJSON, []byte(`[{"measurement":"m","fields":{"f":1},"time":1700000000}]`), 0, time.Unix(1700000000, 0)},
		{"json in ms", ctJSON, []byte(`[{"measurement":"m","fields":{"f":1},"time":1700000000123}]`), 1e6, time.UnixMilli(1700000000123)},
		{"json ns", ctJSON, []byte(`[{"measurement":"m","fields":{"f":1},"time":1700000000123456789}]`), 1, time.Unix(0, 1700000000123456789)},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := decodeBody(c.ct, c.body, "metric", "in", c.prec, fmtNow)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || !got[0].Time.Equal(c.want) {
				t.Fatalf("got %+v, want time %v", got, c.want)
			}
		})
	}
}

func TestContentTypesOtherThanJSONAndProtobufAreLineProtocol(t *testing.T) {
	for _, ct := range []string{"", "text/plain", "text/plain; charset=utf-8", point.LineProtocol.HTTPContentType(), "application/octet-stream", ";;bad"} {
		got, err := decodeBody(ct, []byte("m,t=v f=1i 1700000000000000000"), "metric", "in", 1, fmtNow)
		if err != nil || len(got) != 1 || got[0].Measurement != "m" {
			t.Errorf("Content-Type %q: %+v, %v", ct, got, err)
		}
	}
	for _, ct := range []string{"APPLICATION/JSON", "application/json;charset=UTF-8"} {
		if _, err := decodeBody(ct, []byte(`[{"measurement":"m","fields":{"f":1}}]`), "metric", "in", 0, fmtNow); err != nil {
			t.Errorf("Content-Type %q: %v", ct, err)
		}
	}
}

// pbBody marshals points built field by field, as no well-behaved encoder would.
func pbBody(t testing.TB, pts ...*point.PBPoint) []byte {
	t.Helper()
	b, err := (&point.PBPoints{Arr: pts}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func pbField(k string, v any) *point.Field { return point.NewKV(k, v) }

func pbTag(k, v string) *point.Field {
	return &point.Field{Key: k, Val: &point.Field_S{S: v}, IsTag: true}
}

func goodPB() *point.PBPoint {
	return &point.PBPoint{Name: "m", Fields: []*point.Field{pbField("f", int64(1))}}
}

func TestBadBodiesAreRejectedNamingThePoint(t *testing.T) {
	pb := func(fields ...*point.Field) []byte {
		return pbBody(t, goodPB(), &point.PBPoint{Name: "m", Fields: fields})
	}
	for _, c := range []struct {
		name, ct string
		body     []byte
		want     string
	}{
		{"protobuf garbage", ctProtobuf, []byte("hello, this is not protobuf"), "protobuf"},
		{"protobuf truncated", ctProtobuf, pbBody(t, goodPB())[:5], "point 1: protobuf"},
		{"protobuf length past the end", ctProtobuf, []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}, "point 1: protobuf"},
		{"protobuf of another message", "application/protobuf; proto=com.example.Other", pbBody(t, goodPB()), "unsupported protobuf message"},
		{"protobuf duplicate tag", ctProtobuf, pb(pbTag("t", "a"), pbTag("t", "b"), pbField("f", 1.0)), `point 2: duplicate tag "t"`},
		{"protobuf duplicate field", ctProtobuf, pb(pbField("f", 1.0), pbField("f", 2.0)), `point 2: duplicate field "f"`},
		{"protobuf tag and field of one name", ctProtobuf, pb(pbTag("f", "a"), pbField("f", 2.0)), `point 2: key "f" is both a tag and a field`},
		{"protobuf NaN", ctProtobuf, pb(pbField("f", math.NaN())), `point 2: field "f": float NaN is not finite`},
		{"protobuf infinity", ctProtobuf, pb(pbField("f", math.Inf(-1))), `point 2: field "f": float -Inf is not finite`},
		{"protobuf bytes not UTF-8", ctProtobuf, pb(pbField("d", []byte{0xff, 0xfe})), `point 2: field "d": bytes value is not valid UTF-8`},
		{"protobuf string not UTF-8", ctProtobuf, pb(&point.Field{Key: "s", Val: &point.Field_S{S: "\xff"}}), `point 2: field "s": string is not valid UTF-8`},
		{"protobuf array", ctProtobuf, pb(pbField("a", []int64{1, 2})), `point 2: field "a": array/any values are not supported`},
		{"protobuf field without value", ctProtobuf, pb(&point.Field{Key: "x"}), `point 2: field "x": no value`},
		{"protobuf tag not a string", ctProtobuf, pb(&point.Field{Key: "t", IsTag: true, Val: &point.Field_I{I: 1}}, pbField("f", 1.0)), `point 2: tag "t": value is an int, want a string`},
		{"protobuf tag with newline", ctProtobuf, pb(pbTag("t", "a\nb"), pbField("f", 1.0)), `point 2: encode point m: invalid tag value`},
		{"protobuf no fields", ctProtobuf, pb(pbTag("t", "a")), "point 2: no fields"},
		{"protobuf empty measurement", ctProtobuf, pbBody(t, &point.PBPoint{Fields: []*point.Field{pbField("f", 1.0)}}), "point 1: empty measurement"},
		{"protobuf measurement read back as a comment", ctProtobuf, pbBody(t, &point.PBPoint{Name: "#m", Fields: []*point.Field{pbField("f", 1.0)}}), `point 1: measurement "#m" starts with '#'`},
		{"protobuf tag value with trailing backslash", ctProtobuf, pb(pbTag("t", `a\`), pbField("f", 1.0)), `point 2: encode point m: invalid tag value`},

		{"json object, not array", ctJSON, []byte(`{"measurement":"m","fields":{"f":1}}`), "json: body is not an array of points"},
		{"json non-object element", ctJSON, []byte(`[{"measurement":"m","fields":{"f":1}}, 42]`), "point 2: not a JSON object"},
		{"json null element", ctJSON, []byte(`[null]`), "point 1: not a JSON object"},
		{"json nested array", ctJSON, []byte(`[[{"measurement":"m","fields":{"f":1}}]]`), "point 1: not a JSON object"},
		{"json syntax", ctJSON, []byte(`[{"measurement":"m",]`), "point 1: json"},
		{"json duplicate tag", ctJSON, []byte(`[{"measurement":"m","tags":{"t":"a","t":"b"},"fields":{"f":1}}]`), `point 1: duplicate tag "t"`},
		{"json duplicate field", ctJSON, []byte(`[{"measurement":"m","fields":{"f":1,"f":2}}]`), `point 1: duplicate field "f"`},
		{"json duplicate key", ctJSON, []byte(`[{"measurement":"m","measurement":"n","fields":{"f":1}}]`), `point 1: duplicate key "measurement"`},
		{"json NaN", ctJSON, []byte(`[{"measurement":"m","fields":{"f":NaN}}]`), "point 1: json"},
		{"json huge number", ctJSON, []byte(`[{"measurement":"m","fields":{"f":1e999}}]`), "point 1: json"},
		{"json null field", ctJSON, []byte(`[{"measurement":"m","fields":{"f":null}}]`), `point 1: field "f": null value`},
		{"json array field", ctJSON, []byte(`[{"measurement":"m","fields":{"f":[1,2]}}]`), `point 1: field "f": array values are not supported`},
		{"json object field", ctJSON, []byte(`[{"measurement":"m","fields":{"f":{"a":1}}}]`), `point 1: field "f": map[string]interface {} values are not supported`},
		{"json no fields", ctJSON, []byte(`[{"measurement":"m","tags":{"t":"v"}}]`), "point 1: no fields"},
		{"json measurement read back as a comment", ctJSON, []byte(`[{"measurement":"#m","fields":{"f":1}}]`), `point 1: measurement "#m" starts with '#'`},
		{"json no measurement", ctJSON, []byte(`[{"fields":{"f":1}}]`), "point 1: empty measurement"},
		{"json time overflow", ctJSON, []byte(`[{"measurement":"m","fields":{"f":1},"time":922337203685477580}]`), "point 1: timestamp 922337203685477580 out of range"},
		{"json string time", ctJSON, []byte(`[{"measurement":"m","fields":{"f":1},"time":"now"}]`), "point 1: json"},
		{"json protobuf-JSON NaN", ctJSON, []byte(`[{"name":"m","fields":[{"key":"f","f":"NaN"}]}]`), `point 1: field "f": float NaN is not finite`},
		{"json protobuf-JSON duplicate tag", ctJSON, []byte(`[{"name":"m","fields":[{"key":"t","s":"a","is_tag":true},{"key":"t","s":"b","is_tag":true},{"key":"f","i":"1"}]}]`), `point 1: duplicate tag "t"`},
		{"json data after the array", ctJSON, []byte(`[{"measurement":"m","fields":{"f":1}}] []`), "json: data after the array"},
		{"json unterminated array", ctJSON, []byte(`[{"measurement":"m","fields":{"f":1}}`), "json"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := decodeBody(c.ct, c.body, "metric", "in", 0, fmtNow)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %+v, %v; want an error containing %q", got, err, c.want)
			}
		})
	}
}

func TestEmptyBodiesDecodeToNoPoints(t *testing.T) {
	for _, c := range []struct{ ct, body string }{{ctProtobuf, ""}, {ctJSON, "[]"}, {ctJSON, " [ ] \n"}} {
		got, err := decodeBody(c.ct, []byte(c.body), "metric", "in", 0, fmtNow)
		if err != nil || len(got) != 0 {
			t.Errorf("%s %q: %+v, %v", c.ct, c.body, got, err)
		}
	}
}

// TestDecodedPointsTakeNoMoreMemoryThanFromLineProtocol checks that the
// points decoded from protobuf and JSON bodies, many small points or one
// point with many fields, hold no more memory than the same points decoded
// from line protocol. (Bodies are decoded one point at a time, so besides
// the result only one point's garbage is live at once.)
func TestDecodedPointsTakeNoMoreMemoryThanFromLineProtocol(t *testing.T) {
	many := make([]*point.PBPoint, 5000)
	for i := range many {
		many[i] = &point.PBPoint{Name: "netflow", Time: fmtTime + int64(i), Fields: []*point.Field{
			pbTag("host", "node-1"), pbTag("dst_ip", "10.0.0.2"), pbField("bytes", int64(i)), pbField("ok", true)}}
	}
	wide := &point.PBPoint{Name: "w", Time: fmtTime}
	for i := range 20000 {
		wide.Fields = append(wide.Fields, pbField("f"+strconv.Itoa(i), int64(i)))
	}
	for _, c := range []struct {
		name string
		pts  []*point.PBPoint
	}{{"many points", many}, {"one wide point", []*point.PBPoint{wide}}} {
		for _, b := range []struct{ ct, shape string }{{ctProtobuf, "protobuf"}, {ctJSON, "protobuf-JSON"}, {ctJSON, "plain JSON"}} {
			t.Run(c.name+" in "+b.shape, func(t *testing.T) {
				body := bodyOf(t, b.shape, c.pts)
				lpBody := lineProtocolOf(t, b.ct, body)
				got, gotAlloc := memory(t, b.ct, body)
				want, wantAlloc := memory(t, "", lpBody)
				t.Logf("%d B body: %d B held (%.1fx), %d B allocated (%.1fx); as line protocol %d B: %d B held (%.1fx), %d B allocated (%.1fx)",
					len(body), got, float64(got)/float64(len(body)), gotAlloc, float64(gotAlloc)/float64(len(body)),
					len(lpBody), want, float64(want)/float64(len(lpBody)), wantAlloc, float64(wantAlloc)/float64(len(lpBody)))
				if float64(got) > 1.5*float64(want) {
					t.Errorf("the decoded points hold %d B, more than 1.5 times the %d B of the same points from line protocol", got, want)
				}
			})
		}
	}
}

// bodyOf encodes pbs in shape: protobuf, protobuf-JSON or plain JSON.
func bodyOf(t *testing.T, shape string, pbs []*point.PBPoint) []byte {
	t.Helper()
	if shape == "protobuf" {
		return pbBody(t, pbs...)
	}
	var buf bytes.Buffer
	buf.WriteByte('[')
	for i, pb := range pbs {
		if i > 0 {
			buf.WriteByte(',')
		}
		if shape == "protobuf-JSON" {
			if err := (&jsonpb.Marshaler{}).Marshal(&buf, pb); err != nil {
				t.Fatal(err)
			}
			continue
		}
		jp := point.JSONPoint{Measurement: pb.Name, Tags: map[string]string{}, Fields: map[string]any{}, Time: pb.Time}
		for _, f := range pb.Fields {
			if f.IsTag {
				jp.Tags[f.Key] = f.GetS()
			} else {
				jp.Fields[f.Key] = f.Raw()
			}
		}
		b, err := json.Marshal(jp)
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(b)
	}
	buf.WriteByte(']')
	return buf.Bytes()
}

// lineProtocolOf returns the points of body as line protocol.
func lineProtocolOf(t *testing.T, ct string, body []byte) []byte {
	t.Helper()
	pts, err := decodeBody(ct, body, "metric", "in", 0, fmtNow)
	if err != nil {
		t.Fatal(err)
	}
	lpBody, err := FormatPoints(pts)
	if err != nil {
		t.Fatal(err)
	}
	return lpBody
}

// memory returns the heap that the points decoded from body hold, and the
// bytes that decoding allocated: the last of three runs, once caches and
// pools have settled.
func memory(t *testing.T, ct string, body []byte) (held, allocated uint64) {
	t.Helper()
	for range 3 {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		pts, err := decodeBody(ct, body, "metric", "in", 1, fmtNow)
		if err != nil {
			t.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(pts)
		held = 0
		if after.HeapAlloc > before.HeapAlloc {
			held = after.HeapAlloc - before.HeapAlloc
		}
		allocated = after.TotalAlloc - before.TotalAlloc
	}
	return held, allocated
}

func TestTheAPIStoresProtobufAndJSONWritesOfARealCollector(t *testing.T) {
	ts, st := newServer(t)
	for _, tc := range []struct {
		enc         point.Encoding
		contentType string
	}{
		{point.Protobuf, "application/protobuf; proto=com.guance.Point"},
		{point.JSON, "application/json"},
	} {
		body := encodePoints(t, tc.enc, collectorPoints(t, tc.enc))
		if code, msg := post(t, ts.URL+"/v1/write/network?input=ebpf-net/netflow", body, "Content-Type", tc.contentType); code != 200 {
			t.Fatalf("%s: %d %s", tc.contentType, code, msg)
		}
	}
	got, err := st.Query(store.Query{Measurement: "netflow"})
	if err != nil || len(got) != 2 {
		t.Fatalf("%d netflow points stored (%v), want one per format", len(got), err)
	}
	for _, p := range got {
		if v, _ := p.Tag("src_ip"); v != "10.0.0.1" || p.Input != "ebpf-net/netflow" || p.Category != "network" {
			t.Errorf("stored %+v", p)
		}
	}
	for ct, code := range map[string]string{"application/json": "datakit.invalidJSONPoint", "application/protobuf": "datakit.invalidProtobufPoint"} {
		status, msg := post(t, ts.URL+"/v1/write/network", []byte("\xff\x01garbage"), "Content-Type", ct)
		if status != 400 || errorCode(t, msg) != code {
			t.Errorf("%s garbage: %d %s, want 400 %s", ct, status, msg, code)
		}
	}
}
