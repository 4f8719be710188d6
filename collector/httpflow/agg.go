// Package httpflow turns the kernel's paired HTTP/1.x exchanges (struct hf_event) into DataKit's httpflow
// points: decode, parse the captured request line and Host header, aggregate per interval.
//
// Points carry netflow's tags for the same socket (flow.Key.Tags) plus HostTag, the request's Host
// header ("N/A" without one); fields are DataKit's (ref §3.3) with these differences: bytes_read/bytes_written
// are whole message sizes seen from the local side and never swapped, truncated says that a request line did
// not fit in the capture, and paths_folded appears on folded points (below).
//
// Path cap: an interval keeps at most Config.MaxPaths distinct paths per (pid, process_name, Host header). Exchanges
// with a further path are aggregated with path "*" and the same key otherwise; such a point carries the field
// paths_folded, the number of distinct paths folded into it (exact up to maxFoldTracked distinct folded paths
// per interval, an upper bound beyond). Points that folded nothing do not carry the field. A path admitted
// earlier in the interval keeps being reported under its own name.
package httpflow

import (
	"dkebpf/collector/flow"

	"hash/maphash"
	"time"

	"dkebpf/collector/apicat"
	"dkebpf/collector/h2"
	"dkebpf/collector/point"
	"dkebpf/collector/route"
)

// HostTag is the tag that carries the request's Host header. Not "host": every point already carries the
// global tag host (the machine, cli.GlobalTags), and a point's own tag would replace it in the encoder.
const HostTag = "http_host"

// DefaultMaxPaths is Config.MaxPaths when it is 0.
const DefaultMaxPaths = 500

// FoldedPath is the path of the points that exchanges beyond the path cap are aggregated into.
const FoldedPath = "*"

// maxFoldTracked bounds the memory spent counting distinct folded paths in one interval.
const maxFoldTracked = 1 << 15

// Config is what the user can set about httpflow.
type Config struct {
	EphemeralPort uint16      // the client's port at or above it is aggregated as "*" (as in netflow)
	Filter        flow.Filter // what the user chose not to see
	MaxPaths      int         // distinct paths per (pid, process_name, host) per interval; 0: DefaultMaxPaths
	NAT           flow.NAT    // names the DNAT target of outgoing connections; nil: dst_nat_ip is N/A
	// Catalogue, when set, is handed every exchange this host made as a client (the API catalogue).
	Catalogue *apicat.Catalogue
	// Routes, when set, learns the positions of each host's paths that vary, and points carry the learned
	// templates (route.Learner); the catalogue should share it.
	Routes *route.Learner
}

// Stats counts the exchanges Add did not report under their own key, since the Aggregator was created
// (cumulative: Flush does not reset them).
type Stats struct {
	Ignored    uint64 // filtered: remote address in IgnoreCIDRs, IPv6 while disabled, a datakit* process
	Unparsable uint64 // not what DataKit reports: method, request-target or version; or no valid status or direction
	NoAddress  uint64 // no connection address (a TLS exchange whose socket was not seen)
	Folded     uint64 // reported with path "*" because of the path cap (these are still reported)
}

// Aggregator accumulates one interval of exchanges into httpflow points. It is not safe for concurrent use.
type Aggregator struct {
	cfg      Config
	maxPaths int
	parse    parseCache
	comms    flow.CommNames

	points      map[key]*acc
	paths       map[pathOwner]map[string]struct{} // paths admitted this interval
	foldSeed    maphash.Seed
	foldTracked int // folded path hashes kept this interval, over all points

	stats Stats
}

// key is DataKit's httpflow aggregation key (ref §3.3) plus the Host header.
type key struct {
	flow                  flow.Key
	host                  string
	method, path, version string
	status                uint16
	grpc                  int32 // grpc-status, noGRPC without one
}

// pathOwner is what the path cap counts paths per.
type pathOwner struct {
	pid           uint32
	process, host string
}

type acc struct {
	count, latencySum   uint64
	reqBytes, respBytes uint64
	truncated           bool
	folded              map[uint64]struct{} // hashes of the distinct paths folded into this point
	foldedN             uint64              // distinct paths folded (len(folded) plus untracked ones)
}

