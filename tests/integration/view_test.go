package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath is Debian's chromium (scripts/install-deps.sh installs it).
const chromiumPath = "/usr/bin/chromium"

// TestViewShowsWhatWasWritten runs a real agent with a token and no input, writes known netflow, httpflow,
// dnsflow, bash and datakit_ebpf points to its API, opens the local page in headless Chromium (the token once
// in the address, then the cookie), and reads back the numbers the page shows: each equals what was written.
// Screenshots go to bench-results/view-*.png (and docs/img/view.png with DKEBPF_UPDATE_DOCS_IMG=1).
func TestViewShowsWhatWasWritten(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s missing (%v): run scripts/install-deps.sh (it installs Debian's chromium)", chromiumPath, err)
	}
	const token = "view-test-token"
	a := launchAgentEnv(t, "", "ENV_HTTP_TOKEN="+token)
	a.waitFor("the API", 20*time.Second, func() bool {
		resp, err := http.Get("http://" + a.addr + "/v1/ping")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})

	now := time.Now()
	ts := func(ago time.Duration) int64 { return now.Add(-ago).UnixNano() }
	post := func(path, body string) {
		t.Helper()
		req, err := http.NewRequest("POST", "http://"+a.addr+path, strings.NewReader(body))
		must(t, err)
		req.Header.Set("X-Token", token)
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("POST %s: %d %s", path, resp.StatusCode, b)
		}
	}
	post("/v1/write/network?input=ebpf-net%2Fnetflow", fmt.Sprintf(
		"netflow,process_name=nginx,direction=outgoing,dst_ip=10.9.8.7,dst_port=443,dst_domain=shop.example,transport=tcp bytes_read=123456i,bytes_written=7890i %d\n"+
			"netflow,process_name=nginx,direction=outgoing,dst_ip=10.9.8.7,dst_port=443,dst_domain=shop.example,transport=tcp bytes_read=1000i,bytes_written=24i %d\n"+
			"netflow,process_name=curl,direction=outgoing,dst_ip=127.0.0.1,dst_port=8080,transport=tcp bytes_read=5000i,bytes_written=300i %d\n",
		ts(5*time.Minute), ts(3*time.Minute), ts(4*time.Minute)))
	post("/v1/write/network?input=ebpf-net%2Fhttpflow", fmt.Sprintf(
		"httpflow,direction=incoming,http_host=api.test,process_name=nginx method=\"GET\",path=\"/orders\",status_code=200i,count=17i,latency=2000000i %d\n"+
			"httpflow,direction=incoming,http_host=api.test,process_name=nginx method=\"GET\",path=\"/orders\",status_code=404i,count=3i,latency=1000000i %d\n"+
			"httpflow,direction=incoming,http_host=api.test,process_name=nginx method=\"POST\",path=\"/orders\",status_code=503i,count=2i,latency=9000000i %d\n"+
			"httpflow,direction=outgoing,http_host=backend.test,process_name=curl method=\"GET\",path=\"/health\",status_code=200i,count=5i,latency=500000i %d\n",
		ts(5*time.Minute), ts(4*time.Minute), ts(3*time.Minute), ts(2*time.Minute)))
	ms := func(ago time.Duration) int64 { return now.Add(-ago).UnixMilli() }
	post("/v1/write/network?input=ebpf-net%2Fapi_endpoint", fmt.Sprintf(
		"api_endpoint,api_host=api.stripe.com,service=stripe,method=POST,route=/v1/charges,check=POST\\ /v1/charges count=8i,status_2xx=6i,status_4xx=1i,status_5xx=1i,latency_mean=3000000i,latency_p99=9000000i,first_seen=%di,last_seen=%di %d\n"+
			"api_endpoint,api_host=api.stripe.com,service=stripe,method=POST,route=/v1/charges,check=POST\\ /v1/charges count=2i,status_2xx=2i,latency_mean=1000000i,latency_p99=2000000i,first_seen=%di,last_seen=%di %d\n"+
			"api_endpoint,api_host=api.vendor.test,service=N/A,method=GET,route=/v2/items/{id},check=GET\\ /v2/items/{id} count=1i,status_2xx=1i,latency_mean=500000i,latency_p99=500000i,first_seen=%di,last_seen=%di %d\n",
		ms(5*time.Minute), ms(5*time.Minute), ts(5*time.Minute), ms(5*time.Minute), ms(3*time.Minute), ts(3*time.Minute),
		ms(4*time.Minute), ms(4*time.Minute), ts(4*time.Minute)))
	post("/v1/write/network?input=ebpf-net%2Fdnsflow", fmt.Sprintf(
		"dnsflow,qname=shop.example,qtype=A,rcode_name=NOERROR rcode=0i,count=9i,latency=3000000i,latency_max=7000000i %d\n"+
			"dnsflow,qname=shop.example,qtype=A,rcode_name=TIMEOUT rcode=-1i,count=2i,latency=0i,latency_max=0i %d\n"+
			"dnsflow,qname=nx.example,qtype=A,rcode_name=NXDOMAIN rcode=3i,count=4i,latency=1000000i,latency_max=2000000i %d\n",
		ts(5*time.Minute), ts(4*time.Minute), ts(3*time.Minute)))
	post("/v1/write/logging?input=ebpf-bash", fmt.Sprintf(
		"bash cmd=\"ls -la\",pid=\"100\",user=\"alice\",message=\"x\" %d\n"+
			"bash cmd=\"make test\",pid=\"100\",user=\"alice\",message=\"x\" %d\n"+
			"bash cmd=\"whoami\",pid=\"200\",user=\"root\",message=\"x\" %d\n",
		ts(5*time.Minute), ts(3*time.Minute), ts(4*time.Minute)))
	post("/v1/write/metric?input=datakit-ebpf", fmt.Sprintf(
		"datakit_ebpf uptime_seconds=60i,hooks_refused=0i,parts_fallback=1i,parts_off=0i,netflow_events_lost=2i,netflow_map_full_drops=0i %d\n"+
			"datakit_ebpf uptime_seconds=120i,hooks_refused=0i,parts_fallback=1i,parts_off=0i,netflow_events_lost=7i,netflow_map_full_drops=0i %d\n",
		ts(3*time.Minute), ts(2*time.Minute)))

	ctx := newBrowser(t)
	base := "http://" + a.addr

	// Without the token the page is closed, like the API.
	must(t, chromedp.Do(ctx, chromedp.Navigate(base+"/view/")))
	body, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	must(t, err)
	if !strings.Contains(body, "token") {
		t.Fatalf("the page without the token shows %q, want the token's explanation", body)
	}

	// The token once in the address: a cookie, and the address without it.
	must(t, chromedp.Do(ctx, chromedp.Navigate(base+"/?token="+token)))
	loaded := func(what string) {
		t.Helper()
		state, err := chromedp.Run(ctx, chromedp.Poll[string](`document.body && document.body.dataset.loaded`,
			chromedp.WithPollingTimeout(30*time.Second), chromedp.WithPollingInterval(100*time.Millisecond)))
		if err != nil || state != "ok" {
			status, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("status").textContent`))
			t.Fatalf("%s: page state %q (%v): %s", what, state, err, status)
		}
	}
	loaded("the page with the token")
	loc, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.pathname + location.search`))
	must(t, err)
	if loc != "/view/" {
		t.Errorf("address after the token: %q, want /view/ (the token out of the address bar)", loc)
	}

	rows := func(sel string) [][]string {
		t.Helper()
		r, err := chromedp.Run(ctx, chromedp.Evaluate[[][]string](fmt.Sprintf(
			`[...document.querySelectorAll(%q)].map(tr => [...tr.cells].map(td => td.textContent))`, sel+" tbody tr")))
		must(t, err)
		return r
	}
	check := func(what string, got [][]string, want ...[]string) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: the page shows\n  %q\nwant\n  %q", what, got, want)
		}
	}
	shoot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		must(t, err)
		dir := filepath.Join(repoRoot, "bench-results")
		must(t, os.MkdirAll(dir, 0o755))
		p := filepath.Join(dir, "view-"+name+".png")
		must(t, os.WriteFile(p, png, 0o644))
		t.Logf("screenshot %s (%d KiB)", p, len(png)>>10)
		if name == "1h" && os.Getenv("DKEBPF_UPDATE_DOCS_IMG") == "1" { // the README's picture, on demand
			p = filepath.Join(repoRoot, "docs", "img", "view.png")
			must(t, os.MkdirAll(filepath.Dir(p), 0o755))
			must(t, os.WriteFile(p, png, 0o644))
			t.Logf("screenshot %s", p)
		}
	}

	for _, rng := range []string{"1h", "7d"} {
		if rng != "1h" {
			must(t, chromedp.Do(ctx, chromedp.Click(`#ranges button[data-range="`+rng+`"]`)))
			must(t, chromedp.Do(ctx, chromedp.Sleep(100*time.Millisecond)))
			loaded("range " + rng)
		}
		// bytes, read, written: nginx 123456+7890 + 1000+24.
		check(rng+": netflow by process", rows("#netflow-process"),
			[]string{"nginx", "132,370", "124,456", "7,914"}, []string{"curl", "5,300", "5,000", "300"})
		check(rng+": netflow by remote", rows("#netflow-remote"),
			[]string{"10.9.8.7:443", "132,370", "124,456", "7,914"}, []string{"127.0.0.1:8080", "5,300", "5,000", "300"})
		check(rng+": netflow by domain", rows("#netflow-domain"), []string{"shop.example", "132,370", "124,456", "7,914"})
		// dir, host, path, count, 2xx, 3xx, 4xx, 5xx, other, latency mean (17*2+3*1+2*9)/22 ms, max of means.
		check(rng+": httpflow endpoints", rows("#http-endpoints"),
			[]string{"incoming", "api.test", "/orders", "22", "17", "0", "3", "2", "0", "2.50", "9.00"},
			[]string{"outgoing", "backend.test", "/health", "5", "5", "0", "0", "0", "0", "0.50", "0.50"})
		// host, service, method, route, count, 2xx, 3xx, 4xx, 5xx, other, error rate, latency mean (8*3+2*1)/10 ms,
		// the largest p99 (first and last seen are in the browser's time zone: not compared).
		var apis [][]string
		for _, r := range rows("#api-endpoints") {
			apis = append(apis, r[:min(len(r), 13)])
		}
		check(rng+": APIs this host calls", apis,
			[]string{"api.stripe.com", "stripe", "POST", "/v1/charges", "10", "8", "0", "1", "1", "0", "20.0 %", "2.60", "9.00"},
			[]string{"api.vendor.test", "N/A", "GET", "/v2/items/{id}", "1", "1", "0", "0", "0", "0", "0.0 %", "0.50", "0.50"})
		check(rng+": dnsflow names", rows("#dns-names"),
			[]string{"shop.example", "11", "2", "3.00", "7.00", "NOERROR 9 · TIMEOUT 2"},
			[]string{"nx.example", "4", "0", "1.00", "2.00", "NXDOMAIN 4"})
		bash, err := chromedp.Run(ctx, chromedp.Evaluate[[][]string](
			`[...document.querySelectorAll("table.bash")].map(t => [t.dataset.user, ...[...t.querySelectorAll("tbody tr")].map(tr => tr.cells[2].textContent)])`))
		must(t, err)
		check(rng+": bash commands per user, newest first", bash, []string{"alice", "make test", "ls -la"}, []string{"root", "whoami"})
		check(rng+": collector health counters", rows("#health-counters")[:1], []string{"netflow_events_lost", "7", "5"})
		summary, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("health-summary").innerText`))
		must(t, err)
		if !strings.Contains(summary, "parts on fallback: 1") || !strings.Contains(summary, "hooks refused: 0") {
			t.Errorf("%s: health summary %q", rng, summary)
		}
		charts, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll(".chart canvas").length`))
		must(t, err)
		if charts != 5 {
			t.Errorf("%s: %d charts drawn, want 5 (netflow, httpflow, apis, dnsflow, health)", rng, charts)
		}
		shoot(rng)
	}
}

// launchAgentEnv is launchAgentMain with variables added to the agent's environment.
func launchAgentEnv(t *testing.T, conf string, env ...string) *agent {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	a := &agent{t: t, addr: addr, dir: writeInstallDir(t, addr, conf), log: &syncBuffer{}, done: make(chan struct{})}
	a.cmd = exec.Command(filepath.Join(repoRoot, "datakit"), "run", "--dir", a.dir)
	a.cmd.Env = append(os.Environ(), env...)
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	must(t, a.cmd.Start())
	go func() { a.cmd.Wait(); close(a.done) }()
	t.Cleanup(a.stop)
	return a
}

// newBrowser starts headless Chromium on a new empty profile; it ends with the test.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	// Start the browser now, so that a Chromium that cannot start fails here, saying so.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", chromiumPath, err)
	}
	return ctx
}
