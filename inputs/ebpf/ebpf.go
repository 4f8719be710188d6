// Package ebpf is the agent's `ebpf` input ([[inputs.ebpf]]): it accepts
// DataKit's configuration keys and ENV_INPUT_EBPF_* variables, validates
// them, builds the datakit-ebpf command line in DataKit's order, and runs the
// collector under the external supervisor.
package ebpf

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"dkebpf/collector/bash"
	"dkebpf/inputs"
	"dkebpf/inputs/external"
)

// Name is the input's registered name.
const Name = "ebpf"

//go:embed ebpf.conf.sample
var sampleConfig string

// Allowed values of list keys.
var (
	AllowedPlugins = []string{"ebpf-net", "ebpf-bash", "ebpf-conntrack", "ebpf-trace", "bpf-netlog"}
	AllowedL7      = []string{"httpflow", "httpflow-tls"}
)

func init() {
	inputs.Add(Name, func(env inputs.Env) inputs.Input { return New(env) })
}

// Input is [[inputs.ebpf]]; field types and defaults follow DataKit's.
type Input struct {
	Daemon   bool     `toml:"daemon"`
	Name     string   `toml:"name"`
	Cmd      string   `toml:"cmd"`
	Args     []string `toml:"args"` // nil (key absent) = ["--datakit-apiserver", <agent API>]
	Envs     []string `toml:"envs"`
	Interval string   `toml:"interval"`

	EnabledPlugins []string `toml:"enabled_plugins"`
	L7NetEnabled   []string `toml:"l7net_enabled"`
	L7NetDisabled  []string `toml:"l7net_disabled"`
	IPv6Disabled   bool     `toml:"ipv6_disabled"`
	EphemeralPort  int32    `toml:"ephemeral_port"`
	PprofHost      string   `toml:"pprof_host"`
	PprofPort      string   `toml:"pprof_port"`

	NetlogBlacklist  string `toml:"netlog_blacklist"`
	NetlogMetric     bool   `toml:"netlog_metric"`
	NetlogLog        bool   `toml:"netlog_log"`
	NetlogMetricOnly bool   `toml:"netlog_metric_only"`

	TraceServer        string   `toml:"trace_server"`
	TraceEnvList       []string `toml:"trace_env_list"`
	TraceEnvBlacklist  []string `toml:"trace_env_blacklist"`
	TraceNameList      []string `toml:"trace_name_list"`
	TraceNameBlacklist []string `toml:"trace_name_blacklist"`
	TraceAllProcess    bool     `toml:"trace_all_process"`
	ConvToDDTrace      bool     `toml:"conv_to_ddtrace"`

	CPULimit string `toml:"cpu_limit"`
	MemLimit string `toml:"mem_limit"`
	NetLimit string `toml:"net_limit"`

	SamplingRate          string `toml:"sampling_rate"`
	SamplingRatePtsPerMin string `toml:"sampling_rate_pts_per_min"`

	KubernetesURL       string   `toml:"kubernetes_url"`
	BearerToken         string   `toml:"bearer_token"`
	BearerTokenString   string   `toml:"bearer_token_string"`
	WorkloadLabels      []string `toml:"workload_labels"`
	WorkloadLabelPrefix string   `toml:"workload_label_prefix"`

	Tags map[string]string `toml:"tags"`

	// Ours.
	NetflowIgnoreCIDRs []string     `toml:"netflow_ignore_cidrs"`
	HTTPFlowMaxPaths   int          `toml:"httpflow_max_paths"` // 0: the collector's default (500)
	DNSFlowPorts       []int        `toml:"dnsflow_ports"`      // empty: the collector's default (53)
	DNSFlowTimeout     string       `toml:"dnsflow_timeout"`    // "": the collector's default (6s)
	BashRedact         []RedactRule `toml:"bash_redact"`
	GracePeriod        string       `toml:"grace_period"`

	env     inputs.Env
	fromEnv map[string]string // key → the env var that set it
	path    string            // resolved executable
	grace   time.Duration
	sup     *external.Supervisor
}

