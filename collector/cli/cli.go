// Package cli is the first stage of the pipeline: it parses the datakit-ebpf command line, as written by
// DataKit's ebpf input, into the configuration every later stage starts from.
package cli

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// ErrUsage is returned, after the usage has been written to stderr, when the command line names no known
// command.
var ErrUsage = errors.New("usage error")

// ErrHelp is returned, after the usage has been written, when the command line asks for help (exit 0).
var ErrHelp = errors.New("help requested")

// Plugin names accepted by --enabled (DataKit's allow-list).
var plugins = []string{"ebpf-net", "ebpf-bash", "ebpf-conntrack", "ebpf-trace", "bpf-netlog"}

// Values accepted by --l7net-enabled and --l7net-disabled; others are ignored with a warning.
var l7Protocols = []string{"httpflow", "httpflow-tls"}

var logLevels = []string{"debug", "info", "warn", "error"}

// Flags DataKit may pass that this collector accepts but does not implement yet: setting one adds a warning.
var unsupportedFlags = []string{
	"trace-server", "trace-protos", "trace-protos-blacklist", "trace-env-list", "trace-name-list",
	"trace-env-blacklist", "trace-name-blacklist", "conv-to-ddtrace",
	"res-cpu", "res-mem", "res-bandwidth", "sampling-rate", "sampling-rate-ptsperminute",
	"netlog-log", "netlog-protocols", "container-endpoints", // not netlog-metric: DataKit always passes it
	"pprof-host", "pprof-port",
}

// Boolean flags that older DataKit versions passed with a separate value word (`--ipv6-disabled true`).
var legacyBoolFlags = []string{"--ipv6-disabled"}

// Command is a parsed command line.
type Command struct {
	Name string     // "run" or "version"
	Run  *RunConfig // set when Name is "run"
}

// RunConfig is the configuration of `datakit-ebpf run`. Empty strings and nil lists mean "not set".
type RunConfig struct {
	APIServer   string            // base URL of the parent datakit, with scheme, e.g. "http://0.0.0.0:9529"
	TraceServer string            // base URL for eBPF spans (not supported yet)
	Hostname    string            // --hostname; see GlobalTags
	Service     string            // value of the service tag on every point
	Tags        map[string]string // custom global tags from --tags
	Interval    time.Duration     // aggregation and flush period
	PidFile     string            // "" = caller's default
	Log         string            // "" = caller's default
	LogLevel    string            // debug, info, warn or error

	Enabled       []string // plugins to run; see Plugin
	EphemeralPort uint16   // first ephemeral port, 0 = read from the kernel
	L7NetEnabled  []string // known values of --l7net-enabled
	L7NetDisabled []string // known values of --l7net-disabled
	IPv6Disabled  bool

	// Accepted for compatibility with DataKit, not used yet.
	ContainerEndpoints       []string
	NetlogMetric, NetlogLog  bool
	NetlogProtocols          []string
	PprofHost, PprofPort     string
	TraceProtos              []string
	TraceProtosBlacklist     []string
	TraceEnvList             []string
	TraceNameList            []string
	TraceEnvBlacklist        []string
	TraceNameBlacklist       []string
	ConvToDDTrace            bool
	ResCPU                   float64
	ResMem, ResBandwidth     string
	SamplingRate             string
	SamplingRatePtsPerMinute string

	// Ours.
	IgnoreCIDRs       []netip.Prefix // flows whose remote address is inside one of these are not reported
	HTTPMaxPaths      int            // httpflow: distinct paths per (process, Host) per interval before folding
	SSLRescan         time.Duration  // httpflow-tls: how often /proc is searched for new libssl files
	DNSPorts          []uint16       // dnsflow: server ports that mark DNS (default 53)
	DNSTimeout        time.Duration  // dnsflow: a query without an answer this long is reported with rcode -1
	BashRescan        time.Duration  // ebpf-bash: how often /proc is searched for new bash binaries
	BashRedact        []RedactRule   // ebpf-bash: the user's redaction rules, after the defaults
	MaxBufferedPoints int            // bound of the sender's buffer
	BPFObjects        string         // directory of BPF objects; "" = the objects embedded in the binary
	BPFFloor          bool           // benchmark only: attach every hook with programs that return at once

	// Warnings about accepted but ignored flags and values, for the caller to log once.
	Warnings []string
}

