// Package options is the contract between the agent's [[inputs.ebpf]] and the datakit-ebpf command line: one
// table holding, for every option, its TOML key, ENV names, collector flag, type, default, bounds and allowed
// values. The agent turns TOML and ENV into flag words with it; the collector parses those words with it. Both
// run the same parser and the same checks, so the two ends cannot disagree.
package options

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Kind is how an option's value is written and what Go type it parses to.
type Kind int

const (
	Bool     Kind = iota // bool
	Int                  // int
	Float                // float64
	String               // string
	URL                  // string: a base URL, "http://" added when there is no scheme, no trailing slash
	Duration             // time.Duration (Go syntax: "500ms", "1m")
	List                 // []string: a comma list; a repeated flag adds to it
	Ports                // []uint16: a comma list of ports 1..65535, duplicates dropped
	CIDRs                // []netip.Prefix: a comma list of CIDRs, masked
	Tags                 // map[string]string: k=v items separated by ',' or ';'; a repeated flag adds to it
	Rules                // []RedactRule: one name=regexp per flag, repeated
	Strings              // []string: each item as it is, commas included (the agent's args and envs)
	Size                 // int64 bytes: a number with K, KB, KiB, M, MB, MiB, G, GB or GiB (DataKit's sizes)
)

// Option is one row of the table. A row with a Key is an [[inputs.ebpf]] key; a row with a Flag is a
// datakit-ebpf run flag; most rows are both.
type Option struct {
	Key      string   // TOML key in [[inputs.ebpf]]; "" = a collector flag the agent does not write from a key
	Env      []string // ENV_INPUT_EBPF_* names (then DataKit's legacy ones); the first one set wins
	Flag     string   // datakit-ebpf run flag without "--"; "" = a key of the agent's own
	Aliases  []string // other flag names the collector accepts for the same value
	ChildEnv string   // the agent passes the value in this environment variable instead of a flag
	Kind     Kind
	Default  string // the collector's default, as flag words (lists comma-joined); "" = none
	// AgentDefault is the value of a key that neither the file nor ENV sets, as flag words; "" = unset.
	AgentDefault string
	// Unset is the key value that means "not set: the collector's default" (DataKit's -1 for ephemeral_port).
	Unset string

	Min, Max   int64                   // Int: bounds, when Min < Max
	MinF, MaxF float64                 // Float: bounds, when MinF < MaxF
	MinDur     time.Duration           // Duration: the least value, when > 0
	MaxItems   int                     // List, Ports: at most this many items, when > 0
	Allowed    []string                // List, String: the only values accepted
	Item       string                  // what one value is, for errors: "plugin", "protocol"
	Valid      func(item string) error // List: checks each item, when set
	Usage      string                  // one line for --help and the docs
	Hidden     bool                    // a flag DataKit passes but --help does not list

	// Lenient: a value outside Allowed is, on the collector's command line, dropped with a warning rather than
	// refused (a DataKit parent may know values this collector does not); the agent refuses it in its config.
	Lenient bool
	// BadEnvIgnored: DataKit logs and ignores an unparsable value of this variable rather than failing.
	BadEnvIgnored bool
	// NotYet names the plugin or feature that is not built yet: the value is accepted, passed on and named
	// once in the log when it differs from the agent's default.
	NotYet string
}

// Name is the row's name in errors and docs: the TOML key, else the flag.
func (o *Option) Name() string {
	if o.Key != "" {
		return o.Key
	}
	return "--" + o.Flag
}

// RedactRule is a user's bash redaction rule: the text its regexp's group "secret" (or group 1, or the whole
// match) matches is replaced with ***.
type RedactRule struct {
	Name    string `json:"name"`
	Pattern string `json:"pattern"`
}

