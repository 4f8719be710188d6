package sink

import (
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
)

// EnvLetters are the categories of DataKit's ENV_SINK_<letter> variables, in the order they are read.
var EnvLetters = []string{"M", "N", "K", "O", "CO", "L", "T", "R", "S", "P"}

// envSeparator joins several sinks in one variable, as DataKit does.
const envSeparator = "||"

// FromEnv reads DataKit's ENV_SINK_<letter> variables (on Kubernetes, where there is no datakit.conf to edit):
// each holds one or more sinks, "target://host:port?key=value&…" joined by "||", whose keys are the
// [[sinks.sink]] keys. A sink named in several variables (same target, host and keys) is one sink with
// their categories, so it keeps one cursor. set says whether any variable was set; the configs are checked.
func FromEnv(lookup func(string) (string, bool)) (cfgs []Config, set bool, err error) {
	index := map[string]int{} // a sink's identity (all but its categories) -> cfgs index
	for _, letter := range EnvLetters {
		name := "ENV_SINK_" + letter
		v, ok := lookup(name)
		if !ok || strings.TrimSpace(v) == "" {
			continue
		}
		set = true
		for i, one := range strings.Split(v, envSeparator) {
			one = strings.TrimSpace(one)
			if one == "" {
				continue
			}
			c, identity, err := parseEnvSink(one)
			if err == nil {
				probe := c
				err = probe.Check()
			}
			if err != nil {
				return nil, true, fmt.Errorf("%s: sink %d (%s): %w", name, i+1, redact(one), err)
			}
			if j, seen := index[identity]; seen {
				if !slices.Contains(cfgs[j].Categories, letter) {
					cfgs[j].Categories = append(cfgs[j].Categories, letter)
				}
				continue
			}
			c.Categories = []string{letter}
			index[identity] = len(cfgs)
			cfgs = append(cfgs, c)
		}
	}
	ids := map[string]bool{}
	for i := range cfgs {
		if err := cfgs[i].Check(); err != nil { // checked once alone above: only its categories are new
			return nil, true, fmt.Errorf("ENV_SINK_*: sink %s://%s: %w", cfgs[i].Target, cfgs[i].Host, err)
		}
		if ids[cfgs[i].ID] {
			return nil, true, fmt.Errorf("ENV_SINK_*: two different sinks have the id %q (give each its own ?id=…: each keeps its own cursor, by id)", cfgs[i].ID)
		}
		ids[cfgs[i].ID] = true
	}
	return cfgs, set, nil
}

// parseEnvSink parses one "target://host:port?key=value&…"; identity is the sink with its query's keys sorted
// (url.Values.Encode sorts them).
func parseEnvSink(s string) (c Config, identity string, err error) {
	u, err := url.Parse(s)
	if err != nil {
		return c, "", fmt.Errorf("not a URL: %w", err)
	}
	if u.Scheme == "" || u.Host == "" {
		return c, "", fmt.Errorf("want target://host:port?key=value&… (target one of %s)", strings.Join(Targets, ", "))
	}
	if u.Path != "" && u.Path != "/" {
		return c, "", fmt.Errorf("path %q: give the write path as ?path=… (target prometheus) or the whole write URL as ?url=…", u.Path)
	}
	c.Target, c.Host = u.Scheme, u.Host
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return c, "", fmt.Errorf("query: %w", err)
	}
	fields := map[string]*string{"id": &c.ID, "url": &c.URL, "protocol": &c.Protocol, "database": &c.Database,
		"org": &c.Org, "bucket": &c.Bucket, "token": &c.Token, "precision": &c.Precision, "timeout": &c.Timeout, "path": &c.Path}
	for _, k := range slices.Sorted(maps.Keys(q)) {
		v := q.Get(k)
		switch {
		case k == "gzip":
			b, err := parseBool(v)
			if err != nil {
				return c, "", fmt.Errorf("gzip: %w", err)
			}
			c.Gzip = &b
		case k == "categories":
			return c, "", fmt.Errorf("categories: the variable's letter is the sink's category (name the sink in each ENV_SINK_<letter> it takes)")
		case fields[k] != nil:
			*fields[k] = v
		default:
			return c, "", fmt.Errorf("key %q: not one of id, url, protocol, database, org, bucket, token, precision, timeout, gzip, path", k)
		}
	}
	return c, c.Target + "://" + c.Host + "?" + q.Encode(), nil
}

func parseBool(v string) (bool, error) {
	switch strings.ToLower(v) {
	case "true", "1", "on", "yes":
		return true, nil
	case "false", "0", "off", "no":
		return false, nil
	}
	return false, fmt.Errorf("%q is not true or false", v)
}

// redact hides a token in an error message.
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "unparsable"
	}
	q := u.Query()
	if q.Has("token") {
		q.Set("token", "REDACTED")
		u.RawQuery = q.Encode()
	}
	return u.String()
}
