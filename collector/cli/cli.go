// Package cli is the first stage of the pipeline: it parses the datakit-ebpf command line, as written by
// DataKit's ebpf input, into the configuration every later stage starts from.
package cli

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"dkebpf/options"
)

// ErrUsage is returned, after the usage has been written to stderr, when the command line names no known
// command.
var ErrUsage = errors.New("usage error")

// ErrHelp is returned, after the usage has been written, when the command line asks for help (exit 0).
var ErrHelp = errors.New("help requested")

// Command is a parsed command line.
type Command struct {
	Name string     // "run" or "version"
	Run  *RunConfig // set when Name is "run"
}

// RunConfig is the configuration of `datakit-ebpf run`. Each field tagged `flag` is filled from that row of
// options.Table (its default when the flag is absent). Empty strings and nil lists mean "not set".
type RunConfig struct {
	APIServer   string            `flag:"datakit-apiserver"` // base URL of the parent datakit, e.g. "http://0.0.0.0:9529"
	TraceServer string            `flag:"trace-server"`      // base URL for eBPF spans (not supported yet)
	Hostname    string            `flag:"hostname"`          // see GlobalTags
	Service     string            `flag:"service"`           // value of the service tag on every point
	Tags        map[string]string `flag:"tags"`              // custom global tags
	Interval    time.Duration     `flag:"interval"`          // aggregation and flush period
	PidFile     string            `flag:"pidfile"`           // "" = none
	Log         string            `flag:"log"`               // "" = stderr only
	LogLevel    string            `flag:"log-level"`         // debug, info, warn or error

	Enabled       []string `flag:"enabled"`        // plugins to run; see Plugin
	EphemeralPort uint16   `flag:"ephemeral_port"` // first ephemeral port, 0 = read from the kernel
	L7NetEnabled  []string `flag:"l7net-enabled"`  // known values of --l7net-enabled
	L7NetDisabled []string `flag:"l7net-disabled"` // known values of --l7net-disabled
	IPv6Disabled  bool     `flag:"ipv6-disabled"`
	PprofHost     string   `flag:"pprof-host"` // Go's pprof server, when PprofPort is set
	PprofPort     int      `flag:"pprof-port"`
	ResCPU        float64  `flag:"res-cpu"`       // CPU limit in cores, 0 = none
	ResMem        int64    `flag:"res-mem"`       // memory limit in bytes, 0 = none
	ResBandwidth  int64    `flag:"res-bandwidth"` // bytes per second in or out of any interface but lo, 0 = none
	ResNet        int64    `flag:"res-net"`       // DataKit's input passes it for --res-bandwidth

	SamplingRate             float64 `flag:"sampling-rate"`              // keep 1 point in int(1/rate), 0 = all
	SamplingRatePtsPerMinute int     `flag:"sampling-rate-ptsperminute"` // or sample down to this many a minute

	ContainerEndpoints []string `flag:"container-endpoints"` // Docker-API sockets asked for container names

	// Kubernetes enrichment, from the environment the agent sets (DataKit's DKE_K8S_*).
	K8sURL            string   `env:"DKE_K8S_URL"`
	K8sToken          string   `env:"DKE_K8S_BEARER_TOKEN"`
	K8sTokenFile      string   `env:"DKE_K8S_BEARER_TOKEN_PATH"`
	K8sWorkloadLabels []string `env:"DKE_K8S_WORKLOAD_LABELS"`
	K8sLabelPrefix    string   `env:"DKE_K8S_WORKLOAD_LABEL_PREFIX"`

	// Set by our agent for its own child, not user options (so not rows of options.Table): read verbatim.
	SpoolDir string `agentenv:"DKE_SPOOL_DIR"` // where the sender keeps what it could not post at shutdown; "" = none
	APIToken string `agentenv:"DKE_API_TOKEN"` // sent as Authorization: Bearer <token> to the agent's API; "" = none

	// Accepted for compatibility with DataKit, not used yet.
	NetlogNetFilter      string   `env:"DKE_NETLOG_NET_FILTER"`
	NetlogMetric         bool     `flag:"netlog-metric"`
	NetlogLog            bool     `flag:"netlog-log"`
	NetlogProtocols      []string `flag:"netlog-protocols"`
	TraceProtos          []string `flag:"trace-protos"`
	TraceProtosBlacklist []string `flag:"trace-protos-blacklist"`
	TraceEnvList         []string `flag:"trace-env-list"`
	TraceNameList        []string `flag:"trace-name-list"`
	TraceEnvBlacklist    []string `flag:"trace-env-blacklist"`
	TraceNameBlacklist   []string `flag:"trace-name-blacklist"`
	ConvToDDTrace        bool     `flag:"conv-to-ddtrace"`
	TraceAllProcess      bool     `flag:"trace-allprocess"`

	// Ours.
	IgnoreCIDRs       []netip.Prefix `flag:"netflow-ignore-cidrs"` // flows whose remote address is inside one are not reported
	MaxSockets        int            `flag:"netflow-max-sockets"`  // netflow: nf_socks' size
	HTTPMaxPaths      int            `flag:"httpflow-max-paths"`   // httpflow: distinct paths per (process, Host) per interval
	APIServices       []string       `flag:"api-services"`         // api_endpoint: host-pattern=service, before the built-in table
	SSLRescan         time.Duration  `flag:"httpflow-tls-rescan"`  // httpflow-tls: how often /proc is searched for libssl
	DNSPorts          []uint16       `flag:"dnsflow-ports"`        // dnsflow: server ports that mark DNS
	DNSTimeout        time.Duration  `flag:"dnsflow-timeout"`      // dnsflow: unanswered this long = rcode -1
	BashRescan        time.Duration  `flag:"bash-rescan"`          // ebpf-bash: how often /proc is searched for bash
	BashRedact        []RedactRule   `flag:"bash-redact"`          // ebpf-bash: the user's redaction rules
	MaxBufferedPoints int            `flag:"max-buffered-points"`  // bound of the sender's buffer
	BPFObjects        string         `flag:"bpf-objects"`          // directory of BPF objects; "" = embedded
	BPFFloor          bool           `flag:"bpf-floor"`            // benchmark only: programs that return at once

	// Warnings about accepted but ignored flags and values, for the caller to log once.
	Warnings []string
}