// Parse turns flag words (one per occurrence of the flag; none = the default) into the row's Go value.
func (o *Option) Parse(words []string) (any, error) {
	if len(words) == 0 && o.Default != "" {
		words = []string{o.Default}
	}
	last := ""
	if len(words) > 0 {
		last = words[len(words)-1]
	}
	switch o.Kind {
	case Bool:
		if last == "" {
			return false, nil
		}
		b, err := strconv.ParseBool(last)
		if err != nil {
			return nil, fmt.Errorf("%q is not a boolean (want true or false)", last)
		}
		return b, nil
	case Int:
		n, err := parseNumber(last, strconv.Atoi)
		if err != nil {
			return nil, fmt.Errorf("%q is not an integer", last)
		}
		return n, nil
	case Float:
		f, err := parseNumber(last, func(s string) (float64, error) { return strconv.ParseFloat(s, 64) })
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", last)
		}
		return f, nil
	case String:
		return last, nil
	case URL:
		if last == "" {
			return "", nil
		}
		return baseURL(last)
	case Duration:
		if last == "" {
			return time.Duration(0), nil
		}
		d, err := time.ParseDuration(strings.TrimSpace(last))
		if err != nil {
			return nil, fmt.Errorf("invalid duration %q (want a Go duration, e.g. \"6s\", \"1m\")", last)
		}
		return d, nil
	case List:
		var out []string
		for _, w := range words {
			out = append(out, SplitList(w)...)
		}
		return out, nil
	case Ports:
		var out []uint16
		for _, w := range words {
			for _, s := range SplitList(w) {
				n, err := strconv.ParseInt(s, 10, 64)
				if err != nil {
					return nil, fmt.Errorf("%q is not a port (1..65535)", s)
				}
				if n < 1 || n > 65535 {
					return nil, fmt.Errorf("%d out of range (allowed: 1..65535)", n)
				}
				if !slices.Contains(out, uint16(n)) {
					out = append(out, uint16(n))
				}
			}
		}
		return out, nil
	case CIDRs:
		var out []netip.Prefix
		for _, w := range words {
			for _, s := range SplitList(w) {
				p, err := netip.ParsePrefix(s)
				if err != nil {
					return nil, fmt.Errorf("invalid CIDR %q (want e.g. \"10.0.0.0/8\", \"::1/128\")", s)
				}
				out = append(out, p.Masked())
			}
		}
		return out, nil
	case Tags:
		return parseTags(words)
	case Strings:
		return slices.Clone(words), nil
	case Size:
		if last == "" {
			return int64(0), nil
		}
		return ParseSize(last)
	case Rules:
		var out []RedactRule
		for _, w := range words {
			name, pattern, ok := strings.Cut(w, "=")
			if !ok {
				return nil, fmt.Errorf("%q: want name=regexp", w)
			}
			out = append(out, RedactRule{Name: strings.TrimSpace(name), Pattern: pattern})
		}
		return out, nil
	}
	return nil, fmt.Errorf("option %s: unknown kind %d", o.Name(), o.Kind)
}

// parseNumber parses a flag word, "" being 0.
func parseNumber[N int | float64](word string, parse func(string) (N, error)) (N, error) {
	if word == "" {
		return 0, nil
	}
	return parse(strings.TrimSpace(word))
}

// Check tells whether a parsed value is inside the row's bounds and allowed values. Its errors name the
// offending value; the caller names the key or flag.
func (o *Option) Check(v any) error {
	switch v := v.(type) {
	case int:
		if o.Min < o.Max && (int64(v) < o.Min || int64(v) > o.Max) {
			return fmt.Errorf("%d out of range (allowed: %s)", v, o.Range())
		}
	case float64:
		if v < 0 || (o.MinF < o.MaxF && (v < o.MinF || v > o.MaxF)) {
			return fmt.Errorf("%v out of range (allowed: %s)", v, o.floatRange())
		}
	case time.Duration:
		if o.MinDur > 0 && v < o.MinDur {
			return fmt.Errorf("%q is below the minimum %s", v.String(), o.MinDur)
		}
	case string:
		if len(o.Allowed) > 0 && !slices.Contains(o.Allowed, v) {
			return fmt.Errorf("unknown %s %q (allowed: %s)", o.item(), v, strings.Join(o.Allowed, ", "))
		}
	case []string:
		if o.MaxItems > 0 && len(v) > o.MaxItems {
			return fmt.Errorf("%d items (allowed: at most %d)", len(v), o.MaxItems)
		}
		for _, s := range v {
			if len(o.Allowed) > 0 && !slices.Contains(o.Allowed, s) {
				return fmt.Errorf("unknown %s %q (allowed: %s)", o.item(), s, strings.Join(o.Allowed, ", "))
			}
			if o.Valid != nil {
				if err := o.Valid(s); err != nil {
					return err
				}
			}
		}
	case []uint16:
		if o.MaxItems > 0 && len(v) > o.MaxItems {
			return fmt.Errorf("%d ports (allowed: at most %d)", len(v), o.MaxItems)
		}
	case []RedactRule:
		return checkRules(v)
	}
	return nil
}

