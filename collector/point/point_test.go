package point

import (
	"bytes"
	"errors"
	"maps"
	"math"
	"testing"
	"time"

	"github.com/influxdata/line-protocol/v2/lineprotocol"
)

var ts = time.Unix(1700000000, 123456789)

func TestEncodeWritesExpectedLine(t *testing.T) {
	tests := []struct {
		name   string
		p      Point
		global map[string]string
		want   string
	}{
		{
			name: "integer fields get the i suffix, unsigned the u suffix",
			p:    Point{Name: "netflow", Fields: map[string]any{"bytes": int64(10), "n": 3, "u": uint64(7), "f": 1.5, "b": true}, Time: ts},
			want: "netflow b=true,bytes=10i,f=1.5,n=3i,u=7u 1700000000123456789\n",
		},
		{
			name: "spaces commas and equals in tags are escaped",
			p:    Point{Name: "m x,y", Tags: map[string]string{"k ey": "a b,c=d"}, Fields: map[string]any{"v": int64(1)}, Time: ts},
			want: `m\ x\,y,k\ ey=a\ b\,c\=d v=1i 1700000000123456789` + "\n",
		},
		{
			name: "quotes and backslashes in string fields are escaped",
			p:    Point{Name: "bash", Fields: map[string]any{"cmd": `echo "hi" \ there`}, Time: ts},
			want: `bash cmd="echo \"hi\" \\ there" 1700000000123456789` + "\n",
		},
		{
			name:   "global tags are added and sorted with the point's own",
			p:      Point{Name: "m", Tags: map[string]string{"dst": "1.2.3.4"}, Fields: map[string]any{"v": int64(1)}, Time: ts},
			global: map[string]string{"host": "h", "service": "ebpf", "a": "x"},
			want:   "m,a=x,dst=1.2.3.4,host=h,service=ebpf v=1i 1700000000123456789\n",
		},
		{
			name:   "per-measurement tags win over global ones",
			p:      Point{Name: "m", Tags: map[string]string{"host": "pod-host", "service": "web"}, Fields: map[string]any{"v": int64(1)}, Time: ts},
			global: map[string]string{"host": "h", "service": "ebpf"},
			want:   "m,host=pod-host,service=web v=1i 1700000000123456789\n",
		},
		{
			name:   "empty tag values are omitted, even when they shadow a global tag",
			p:      Point{Name: "m", Tags: map[string]string{"host": "", "k": ""}, Fields: map[string]any{"v": int64(1)}, Time: ts},
			global: map[string]string{"host": "h", "g": ""},
			want:   "m v=1i 1700000000123456789\n",
		},
		{
			name: "zero time is encoded without a timestamp",
			p:    Point{Name: "m", Fields: map[string]any{"v": int64(1)}},
			want: "m v=1i\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := Encode(&buf, tt.p, tt.global); err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if got := buf.String(); got != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
			line, err := NewEncoder(tt.global).Encode(tt.p)
			if err != nil {
				t.Fatalf("Encoder.Encode: %v", err)
			}
			if string(line) != tt.want {
				t.Errorf("Encoder.Encode got %q, want %q", line, tt.want)
			}
		})
	}
}