// NewAggregator returns an empty Aggregator.
func NewAggregator(cfg Config) *Aggregator {
	a := &Aggregator{
		cfg:      cfg,
		maxPaths: cfg.MaxPaths,
		parse:    newParseCache(),
		comms:    flow.CommNames{},
		points:   map[key]*acc{},
		paths:    map[pathOwner]map[string]struct{}{},
		foldSeed: maphash.MakeSeed(),
	}
	if a.maxPaths <= 0 {
		a.maxPaths = DefaultMaxPaths
	}
	return a
}

const (
	afInet  = 2
	afInet6 = 10
)

// Add aggregates one exchange, or counts why it is not reported.
func (a *Aggregator) Add(e Event) {
	if e.Dir != DirOut && e.Dir != DirIn || e.Status < 100 || e.Status > 999 {
		a.stats.Unparsable++
		return
	}
	fk, process, ok := a.flowKey(e.T, e.Dir, e.Pid, e.Comm, e.Mntns, e.Netns)
	if !ok {
		return
	}
	req, ok := a.parse.request(e.Req[:min(int(e.ReqLen), ReqLen)], e.Flags&FlagReqSplit != 0)
	if !ok {
		a.stats.Unparsable++
		return
	}
	a.add(fk, process, exchange{req: req, host: a.parse.host(e.Host[:min(int(e.HostLen), HostLen)]),
		status: e.Status, grpc: noGRPC, tls: e.Flags&FlagTLS != 0, pid: e.Pid,
		latencyNs: e.LatencyNs, reqBytes: e.ReqBytes, respBytes: e.RespBytes})
}

// AddH2 aggregates one HTTP/2 exchange of the session that r belongs to, or counts why it is not reported.
func (a *Aggregator) AddH2(r *H2Record, x h2.Exchange) {
	dir := uint8(DirIn)
	if x.Client {
		dir = DirOut
	}
	if x.Status < 100 || x.Status > 999 {
		a.stats.Unparsable++
		return
	}
	fk, process, ok := a.flowKey(r.T, dir, r.Pid, r.Comm, r.Mntns, r.Netns)
	if !ok {
		return
	}
	req, ok := a.parse.h2Request(x.Method, x.Path)
	if !ok {
		a.stats.Unparsable++
		return
	}
	grpc := int32(noGRPC)
	if x.GRPCStatus >= 0 {
		grpc = int32(x.GRPCStatus)
	}
	a.add(fk, process, exchange{req: req, host: a.parse.host([]byte(x.Authority)), status: uint16(x.Status),
		grpc: grpc, tls: true, pid: r.Pid, latencyNs: x.LatencyNs, reqBytes: x.ReqBytes, respBytes: x.RespBytes})
}

// flowKey is netflow's key of an exchange's connection; ok is false (and counted) when it is not reported.
func (a *Aggregator) flowKey(t flow.Tuple, dir uint8, pid uint32, comm [16]byte, mntns, netns uint32) (fk flow.Key, process string, ok bool) {
	if t.Family != afInet && t.Family != afInet6 {
		a.stats.NoAddress++
		return fk, "", false
	}
	process = a.comms.Name(comm)
	if flow.OwnProcess(process) { // do not report our own POSTs
		a.stats.Ignored++
		return fk, "", false
	}
	fk = flow.NewKey(t, dir, a.cfg.EphemeralPort, flow.Proc{Pid: pid, Comm: process, Mntns: mntns}, netns)
	fk.Transport = "tcp"
	if a.cfg.Filter.Ignores(fk) {
		a.stats.Ignored++
		return fk, "", false
	}
	fk.SetNAT(t, a.cfg.NAT)
	return fk, process, true
}

// noGRPC is exchange.grpc when the response carried no grpc-status.
const noGRPC = -1

// exchange is what the aggregator keeps of one exchange, HTTP/1.x or HTTP/2.
type exchange struct {
	req                 Request
	host                string
	status              uint16
	grpc                int32
	tls                 bool
	pid                 uint32
	latencyNs           uint64
	reqBytes, respBytes uint64
}

