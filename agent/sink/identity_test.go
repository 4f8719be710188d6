package sink

import (
	"testing"
	"time"

	lp "github.com/influxdata/line-protocol/v2/lineprotocol"

	"dkebpf/agent/store"
)

func TestHTTPFlowsIdentityFieldsAreForwardedAsTags(t *testing.T) {
	str := func(s string) lp.Value { v, _ := lp.StringValue(s); return v }
	p := store.Point{Measurement: "httpflow", Time: time.Unix(1, 0),
		Tags: []store.Tag{{Key: "dst_ip", Value: "127.0.0.1"}, {Key: "src_port", Value: "*"}},
		Fields: []store.Field{{Key: "count", Value: lp.IntValue(2)}, {Key: "http_version", Value: str("")},
			{Key: "method", Value: str("GET")}, {Key: "path", Value: str("/x y")}, {Key: "status_code", Value: lp.IntValue(200)},
			{Key: "truncated", Value: lp.BoolValue(false)}}}
	f := forwardForm(p)
	line, err := f.AppendLineProtocol(nil)
	if want := `httpflow,dst_ip=127.0.0.1,method=GET,path=/x\ y,src_port=*,status_code=200 count=2i,truncated=false 1000000000`; err != nil || string(line) != want {
		t.Errorf("forwarded as %s (%v), want %s", line, err, want)
	}
	if len(p.Tags) != 2 || len(p.Fields) != 6 {
		t.Errorf("the stored point changed: %+v", p)
	}
	other := store.Point{Measurement: "netflow", Fields: []store.Field{{Key: "path", Value: str("/x")}}}
	if got := forwardForm(other); len(got.Tags) != 0 || len(got.Fields) != 1 {
		t.Errorf("netflow changed: %+v", got)
	}
}