// RedactRule is a user's bash redaction rule ([[inputs.ebpf.bash_redact]]): what its regexp's group
// "secret" (or group 1, or the whole match) matches becomes ***.
type RedactRule struct {
	Name    string `toml:"name" json:"name"`
	Pattern string `toml:"pattern" json:"pattern"`
}

// New returns an input holding DataKit's defaults.
func New(env inputs.Env) *Input {
	return &Input{
		Daemon:           true,
		Name:             Name,
		EphemeralPort:    -1,
		NetlogMetric:     true,
		NetlogMetricOnly: true,
		GracePeriod:      "10s",
		env:              env,
		fromEnv:          map[string]string{},
	}
}

// SampleConfig returns the shipped conf.d/samples/ebpf.conf.sample.
func (*Input) SampleConfig() string { return sampleConfig }

// Singleton marks ebpf as declarable once.
func (*Input) Singleton() {}

// ReadEnv applies ENV_INPUT_EBPF_* overrides (DataKit's ReadEnv) plus
// ENV_INPUT_EBPF_NETFLOW_IGNORE_CIDRS.
func (i *Input) ReadEnv(lookup func(string) (string, bool)) error {
	get := func(key string, names ...string) (string, bool) {
		for _, n := range names {
			if v, ok := lookup(n); ok {
				i.fromEnv[key] = n
				return v, true
			}
		}
		return "", false
	}
	str := func(key string, dst *string, names ...string) {
		if v, ok := get(key, names...); ok {
			*dst = v
		}
	}
	list := func(key string, dst *[]string, names ...string) {
		if v, ok := get(key, names...); ok {
			*dst = splitList(v)
		}
	}
	boolean := func(key string, dst *bool, names ...string) {
		if v, ok := get(key, names...); ok {
			*dst = parseBool(v)
		}
	}
	const p = "ENV_INPUT_EBPF_"
	list("enabled_plugins", &i.EnabledPlugins, p+"ENABLED_PLUGINS")
	list("l7net_enabled", &i.L7NetEnabled, p+"L7NET_ENABLED")
	boolean("ipv6_disabled", &i.IPv6Disabled, p+"IPV6_DISABLED")
	if v, ok := get("ephemeral_port", p+"EPHEMERAL_PORT"); ok {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 32)
		if err != nil {
			i.env.Log.Printf("ebpf: %sEPHEMERAL_PORT: invalid int32 %q, ignored", p, v)
			delete(i.fromEnv, "ephemeral_port")
		} else {
			i.EphemeralPort = int32(n)
		}
	}
	str("interval", &i.Interval, p+"INTERVAL")
	str("pprof_host", &i.PprofHost, p+"PPROF_HOST")
	str("pprof_port", &i.PprofPort, p+"PPROF_PORT")
	str("trace_server", &i.TraceServer, p+"TRACE_SERVER")
	list("trace_env_list", &i.TraceEnvList, p+"TRACE_ENV_LIST")
	list("trace_env_blacklist", &i.TraceEnvBlacklist, p+"TRACE_ENV_BLACKLIST")
	list("trace_name_list", &i.TraceNameList, p+"TRACE_NAME_LIST")
	list("trace_name_blacklist", &i.TraceNameBlacklist, p+"TRACE_NAME_BLACKLIST")
	boolean("conv_to_ddtrace", &i.ConvToDDTrace, p+"CONV_TO_DDTRACE")
	str("netlog_blacklist", &i.NetlogBlacklist, p+"NETLOG_BLACKLIST", "ENV_NETLOG_BLACKLIST")
	boolean("netlog_metric_only", &i.NetlogMetricOnly, p+"NETLOG_METRIC_ONLY", "ENV_NETLOG_METRIC_ONLY")
	boolean("netlog_metric", &i.NetlogMetric, p+"NETLOG_METRIC", "ENV_NETLOG_METRIC")
	boolean("netlog_log", &i.NetlogLog, p+"NETLOG_LOG", "ENV_NETLOG_LOG")
	str("cpu_limit", &i.CPULimit, p+"CPU_LIMIT")
	str("mem_limit", &i.MemLimit, p+"MEM_LIMIT")
	str("net_limit", &i.NetLimit, p+"NET_LIMIT")
	str("sampling_rate", &i.SamplingRate, p+"SAMPLING_RATE")
	str("sampling_rate_pts_per_min", &i.SamplingRatePtsPerMin, p+"SAMPLING_RATE_PTSPERMIN")
	list("workload_labels", &i.WorkloadLabels, p+"WORKLOAD_LABELS")
	str("workload_label_prefix", &i.WorkloadLabelPrefix, p+"WORKLOAD_LABEL_PREFIX")
	list("netflow_ignore_cidrs", &i.NetflowIgnoreCIDRs, p+"NETFLOW_IGNORE_CIDRS")
	if v, ok := get("httpflow_max_paths", p+"HTTPFLOW_MAX_PATHS"); ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%sHTTPFLOW_MAX_PATHS: invalid integer %q", p, v)
		}
		i.HTTPFlowMaxPaths = n
	}
	if v, ok := get("dnsflow_ports", p+"DNSFLOW_PORTS"); ok {
		i.DNSFlowPorts = nil
		for _, f := range splitList(v) {
			n, err := strconv.Atoi(f)
			if err != nil {
				return fmt.Errorf("%sDNSFLOW_PORTS: invalid port %q", p, f)
			}
			i.DNSFlowPorts = append(i.DNSFlowPorts, n)
		}
	}
	str("dnsflow_timeout", &i.DNSFlowTimeout, p+"DNSFLOW_TIMEOUT")
	if v, ok := get("bash_redact", p+"BASH_REDACT"); ok {
		i.BashRedact = nil
		if err := json.Unmarshal([]byte(v), &i.BashRedact); err != nil {
			return fmt.Errorf(`%sBASH_REDACT: want a JSON list like [{"name":"x","pattern":"y=(\\S+)"}]: %v`, p, err)
		}
	}
	return nil
}

