package httpflow

import (
	"dkebpf/collector/flow"
	"reflect"

	"bytes"
	"fmt"
	"maps"
	"net/netip"
	"testing"
	"time"

	"dkebpf/collector/h2"
	"dkebpf/collector/point"
	"dkebpf/collector/route"
)

// ev builds an exchange seen on the socket local:lport -> remote:rport.
func ev(t testing.TB, dir uint8, local string, lport uint16, remote string, rport uint16, req, host string) Event {
	t.Helper()
	l, r := netip.MustParseAddr(local), netip.MustParseAddr(remote)
	e := Event{Dir: dir, Status: 200, Pid: 42, Netns: 4026531840, LatencyNs: 1000, ReqBytes: 100, RespBytes: 1000}
	e.T.Sport, e.T.Dport, e.T.Proto, e.T.Family = lport, rport, 6, afInet
	if l.Is4() {
		a, b := l.As4(), r.As4()
		copy(e.T.Saddr[:], a[:])
		copy(e.T.Daddr[:], b[:])
	} else {
		e.T.Family, e.T.Saddr, e.T.Daddr = afInet6, l.As16(), r.As16()
	}
	copy(e.Comm[:], "curl")
	e.ReqLen = uint8(copy(e.Req[:], req))
	e.HostLen = uint8(copy(e.Host[:], host))
	return e
}

func client(t testing.TB, req string) Event {
	return ev(t, DirOut, "10.0.0.1", 40000, "10.0.0.2", 8080, req, " api.test:8080\r\nAccept: */*\r\n")
}

func server(t testing.TB, req string) Event {
	e := ev(t, DirIn, "10.0.0.2", 8080, "10.0.0.1", 40000, req, " api.test:8080\r\n")
	copy(e.Comm[:], "nginx")
	return e
}

func flushAll(a *Aggregator) []point.Point { return a.Flush(time.Unix(100, 0)) }

func one(t *testing.T, pts []point.Point) point.Point {
	t.Helper()
	if len(pts) != 1 {
		t.Fatalf("got %d points, want 1: %v", len(pts), pts)
	}
	return pts[0]
}

func checkFields(t *testing.T, p point.Point, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if p.Fields[k] != v {
			t.Errorf("field %s = %#v, want %#v (all: %v)", k, p.Fields[k], v, p.Fields)
		}
	}
}

func checkTags(t *testing.T, p point.Point, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got, ok := p.Tags[k]; !ok || got != v {
			t.Errorf("tag %s = %q (present %v), want %q (all: %v)", k, got, ok, v, p.Tags)
		}
	}
}

const get = "GET /api/users?id=7 HTTP/1.1\r\nHost: api.test:8080\r\n"

func TestSameKeySumsCountAndBytesAndAveragesLatency(t *testing.T) {
	a := NewAggregator(Config{})
	for i, lat := range []uint64{1000, 2000, 6000} {
		e := client(t, get)
		e.LatencyNs, e.ReqBytes, e.RespBytes = lat, uint64(100+i), uint64(1000*(i+1))
		e.T.Sport = uint16(40000 + i) // other connections of the same client: ephemeral port aggregated
		a.Add(e)
	}
	checkFields(t, one(t, flushAll(a)), map[string]any{
		"count": int64(3), "latency": int64(3000),
		"bytes_written": int64(303), "bytes_read": int64(6000),
		"method": "GET", "path": "/api/users", "status_code": int64(200), "http_version": "1.1", "truncated": false,
	})
}

func TestDifferentStatusMethodOrPathMakesAnotherPoint(t *testing.T) {
	a := NewAggregator(Config{})
	a.Add(client(t, get))
	e := client(t, get)
	e.Status = 404
	a.Add(e)
	a.Add(client(t, "POST /api/users HTTP/1.1\r\n"))
	a.Add(client(t, "GET /api/other HTTP/1.1\r\n"))
	a.Add(client(t, "GET /api/users HTTP/1.0\r\n"))
	if pts := flushAll(a); len(pts) != 5 {
		t.Errorf("got %d points, want 5: %v", len(pts), pts)
	}
}

