package apicat

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"dkebpf/collector/point"
	"dkebpf/collector/route"
)

func TestServiceNamesKnownHostsAndTheUsersFirst(t *testing.T) {
	user, err := ParseServices([]string{"api.stripe.com=stripe-eu", " *.internal.example = billing "})
	if err != nil {
		t.Fatal(err)
	}
	c := New(user, nil)
	for host, want := range map[string]string{
		"api.stripe.com":                      "stripe-eu", // the user's entry comes first
		"files.stripe.com":                    "stripe",
		"api.github.com":                      "github",
		"mybucket.s3.amazonaws.com":           "awss3",
		"mybucket.s3.eu-west-1.amazonaws.com": "awss3",
		"sqs.us-east-1.amazonaws.com":         "awssqs",
		"ec2.us-east-1.amazonaws.com":         "aws",
		"storage.googleapis.com":              "gcs",
		"api.openai.com":                      "openai",
		"pay.internal.example":                "billing",
		"api.example.com":                     "",
		"stripe.com":                          "",
	} {
		if got := c.Service(host); got != want {
			t.Errorf("Service(%q) = %q, want %q", host, got, want)
		}
	}
}

func TestParseServicesRejectsBadEntries(t *testing.T) {
	for _, bad := range []string{"api.example.com", "=example", "api.example.com=", "api[.example.com=x"} {
		if _, err := ParseServices([]string{bad}); err == nil {
			t.Errorf("ParseServices(%q) accepted it", bad)
		}
	}
}

func field(t *testing.T, p point.Point, name string) any {
	t.Helper()
	v, ok := p.Fields[name]
	if !ok {
		t.Fatalf("%s point %v has no field %s", p.Name, p.Tags, name)
	}
	return v
}

func TestEndpointsCountStatusClassesLatencyAndWhenSeen(t *testing.T) {
	c := New(nil, nil)
	t0 := time.Unix(1700000000, 0)
	// 100 calls of POST /v1/charges to Stripe, latencies 1..100 µs: 90 answered 200, 6 402, 4 500.
	for i := 1; i <= 100; i++ {
		status := uint16(200)
		switch {
		case i > 96:
			status = 500
		case i > 90:
			status = 402
		}
		c.Add(Exchange{Host: "api.stripe.com:443", Method: "POST", Route: "/v1/charges", Status: status,
			LatencyNs: uint64(i) * 1000, TLS: true, Process: "shop"}, t0.Add(time.Duration(i)*time.Millisecond))
	}
	c.Add(Exchange{Host: "API.Stripe.com", Method: "GET", Route: "/v1/customers/{id}", Status: 301, LatencyNs: 7, TLS: true}, t0)
	pts := c.FlushEndpoints(t0.Add(time.Second))
	if len(pts) != 2 {
		t.Fatalf("got %d points, want 2: %v", len(pts), pts)
	}
	var charges point.Point
	for _, p := range pts {
		if p.Name != Endpoint || p.Tags["api_host"] != "api.stripe.com" || p.Tags["service"] != "stripe" {
			t.Errorf("point %s %v: want api_endpoint of api.stripe.com, service stripe", p.Name, p.Tags)
		}
		if p.Tags["route"] == "/v1/charges" {
			charges = p
		}
	}
	if charges.Tags["check"] != "POST /v1/charges" || charges.Tags["method"] != "POST" {
		t.Errorf("tags %v", charges.Tags)
	}
	want := map[string]any{"count": int64(100), "status_2xx": int64(90), "status_4xx": int64(6), "status_5xx": int64(4),
		"status_1xx": int64(0), "status_3xx": int64(0), "error_rate": 0.1, "latency_mean": int64(50500), "latency_p99": int64(99000),
		"first_seen": t0.Add(time.Millisecond).UnixMilli(), "last_seen": t0.Add(100 * time.Millisecond).UnixMilli()}
	for k, v := range want {
		if got := field(t, charges, k); got != v {
			t.Errorf("%s = %v (%T), want %v", k, got, got, v)
		}
	}

	// The next interval counts its own calls; first_seen stays.
	t1 := t0.Add(time.Minute)
	c.Add(Exchange{Host: "api.stripe.com", Method: "POST", Route: "/v1/charges", Status: 200, LatencyNs: 5, TLS: true}, t1)
	pts = c.FlushEndpoints(t1)
	if len(pts) != 1 || field(t, pts[0], "count") != int64(1) || field(t, pts[0], "first_seen") != t0.Add(time.Millisecond).UnixMilli() ||
		field(t, pts[0], "last_seen") != t1.UnixMilli() || field(t, pts[0], "latency_p99") != int64(5) {
		t.Errorf("second interval: %v", pts)
	}
	// Not called for longer than Expiry: forgotten, then new again.
	c.FlushEndpoints(t1.Add(Expiry + time.Second))
	t2 := t1.Add(2 * Expiry)
	c.Add(Exchange{Host: "api.stripe.com", Method: "POST", Route: "/v1/charges", Status: 200, TLS: true}, t2)
	if pts = c.FlushEndpoints(t2); len(pts) != 1 || field(t, pts[0], "first_seen") != t2.UnixMilli() {
		t.Errorf("after expiry: %v", pts)
	}
}