// Range describes an Int row's bounds, with the value that means the default when there is one.
func (o *Option) Range() string {
	r := fmt.Sprintf("%d..%d", o.Min, o.Max)
	if o.Max == maxInt {
		r = fmt.Sprintf("at least %d", o.Min)
	}
	if o.Unset != "" {
		r += ", or " + o.Unset + " for the default"
		if o.Default != "" {
			r += " " + o.Default
		}
	}
	return r
}

const maxInt = 1<<31 - 1

func (o *Option) floatRange() string {
	if o.MinF < o.MaxF {
		return fmt.Sprintf("%g..%g", o.MinF, o.MaxF)
	}
	return "0 or more"
}

func (o *Option) item() string {
	if o.Item != "" {
		return o.Item
	}
	return "value"
}

// Value parses and checks flag words: what the collector runs on each flag and the agent on each key.
func (o *Option) Value(words []string) (any, error) {
	v, err := o.Parse(words)
	if err != nil {
		return nil, err
	}
	return v, o.Check(v)
}

// Known splits a Lenient list into the allowed values and the others.
func (o *Option) Known(values []string) (known, unknown []string) {
	for _, v := range values {
		if slices.Contains(o.Allowed, v) {
			known = append(known, v)
		} else {
			unknown = append(unknown, v)
		}
	}
	return known, unknown
}

// SplitList splits a comma list, trimming items and dropping empty ones.
func SplitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// ParseEnvBool is DataKit's ENV bool: false for "", f, false, FALSE, False, 0, else true.
func ParseEnvBool(v string) bool {
	switch v {
	case "", "f", "false", "FALSE", "False", "0":
		return false
	}
	return true
}

// FromEnv turns an environment variable's value into flag words.
func (o *Option) FromEnv(v string) ([]string, error) {
	switch o.Kind {
	case Bool:
		return []string{strconv.FormatBool(ParseEnvBool(v))}, nil
	case List, Ports, CIDRs:
		return []string{strings.Join(SplitList(v), ",")}, nil
	case Rules:
		var rules []RedactRule
		if err := json.Unmarshal([]byte(v), &rules); err != nil {
			return nil, fmt.Errorf(`want a JSON list like [{"name":"x","pattern":"y=(\\S+)"}]: %v`, err)
		}
		return ruleWords(rules), nil
	case Int:
		if _, err := strconv.Atoi(strings.TrimSpace(v)); err != nil {
			return nil, fmt.Errorf("invalid integer %q", v)
		}
	}
	return []string{strings.TrimSpace(v)}, nil
}

// KeyError is an error about one part of a TOML value: Sub is appended to the key ("[0].name", ".zone").
type KeyError struct {
	Sub string
	Err error
}

func (e *KeyError) Error() string { return e.Sub + ": " + e.Err.Error() }
func (e *KeyError) Unwrap() error { return e.Err }