// parseBool is DataKit's env bool: false for "", f, false, FALSE, False, 0.
func parseBool(v string) bool {
	switch v {
	case "", "f", "false", "FALSE", "False", "0":
		return false
	}
	return true
}

// splitList splits a comma list, trimming items and dropping empty ones.
func splitList(v string) []string {
	out := []string{}
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// keyErr names a key (and the env var that set it) in a config error.
func (i *Input) keyErr(key, format string, args ...any) error {
	name := "inputs.ebpf." + key
	base, _, _ := strings.Cut(key, "[") // bash_redact[0].pattern was set by bash_redact's variable
	if e, ok := i.fromEnv[base]; ok {
		name += " (from " + e + ")"
	}
	return fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...))
}

// Init fills defaults and validates the configuration; after it succeeds,
// Command and State may be used.
func (i *Input) Init() error {
	if len(i.EnabledPlugins) == 0 {
		i.EnabledPlugins = []string{"ebpf-net"}
	}
	if i.L7NetEnabled == nil && i.L7NetDisabled == nil {
		i.L7NetEnabled = []string{"httpflow"}
	}
	if i.Interval != "" {
		d, err := time.ParseDuration(i.Interval)
		if err != nil {
			return i.keyErr("interval", "invalid duration %q (want a duration of at least 1s, e.g. \"60s\", \"1m\")", i.Interval)
		}
		if d < time.Second {
			return i.keyErr("interval", "%q is below the minimum 1s", i.Interval)
		}
	}
	for _, p := range i.EnabledPlugins {
		if !slices.Contains(AllowedPlugins, p) {
			return i.keyErr("enabled_plugins", "unknown plugin %q (allowed: %s)", p, strings.Join(AllowedPlugins, ", "))
		}
	}
	for key, l := range map[string][]string{"l7net_enabled": i.L7NetEnabled, "l7net_disabled": i.L7NetDisabled} {
		for _, v := range l {
			if !slices.Contains(AllowedL7, v) {
				return i.keyErr(key, "unknown protocol %q (allowed: %s)", v, strings.Join(AllowedL7, ", "))
			}
		}
	}
	if i.EphemeralPort < -1 || i.EphemeralPort > 65535 {
		return i.keyErr("ephemeral_port", "%d out of range (allowed: -1 to disable, or 0..65535)", i.EphemeralPort)
	}
	if i.PprofPort != "" {
		if n, err := strconv.Atoi(i.PprofPort); err != nil || n < 1 || n > 65535 {
			return i.keyErr("pprof_port", "invalid port %q (want 1..65535)", i.PprofPort)
		}
	}
	for _, c := range i.NetflowIgnoreCIDRs {
		if _, err := netip.ParsePrefix(c); err != nil {
			return i.keyErr("netflow_ignore_cidrs", "invalid CIDR %q (want e.g. \"10.0.0.0/8\", \"::1/128\")", c)
		}
	}
	if i.HTTPFlowMaxPaths < 0 {
		return i.keyErr("httpflow_max_paths", "%d out of range (allowed: 0 for the default 500, or at least 1)", i.HTTPFlowMaxPaths)
	}
	if len(i.DNSFlowPorts) > 8 {
		return i.keyErr("dnsflow_ports", "%d ports (allowed: at most 8)", len(i.DNSFlowPorts))
	}
	for _, port := range i.DNSFlowPorts {
		if port < 1 || port > 65535 {
			return i.keyErr("dnsflow_ports", "%d out of range (allowed: 1..65535)", port)
		}
	}
	if i.DNSFlowTimeout != "" {
		if d, err := time.ParseDuration(i.DNSFlowTimeout); err != nil || d < 100*time.Millisecond {
			return i.keyErr("dnsflow_timeout", "invalid duration %q (want at least 100ms, e.g. \"6s\")", i.DNSFlowTimeout)
		}
	}
	taken := map[string]bool{}
	for _, d := range bash.DefaultRules() {
		taken[d.Name] = true
	}
	for n, r := range i.BashRedact {
		if r.Name == "" || strings.Contains(r.Name, "=") {
			return i.keyErr(fmt.Sprintf("bash_redact[%d].name", n), "%q: want a non-empty name without '='", r.Name)
		}
		if taken[r.Name] {
			return i.keyErr(fmt.Sprintf("bash_redact[%d].name", n), "%q is taken by a built-in or an earlier rule (user rules are added to the built-in ones, they cannot replace them)", r.Name)
		}
		taken[r.Name] = true
		if _, err := regexp.Compile(r.Pattern); err != nil || r.Pattern == "" {
			return i.keyErr(fmt.Sprintf("bash_redact[%d].pattern", n), "rule %s: invalid regexp %q: %v", r.Name, r.Pattern, err)
		}
	}
	grace, err := time.ParseDuration(i.GracePeriod)
	if err != nil || grace <= 0 {
		return i.keyErr("grace_period", "invalid duration %q (want a positive duration, e.g. \"10s\")", i.GracePeriod)
	}
	i.grace = grace
	for k, v := range i.Tags {
		if k == "" || strings.ContainsAny(k, "=;,") || strings.ContainsAny(v, ";,") {
			return i.keyErr("tags."+k, "invalid tag %q = %q (keys may not contain = ; , and values may not contain ; ,)", k, v)
		}
	}
	i.path = i.Cmd
	switch {
	case i.path == "":
		i.path = filepath.Join(i.env.InstallDir, "externals", "datakit-ebpf")
	case !filepath.IsAbs(i.path):
		i.path = filepath.Join(i.env.InstallDir, i.path)
	}

	path, args, env := i.Command()
	i.sup = external.New(external.Config{
		Name:        Name,
		Path:        path,
		Args:        args,
		Env:         env,
		InstallHint: "datakit install --ebpf",
		UnfitExit:   UnfitExit,
		GracePeriod: i.grace,
		Log:         i.env.Log,
	})
	return nil
}