func TestClientAndServerSidesMapBytesByWhoSentTheRequest(t *testing.T) {
	for _, tc := range []struct {
		name      string
		e         Event
		direction string
		side      string
		want      map[string]any
	}{
		{"client wrote the request", client(t, get), "outgoing", "client", map[string]any{
			"bytes_written": int64(100), "bytes_read": int64(1000), "client_sent": int64(100), "server_sent": int64(1000)}},
		{"server read the request", server(t, get), "incoming", "server", map[string]any{
			"bytes_written": int64(1000), "bytes_read": int64(100), "client_sent": int64(100), "server_sent": int64(1000)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := NewAggregator(Config{})
			a.Add(tc.e)
			a.Add(tc.e) // the first exchange of a key is not special (DataKit swaps its bytes)
			p := one(t, flushAll(a))
			for k, v := range tc.want {
				tc.want[k] = 2 * v.(int64)
			}
			checkFields(t, p, tc.want)
			checkTags(t, p, map[string]string{"direction": tc.direction, "conn_side": tc.side})
		})
	}
}

func TestTagsAreNetflowsPlusTheHostHeader(t *testing.T) {
	for _, tc := range []struct {
		name string
		e    Event
		want map[string]string
	}{
		{"client", client(t, get), map[string]string{
			"family": "IPv4", "transport": "tcp", "direction": "outgoing",
			"src_ip": "10.0.0.1", "dst_ip": "10.0.0.2", "src_port": "*", "dst_port": "8080",
			"src_ip_type": "private", "dst_ip_type": "private", "pid": "42", "process_name": "curl",
			"netns": "4026531840", "dst_nat_ip": "N/A", "dst_nat_port": "N/A", "conn_side": "client",
			"client_ip": "10.0.0.1", "client_port": "*", "client_ip_type": "private",
			"server_ip": "10.0.0.2", "server_port": "8080", "server_ip_type": "private",
			HostTag: "api.test:8080"}},
		{"server on IPv6 loopback", ev(t, DirIn, "::1", 80, "::1", 51000, get, " Localhost\r\n"), map[string]string{
			"family": "IPv6", "transport": "tcp", "direction": "incoming",
			"src_ip": "::1", "dst_ip": "::1", "src_port": "80", "dst_port": "*",
			"src_ip_type": "loopback", "dst_ip_type": "loopback", "pid": "42", "process_name": "curl",
			"netns": "4026531840", "dst_nat_ip": "N/A", "dst_nat_port": "N/A", "conn_side": "server",
			"client_ip": "::1", "client_port": "*", "client_ip_type": "loopback",
			"server_ip": "::1", "server_port": "80", "server_ip_type": "loopback",
			HostTag: "localhost"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := NewAggregator(Config{})
			a.Add(tc.e)
			p := one(t, flushAll(a))
			if !maps.Equal(p.Tags, tc.want) {
				t.Errorf("tags:\n got %v\nwant %v", p.Tags, tc.want)
			}
			if p.Name != "httpflow" || !p.Time.Equal(time.Unix(100, 0)) {
				t.Errorf("point %q at %v, want httpflow at the flush time", p.Name, p.Time)
			}
		})
	}
}

func TestHostTagIsNAWithoutAHostHeader(t *testing.T) {
	for _, host := range []string{"", " \r\n", " bad host\r\n"} {
		a := NewAggregator(Config{})
		a.Add(ev(t, DirOut, "10.0.0.1", 40000, "10.0.0.2", 80, "GET / HTTP/1.0\r\n\r\n", host))
		checkTags(t, one(t, flushAll(a)), map[string]string{HostTag: "N/A"})
	}
}

func TestEphemeralPortOnlyAggregatesTheClientsPort(t *testing.T) {
	for _, tc := range []struct {
		name      string
		ephemeral uint16
		e         Event
		src, dst  string
	}{
		{"default 0: client port always *", 0, ev(t, DirOut, "10.0.0.1", 1000, "10.0.0.2", 80, get, ""), "*", "80"},
		{"client port above the limit", 32768, ev(t, DirOut, "10.0.0.1", 40000, "10.0.0.2", 80, get, ""), "*", "80"},
		{"client port below the limit", 32768, ev(t, DirOut, "10.0.0.1", 1000, "10.0.0.2", 80, get, ""), "1000", "80"},
		{"server: the remote client's port", 32768, ev(t, DirIn, "10.0.0.2", 80, "10.0.0.1", 40000, get, ""), "80", "*"},
		{"server port itself is never *", 0, ev(t, DirIn, "10.0.0.2", 40001, "10.0.0.1", 40000, get, ""), "40001", "*"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := NewAggregator(Config{EphemeralPort: tc.ephemeral})
			a.Add(tc.e)
			checkTags(t, one(t, flushAll(a)), map[string]string{"src_port": tc.src, "dst_port": tc.dst})
		})
	}
}