// RedactRule is a user's bash redaction rule: the text its regexp's group "secret" (or group 1, or the
// whole match) matches is replaced with ***.
type RedactRule struct{ Name, Pattern string }

// L7 reports whether an L7 tracer (httpflow, httpflow-tls) is on: listed in --l7net-enabled, or, when
// only --l7net-disabled is given, not listed there.
func (c *RunConfig) L7(proto string) bool {
	if len(c.L7NetEnabled) > 0 {
		return slices.Contains(c.L7NetEnabled, proto)
	}
	return len(c.L7NetDisabled) > 0 && !slices.Contains(c.L7NetDisabled, proto)
}

// Plugin reports whether the named plugin is enabled.
func (c *RunConfig) Plugin(name string) bool {
	return slices.Contains(c.Enabled, name)
}

// GlobalTags returns the tags added to every point the points do not carry themselves: the custom tags, host
// (--hostname, else host from --tags, else the system host name, else "no-value") and service.
func (c *RunConfig) GlobalTags() map[string]string {
	tags := maps.Clone(c.Tags)
	if tags == nil {
		tags = make(map[string]string)
	}
	host := c.Hostname
	if host == "" {
		host = c.Tags["host"]
	}
	if host == "" {
		host, _ = os.Hostname()
	}
	if host == "" {
		host = "no-value"
	}
	tags["host"] = host
	if c.Service != "" {
		tags["service"] = c.Service
	}
	return tags
}

// Parse parses args (without the program name). Warnings are kept in RunConfig.Warnings for the caller to log. The error of a bad command line is meant to be printed before exiting with 2.
func Parse(args []string, stderr io.Writer) (Command, error) {
	if len(args) == 0 {
		printUsage(stderr)
		return Command{}, fmt.Errorf("no command: %w", ErrUsage)
	}
	switch args[0] {
	case "run":
		c, err := parseRun(args[1:], stderr)
		if err != nil {
			return Command{}, err
		}
		return Command{Name: "run", Run: c}, nil
	case "version":
		if len(args) > 1 {
			return Command{}, fmt.Errorf("version: unexpected arguments %q", args[1:])
		}
		return Command{Name: "version"}, nil
	case "check":
		if len(args) > 1 {
			return Command{}, fmt.Errorf("check: unexpected arguments %q", args[1:])
		}
		return Command{Name: "check"}, nil
	case "help", "-h", "--help":
		printUsage(stderr)
		return Command{}, ErrHelp
	default:
		printUsage(stderr)
		return Command{}, fmt.Errorf("unknown command %q: %w", args[0], ErrUsage)
	}
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, `usage: datakit-ebpf <command> [flags]

commands:
  run       run the collector (datakit-ebpf run --help lists its flags)
  check     load every plugin's programs and say, per plugin and part, what runs on this kernel
            (preferred hooks, a fallback, or off, and why), without collecting; exit 0 if any plugin can run
  version   print the version
`)
}

