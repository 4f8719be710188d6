package integration

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"dkebpf/collector/route"
)

// routeRequest is one request of the route mix and the route template its points must carry.
type routeRequest struct {
	method, target, template string
	status                   int
}

// routeMix asks for users by number, orders by UUID, files by hash, a user by email, a reset link by token
// and a fixed path, so each template gathers many raw paths.
func routeMix() []routeRequest {
	var reqs []routeRequest
	for i := 1; i <= 30; i++ {
		reqs = append(reqs, routeRequest{"GET", fmt.Sprintf("/users/%d", i*7919), "/users/{id}", 200})
	}
	reqs = append(reqs, routeRequest{"GET", "/users/42?session=s3cr3t", "/users/{id}", 200})
	for i := range 8 {
		uuid := fmt.Sprintf("%08x-4f89-11d3-9a0c-%012x", 0x3f2504e0+i, 0x0305e82c3301+i)
		reqs = append(reqs, routeRequest{"GET", "/orders/" + uuid, "/orders/{uuid}", 200})
		if i%3 == 0 {
			reqs = append(reqs, routeRequest{"POST", "/orders/" + strings.ToUpper(uuid) + "/items", "/orders/{uuid}/items", 201})
		}
	}
	for i := range 4 {
		hash := fmt.Sprintf("%064x", uint64(0xe3b0c44298fc1c14)+uint64(i))
		reqs = append(reqs, routeRequest{"GET", "/files/" + hash + ".tar.gz", "/files/{hash}.tar.gz", 200})
	}
	reqs = append(reqs,
		routeRequest{"GET", "/users/alice@example.com/profile", "/users/{email}/profile", 200},
		routeRequest{"GET", "/reset/Xy7kP2qLm9Rt4Vw8Zb3N", "/reset/{token}", 404},
	)
	for range 5 {
		reqs = append(reqs, routeRequest{"GET", "/health", "/health", 200})
	}
	return reqs
}

// routeIDs are the raw identifiers of reqs that a rule recognises, none of which may reach the store.
func routeIDs(reqs []routeRequest) []string {
	var ids []string
	for _, r := range reqs {
		path, _, _ := strings.Cut(r.target, "?")
		for i, seg := range strings.Split(path, "/") {
			if tseg := strings.Split(r.template, "/")[i]; strings.HasPrefix(tseg, "{") && tseg != route.Param {
				ids = append(ids, strings.TrimSuffix(seg, ".tar.gz"))
			}
		}
	}
	return ids
}

// teamPaths are n paths of distinct teams (from the first'th), which no rule makes a placeholder: a host's
// position with more than route.MaxLiterals of them is learned to be {param}.
func teamPaths(first, n int) []routeRequest {
	var reqs []routeRequest
	for i := first; i < first+n; i++ {
		reqs = append(reqs, routeRequest{"GET", fmt.Sprintf("/teams/team-%c%c/members", 'a'+i/26, 'a'+i%26), "/teams/{param}/members", 200})
	}
	return reqs
}

// A request path is reported as its route template: numbers, UUIDs, hashes, email addresses and tokens
// become placeholders, and the position of a host's paths that took more than route.MaxLiterals distinct
// teams is learned to be {param}. Taught first on one server (60 teams), the collector reports a mix of ~70
// distinct paths to another port of the same host (learning is per host, as the catalogue's api_host) as 8
// endpoints, counted exactly on both sides, and no raw identifier is stored.
func TestHTTPFlowReportsRouteTemplates(t *testing.T) {
	a := startAgent(t, `  l7net_enabled = ["httpflow"]`)
	teach := teamPaths(0, route.MaxLiterals+10)
	runRoutes(t, teach)
	a.waitFor("the collector to learn /teams/{param}", max(30*time.Second, 10*interval), func() bool {
		p, ok := latestSelfPoint(a)
		n, _ := p.Fields["httpflow_routes_learned"].(int64)
		return ok && n == 1
	})

	reqs := append(routeMix(), append(teamPaths(len(teach), 20), teamPaths(0, 5)...)...)
	port, ex := runRoutes(t, reqs)
	for i := range ex {
		ex[i].target = reqs[i].template // the truth is by template: what each point's path must be
	}
	truth := goExchangesTruth(port, selfComm(t), ex)
	if len(truth.want) != 2*8 {
		t.Fatalf("harness: %d keys of truth, want 8 templates on 2 sides", len(truth.want))
	}
	settleHTTPFlows(t, a, "route templates", truth)

	ids := routeIDs(reqs)
	for _, p := range a.query("httpflow", "15m") {
		path := fmt.Sprint(p.Fields["path"])
		for _, id := range ids {
			if strings.Contains(path, id) {
				t.Errorf("stored httpflow point carries the raw identifier %q in path %q", id, path)
			}
		}
	}
}

// runRoutes sends reqs with Go's client to a Go server of their statuses, on a port of its own, and returns
// the port and the exchanges as the client saw them.
func runRoutes(t *testing.T, reqs []routeRequest) (int, []goExchange) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	must(t, err)
	srvCnt := &counted{}
	srv := &http.Server{ReadHeaderTimeout: time.Minute, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		status := http.StatusOK
		switch {
		case strings.HasPrefix(r.URL.Path, "/reset/"):
			status = http.StatusNotFound
		case r.Method == http.MethodPost:
			status = http.StatusCreated
		}
		body := "ok\n"
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.WriteHeader(status)
		io.WriteString(w, body)
	})}
	go srv.Serve(&tallyListener{Listener: l, cnt: srvCnt})
	t.Cleanup(func() { srv.Close() })
	port := l.Addr().(*net.TCPAddr).Port

	cli, dials := &counted{}, &atomic.Int64{}
	c := &http.Client{Transport: goClientTransport(cli, dials, true), Timeout: max(30*time.Second, 10*interval)}
	var goReqs []goRequest
	for _, r := range reqs {
		body := ""
		if r.method == http.MethodPost {
			body = `{"sku":"a-1","n":2}`
		}
		goReqs = append(goReqs, goRequest{r.method, r.target, body, r.status})
	}
	ex := runGoHTTPClient(t, c, cli, fmt.Sprintf("127.0.0.1:%d", port), goReqs)
	if cli.wrote.Load() != srvCnt.read.Load() || cli.read.Load() != srvCnt.wrote.Load() {
		t.Fatalf("harness: the client wrote %d and read %d bytes, the server read %d and wrote %d",
			cli.wrote.Load(), cli.read.Load(), srvCnt.read.Load(), srvCnt.wrote.Load())
	}
	return port, ex
}