func TestFilteredExchangesAreDroppedAndCounted(t *testing.T) {
	datakit := client(t, get)
	copy(datakit.Comm[:], "datakit-ebpf\x00")
	dk := client(t, get)
	copy(dk.Comm[:], "datakit")
	v6 := ev(t, DirOut, "fd00::1", 40000, "fd00::2", 80, get, "")
	mapped := ev(t, DirOut, "::ffff:10.0.0.1", 40000, "::ffff:10.0.0.2", 80, get, "")
	mapped.T.Family = afInet6
	ignored := ev(t, DirOut, "10.0.0.1", 40000, "192.168.1.9", 80, get, "")
	localIgnored := ev(t, DirOut, "192.168.1.9", 40000, "10.0.0.2", 80, get, "") // only the remote address counts

	a := NewAggregator(Config{Filter: flow.Filter{IPv6Disabled: true, IgnoreCIDRs: []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16")}}})
	for _, e := range []Event{datakit, dk, v6, ignored, mapped, localIgnored} {
		a.Add(e)
	}
	pts := flushAll(a)
	if len(pts) != 2 {
		t.Fatalf("got %d points, want the IPv4-mapped and the locally-ignored ones: %v", len(pts), pts)
	}
	for _, p := range pts {
		if p.Tags["family"] != "IPv4" || p.Tags["dst_ip"] == "192.168.1.9" {
			t.Errorf("unexpected point %v", p.Tags)
		}
	}
	if s := a.Stats(); s.Ignored != 4 || s.Unparsable != 0 {
		t.Errorf("stats %+v, want 4 ignored", s)
	}
}

func TestUnreportableExchangesAreCounted(t *testing.T) {
	noDir := client(t, get)
	noDir.Dir = 0
	noStatus := client(t, get)
	noStatus.Status = 0
	noSocket := client(t, get)
	noSocket.T = flow.Tuple{} // a TLS session whose socket was not seen
	a := NewAggregator(Config{})
	for _, e := range []Event{client(t, "TRACE / HTTP/1.1\r\n"), client(t, "OPTIONS * HTTP/1.1\r\n"), noDir, noStatus, noSocket} {
		a.Add(e)
	}
	if pts := flushAll(a); len(pts) != 0 {
		t.Errorf("got points %v", pts)
	}
	if s := a.Stats(); s != (Stats{Unparsable: 4, NoAddress: 1}) {
		t.Errorf("stats %+v, want 4 unparsable, 1 without address", s)
	}
}

func TestTruncatedIsTrueWhenAnyExchangeOfThePointWasTruncated(t *testing.T) {
	a := NewAggregator(Config{})
	a.Add(client(t, "GET /a HTTP/1.1\r\n"))
	a.Add(client(t, "GET /a HTTP/1.1")) // the line end was not captured; same key
	checkFields(t, one(t, flushAll(a)), map[string]any{"truncated": true, "count": int64(2), "path": "/a"})

	split := client(t, "GET /b")
	split.Flags = FlagReqSplit
	a.Add(split)
	checkFields(t, one(t, flushAll(a)), map[string]any{"truncated": true, "path": "/b", "http_version": ""})
}

func TestPathsAreRouteTemplates(t *testing.T) {
	a := NewAggregator(Config{MaxPaths: 2})
	for _, target := range []string{"/users/1", "/users/22?tab=a", "/orders/3f2504e0-4f89-11d3-9a0c-0305e82c3301", "/users/333"} {
		a.Add(client(t, "GET "+target+" HTTP/1.1\r\n"))
	}
	got := map[any]any{}
	for _, p := range flushAll(a) {
		got[p.Fields["path"]] = p.Fields["count"]
	}
	// Two templates: within the cap of 2, nothing folded.
	if want := map[any]any{"/users/{id}": int64(3), "/orders/{uuid}": int64(1)}; !reflect.DeepEqual(got, want) {
		t.Errorf("paths and counts %v, want %v", got, want)
	}
}

// With a route learner, the positions of a host's paths that take more than route.MaxLiterals distinct
// segments become {param}: the exchanges added before that, in the same interval, join the learned point.
// The path cap counts paths as added: a position takes MaxLiterals paths of it before it is learned, then one.
func TestPathsWithALearnedVariableAreOnePoint(t *testing.T) {
	a := NewAggregator(Config{MaxPaths: route.MaxLiterals + 2, Routes: route.NewLearner()})
	n := 3 * route.MaxLiterals
	for i := range n {
		a.Add(client(t, fmt.Sprintf("GET /teams/team-%c%c/members HTTP/1.1\r\n", 'a'+i/26, 'a'+i%26)))
	}
	a.Add(client(t, "GET /health HTTP/1.1\r\n"))
	got := map[any]any{}
	for _, p := range flushAll(a) {
		got[p.Fields["path"]] = p.Fields["count"]
	}
	if want := map[any]any{"/teams/{param}/members": int64(n), "/health": int64(1)}; !reflect.DeepEqual(got, want) {
		t.Errorf("paths and counts %v, want %v", got, want)
	}
	// Learned for the intervals after.
	a.Add(server(t, "GET /teams/new-team/members HTTP/1.1\r\n"))
	if p := one(t, flushAll(a)); p.Fields["path"] != "/teams/{param}/members" {
		t.Errorf("next interval: path %v", p.Fields["path"])
	}
}

func TestPathCapFoldsFurtherDistinctPathsIntoStar(t *testing.T) {
	a := NewAggregator(Config{}) // MaxPaths 0: DefaultMaxPaths
	for i := range DefaultMaxPaths + 1 {
		a.Add(client(t, fmt.Sprintf("GET /item/p%d?x=1 HTTP/1.1\r\n", i)))
	}
	a.Add(client(t, "GET /item/p0 HTTP/1.1\r\n"))                                // admitted earlier: keeps its name
	a.Add(client(t, fmt.Sprintf("GET /item/p%d HTTP/1.1\r\n", DefaultMaxPaths))) // the same folded path again
	a.Add(client(t, "GET /item/extra HTTP/1.1\r\n"))                             // a second folded path
	other := server(t, "GET /item/extra HTTP/1.1\r\n")                           // another process: its own cap
	a.Add(other)

	pts := flushAll(a)
	if len(pts) != DefaultMaxPaths+2 {
		t.Fatalf("got %d points, want %d", len(pts), DefaultMaxPaths+2)
	}
	var star []point.Point
	for _, p := range pts {
		if p.Fields["path"] == FoldedPath {
			star = append(star, p)
			continue
		}
		if _, ok := p.Fields["paths_folded"]; ok {
			t.Errorf("point of path %v carries paths_folded", p.Fields["path"])
		}
		if p.Fields["path"] == "/item/p0" && p.Fields["count"] != int64(2) {
			t.Errorf("/item/p0 count %v, want 2", p.Fields["count"])
		}
	}
	p := one(t, star)
	checkFields(t, p, map[string]any{"count": int64(3), "paths_folded": int64(2), "method": "GET"})
	checkTags(t, p, map[string]string{"process_name": "curl", HostTag: "api.test:8080"})
	if s := a.Stats(); s.Folded != 3 {
		t.Errorf("stats %+v, want 3 folded", s)
	}

	a.Add(client(t, "GET /item/extra HTTP/1.1\r\n")) // a new interval starts with no paths
	checkFields(t, one(t, flushAll(a)), map[string]any{"path": "/item/extra"})
}

func TestPathCapCountsPerHost(t *testing.T) {
	a := NewAggregator(Config{MaxPaths: 1})
	a.Add(ev(t, DirOut, "10.0.0.1", 40000, "10.0.0.2", 80, "GET /a HTTP/1.1\r\n", " one.test\r\n"))
	a.Add(ev(t, DirOut, "10.0.0.1", 40000, "10.0.0.2", 80, "GET /b HTTP/1.1\r\n", " two.test\r\n"))
	a.Add(ev(t, DirOut, "10.0.0.1", 40000, "10.0.0.2", 80, "GET /c HTTP/1.1\r\n", " two.test\r\n"))
	paths := map[string]string{}
	for _, p := range flushAll(a) {
		paths[p.Tags[HostTag]+" "+p.Fields["path"].(string)] = fmt.Sprint(p.Fields["paths_folded"])
	}
	want := map[string]string{"one.test /a": "<nil>", "two.test /b": "<nil>", "two.test *": "1"}
	if !maps.Equal(paths, want) {
		t.Errorf("points %v, want %v", paths, want)
	}
}

func TestFlushStartsANewInterval(t *testing.T) {
	a := NewAggregator(Config{})
	a.Add(client(t, get))
	one(t, flushAll(a))
	if pts := flushAll(a); len(pts) != 0 {
		t.Errorf("second flush returned %v", pts)
	}
}

func TestPointsEncodeAsLineProtocol(t *testing.T) {
	a := NewAggregator(Config{MaxPaths: 1})
	a.Add(client(t, get))
	a.Add(client(t, "GET /caf\xc3\xa9 HTTP/1.1\r\n"))
	a.Add(client(t, "GET /\xff HTTP/1.1"))
	enc := point.NewEncoder(map[string]string{"host": "machine"})
	for _, p := range flushAll(a) {
		b, err := enc.Encode(p)
		if err != nil {
			t.Errorf("encode %v: %v", p, err)
		}
		if !bytes.Contains(b, []byte(",host=machine,")) { // the machine's global tag is not replaced
			t.Errorf("line %s lost the global host tag", b)
		}
	}
}

func BenchmarkAdd(b *testing.B) {
	a := NewAggregator(Config{})
	e := client(b, get)
	b.ReportAllocs()
	for b.Loop() {
		a.Add(e)
	}
}

func TestHTTP2ExchangesHaveVersion2AndTheirGRPCStatus(t *testing.T) {
	a := NewAggregator(Config{})
	e := client(t, get)
	r := &H2Record{T: e.T, Pid: e.Pid, Netns: e.Netns, Comm: e.Comm}
	call := h2.Exchange{Client: true, Method: "POST", Path: "/pkg.Svc/Get", Authority: "API.test:443", Status: 200, GRPCStatus: 5,
		ReqBytes: 12, RespBytes: 0, LatencyNs: 300}
	a.AddH2(r, call)
	a.AddH2(r, call)
	call.GRPCStatus = 0
	a.AddH2(r, call)
	a.AddH2(r, h2.Exchange{Client: true, Method: "GET", Path: "/users/12?x=1", Authority: "api.test", Status: 404, GRPCStatus: -1, RespBytes: 9, LatencyNs: 100})
	a.AddH2(r, h2.Exchange{Client: true, Method: "CONNECT", Path: "/", Status: 200, GRPCStatus: -1}) // not a method DataKit reports
	pts := flushAll(a)
	if len(pts) != 3 || a.Stats().Unparsable != 1 {
		t.Fatalf("got %d points (want 3), stats %+v: %v", len(pts), a.Stats(), pts)
	}
	for _, p := range pts {
		switch g, _ := p.Fields["grpc_status"].(int64); {
		case p.Fields["path"] == "/users/{id}":
			if _, ok := p.Fields["grpc_status"]; ok {
				t.Errorf("a plain HTTP/2 point has grpc_status: %v", p.Fields)
			}
			checkFields(t, p, map[string]any{"http_version": "2", "status_code": int64(404), "bytes_read": int64(9), "count": int64(1)})
			checkTags(t, p, map[string]string{HostTag: "api.test"})
		case g == 5:
			checkFields(t, p, map[string]any{"http_version": "2", "method": "POST", "path": "/pkg.Svc/Get", "count": int64(2),
				"client_sent": int64(24), "latency": int64(300)})
			checkTags(t, p, map[string]string{HostTag: "api.test:443"})
		case g == 0:
			checkFields(t, p, map[string]any{"count": int64(1)})
		default:
			t.Errorf("unexpected point %v", p.Fields)
		}
	}
}
