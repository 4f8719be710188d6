// Package apicat is the API catalogue: every API this host calls, per (service host, method, route), with
// its count, status classes, latency mean and p99 and when it was first and last seen, made from httpflow's
// outgoing exchanges (api_endpoint points); and a table of known APIs (host patterns → service, as Metrist's
// catalogue) that names the service behind a host and is extensible from config. A host the table does not
// know, called over TLS, is reported once as a log event (unknown_api).
package apicat

import (
	"fmt"
	"math/rand/v2"
	"net"
	"path"
	"slices"
	"time"

	"dkebpf/collector/point"
	"dkebpf/collector/route"
	"dkebpf/options"
)

// Measurements.
const (
	Endpoint = "api_endpoint"
	Unknown  = "unknown_api"
)

// Bounds.
const (
	// MaxEndpoints bounds the endpoints remembered (for first_seen) at once; the exchanges of further ones are
	// counted in Stats.Dropped until older ones expire.
	MaxEndpoints = 10000
	// Expiry: an endpoint not called for this long is forgotten (its first_seen starts again).
	Expiry = time.Hour
	// MaxUnknownHosts bounds the unknown hosts remembered as reported: one more is reported again only after
	// the set is full and cleared.
	MaxUnknownHosts = 10000
	// Samples is how many latencies per endpoint and interval the p99 is exact over; beyond, it is the p99 of
	// a uniform sample of that many.
	Samples = 1024
)

// Service names the API behind the hosts its pattern matches (path.Match: "*" matches any run of characters,
// dots included: "*.s3.amazonaws.com").
type Service struct {
	Pattern, Name string
}

// ParseService reads one "host-pattern=service" entry of api_services (options.APIService checks it).
func ParseService(entry string) (Service, error) {
	p, name, err := options.APIService(entry)
	return Service{p, name}, err
}

