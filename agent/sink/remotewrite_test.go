package sink

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/easyproto"
	lp "github.com/influxdata/line-protocol/v2/lineprotocol"
	"github.com/klauspost/compress/snappy"

	"dkebpf/agent/store"
)

// decodeWriteRequest reads a remote write body back as "name{labels} value @ms" lines.
func decodeWriteRequest(t *testing.T, body []byte) []string {
	t.Helper()
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	var fc easyproto.FieldContext
	for len(raw) > 0 {
		if raw, err = fc.NextField(raw); err != nil {
			t.Fatal(err)
		}
		ts, ok := fc.MessageData()
		if fc.FieldNum != 1 || !ok {
			t.Fatalf("field %d in WriteRequest", fc.FieldNum)
		}
		var labels []string
		var sample string
		for len(ts) > 0 {
			if ts, err = fc.NextField(ts); err != nil {
				t.Fatal(err)
			}
			msg, _ := fc.MessageData()
			var b easyproto.FieldContext
			var name, value string
			var v float64
			var ms int64
			for len(msg) > 0 {
				if msg, err = b.NextField(msg); err != nil {
					t.Fatal(err)
				}
				switch {
				case fc.FieldNum == 1 && b.FieldNum == 1:
					name, _ = b.String()
				case fc.FieldNum == 1 && b.FieldNum == 2:
					value, _ = b.String()
				case fc.FieldNum == 2 && b.FieldNum == 1:
					v, _ = b.Double()
				case fc.FieldNum == 2 && b.FieldNum == 2:
					ms, _ = b.Int64()
				}
			}
			if fc.FieldNum == 1 {
				labels = append(labels, name+"="+value)
			} else {
				sample = fmt.Sprintf("%g @%d", v, ms)
			}
		}
		out = append(out, strings.Join(labels, ",")+" "+sample)
	}
	return out
}

func TestRemoteWriteHasOneSamplePerNumericFieldWithSortedCleanLabels(t *testing.T) {
	at := time.Unix(1700000000, 123456789)
	str, _ := lp.StringValue("not a sample")
	pts := []store.Point{{Measurement: "netflow", Time: at,
		Tags: []store.Tag{{Key: "src_ip", Value: "10.0.0.1"}, {Key: "1bad-key", Value: "x"}, {Key: "dst_port", Value: "443"}, {Key: "Zone", Value: "a"}},
		Fields: []store.Field{{Key: "bytes_read", Value: lp.IntValue(42)}, {Key: "note", Value: str},
			{Key: "ratio", Value: lp.MustNewValue(0.5)}, {Key: "ok", Value: lp.BoolValue(true)}}}}
	body, n := remoteWriteBody(pts)
	got := decodeWriteRequest(t, body)
	// Sorted by name (bytes), __name__ among them: "Zone" < "_1bad_key" < "__name__" < "dst_port".
	labels := func(name string) string {
		return "Zone=a,_1bad_key=x,__name__=" + name + ",dst_port=443,src_ip=10.0.0.1"
	}
	want := []string{
		labels("netflow_bytes_read") + " 42 @1700000000123",
		labels("netflow_ratio") + " 0.5 @1700000000123",
		labels("netflow_ok") + " 1 @1700000000123",
	}
	if n != 3 || !slices.Equal(got, want) {
		t.Errorf("%d samples:\n%s\nwant:\n%s", n, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for in, want := range map[string]string{"a.b-c": "a_b_c", "9x": "_9x", "ok_1": "ok_1", "": "_"} {
		if got := promName(in, false); got != want {
			t.Errorf("promName(%q) = %q, want %q", in, got, want)
		}
	}
	if got := promName("a:b", true); got != "a:b" {
		t.Errorf("metric name a:b became %q", got)
	}
}