func parseRun(args []string, stderr io.Writer) (*RunConfig, error) {
	c := &RunConfig{}
	var (
		config, apiServer, traceServer string
		tags, ignoreCIDRs, dnsPorts    []string
		bashRedact                     []string
		ephemeralPort                  int
		resNet                         string
		traceAllProcess                bool
	)

	fs := pflag.NewFlagSet("datakit-ebpf run", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: datakit-ebpf run [flags]\n\nflags:\n")
		fs.PrintDefaults()
	}

	// DataKit's flags, same names and defaults.
	fs.StringVar(&config, "config", "", "TOML configuration file (not supported yet)")
	fs.StringVar(&apiServer, "datakit-apiserver", "0.0.0.0:9529", "address of the parent datakit's HTTP API")
	fs.StringVar(&traceServer, "trace-server", "", "address that receives eBPF spans")
	fs.StringVar(&c.Hostname, "hostname", "", "value of the host tag (default: host from --tags, else the system host name)")
	fs.DurationVar(&c.Interval, "interval", 60*time.Second, "aggregation and flush interval (at least 1s)")
	fs.StringVar(&c.PidFile, "pidfile", "", "pid file")
	fs.StringVar(&c.Log, "log", "", "log file")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: "+strings.Join(logLevels, ", "))
	fs.StringArrayVar(&tags, "tags", nil, "global tags k=v, separated by ',' or ';'")
	fs.StringSliceVar(&c.Enabled, "enabled", nil, "plugins to run (required): "+strings.Join(plugins, ", "))
	fs.StringSliceVar(&c.ContainerEndpoints, "container-endpoints", nil, "bpf-netlog container runtime endpoints")
	fs.BoolVar(&c.NetlogMetric, "netlog-metric", false, "bpf-netlog: report metrics")
	fs.BoolVar(&c.NetlogLog, "netlog-log", false, "bpf-netlog: report logs")
	fs.StringSliceVar(&c.NetlogProtocols, "netlog-protocols", []string{"http"}, "bpf-netlog: L7 protocols")
	fs.IntVar(&ephemeralPort, "ephemeral_port", 0, "first ephemeral port (0 = read from the kernel)")
	fs.IntVar(&ephemeralPort, "ephemeral-port", 0, "same as --ephemeral_port")
	fs.StringSliceVar(&c.L7NetEnabled, "l7net-enabled", nil, "L7 tracers to enable: "+strings.Join(l7Protocols, ", "))
	fs.StringSliceVar(&c.L7NetDisabled, "l7net-disabled", nil, "L7 tracers to disable: "+strings.Join(l7Protocols, ", "))
	fs.BoolVar(&c.IPv6Disabled, "ipv6-disabled", false, "do not trace IPv6")
	fs.StringVar(&c.PprofHost, "pprof-host", "", "pprof server host")
	fs.StringVar(&c.PprofPort, "pprof-port", "", "pprof server port")
	fs.StringVar(&c.Service, "service", "ebpf", "value of the service tag")
	fs.StringSliceVar(&c.TraceProtos, "trace-protos", nil, "ebpf-trace: protocols to trace")
	fs.StringSliceVar(&c.TraceProtosBlacklist, "trace-protos-blacklist", nil, "ebpf-trace: protocols not to trace")
	fs.StringSliceVar(&c.TraceEnvList, "trace-env-list", nil, "ebpf-trace: environment variables selecting processes")
	fs.StringSliceVar(&c.TraceNameList, "trace-name-list", nil, "ebpf-trace: process names to trace")
	fs.StringSliceVar(&c.TraceEnvBlacklist, "trace-env-blacklist", nil, "ebpf-trace: environment variables excluding processes")
	fs.StringSliceVar(&c.TraceNameBlacklist, "trace-name-blacklist", nil, "ebpf-trace: process names not to trace")
	fs.BoolVar(&c.ConvToDDTrace, "conv-to-ddtrace", false, "ebpf-trace: convert trace ids to ddtrace's")
	fs.Float64Var(&c.ResCPU, "res-cpu", 0, "CPU limit in cores")
	fs.StringVar(&c.ResMem, "res-mem", "", "memory limit")
	fs.StringVar(&c.ResBandwidth, "res-bandwidth", "", "network bandwidth limit")
	fs.StringVar(&c.SamplingRate, "sampling-rate", "", "sampling rate 0.01..1.00")
	fs.StringVar(&c.SamplingRatePtsPerMinute, "sampling-rate-ptsperminute", "", "sampling: points per minute")

	// Passed by DataKit's ebpf input although its collector does not define them.
	fs.StringVar(&resNet, "res-net", "", "deprecated: use --res-bandwidth")
	fs.BoolVar(&traceAllProcess, "trace-allprocess", false, "deprecated, ignored")
	_ = fs.MarkHidden("res-net")
	_ = fs.MarkHidden("trace-allprocess")

	// Ours.
	fs.StringSliceVar(&ignoreCIDRs, "netflow-ignore-cidrs", nil, "do not report flows whose remote address is in these CIDRs")
	fs.IntVar(&c.MaxBufferedPoints, "max-buffered-points", 100000, "points buffered while the parent is unreachable")
	fs.IntVar(&c.HTTPMaxPaths, "httpflow-max-paths", 500, "httpflow: distinct paths per (process, Host) per interval; more fold into path \"*\"")
	fs.DurationVar(&c.SSLRescan, "httpflow-tls-rescan", 5*time.Second, "httpflow-tls: how often to look for new libssl files in /proc")
	fs.StringSliceVar(&dnsPorts, "dnsflow-ports", []string{"53"}, fmt.Sprintf("dnsflow: DNS server ports (at most %d)", maxDNSPorts))
	fs.DurationVar(&c.DNSTimeout, "dnsflow-timeout", 6*time.Second, "dnsflow: a query unanswered this long is reported with rcode -1")
	fs.DurationVar(&c.BashRescan, "bash-rescan", 5*time.Second, "ebpf-bash: how often to look for new bash binaries in /proc")
	fs.StringArrayVar(&bashRedact, "bash-redact", nil, "ebpf-bash: redaction rule name=regexp (repeatable); the regexp's group \"secret\" (or group 1) becomes ***")
	fs.StringVar(&c.BPFObjects, "bpf-objects", "", "directory of BPF objects (default: embedded in the binary)")
	fs.BoolVar(&c.BPFFloor, "bpf-floor", false, "benchmark only: attach the same hooks with programs that return at once (no data)")

	if err := fs.Parse(joinLegacyBoolValues(args)); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil, ErrHelp
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("run: unexpected arguments %q", fs.Args())
	}

	warn := func(format string, a ...any) {
		c.Warnings = append(c.Warnings, fmt.Sprintf(format, a...))
	}

	if fs.Changed("config") {
		return nil, fmt.Errorf("--config %q: --config is not supported yet, pass the settings as flags", config)
	}
	var err error
	if c.APIServer, err = baseURL(apiServer); err != nil {
		return nil, fmt.Errorf("--datakit-apiserver %q: %w", apiServer, err)
	}
	if traceServer != "" {
		if c.TraceServer, err = baseURL(traceServer); err != nil {
			return nil, fmt.Errorf("--trace-server %q: %w", traceServer, err)
		}
	}
	if c.Interval < time.Second {
		return nil, fmt.Errorf("--interval %s: must be at least 1s", c.Interval)
	}
	if !slices.Contains(logLevels, c.LogLevel) {
		return nil, fmt.Errorf("--log-level %q: want one of %s", c.LogLevel, strings.Join(logLevels, ", "))
	}
	if c.Tags, err = parseTags(tags); err != nil {
		return nil, err
	}
	if len(c.Enabled) == 0 {
		return nil, fmt.Errorf("--enabled is required: want one or more of %s", strings.Join(plugins, ", "))
	}
	for _, p := range c.Enabled {
		if !slices.Contains(plugins, p) {
			return nil, fmt.Errorf("--enabled %q: unknown plugin, want one of %s", p, strings.Join(plugins, ", "))
		}
	}
	if ephemeralPort < 0 || ephemeralPort > 65535 {
		return nil, fmt.Errorf("--ephemeral-port/--ephemeral_port %d: want 0..65535", ephemeralPort)
	}
	c.EphemeralPort = uint16(ephemeralPort)
	c.L7NetEnabled = knownL7(c.L7NetEnabled, "--l7net-enabled", warn)
	c.L7NetDisabled = knownL7(c.L7NetDisabled, "--l7net-disabled", warn)
	for _, s := range ignoreCIDRs {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("--netflow-ignore-cidrs %q: %w", s, err)
		}
		c.IgnoreCIDRs = append(c.IgnoreCIDRs, p.Masked())
	}
	if c.HTTPMaxPaths < 1 {
		return nil, fmt.Errorf("--httpflow-max-paths %d: must be at least 1", c.HTTPMaxPaths)
	}
	if c.SSLRescan < time.Second {
		return nil, fmt.Errorf("--httpflow-tls-rescan %s: must be at least 1s", c.SSLRescan)
	}
	if c.DNSPorts, err = parsePorts(dnsPorts); err != nil {
		return nil, fmt.Errorf("--dnsflow-ports %q: %w", strings.Join(dnsPorts, ","), err)
	}
	if c.DNSTimeout < 100*time.Millisecond {
		return nil, fmt.Errorf("--dnsflow-timeout %s: must be at least 100ms", c.DNSTimeout)
	}
	if c.BashRescan < time.Second {
		return nil, fmt.Errorf("--bash-rescan %s: must be at least 1s", c.BashRescan)
	}
	for _, r := range bashRedact {
		rule, err := ParseRedactRule(r)
		if err != nil {
			return nil, fmt.Errorf("--bash-redact %q: %w", r, err)
		}
		c.BashRedact = append(c.BashRedact, rule)
	}
	if c.MaxBufferedPoints < 1 {
		return nil, fmt.Errorf("--max-buffered-points %d: must be at least 1", c.MaxBufferedPoints)
	}

	if fs.Changed("res-net") {
		warn("--res-net is not a datakit-ebpf flag, treated as --res-bandwidth (not supported yet), ignored")
		if !fs.Changed("res-bandwidth") {
			c.ResBandwidth = resNet
		}
	}
	if fs.Changed("trace-allprocess") {
		warn("--trace-allprocess was removed from datakit-ebpf, ignored")
	}
	for _, name := range unsupportedFlags {
		if fs.Changed(name) {
			warn("--%s is accepted but not supported yet, ignored", name)
		}
	}
	return c, nil
}

