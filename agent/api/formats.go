package api

// DataKit's write-body formats besides line protocol: JSON points and
// protobuf points, both as defined by DataKit's own point package
// (github.com/GuanceCloud/cliutils/point), converted to store.Points.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/GuanceCloud/cliutils/point"
	"github.com/gogo/protobuf/jsonpb"
	lp "github.com/influxdata/line-protocol/v2/lineprotocol"
	"google.golang.org/protobuf/encoding/protowire"

	"dkebpf/agent/store"
)

// Media types of a write body, as DataKit's clients send them
// (point.Encoding.HTTPContentType): protobuf is
// "application/protobuf; proto=com.guance.Point", JSON is "application/json".
// Anything else, including no Content-Type, is line protocol, as in DataKit.
const (
	mediaJSON     = "application/json"
	mediaProtobuf = "application/protobuf"
	protoPoint    = "com.guance.Point" // the proto parameter DataKit sends with protobuf
)

// decodeBody decodes a write body by its Content-Type: DataKit's JSON points
// (application/json), DataKit's protobuf points (application/protobuf), or
// line protocol (anything else). Any invalid point rejects the whole body
// with an error naming the point (1-based, in body order).
//
// Every point gets category and input; tags are sorted by key. What JSON and
// protobuf points can carry beyond line protocol is handled so that the store
// keeps exactly what was sent or nothing:
//   - A tag with an empty value is dropped: line protocol cannot write one, and
//     to InfluxDB and DataKit's line protocol an empty tag is no tag.
//   - Bytes fields become strings when they are valid UTF-8, else the body is
//     rejected; array and any (google.protobuf.Any) fields are rejected, since
//     line protocol has no such types. A field's unit and metric type, and a
//     point's warns and debugs, are not kept.
//   - NaN or infinite floats, a repeated tag or field key, a key that is both a
//     tag and a field, a point without measurement or fields, a measurement
//     starting with '#' (read back as a comment), and anything line protocol
//     cannot encode are rejected (DataKit would instead rewrite or drop them,
//     with a warning).
//
// Times: 0 means now. JSON times are scaled by prec like line protocol (0:
// guessed from their magnitude). Protobuf times are nanoseconds unless the
// request names a precision, which DataKit applies to every format.
//
// JSON numbers in DataKit's plain shape ({"measurement","tags","fields","time"})
// are floats, as DataKit decodes them; the protobuf-JSON shape
// ({"name","fields":[{"key","i"|"u"|"f"|"b"|"s"|"d","is_tag"}],"time"}),
// which DataKit also accepts, keeps integer kinds.
//
// Bodies are decoded one point at a time, so besides the result only the
// point being decoded is held.
func decodeBody(contentType string, body []byte, category, input string, prec int64, now time.Time) ([]store.Point, error) {
	media, params := parseMediaType(contentType)
	switch media {
	case mediaJSON:
		return decodeJSON(body, newConverter(category, input, prec, now))
	case mediaProtobuf:
		if p, ok := params["proto"]; ok && p != protoPoint {
			return nil, fmt.Errorf("unsupported protobuf message %q, want %s", p, protoPoint)
		}
		if prec == 0 {
			prec = 1 // the schema's unit; DataKit's default precision is ns
		}
		return decodeProtobuf(body, newConverter(category, input, prec, now))
	}
	return decode(body, category, input, prec, now)
}

// parseMediaType returns the lower-case media type and its parameters; a
// Content-Type with bad parameters still yields its media type.
func parseMediaType(ct string) (string, map[string]string) {
	media, params, err := mime.ParseMediaType(ct)
	if err != nil {
		media, _, _ = strings.Cut(ct, ";")
		media = strings.ToLower(strings.TrimSpace(media))
	}
	return media, params
}

// decodeProtobuf decodes a point.PBPoints message (repeated PBPoint arr = 1)
// one PBPoint at a time; other top-level fields are skipped, as the
// generated code does.
func decodeProtobuf(body []byte, c *converter) ([]store.Point, error) {
	var points []store.Point
	for idx := 1; len(body) > 0; {
		num, typ, n := protowire.ConsumeTag(body)
		if n < 0 {
			return nil, fmt.Errorf("point %d: protobuf: %w", idx, protowire.ParseError(n))
		}
		body = body[n:]
		if num != 1 {
			if n = protowire.ConsumeFieldValue(num, typ, body); n < 0 {
				return nil, fmt.Errorf("point %d: protobuf: field %d: %w", idx, num, protowire.ParseError(n))
			}
			body = body[n:]
			continue
		}
		if typ != protowire.BytesType {
			return nil, fmt.Errorf("point %d: protobuf: PBPoints.arr has wire type %d, want %d", idx, typ, protowire.BytesType)
		}
		msg, n := protowire.ConsumeBytes(body)
		if n < 0 {
			return nil, fmt.Errorf("point %d: protobuf: %w", idx, protowire.ParseError(n))
		}
		body = body[n:]
		var pb point.PBPoint
		if err := pb.Unmarshal(msg); err != nil {
			return nil, fmt.Errorf("point %d: protobuf: %w", idx, err)
		}
		p, err := c.fromPB(&pb)
		if err != nil {
			return nil, fmt.Errorf("point %d: %w", idx, err)
		}
		points = append(points, p)
		idx++
	}
	return points, nil
}

