package point

import (
	"bytes"
	"maps"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/influxdata/line-protocol/v2/lineprotocol"
)

// lpValid says whether line protocol can carry s as a measurement, key or tag value: not empty, valid
// UTF-8, no control characters, no trailing backslash.
func lpValid(s string) bool {
	if s == "" || !utf8.ValidString(s) || s[len(s)-1] == '\\' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] == 0x7f {
			return false
		}
	}
	return true
}

// FuzzEncode encodes points made of arbitrary names, tags and fields of every type: both entry points
// agree, an error leaves nothing behind, what line protocol can carry is encoded, and a line decodes back
// to the point with the global tags it lacked and without its empty tags (a name starting with "#" aside).
func FuzzEncode(f *testing.F) {
	f.Add("netflow", "src_ip", "10.0.0.1", "host", "h", "s", "x", int64(-5), uint64(1<<63), 0.25, true, int64(1700000000123456789))
	f.Add("m x,y", "k ey", "a b,c=d", "host", "", "cmd", `echo "hi" \ there`, int64(1), uint64(0), 1.5, false, int64(0))
	f.Add("bash", "host", "mine", "host", "h", "cmd", "ls -la\n|grep 'x'", int64(0), uint64(7), math.Inf(1), false, int64(-1))
	f.Add("m", "a", "x\ny", "g", "", "v", "\xff", int64(0), uint64(0), math.NaN(), true, int64(1))
	f.Add("m", "a\\", "b\\", "=", ",", "f=\"", "\\", int64(math.MinInt64), uint64(math.MaxUint64), -0.0, true, int64(math.MaxInt64))
	f.Add("#comment", "", "", "z", "last", "é", "ü\"", int64(3), uint64(3), 1e300, false, int64(math.MinInt64))
	f.Fuzz(func(t *testing.T, name, tk, tv, gk, gv, fk, fs string, fi int64, fu uint64, ff float64, fb bool, ns int64) {
		if len(name)+len(tk)+len(tv)+len(gk)+len(gv)+len(fk)+len(fs) > 1024 {
			return // escaping works byte by byte; longer inputs only slow the fuzzer's minimization
		}
		p := Point{Name: name, Tags: map[string]string{tk: tv},
			Fields: map[string]any{"i": fi, "u": fu, "f": ff, "b": fb, fk: fs}}
		if ns != 0 {
			p.Time = time.Unix(0, ns)
		}
		global := map[string]string{gk: gv}

		var buf bytes.Buffer
		err := Encode(&buf, p, global)
		line, err2 := NewEncoder(global).Encode(p)
		if (err == nil) != (err2 == nil) || !bytes.Equal(buf.Bytes(), line) {
			t.Fatalf("Encode: %q, %v; Encoder.Encode: %q, %v", buf.Bytes(), err, line, err2)
		}

		tags := map[string]string{}
		for k, v := range global {
			if v != "" {
				tags[k] = v
			}
		}
		for k, v := range p.Tags {
			delete(tags, k) // the point's own tag wins, even an empty one
			if v != "" {
				tags[k] = v
			}
		}
		carried := lpValid(p.Name)
		for k, v := range tags {
			carried = carried && lpValid(k) && lpValid(v)
		}
		for k, v := range p.Fields { // fk may have replaced one of the others
			carried = carried && lpValid(k)
			switch v := v.(type) {
			case float64:
				carried = carried && !math.IsNaN(v) && !math.IsInf(v, 0)
			case string:
				carried = carried && utf8.ValidString(v)
			}
		}
		if err != nil {
			if buf.Len() != 0 {
				t.Errorf("Encode wrote %q with the error %v", buf.Bytes(), err)
			}
			if carried {
				t.Errorf("Encode(%+v, %v): %v", p, global, err)
			}
			return
		}
		if !carried {
			t.Errorf("Encode(%+v, %v) = %q, want an error", p, global, line)
		}
		if n := len(line); n == 0 || line[n-1] != '\n' {
			t.Fatalf("line %q does not end in a newline", line)
		}

		if strings.HasPrefix(p.Name, "#") {
			// The library writes such a line unescaped, and its decoder reads it as a comment. Our
			// measurement names are constants ("netflow", "bash", ...), so this cannot happen here.
			return
		}
		dec := lineprotocol.NewDecoderWithBytes(line)
		if !dec.Next() {
			t.Fatalf("no point decoded from %q: %v", line, dec.Err())
		}
		got := decodePoint(t, dec)
		if got.Name != p.Name || !maps.Equal(got.Tags, tags) || !maps.Equal(got.Fields, p.Fields) || !got.Time.Equal(p.Time) {
			t.Errorf("%q decodes to\n %+v\nwant\n %+v (tags %v)", line, got, p, tags)
		}
		if dec.Next() {
			t.Errorf("more than one point decoded from %q", line)
		}
	})
}