// joinLegacyBoolValues rewrites `--ipv6-disabled true` as `--ipv6-disabled=true`, the form pflag parses.
func joinLegacyBoolValues(args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		if slices.Contains(legacyBoolFlags, a) && i+1 < len(args) && (args[i+1] == "true" || args[i+1] == "false") {
			a += "=" + args[i+1]
			i++
		}
		out = append(out, a)
	}
	return out
}

// baseURL turns a host:port, with or without scheme, into a base URL without a trailing slash.
func baseURL(s string) (string, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", err
	}
	if u.Host == "" {
		return "", errors.New("no host")
	}
	return strings.TrimRight(s, "/"), nil
}

// parseTags parses `k=v` items separated by ',' (the flag's documented form) or ';' (how DataKit joins them).
func parseTags(values []string) (map[string]string, error) {
	tags := make(map[string]string)
	for _, v := range values {
		for item := range strings.FieldsFuncSeq(v, func(r rune) bool { return r == ',' || r == ';' }) {
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			k, val, ok := strings.Cut(item, "=")
			k, val = strings.TrimSpace(k), strings.TrimSpace(val)
			if !ok || k == "" || strings.Contains(val, "=") {
				return nil, fmt.Errorf("--tags %q: want k=v", item)
			}
			tags[k] = val
		}
	}
	return tags, nil
}