// FromTOML turns a decoded TOML value into flag words.
func (o *Option) FromTOML(v any) ([]string, error) {
	typeErr := func(want string) error {
		if s, ok := v.(string); ok {
			return fmt.Errorf("want %s, got the string %q", want, s)
		}
		return fmt.Errorf("want %s, got %v (%T)", want, v, v)
	}
	switch o.Kind {
	case Bool:
		b, ok := v.(bool)
		if !ok {
			return nil, typeErr("a boolean (true or false)")
		}
		return []string{strconv.FormatBool(b)}, nil
	case Int:
		switch n := v.(type) {
		case int64:
			return []string{strconv.FormatInt(n, 10)}, nil
		case string: // DataKit writes some numbers as strings ("6061")
			return []string{n}, nil
		}
		return nil, typeErr("an integer")
	case Float:
		switch n := v.(type) {
		case int64:
			return []string{strconv.FormatInt(n, 10)}, nil
		case float64:
			return []string{strconv.FormatFloat(n, 'f', -1, 64)}, nil
		case string: // DataKit's cpu_limit = "2.0"
			return []string{n}, nil
		}
		return nil, typeErr("a number")
	case String, URL, Duration, Size:
		s, ok := v.(string)
		if !ok {
			return nil, typeErr("a string")
		}
		return []string{s}, nil
	case Strings:
		items, ok := v.([]any)
		if !ok {
			return nil, typeErr("a list of strings")
		}
		words := make([]string, len(items))
		for n, it := range items {
			if words[n], ok = it.(string); !ok {
				return nil, typeErr("a list of strings")
			}
		}
		return words, nil
	case List, Ports, CIDRs:
		items, ok := v.([]any)
		if !ok {
			return nil, typeErr("a list")
		}
		words := make([]string, 0, len(items))
		for _, it := range items {
			switch it := it.(type) {
			case string:
				if o.Kind == Ports || strings.Contains(it, ",") {
					return nil, fmt.Errorf("item %q: want %s without ','", it, map[bool]string{true: "a port number", false: "a string"}[o.Kind == Ports])
				}
				words = append(words, it)
			case int64:
				if o.Kind != Ports {
					return nil, fmt.Errorf("item %d: want a string", it)
				}
				words = append(words, strconv.FormatInt(it, 10))
			default:
				return nil, typeErr("a list of strings")
			}
		}
		return []string{strings.Join(words, ",")}, nil
	case Tags:
		m, ok := v.(map[string]any)
		if !ok {
			return nil, typeErr("a table")
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		kv := make([]string, len(keys))
		for n, k := range keys {
			s, ok := m[k].(string)
			if !ok || k == "" || strings.ContainsAny(k, "=;,") || strings.ContainsAny(s, ";,") {
				return nil, &KeyError{"." + k, fmt.Errorf("invalid tag %q = %v (keys may not contain = ; , and values are strings without ; ,)", k, m[k])}
			}
			kv[n] = k + "=" + s
		}
		if len(kv) == 0 {
			return nil, nil
		}
		return []string{strings.Join(kv, ";")}, nil
	case Rules:
		tables, ok := v.([]map[string]any)      // [[inputs.ebpf.bash_redact]]
		if items, inline := v.([]any); inline { // bash_redact = [{name = …, pattern = …}]
			ok = true
			for _, it := range items {
				t, isTable := it.(map[string]any)
				ok = ok && isTable
				tables = append(tables, t)
			}
		}
		if !ok {
			return nil, typeErr("an array of tables [[...]] with name and pattern")
		}
		rules := make([]RedactRule, len(tables))
		for n, t := range tables {
			for k, val := range t {
				s, ok := val.(string)
				switch {
				case k != "name" && k != "pattern":
					return nil, &KeyError{fmt.Sprintf("[%d].%s", n, k), errors.New("unknown key (want name and pattern)")}
				case !ok:
					return nil, &KeyError{fmt.Sprintf("[%d].%s", n, k), fmt.Errorf("want a string, got %T", val)}
				case k == "name":
					rules[n].Name = s
				default:
					rules[n].Pattern = s
				}
			}
		}
		return ruleWords(rules), nil
	}
	return nil, fmt.Errorf("option %s: unknown kind %d", o.Name(), o.Kind)
}

func ruleWords(rules []RedactRule) []string {
	words := make([]string, len(rules))
	for n, r := range rules {
		words[n] = r.Name + "=" + r.Pattern
	}
	return words
}

// checkRules refuses a rule without a name, with a name taken by a built-in or an earlier rule, or whose
// pattern does not compile.
func checkRules(rules []RedactRule) error {
	taken := map[string]bool{}
	for _, n := range BuiltinRedactRules {
		taken[n] = true
	}
	for n, r := range rules {
		if r.Name == "" || strings.Contains(r.Name, "=") {
			return &KeyError{fmt.Sprintf("[%d].name", n), fmt.Errorf("%q: want a non-empty name without '='", r.Name)}
		}
		if taken[r.Name] {
			return &KeyError{fmt.Sprintf("[%d].name", n), fmt.Errorf("%q is taken by a built-in or an earlier rule (user rules are added to the built-in ones, they cannot replace them)", r.Name)}
		}
		taken[r.Name] = true
		if _, err := regexp.Compile(r.Pattern); err != nil || r.Pattern == "" {
			if err == nil {
				err = errors.New("empty")
			}
			return &KeyError{fmt.Sprintf("[%d].pattern", n), fmt.Errorf("rule %s: invalid regexp %q: %v", r.Name, r.Pattern, err)}
		}
	}
	return nil
}

// sizeUnits are DataKit's size suffixes (case-insensitive): K, M, G decimal with or without B, KiB… binary.
var sizeUnits = map[string]int64{"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 1 << 10, "m": 1e6, "mb": 1e6,
	"mib": 1 << 20, "g": 1e9, "gb": 1e9, "gib": 1 << 30}

var sizeRE = regexp.MustCompile(`^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$`)

// ParseSize parses a size such as "256MiB", "1.5G" or "1000000" into bytes; a rate's "/s" is dropped
// ("100MiB/s"), as DataKit does for bandwidths.
func ParseSize(s string) (int64, error) {
	m := sizeRE.FindStringSubmatch(strings.TrimSuffix(strings.TrimSpace(s), "/s"))
	if m == nil {
		return 0, fmt.Errorf("invalid size %q (want e.g. \"256MiB\", \"1GB\")", s)
	}
	unit, ok := sizeUnits[strings.ToLower(m[2])]
	if !ok {
		return 0, fmt.Errorf("invalid size %q: unknown unit %q (want K, KB, KiB, M, MB, MiB, G, GB or GiB)", s, m[2])
	}
	n, _ := strconv.ParseFloat(m[1], 64)
	return int64(n * float64(unit)), nil
}

// baseURL turns a host:port, with or without scheme, into a base URL without a trailing slash.
func baseURL(s string) (string, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("invalid address %q: %v", s, err)
	}
	if u.Host == "" {
		return "", fmt.Errorf("invalid address %q: no host", s)
	}
	return strings.TrimRight(s, "/"), nil
}