// UnfitExit is datakit-ebpf's exit code when no plugin can run on this kernel (cmd/datakit-ebpf).
const UnfitExit = 3

var hostnameArg = regexp.MustCompile(`--hostname`)

// Command returns the collector's executable, arguments (starting with
// "run") and extra environment, assembled in DataKit's order.
func (i *Input) Command() (path string, args, env []string) {
	user := i.Args
	if user == nil {
		user = []string{"--datakit-apiserver", i.env.APIAddr}
	}
	args = append([]string{"run"}, user...)
	if !slices.ContainsFunc(user, hostnameArg.MatchString) && i.env.Hostname != "" {
		args = append(args, "--hostname", i.env.Hostname)
	}
	switch {
	case len(i.L7NetEnabled) > 0:
		args = append(args, "--l7net-enabled", strings.Join(i.L7NetEnabled, ","))
	case len(i.L7NetDisabled) > 0:
		args = append(args, "--l7net-disabled", strings.Join(i.L7NetDisabled, ","))
	}
	if i.PprofHost != "" {
		args = append(args, "--pprof-host", i.PprofHost)
	}
	if i.PprofPort != "" {
		args = append(args, "--pprof-port", i.PprofPort)
	}
	if i.IPv6Disabled {
		args = append(args, "--ipv6-disabled")
	}
	if i.EphemeralPort >= 0 {
		args = append(args, "--ephemeral_port", strconv.Itoa(int(i.EphemeralPort)))
	}
	if i.Interval != "" {
		args = append(args, "--interval", i.Interval)
	}
	if i.NetlogMetric {
		args = append(args, "--netlog-metric")
	}
	if !i.NetlogMetricOnly || i.NetlogLog {
		args = append(args, "--netlog-log")
	}
	if i.TraceServer != "" {
		args = append(args, "--trace-server", i.TraceServer)
	}
	for _, l := range []struct {
		flag string
		v    []string
	}{
		{"--trace-env-list", i.TraceEnvList},
		{"--trace-env-blacklist", i.TraceEnvBlacklist},
		{"--trace-name-list", i.TraceNameList},
		{"--trace-name-blacklist", i.TraceNameBlacklist},
	} {
		if len(l.v) > 0 {
			args = append(args, l.flag, strings.Join(l.v, ","))
		}
	}
	if i.TraceAllProcess {
		args = append(args, "--trace-allprocess")
	}
	if i.ConvToDDTrace {
		args = append(args, "--conv-to-ddtrace")
	}
	if i.CPULimit != "" {
		args = append(args, "--res-cpu", i.CPULimit)
	}
	if i.MemLimit != "" {
		args = append(args, "--res-mem", i.MemLimit)
	}
	if i.NetLimit != "" {
		args = append(args, "--res-net", i.NetLimit)
	}
	switch {
	case i.SamplingRate != "":
		args = append(args, "--sampling-rate", i.SamplingRate)
	case i.SamplingRatePtsPerMin != "":
		args = append(args, "--sampling-rate-ptsperminute", i.SamplingRatePtsPerMin)
	}
	if len(i.NetflowIgnoreCIDRs) > 0 {
		args = append(args, "--netflow-ignore-cidrs", strings.Join(i.NetflowIgnoreCIDRs, ","))
	}
	if i.HTTPFlowMaxPaths > 0 {
		args = append(args, "--httpflow-max-paths", strconv.Itoa(i.HTTPFlowMaxPaths))
	}
	if len(i.DNSFlowPorts) > 0 {
		ports := make([]string, len(i.DNSFlowPorts))
		for n, port := range i.DNSFlowPorts {
			ports[n] = strconv.Itoa(port)
		}
		args = append(args, "--dnsflow-ports", strings.Join(ports, ","))
	}
	if i.DNSFlowTimeout != "" {
		args = append(args, "--dnsflow-timeout", i.DNSFlowTimeout)
	}
	for _, r := range i.BashRedact {
		args = append(args, "--bash-redact", r.Name+"="+r.Pattern)
	}
	args = append(args, "--enabled", strings.Join(i.EnabledPlugins, ","))
	if len(i.Tags) > 0 {
		keys := make([]string, 0, len(i.Tags))
		for k := range i.Tags {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		kv := make([]string, len(keys))
		for n, k := range keys {
			kv[n] = k + "=" + i.Tags[k]
		}
		args = append(args, "--tags", strings.Join(kv, ";"))
	}

	if i.NetlogBlacklist != "" {
		env = append(env, "DKE_NETLOG_NET_FILTER="+i.NetlogBlacklist)
	}
	if i.KubernetesURL != "" {
		env = append(env, "DKE_K8S_URL="+i.KubernetesURL)
	}
	if i.BearerToken != "" {
		env = append(env, "DKE_K8S_BEARER_TOKEN_PATH="+i.BearerToken)
	}
	if i.BearerTokenString != "" {
		env = append(env, "DKE_K8S_BEARER_TOKEN="+i.BearerTokenString)
	}
	if len(i.WorkloadLabels) > 0 {
		env = append(env, "DKE_K8S_WORKLOAD_LABELS="+strings.Join(i.WorkloadLabels, ","))
		if i.WorkloadLabelPrefix != "" {
			// DataKit sends K8S_WORKLOAD_LABEL_PREFIX, which its collector
			// never reads; send the name the collector reads.
			env = append(env, "DKE_K8S_WORKLOAD_LABEL_PREFIX="+i.WorkloadLabelPrefix)
		}
	}
	env = append(env, i.Envs...)
	return i.path, args, env
}

// Unsupported returns the keys set to a non-default value whose feature the
// collector does not implement yet.
func (i *Input) Unsupported() []string {
	var keys []string
	add := func(key string, set bool) {
		if set {
			keys = append(keys, key)
		}
	}
	add("netlog_blacklist", i.NetlogBlacklist != "")
	add("netlog_metric", !i.NetlogMetric)
	add("netlog_log", i.NetlogLog)
	add("netlog_metric_only", !i.NetlogMetricOnly)
	add("trace_server", i.TraceServer != "")
	add("trace_env_list", len(i.TraceEnvList) > 0)
	add("trace_env_blacklist", len(i.TraceEnvBlacklist) > 0)
	add("trace_name_list", len(i.TraceNameList) > 0)
	add("trace_name_blacklist", len(i.TraceNameBlacklist) > 0)
	add("trace_all_process", i.TraceAllProcess)
	add("conv_to_ddtrace", i.ConvToDDTrace)
	add("cpu_limit", i.CPULimit != "")
	add("mem_limit", i.MemLimit != "")
	add("net_limit", i.NetLimit != "")
	add("sampling_rate", i.SamplingRate != "")
	add("sampling_rate_pts_per_min", i.SamplingRatePtsPerMin != "")
	add("kubernetes_url", i.KubernetesURL != "")
	add("bearer_token", i.BearerToken != "")
	add("bearer_token_string", i.BearerTokenString != "")
	add("workload_labels", len(i.WorkloadLabels) > 0)
	add("workload_label_prefix", i.WorkloadLabelPrefix != "")
	return keys
}

// State reports the supervised collector (for GET /v1/externals).
func (i *Input) State() external.State { return i.sup.State() }

// Run supervises the collector until ctx is cancelled.
func (i *Input) Run(ctx context.Context) error {
	for _, k := range i.Unsupported() {
		i.env.Log.Printf("ebpf: %s is accepted but not yet supported", k)
	}
	if !i.Daemon {
		i.env.Log.Printf("ebpf: daemon = false is ignored: the collector always runs as a long-lived child")
	}
	path, args, _ := i.Command()
	i.env.Log.Printf("ebpf: command: %s %s", path, strings.Join(args, " "))
	return i.sup.Run(ctx)
}