// knownL7 returns the known values of an --l7net-* list and warns about the others.
func knownL7(values []string, flag string, warn func(string, ...any)) []string {
	var known []string
	for _, v := range values {
		if slices.Contains(l7Protocols, v) {
			known = append(known, v)
		} else {
			warn("%s %q: unknown value, ignored (known: %s)", flag, v, strings.Join(l7Protocols, ", "))
		}
	}
	return known
}

// maxDNSPorts is how many DNS ports the kernel side watches (bpf.DNSPortsMax).
const maxDNSPorts = 8

func parsePorts(list []string) ([]uint16, error) {
	var ports []uint16
	for _, s := range list {
		v, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
		if err != nil || v == 0 {
			return nil, fmt.Errorf("%q is not a port (1..65535)", s)
		}
		if !slices.Contains(ports, uint16(v)) {
			ports = append(ports, uint16(v))
		}
	}
	if len(ports) == 0 {
		return nil, errors.New("no port")
	}
	if len(ports) > maxDNSPorts {
		return nil, fmt.Errorf("at most %d ports", maxDNSPorts)
	}
	return ports, nil
}

// ParseRedactRule parses name=regexp and checks that the regexp compiles.
func ParseRedactRule(s string) (RedactRule, error) {
	name, pattern, ok := strings.Cut(s, "=")
	name = strings.TrimSpace(name)
	if !ok || name == "" || pattern == "" {
		return RedactRule{}, errors.New("want name=regexp")
	}
	if _, err := regexp.Compile(pattern); err != nil {
		return RedactRule{}, fmt.Errorf("rule %s: %w", name, err)
	}
	return RedactRule{Name: name, Pattern: pattern}, nil
}