func TestUnknownHostsAreReportedOnceOverTLSByName(t *testing.T) {
	c := New(nil, nil)
	now := time.Unix(1700000000, 0)
	calls := []Exchange{
		{Host: "api.vendor.example", Method: "GET", Route: "/v2/items/{id}", Status: 200, TLS: true, Process: "app", Pid: 7},
		{Host: "api.vendor.example:8443", Method: "POST", Route: "/v2/items", Status: 201, TLS: true, Process: "app", Pid: 7},
		{Host: "plain.vendor.example", Method: "GET", Route: "/", Status: 200},                       // not TLS
		{Host: "10.0.0.7:8443", Method: "GET", Route: "/", Status: 200, TLS: true},                   // an address
		{Host: "api.github.com", Method: "GET", Route: "/repos", Status: 200, TLS: true},             // known
		{Host: "N/A", Method: "GET", Route: "/", Status: 200, TLS: true},                             // no Host header
		{Host: "api.vendor.example", Method: "GET", Route: "/v2/items/{id}", Status: 200, TLS: true}, // again
	}
	for _, e := range calls {
		c.Add(e, now)
	}
	ev := c.FlushUnknown()
	if len(ev) != 1 || ev[0].Name != Unknown || ev[0].Tags["api_host"] != "api.vendor.example" || ev[0].Tags["process_name"] != "app" ||
		!strings.Contains(field(t, ev[0], "message").(string), "api.vendor.example") {
		t.Fatalf("unknown_api events %v, want one for api.vendor.example", ev)
	}
	if ev := c.FlushUnknown(); len(ev) != 0 {
		t.Errorf("events flushed twice: %v", ev)
	}
	if st := c.Stats(); st.NoHost != 1 || st.Unknowns != 1 {
		t.Errorf("stats %+v", st)
	}
	for _, p := range c.FlushEndpoints(now) {
		if p.Tags["api_host"] == "api.vendor.example" && p.Tags["service"] != "N/A" {
			t.Errorf("an unknown host's service is %q, want N/A", p.Tags["service"])
		}
	}
}

func TestEndpointsAreBoundedAndP99IsSampledBeyondSamples(t *testing.T) {
	c := New(nil, nil)
	now := time.Unix(1700000000, 0)
	for i := range MaxEndpoints + 5 {
		c.Add(Exchange{Host: "api.github.com", Method: "GET", Route: "/r" + string(rune('a'+i%26)) + strings.Repeat("x", i/26), Status: 200}, now)
	}
	if st := c.Stats(); st.Dropped != 5 {
		t.Errorf("Dropped = %d, want 5", st.Dropped)
	}
	c = New(nil, nil)
	for i := 1; i <= 10*Samples; i++ {
		c.Add(Exchange{Host: "api.github.com", Method: "GET", Route: "/", Status: 200, LatencyNs: uint64(i)}, now)
	}
	p := c.FlushEndpoints(now)[0]
	// The exact p99 is 10 138; a uniform sample of 1024 puts it within a few percent.
	if got := field(t, p, "latency_p99").(int64); got < 9700 || got > 10240 {
		t.Errorf("sampled p99 = %d, want about 10 138", got)
	}
	if field(t, p, "latency_mean") != int64(5120) {
		t.Errorf("mean %v, want 5120 (exact: every exchange)", field(t, p, "latency_mean"))
	}
}

// Endpoints added before their route was learned to have a variable join the learned template's endpoint at
// the flush: one point, every call counted once, the earliest first_seen.
func TestEndpointsJoinTheirLearnedRoute(t *testing.T) {
	routes := route.NewLearner()
	c := New(nil, routes)
	t0 := time.Unix(1700000000, 0)
	for i := range route.MaxLiterals + 5 {
		r := fmt.Sprintf("/repos/owner-%c%c", 'a'+i/26, 'a'+i%26)
		c.Add(Exchange{Host: "api.github.com", Method: "GET", Route: routes.Learn("api.github.com", r), Status: 200,
			LatencyNs: uint64(i+1) * 1000, TLS: true}, t0.Add(time.Duration(i)*time.Second))
	}
	pts := c.FlushEndpoints(t0.Add(time.Minute))
	if len(pts) != 1 || pts[0].Tags["route"] != "/repos/{param}" || pts[0].Tags["check"] != "GET /repos/{param}" {
		t.Fatalf("points %v, want one of /repos/{param}", pts)
	}
	n := int64(route.MaxLiterals + 5)
	want := map[string]any{"count": n, "status_2xx": n, "latency_mean": (n + 1) * 500, "latency_p99": n * 1000,
		"first_seen": t0.UnixMilli(), "last_seen": t0.Add(time.Duration(n-1) * time.Second).UnixMilli()}
	for k, v := range want {
		if got := field(t, pts[0], k); got != v {
			t.Errorf("%s = %v, want %v", k, got, v)
		}
	}
}