// decodeJSON decodes a JSON array of points one element at a time. Like
// cliutils' (*point.Point).UnmarshalJSON, which DataKit uses, an element is
// first tried as a protobuf-JSON PBPoint, then as a point.JSONPoint.
func decodeJSON(body []byte, c *converter) ([]store.Point, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("json: %w", err)
	} else if tok != json.Delim('[') {
		return nil, errors.New("json: body is not an array of points")
	}
	var points []store.Point
	for idx := 1; dec.More(); idx++ {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("point %d: json: %w", idx, err)
		}
		p, err := c.fromJSON(raw)
		if err != nil {
			return nil, fmt.Errorf("point %d: %w", idx, err)
		}
		points = append(points, p)
	}
	if _, err := dec.Token(); err != nil { // the closing ']'
		return nil, fmt.Errorf("json: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("json: data after the array of points")
	}
	return points, nil
}

// converter turns decoded points into store.Points, reusing its scratch
// space from one point to the next.
type converter struct {
	category, input string
	prec            int64 // ns per time unit; 0: guess from magnitude
	now             time.Time
	keys            map[string]bool // field keys of the current point
	lp              []byte          // the current point as line protocol
}

func newConverter(category, input string, prec int64, now time.Time) *converter {
	return &converter{category: category, input: input, prec: prec, now: now, keys: map[string]bool{}}
}

func (c *converter) fromJSON(raw json.RawMessage) (store.Point, error) {
	if len(raw) == 0 || raw[0] != '{' { // dec.Decode leaves no leading space
		return store.Point{}, errors.New("not a JSON object")
	}
	pbShape, err := checkJSONKeys(raw, "key", true)
	if err != nil {
		return store.Point{}, err
	}
	if pbShape { // jsonpb fails on any other key: skip the attempt
		var pb point.PBPoint
		if err := (&jsonpb.Unmarshaler{}).Unmarshal(bytes.NewReader(raw), &pb); err == nil {
			return c.fromPB(&pb)
		}
	}
	var jp point.JSONPoint
	if err := json.Unmarshal(raw, &jp); err != nil {
		return store.Point{}, fmt.Errorf("json: %w", err)
	}
	p := store.Point{Measurement: jp.Measurement}
	for k, v := range jp.Tags {
		if v != "" {
			p.Tags = append(p.Tags, store.Tag{Key: k, Value: v})
		}
	}
	keys := make([]string, 0, len(jp.Fields))
	for k := range jp.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	p.Fields = make([]store.Field, 0, len(keys))
	for _, k := range keys {
		v, err := jsonValue(jp.Fields[k])
		if err != nil {
			return p, fmt.Errorf("field %q: %w", k, err)
		}
		p.Fields = append(p.Fields, store.Field{Key: k, Value: v})
	}
	return c.finish(p, jp.Time)
}

// jsonValue converts a field value as encoding/json decodes it into an any.
func jsonValue(v any) (lp.Value, error) {
	switch v := v.(type) {
	case float64:
		return floatValue(v)
	case string:
		return stringValue(v)
	case bool:
		return lp.BoolValue(v), nil
	case nil:
		return lp.Value{}, errors.New("null value")
	case []any:
		return lp.Value{}, errors.New("array values are not supported (line protocol has no arrays)")
	default:
		return lp.Value{}, fmt.Errorf("%T values are not supported", v)
	}
}

// pbPointKeys are the keys of a point.PBPoint in protobuf-JSON.
var pbPointKeys = map[string]bool{"name": true, "fields": true, "time": true, "warns": true, "debugs": true}

// checkJSONKeys rejects an object that has a key twice (encoding/json would
// keep the last); with nested, also the objects under "tags" and "fields".
// It reports whether every key is a PBPoint key. raw is valid JSON.
func checkJSONKeys(raw []byte, what string, nested bool) (pbShape bool, err error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return false, nil // not an object: the decoders report it
	}
	pbShape = true
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return false, fmt.Errorf("json: %w", err)
		}
		k, _ := tok.(string)
		if seen[k] {
			return false, fmt.Errorf("duplicate %s %q", what, k)
		}
		seen[k] = true
		pbShape = pbShape && pbPointKeys[k]
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return false, fmt.Errorf("json: %w", err)
		}
		if nested && (k == "tags" || k == "fields") {
			if _, err := checkJSONKeys(v, strings.TrimSuffix(k, "s"), false); err != nil {
				return false, err
			}
		}
	}
	return pbShape, nil
}