// ParseServices reads the entries of api_services.
func ParseServices(entries []string) ([]Service, error) {
	var out []Service
	for _, e := range entries {
		s, err := ParseService(e)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// Exchange is one HTTP exchange this host made as a client.
type Exchange struct {
	Host      string // the request's Host header ("" or "N/A": none)
	Method    string
	Route     string // the path as its route template
	Status    uint16
	LatencyNs uint64
	TLS       bool
	Process   string
	Pid       uint32
}

// Stats are the catalogue's cumulative counts.
type Stats struct {
	Dropped  uint64 // exchanges of endpoints beyond MaxEndpoints
	NoHost   uint64 // exchanges without a Host header: not an API by name
	Unknowns uint64 // unknown_api events made
}

// Catalogue accumulates exchanges into api_endpoint points and unknown_api events. Not safe for concurrent use.
type Catalogue struct {
	services  []Service // the user's first, then the known ones
	endpoints map[endpointKey]*endpoint
	reported  map[string]bool // unknown hosts already reported
	unknowns  []point.Point   // unknown_api events not yet flushed
	rng       *rand.Rand
	routes    *route.Learner // nil: routes are not learned
	stats     Stats
}

type endpointKey struct{ host, method, route string }

type endpoint struct {
	service     string
	first, last time.Time
	// This interval's:
	count     uint64
	classes   [6]uint64 // by status class: 1xx … 5xx (index 1–5), others at 0
	latSum    uint64
	latencies []uint64
}

// New returns an empty catalogue that names services by the user's table, then the known one. With routes,
// an endpoint whose route is learned to have a variable joins its learned template's at the next flush.
func New(user []Service, routes *route.Learner) *Catalogue {
	return &Catalogue{
		services:  append(slices.Clone(user), Known...),
		endpoints: map[endpointKey]*endpoint{},
		reported:  map[string]bool{},
		rng:       rand.New(rand.NewPCG(1, 2)),
		routes:    routes,
	}
}

// Service returns the name of the service behind host (lower case, no port), "" when no pattern matches.
func (c *Catalogue) Service(host string) string {
	for _, s := range c.services {
		if ok, _ := path.Match(s.Pattern, host); ok {
			return s.Name
		}
	}
	return ""
}

// Add counts one exchange, seen at now.
func (c *Catalogue) Add(e Exchange, now time.Time) {
	host := route.Host(e.Host)
	if host == "" {
		c.stats.NoHost++
		return
	}
	k := endpointKey{host, e.Method, e.Route}
	ep := c.endpoints[k]
	if ep == nil {
		if len(c.endpoints) >= MaxEndpoints {
			c.stats.Dropped++
			return
		}
		service := c.Service(host)
		ep = &endpoint{service: service, first: now}
		c.endpoints[k] = ep
		if service == "" && e.TLS {
			c.reportUnknown(host, e, now)
		}
	}
	ep.last = now
	ep.count++
	ep.classes[statusClass(e.Status)]++
	ep.latSum += e.LatencyNs
	if len(ep.latencies) < Samples {
		ep.latencies = append(ep.latencies, e.LatencyNs)
	} else if i := c.rng.Uint64N(ep.count); i < Samples { // reservoir: each exchange kept with equal odds
		ep.latencies[i] = e.LatencyNs
	}
}

// reportUnknown makes the unknown_api event of host, once. A host named by its address is not an API by
// name and is not reported.
func (c *Catalogue) reportUnknown(host string, e Exchange, now time.Time) {
	if c.reported[host] || net.ParseIP(host) != nil {
		return
	}
	if len(c.reported) >= MaxUnknownHosts {
		clear(c.reported)
	}
	c.reported[host] = true
	c.stats.Unknowns++
	c.unknowns = append(c.unknowns, point.Point{Name: Unknown, Time: now,
		Tags: map[string]string{"api_host": host, "process_name": e.Process, "status": "info"},
		Fields: map[string]any{
			"message": fmt.Sprintf("unknown API %s called over TLS by %s (pid %d): %s %s", host, e.Process, e.Pid, e.Method, e.Route),
			"method":  e.Method, "route": e.Route, "pid": int64(e.Pid),
		}})
}

// FlushEndpoints returns the interval's api_endpoint points (endpoints called in it), stamped at now, and
// forgets the endpoints not called for Expiry.
func (c *Catalogue) FlushEndpoints(now time.Time) []point.Point {
	c.relearn()
	var pts []point.Point
	for k, ep := range c.endpoints {
		if ep.count == 0 {
			if now.Sub(ep.last) > Expiry {
				delete(c.endpoints, k)
			}
			continue
		}
		service := ep.service
		if service == "" {
			service = "N/A"
		}
		f := map[string]any{
			"count":        int64(ep.count),
			"latency_mean": int64(ep.latSum / ep.count),
			"latency_p99":  int64(p99(ep.latencies)),
			"error_rate":   float64(ep.classes[4]+ep.classes[5]) / float64(ep.count),
			"first_seen":   ep.first.UnixMilli(),
			"last_seen":    ep.last.UnixMilli(),
		}
		for class := 1; class <= 5; class++ {
			f[fmt.Sprintf("status_%dxx", class)] = int64(ep.classes[class])
		}
		pts = append(pts, point.Point{Name: Endpoint, Time: now, Fields: f, Tags: map[string]string{
			"api_host": k.host, "method": k.method, "route": k.route, "service": service, "check": k.method + " " + k.route,
		}})
		ep.count, ep.latSum, ep.classes = 0, 0, [6]uint64{}
		ep.latencies = ep.latencies[:0]
		if cap(ep.latencies) > 64 {
			ep.latencies = nil // a busy interval's samples (up to 8 KiB) are not kept for the next one
		}
	}
	return pts
}

// relearn moves the endpoints whose route was learned to have a variable into their learned template's.
func (c *Catalogue) relearn() {
	if c.routes == nil {
		return
	}
	for k, ep := range c.endpoints {
		r := c.routes.Apply(k.host, k.route)
		if r == k.route {
			continue
		}
		delete(c.endpoints, k)
		k.route = r
		to := c.endpoints[k]
		if to == nil {
			c.endpoints[k] = ep
			continue
		}
		if ep.first.Before(to.first) {
			to.first = ep.first
		}
		if ep.last.After(to.last) {
			to.last = ep.last
		}
		to.count += ep.count
		for i := range to.classes {
			to.classes[i] += ep.classes[i]
		}
		to.latSum += ep.latSum
		// The p99 of the joined samples: exact while they fit, else of the first Samples of them.
		to.latencies = append(to.latencies, ep.latencies[:min(len(ep.latencies), Samples-len(to.latencies))]...)
	}
}

// FlushUnknown returns the unknown_api events made since the last call.
func (c *Catalogue) FlushUnknown() []point.Point {
	out := c.unknowns
	c.unknowns = nil
	return out
}

// Stats returns the catalogue's counts.
func (c *Catalogue) Stats() Stats { return c.stats }

func statusClass(s uint16) int {
	if s >= 100 && s < 600 {
		return int(s / 100)
	}
	return 0
}

// p99 is the nearest-rank 99th percentile of v (reordered).
func p99(v []uint64) uint64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	rank := (len(v)*99 + 99) / 100 // ceil(0.99 n)
	return v[rank-1]
}
