package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// endpointSum is what api_endpoint points said of one (api_host, method, route) over the test.
type endpointSum struct {
	service, check                         string
	count, s2xx, s4xx, s5xx, latencyPoints int64
}

// The API catalogue: curl, in a mount namespace whose /etc/hosts names 127.0.0.1 api.stripe.com and
// api.vendor-unknown.test, calls Python's HTTPS server through both names. The calls to Stripe's name become
// api_endpoint points with service=stripe, one per route template, with exact counts and status classes; the
// unknown host is reported once as an unknown_api event however often it is called.
func TestAPICatalogueNamesServicesThroughEtcHosts(t *testing.T) {
	a := startAgent(t, httpflowConf)
	port, _, log, _ := pythonSSL.start(t)
	dir := t.TempDir()
	hosts := filepath.Join(dir, "hosts")
	must(t, os.WriteFile(hosts, []byte("127.0.0.1 localhost api.stripe.com api.vendor-unknown.test\n"), 0o644))
	stripe := fmt.Sprintf("https://api.stripe.com:%d", port)
	vendor := fmt.Sprintf("https://api.vendor-unknown.test:%d", port)
	script := strings.Join([]string{
		"mount --bind " + hosts + " /etc/hosts",
		"curl -sfk -o /dev/null -o /dev/null -o /dev/null -X POST -d amount=100 " + stripe + "/v1/charges " + stripe + "/v1/charges " + stripe + "/v1/charges",
		"curl -sfk -o /dev/null -o /dev/null " + stripe + "/v1/customers/123 " + stripe + "/v1/customers/456",
		"curl -sk -o /dev/null " + stripe + "/fail",
		"curl -sfk -o /dev/null -o /dev/null " + vendor + "/v2/items/9 " + vendor + "/v2/items/10",
	}, " && ")
	if out, err := exec.Command("unshare", "-m", "sh", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("curl in a mount namespace: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile("/etc/hosts"); strings.Contains(string(b), "api.stripe.com") {
		t.Fatal("harness: the test's /etc/hosts leaked out of its mount namespace")
	}
	waitServerLog(t, log, 8)

	key := func(host, method, route string) string { return host + " " + method + " " + route }
	want := map[string]endpointSum{
		key("api.stripe.com", "POST", "/v1/charges"):            {"stripe", "POST /v1/charges", 3, 3, 0, 0, 0},
		key("api.stripe.com", "GET", "/v1/customers/{id}"):      {"stripe", "GET /v1/customers/{id}", 2, 2, 0, 0, 0},
		key("api.stripe.com", "GET", "/fail"):                   {"stripe", "GET /fail", 1, 0, 0, 1, 0},
		key("api.vendor-unknown.test", "GET", "/v2/items/{id}"): {"N/A", "GET /v2/items/{id}", 2, 2, 0, 0, 0},
	}
	observe := func() map[string]endpointSum {
		got := map[string]endpointSum{}
		for _, p := range a.query("api_endpoint", "15m") {
			h := p.Tags["api_host"]
			if h != "api.stripe.com" && h != "api.vendor-unknown.test" {
				continue
			}
			k := key(h, p.Tags["method"], p.Tags["route"])
			s := got[k]
			s.service, s.check = p.Tags["service"], p.Tags["check"]
			s.count += intField(p, "count")
			s.s2xx += intField(p, "status_2xx")
			s.s4xx += intField(p, "status_4xx")
			s.s5xx += intField(p, "status_5xx")
			if intField(p, "latency_mean") > 0 && intField(p, "latency_p99") > 0 && intField(p, "first_seen") <= intField(p, "last_seen") {
				s.latencyPoints++
			}
			got[k] = s
		}
		return got
	}
	var got map[string]endpointSum
	deadline := time.Now().Add(max(20*time.Second, 10*interval))
	for {
		got = observe()
		done := len(got) == len(want)
		for k, w := range want {
			g := got[k]
			g.latencyPoints = 0
			done = done && g == w
		}
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	for k, w := range want {
		g := got[k]
		if g.latencyPoints == 0 {
			t.Errorf("%s: no point with a latency mean and p99 above 0 and first_seen <= last_seen: %+v", k, g)
		}
		g.latencyPoints = 0
		if g != w {
			t.Errorf("%s: got %+v, want %+v", k, g, w)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected endpoint %s: %+v", k, got[k])
		}
	}

	events := map[string]int{}
	for _, p := range a.query("unknown_api", "15m") {
		events[p.Tags["api_host"]]++
		if p.Tags["api_host"] == "api.vendor-unknown.test" && (p.Tags["process_name"] != "curl" || !strings.Contains(fmt.Sprint(p.Fields["message"]), "api.vendor-unknown.test")) {
			t.Errorf("unknown_api event %v %v", p.Tags, p.Fields)
		}
	}
	if events["api.vendor-unknown.test"] != 1 || events["api.stripe.com"] != 0 {
		t.Errorf("unknown_api events by host %v: want exactly one, for api.vendor-unknown.test", events)
	}
}