// parseTags parses k=v items separated by ',' (the flag's documented form) or ';' (how DataKit joins them).
func parseTags(words []string) (map[string]string, error) {
	tags := make(map[string]string)
	for _, w := range words {
		for item := range strings.FieldsFuncSeq(w, func(r rune) bool { return r == ',' || r == ';' }) {
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			k, val, ok := strings.Cut(item, "=")
			k, val = strings.TrimSpace(k), strings.TrimSpace(val)
			if !ok || k == "" || strings.Contains(val, "=") {
				return nil, fmt.Errorf("%q: want k=v", item)
			}
			tags[k] = val
		}
	}
	return tags, nil
}

// APIService reads one api_services entry, "host-pattern=service" (path.Match patterns: "*.example.com"),
// lower-casing the pattern.
func APIService(entry string) (pattern, service string, err error) {
	p, name, ok := strings.Cut(entry, "=")
	p, name = strings.ToLower(strings.TrimSpace(p)), strings.TrimSpace(name)
	if !ok || p == "" || name == "" {
		return "", "", fmt.Errorf("%q: want host-pattern=service, e.g. api.example.com=example or *.example.com=example", entry)
	}
	if _, err := path.Match(p, ""); err != nil {
		return "", "", fmt.Errorf("%q: bad host pattern: %w", entry, err)
	}
	return p, name, nil
}