// RedactRule is a user's bash redaction rule.
type RedactRule = options.RedactRule

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
	fs := pflag.NewFlagSet("datakit-ebpf run", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: datakit-ebpf run [flags]\n\nflags:\n")
		fs.PrintDefaults()
	}
	var order []*flagValue // table order: errors and warnings come in a stable order
	values := map[*options.Option]*flagValue{}
	for i := range options.Table {
		o := &options.Table[i]
		if o.Flag == "" {
			continue
		}
		v := &flagValue{opt: o}
		values[o] = v
		order = append(order, v)
		for n, name := range append([]string{o.Flag}, o.Aliases...) {
			u := usage(o)
			if n > 0 {
				u = "same as --" + o.Flag
			}
			f := fs.VarPF(v, name, "", u)
			if o.Kind == options.Bool {
				f.NoOptDefVal = "true"
			}
			f.Hidden = o.Hidden
		}
	}
	if err := fs.Parse(joinLegacyBoolValues(args)); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil, ErrHelp
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("run: unexpected arguments %q", fs.Args())
	}

	c := &RunConfig{}
	warn := func(format string, a ...any) {
		c.Warnings = append(c.Warnings, fmt.Sprintf(format, a...))
	}
	parsed := map[string]any{}
	for _, v := range order {
		o, words := v.opt, v.words
		if o.Lenient && len(words) > 0 {
			list, _ := o.Parse(words)
			known, unknown := o.Known(list.([]string))
			for _, u := range unknown {
				warn("--%s %q: unknown value, ignored (known: %s)", o.Flag, u, strings.Join(o.Allowed, ", "))
			}
			words = []string{strings.Join(known, ",")}
		}
		val, err := o.Parse(words)
		if err == nil && v.set { // defaults are checked by the table's tests
			err = o.Check(val)
		}
		if err != nil {
			return nil, fmt.Errorf("--%s %s: %w", o.Flag, strings.Join(v.words, " "), err)
		}
		parsed[o.Flag] = val
		if v.set && o.NotYet != "" && !(o.Kind == options.Bool && o.AgentDefault == strings.Join(v.words, "")) {
			warn("--%s is accepted but not supported yet (%s is not built), ignored", o.Flag, o.NotYet)
		}
	}
	// Rows without a flag reach the collector as environment variables (DataKit's DKE_*).
	for i := range options.Table {
		o := &options.Table[i]
		if o.ChildEnv == "" || o.Flag != "" {
			continue
		}
		s := strings.TrimSpace(os.Getenv(o.ChildEnv))
		var words []string
		if s != "" {
			words = []string{s}
		}
		val, err := o.Parse(words)
		if err == nil && s != "" {
			err = o.Check(val)
		}
		if err != nil {
			return nil, fmt.Errorf("%s=%s: %w", o.ChildEnv, s, err)
		}
		parsed["$"+o.ChildEnv] = val
		if s != "" && o.NotYet != "" {
			warn("%s is accepted but not supported yet (%s is not built), ignored", o.ChildEnv, o.NotYet)
		}
	}
	if err := fill(c, parsed); err != nil {
		return nil, err
	}
	fillAgentEnv(c, os.Getenv)

	if config := values[options.ByFlag("config")]; config.set {
		return nil, fmt.Errorf("--config %q: --config is not supported yet, pass the settings as flags", config.String())
	}
	if len(c.Enabled) == 0 {
		return nil, fmt.Errorf("--enabled is required: want one or more of %s", strings.Join(options.Plugins, ", "))
	}
	// DataKit's input passes --res-net, which its collector does not define: it means --res-bandwidth.
	if values[options.ByFlag("res-net")].set {
		warn("--res-net is not a datakit-ebpf flag (DataKit's collector reads --res-bandwidth), treated as --res-bandwidth")
		if c.ResBandwidth == 0 {
			c.ResBandwidth = c.ResNet
		}
	}
	return c, nil
}