func TestEncodeRejectsInvalidPoints(t *testing.T) {
	tests := []struct {
		name string
		p    Point
	}{
		{"no fields", Point{Name: "m", Tags: map[string]string{"a": "b"}}},
		{"unsupported field type", Point{Name: "m", Fields: map[string]any{"v": int32(1)}}},
		{"nil field", Point{Name: "m", Fields: map[string]any{"v": nil}}},
		{"NaN field", Point{Name: "m", Fields: map[string]any{"v": math.NaN()}}},
		{"empty measurement", Point{Name: "", Fields: map[string]any{"v": int64(1)}}},
		{"control character in tag", Point{Name: "m", Tags: map[string]string{"a": "x\ny"}, Fields: map[string]any{"v": int64(1)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := Encode(&buf, tt.p, nil); err == nil {
				t.Fatalf("Encode succeeded with %q, want an error", buf.String())
			}
			if buf.Len() != 0 {
				t.Errorf("buffer got %q after an error, want nothing", buf.String())
			}
		})
	}
	var buf bytes.Buffer
	if err := Encode(&buf, Point{Name: "m"}, nil); !errors.Is(err, ErrNoFields) {
		t.Errorf("Encode of a point without fields: got %v, want ErrNoFields", err)
	}
}

func TestEncoderRecoversAfterAnError(t *testing.T) {
	e := NewEncoder(map[string]string{"host": "h"})
	if _, err := e.Encode(Point{Name: "m", Tags: map[string]string{"z": "1"}, Fields: map[string]any{"v": nil}}); err == nil {
		t.Fatal("want an error for a nil field")
	}
	line, err := e.Encode(Point{Name: "m", Tags: map[string]string{"a": "1"}, Fields: map[string]any{"v": int64(2)}, Time: ts})
	if err != nil {
		t.Fatalf("Encode after an error: %v", err)
	}
	if want := "m,a=1,host=h v=2i 1700000000123456789\n"; string(line) != want {
		t.Errorf("got %q, want %q", line, want)
	}
}

func TestEncodeRoundTripsThroughDecoder(t *testing.T) {
	points := []Point{
		{
			Name:   "netflow",
			Tags:   map[string]string{"src_ip": "10.0.0.1", "weird tag": `a,b=c "d" \e`},
			Fields: map[string]any{"bytes_read": int64(-5), "bytes_written": uint64(1 << 63), "rtt": 0.25, "ok": false, "s": "x=\"y\", z\\"},
			Time:   ts,
		},
		{
			Name:   "bash",
			Tags:   map[string]string{"host": "mine"},
			Fields: map[string]any{"cmd": "ls -la\n|grep 'x'"},
			Time:   ts.Add(time.Second),
		},
	}
	global := map[string]string{"host": "h", "service": "ebpf"}
	var buf bytes.Buffer
	for _, p := range points {
		if err := Encode(&buf, p, global); err != nil {
			t.Fatalf("Encode: %v", err)
		}
	}

	dec := lineprotocol.NewDecoderWithBytes(buf.Bytes())
	for i, want := range points {
		if !dec.Next() {
			t.Fatalf("decoder stopped before point %d: %v", i, dec.Err())
		}
		got := decodePoint(t, dec)
		wantTags := maps.Clone(want.Tags)
		for k, v := range global {
			if _, ok := wantTags[k]; !ok {
				wantTags[k] = v
			}
		}
		if got.Name != want.Name || !maps.Equal(got.Tags, wantTags) || !maps.Equal(got.Fields, want.Fields) || !got.Time.Equal(want.Time) {
			t.Errorf("point %d round trip:\n got  %+v\n want %+v (tags %v)", i, got, want, wantTags)
		}
	}
	if dec.Next() {
		t.Error("decoder found more points than were encoded")
	}
}

func decodePoint(t *testing.T, dec *lineprotocol.Decoder) Point {
	t.Helper()
	name, err := dec.Measurement()
	if err != nil {
		t.Fatalf("measurement: %v", err)
	}
	p := Point{Name: string(name), Tags: map[string]string{}, Fields: map[string]any{}}
	for {
		k, v, err := dec.NextTag()
		if err != nil {
			t.Fatalf("tag: %v", err)
		}
		if k == nil {
			break
		}
		p.Tags[string(k)] = string(v)
	}
	for {
		k, v, err := dec.NextField()
		if err != nil {
			t.Fatalf("field: %v", err)
		}
		if k == nil {
			break
		}
		p.Fields[string(k)] = v.Interface()
	}
	if p.Time, err = dec.Time(lineprotocol.Nanosecond, time.Time{}); err != nil {
		t.Fatalf("time: %v", err)
	}
	return p
}
