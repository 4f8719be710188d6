// Package sink forwards what the agent stores to time-series engines, as DataKit's `[[sinks.sink]]` do:
// InfluxDB 1.x and 2.x and VictoriaMetrics (single node, or vminsert of a cluster) over line protocol, and
// anything that takes Prometheus remote write (VictoriaMetrics, Thanos receive, Mimir, Cortex).
//
// Nothing acknowledged is lost: the store is the log and each sink keeps a cursor in it (the outbox,
// agent/store/outbox.go). A sink reads the blocks after its cursor, posts their points and moves its cursor
// only after the engine's 2xx; an engine that is down or failing is retried with backoff and jitter, for as
// long as the store keeps the points (retention by age waits for every sink; the size bound does not, and
// what it evicts undelivered is counted as the sink's loss). A batch the engine refuses as bad (a 4xx) is
// split until the bad points are alone, and those are counted and skipped.
package sink

import (
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Config is one [[sinks.sink]] of datakit.conf.
type Config struct {
	ID         string   `toml:"id"`     // name in logs and self-metrics, and of the cursor; default target-host
	Target     string   `toml:"target"` // influxdb, influxdb2, victoriametrics, prometheus (remote write)
	URL        string   `toml:"url"`    // the write URL, whole; else built from the keys below
	Host       string   `toml:"host"`   // host:port
	Protocol   string   `toml:"protocol"`
	Database   string   `toml:"database"` // influxdb (1.x)
	Org        string   `toml:"org"`      // influxdb2
	Bucket     string   `toml:"bucket"`   // influxdb2
	Token      string   `toml:"token"`    // influxdb2: "Authorization: Token"; others: "Authorization: Bearer"
	Precision  string   `toml:"precision"`
	Timeout    string   `toml:"timeout"`    // per request; default 15s
	Categories []string `toml:"categories"` // DataKit's letters (M, N, L, ...) or names; default all
	Gzip       *bool    `toml:"gzip"`       // default true (line protocol; remote write is snappy-compressed)
	Path       string   `toml:"path"`       // prometheus: the write path; default /api/v1/write

	writeURL   string
	timeout    time.Duration
	categories []string // names
	gzip       bool
}

// Targets this agent forwards to.
var Targets = []string{"influxdb", "influxdb2", "victoriametrics", "prometheus"}

// categoryLetters are DataKit's short names of its categories.
var categoryLetters = map[string]string{"M": "metric", "N": "network", "K": "keyevent", "O": "object",
	"CO": "custom_object", "L": "logging", "T": "tracing", "R": "rum", "S": "security", "P": "profiling"}

// Check validates c and fills its defaults; an error names the key.
func (c *Config) Check() error {
	if !slices.Contains(Targets, c.Target) {
		return fmt.Errorf("target: %q is not one of %s", c.Target, strings.Join(Targets, ", "))
	}
	if c.Precision != "" && c.Precision != "ns" {
		return fmt.Errorf("precision: %q: points are forwarded with nanosecond times (\"ns\")", c.Precision)
	}
	c.timeout = 15 * time.Second
	if c.Timeout != "" {
		d, err := time.ParseDuration(c.Timeout)
		if err != nil || d <= 0 {
			return fmt.Errorf("timeout: %q is not a positive duration (e.g. \"15s\")", c.Timeout)
		}
		c.timeout = d
	}
	c.gzip = c.Gzip == nil || *c.Gzip
	c.categories = nil
	for _, cat := range c.Categories {
		name, ok := categoryLetters[strings.ToUpper(cat)]
		if !ok {
			name = strings.ToLower(cat)
			if !slices.Contains(slices.Collect(maps.Values(categoryLetters)), name) {
				return fmt.Errorf("categories: %q is not a DataKit category (M, N, K, O, CO, L, T, R, S, P or their names)", cat)
			}
		}
		c.categories = append(c.categories, name)
	}
	u, err := c.buildURL()
	if err != nil {
		return err
	}
	c.writeURL = u
	if c.ID == "" {
		pu, _ := url.Parse(u)
		c.ID = c.Target + "-" + pu.Host
	}
	return nil
}

func (c *Config) buildURL() (string, error) {
	if c.URL != "" {
		u, err := url.Parse(c.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return "", fmt.Errorf("url: %q is not an http(s) URL", c.URL)
		}
		return c.URL, nil
	}
	if c.Host == "" {
		return "", fmt.Errorf("host: missing (host:port of the engine), or give url")
	}
	proto := c.Protocol
	if proto == "" {
		proto = "http"
	}
	if proto != "http" && proto != "https" {
		return "", fmt.Errorf("protocol: %q is not http or https", c.Protocol)
	}
	base := proto + "://" + c.Host
	switch c.Target {
	case "influxdb":
		if c.Database == "" {
			return "", fmt.Errorf("database: missing (target influxdb writes to /write?db=<database>)")
		}
		return base + "/write?" + url.Values{"db": {c.Database}, "precision": {"ns"}}.Encode(), nil
	case "influxdb2":
		if c.Org == "" || c.Bucket == "" {
			return "", fmt.Errorf("org, bucket: both needed by target influxdb2 (/api/v2/write)")
		}
		return base + "/api/v2/write?" + url.Values{"org": {c.Org}, "bucket": {c.Bucket}, "precision": {"ns"}}.Encode(), nil
	case "prometheus":
		path := c.Path
		if path == "" {
			path = "/api/v1/write"
		}
		if !strings.HasPrefix(path, "/") {
			return "", fmt.Errorf("path: %q does not start with / (e.g. \"/api/v1/receive\" for Thanos)", c.Path)
		}
		return base + path, nil
	default: // victoriametrics single node; a cluster's vminsert takes url = ".../insert/<tenant>/influx/write"
		return base + "/write", nil
	}
}

// wants says whether the sink forwards points of category.
func (c *Config) wants(category string) bool {
	return len(c.categories) == 0 || slices.Contains(c.categories, category)
}