func (a *Aggregator) add(fk flow.Key, process string, x exchange) {
	if x.host == "" {
		x.host = "N/A"
	}
	req := x.req
	if a.cfg.Routes != nil {
		req.Path = a.cfg.Routes.Learn(x.host, req.Path)
	}
	if a.cfg.Catalogue != nil && fk.Direction == "outgoing" {
		a.cfg.Catalogue.Add(apicat.Exchange{Host: x.host, Method: req.Method, Route: req.Path, Status: x.status,
			LatencyNs: x.latencyNs, TLS: x.tls, Process: process, Pid: x.pid}, time.Now())
	}
	k := key{flow: fk, host: x.host, method: req.Method, path: req.Path, version: req.Version, status: x.status, grpc: x.grpc}
	folded := a.admit(pathOwner{x.pid, process, x.host}, req.Path)
	if folded {
		k.path = FoldedPath
		a.stats.Folded++
	}
	p := a.points[k]
	if p == nil {
		p = &acc{}
		a.points[k] = p
	}
	p.count++
	p.latencySum += x.latencyNs
	p.reqBytes += x.reqBytes
	p.respBytes += x.respBytes
	p.truncated = p.truncated || req.Truncated
	if folded {
		a.countFolded(p, req.Path)
	}
}

// admit applies the path cap: it reports whether path must be folded into "*".
func (a *Aggregator) admit(o pathOwner, path string) (fold bool) {
	set := a.paths[o]
	if set == nil {
		set = map[string]struct{}{}
		a.paths[o] = set
	}
	if _, ok := set[path]; ok {
		return false
	}
	if len(set) >= a.maxPaths {
		return true
	}
	set[path] = struct{}{}
	return false
}

func (a *Aggregator) countFolded(p *acc, path string) {
	h := maphash.String(a.foldSeed, path)
	if _, ok := p.folded[h]; ok {
		return
	}
	p.foldedN++
	if a.foldTracked >= maxFoldTracked {
		return // untracked: seen again, it counts again (paths_folded becomes an upper bound)
	}
	if p.folded == nil {
		p.folded = map[uint64]struct{}{}
	}
	p.folded[h] = struct{}{}
	a.foldTracked++
}

// Flush returns the interval's httpflow points, stamped at now, and starts a new interval.
func (a *Aggregator) Flush(now time.Time) []point.Point {
	a.relearn()
	pts := make([]point.Point, 0, len(a.points))
	for k, p := range a.points {
		tags := k.flow.Tags()
		tags[HostTag] = k.host
		pts = append(pts, point.Point{Name: "httpflow", Tags: tags, Fields: p.fields(k), Time: now, Mntns: k.flow.Mntns})
	}
	a.points = map[key]*acc{}
	a.paths = map[pathOwner]map[string]struct{}{}
	a.foldTracked = 0
	return pts
}

// relearn moves the points whose path was learned to have a variable after they were added (earlier in the
// interval) to their learned template's point.
func (a *Aggregator) relearn() {
	if a.cfg.Routes == nil {
		return
	}
	for k, p := range a.points {
		path := a.cfg.Routes.Apply(k.host, k.path)
		if path == k.path {
			continue
		}
		delete(a.points, k)
		k.path = path
		if q := a.points[k]; q != nil {
			q.count += p.count
			q.latencySum += p.latencySum
			q.reqBytes += p.reqBytes
			q.respBytes += p.respBytes
			q.truncated = q.truncated || p.truncated
		} else {
			a.points[k] = p
		}
	}
}

// Stats returns the counters of exchanges not reported under their own key.
func (a *Aggregator) Stats() Stats { return a.stats }

func (p *acc) fields(k key) map[string]any {
	// The local side wrote the request as a client, the response as a server.
	written, read := p.reqBytes, p.respBytes
	if k.flow.Direction == "incoming" {
		written, read = p.respBytes, p.reqBytes
	}
	f := map[string]any{
		"method":        k.method,
		"path":          k.path,
		"status_code":   int64(k.status),
		"http_version":  k.version,
		"latency":       int64(p.latencySum / p.count),
		"count":         int64(p.count),
		"bytes_written": int64(written),
		"bytes_read":    int64(read),
		"client_sent":   int64(p.reqBytes),
		"server_sent":   int64(p.respBytes),
		"truncated":     p.truncated,
	}
	if p.foldedN > 0 {
		f["paths_folded"] = int64(p.foldedN)
	}
	if k.grpc != noGRPC {
		f["grpc_status"] = int64(k.grpc)
	}
	return f
}