// usage is a row's line in --help: its text and, for the agent's users, the key that sets it.
func usage(o *options.Option) string {
	u := o.Usage
	if len(o.Allowed) > 0 {
		u += "; one of " + strings.Join(o.Allowed, ", ")
	}
	if o.Default != "" {
		u += " (default " + o.Default + ")"
	}
	return u
}

// flagValue collects the words given for one row's flag (and its aliases); each is parsed when given, so a
// malformed one is refused naming the flag.
type flagValue struct {
	opt   *options.Option
	words []string
	set   bool
}

func (v *flagValue) String() string { return strings.Join(v.words, ",") }
func (v *flagValue) Type() string {
	return [...]string{"bool", "int", "float", "string", "url", "duration", "list", "ports", "cidrs", "k=v", "name=regexp", "strings", "size"}[v.opt.Kind]
}

func (v *flagValue) Set(word string) error {
	if _, err := v.opt.Parse([]string{word}); err != nil {
		return err
	}
	switch v.opt.Kind {
	case options.List, options.Ports, options.CIDRs, options.Tags, options.Rules:
		v.words = append(v.words, word)
	default:
		v.words = []string{word}
	}
	v.set = true
	return nil
}

// IsBoolFlag lets pflag accept a bare boolean flag.
func (v *flagValue) IsBoolFlag() bool { return v.opt.Kind == options.Bool }

// fill sets every RunConfig field tagged `flag` (or `env`) from the parsed value of that flag (or
// environment variable, keyed "$NAME").
func fill(c *RunConfig, parsed map[string]any) error {
	rv := reflect.ValueOf(c).Elem()
	for i := 0; i < rv.NumField(); i++ {
		name := rv.Type().Field(i).Tag.Get("flag")
		if e := rv.Type().Field(i).Tag.Get("env"); e != "" {
			name = "$" + e
		}
		if name == "" {
			continue
		}
		v, ok := parsed[name]
		if !ok {
			return fmt.Errorf("RunConfig.%s: no option --%s", rv.Type().Field(i).Name, name)
		}
		pv, f := reflect.ValueOf(v), rv.Field(i)
		if !pv.Type().ConvertibleTo(f.Type()) {
			return fmt.Errorf("RunConfig.%s: --%s is a %s", rv.Type().Field(i).Name, name, pv.Type())
		}
		f.Set(pv.Convert(f.Type()))
	}
	return nil
}

// fillAgentEnv sets every RunConfig field tagged `agentenv` from that environment variable, spaces trimmed.
func fillAgentEnv(c *RunConfig, getenv func(string) string) {
	rv := reflect.ValueOf(c).Elem()
	for i := 0; i < rv.NumField(); i++ {
		if name := rv.Type().Field(i).Tag.Get("agentenv"); name != "" {
			rv.Field(i).SetString(strings.TrimSpace(getenv(name)))
		}
	}
}

// joinLegacyBoolValues rewrites `--ipv6-disabled true` as `--ipv6-disabled=true`, the form pflag parses.
func joinLegacyBoolValues(args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		if a == "--ipv6-disabled" && i+1 < len(args) && (args[i+1] == "true" || args[i+1] == "false") {
			a += "=" + args[i+1]
			i++
		}
		out = append(out, a)
	}
	return out
}