func (c *converter) fromPB(pb *point.PBPoint) (store.Point, error) {
	p := store.Point{Measurement: pb.Name}
	nfields := 0
	for _, f := range pb.Fields {
		if !f.IsTag {
			nfields++
		}
	}
	p.Fields = make([]store.Field, 0, nfields)
	for _, f := range pb.Fields {
		if f.IsTag {
			s, ok := f.Val.(*point.Field_S)
			if !ok {
				return p, fmt.Errorf("tag %q: value is %s, want a string", f.Key, pbKind(f.Val))
			}
			if s.S != "" {
				p.Tags = append(p.Tags, store.Tag{Key: f.Key, Value: s.S})
			}
			continue
		}
		v, err := pbValue(f.Val)
		if err != nil {
			return p, fmt.Errorf("field %q: %w", f.Key, err)
		}
		p.Fields = append(p.Fields, store.Field{Key: f.Key, Value: v})
	}
	return c.finish(p, pb.Time)
}

func pbValue(v any) (lp.Value, error) {
	switch v := v.(type) {
	case *point.Field_I:
		return lp.IntValue(v.I), nil
	case *point.Field_U:
		return lp.UintValue(v.U), nil
	case *point.Field_F:
		return floatValue(v.F)
	case *point.Field_B:
		return lp.BoolValue(v.B), nil
	case *point.Field_S:
		return stringValue(v.S)
	case *point.Field_D:
		if !utf8.Valid(v.D) {
			return lp.Value{}, errors.New("bytes value is not valid UTF-8 (line protocol has no binary type)")
		}
		return stringValue(string(v.D))
	case *point.Field_A:
		return lp.Value{}, errors.New("array/any values are not supported (line protocol has no arrays)")
	case nil:
		return lp.Value{}, errors.New("no value")
	default:
		return lp.Value{}, fmt.Errorf("%s values are not supported", pbKind(v))
	}
}

func pbKind(v any) string {
	switch v.(type) {
	case *point.Field_I:
		return "an int"
	case *point.Field_U:
		return "a uint"
	case *point.Field_F:
		return "a float"
	case *point.Field_B:
		return "a bool"
	case *point.Field_S:
		return "a string"
	case *point.Field_D:
		return "bytes"
	case *point.Field_A:
		return "an array/any"
	case nil:
		return "missing"
	}
	return fmt.Sprintf("%T", v)
}

func floatValue(f float64) (lp.Value, error) {
	v, ok := lp.FloatValue(f)
	if !ok {
		return v, fmt.Errorf("float %v is not finite", f)
	}
	return v, nil
}

func stringValue(s string) (lp.Value, error) {
	v, ok := lp.StringValue(s)
	if !ok {
		return v, errors.New("string is not valid UTF-8")
	}
	return v, nil
}

// finish checks p as line protocol would, sorts its tags, sets its time from
// ts (in units of c.prec; 0: now), category and input.
func (c *converter) finish(p store.Point, ts int64) (store.Point, error) {
	if p.Measurement == "" {
		return p, errors.New("empty measurement")
	}
	if p.Measurement[0] == '#' { // line protocol would read the stored line back as a comment
		return p, fmt.Errorf("measurement %q starts with '#'", p.Measurement)
	}
	if len(p.Fields) == 0 {
		return p, errors.New("no fields")
	}
	clear(c.keys)
	for _, f := range p.Fields {
		if c.keys[f.Key] {
			return p, fmt.Errorf("duplicate field %q", f.Key)
		}
		c.keys[f.Key] = true
	}
	slices.SortFunc(p.Tags, func(a, b store.Tag) int { return strings.Compare(a.Key, b.Key) })
	for i, t := range p.Tags {
		if i > 0 && p.Tags[i-1].Key == t.Key {
			return p, fmt.Errorf("duplicate tag %q", t.Key)
		}
		if c.keys[t.Key] {
			return p, fmt.Errorf("key %q is both a tag and a field", t.Key)
		}
	}
	if ts == 0 {
		p.Time = c.now
	} else {
		scale := c.prec
		if scale == 0 {
			scale = autoScale(ts)
		}
		if ts > math.MaxInt64/scale || ts < math.MinInt64/scale {
			return p, fmt.Errorf("timestamp %d out of range", ts)
		}
		p.Time = time.Unix(0, ts*scale)
	}
	p.Category, p.Input = c.category, c.input
	// What the store cannot write as line protocol (control characters in
	// names or tag values, a trailing backslash, ...) is rejected here.
	var err error
	if c.lp, err = p.AppendLineProtocol(c.lp[:0]); err != nil {
		return p, err
	}
	return p, nil
}
