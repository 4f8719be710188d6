package options

import "time"

// Plugins are the values of enabled_plugins / --enabled (DataKit's allow-list).
var Plugins = []string{"ebpf-net", "ebpf-bash", "ebpf-process", "ebpf-conntrack", "ebpf-trace", "bpf-netlog"}

// L7 are the values of l7net_enabled and l7net_disabled.
var L7 = []string{"httpflow", "httpflow-tls"}

// BuiltinRedactRules names the bash redaction rules the collector always applies (collector/bash, tested
// equal); a user rule may not take one of these names.
var BuiltinRedactRules = []string{"password", "password-flag", "mysql-p", "authorization", "bearer", "aws-secret",
	"token-env", "token-flag", "secret-header", "url-password", "curl-user", "cli-password", "known-token", "private-key"}

// DNSPortsMax is how many DNS server ports the kernel side watches (DF_PORTS_MAX in probes/dnsflow.h, tested).
const DNSPortsMax = 8

// ExitUnfit is datakit-ebpf's exit code when no plugin can run on this kernel: the agent then retries at its
// backoff cap rather than in a tight loop.
const ExitUnfit = 3

const env = "ENV_INPUT_EBPF_"

// Table is every option, in the order DataKit's input writes the command line (the agent's argv follows it).
var Table = []Option{
	// The agent's own keys.
	{Key: "daemon", Kind: Bool, AgentDefault: "true", Usage: "always a long-lived child; false is logged and ignored"},
	{Key: "name", Kind: String, AgentDefault: "ebpf", Usage: "a label"},
	{Key: "cmd", Kind: String, Usage: "collector executable; relative to the install dir; empty: externals/datakit-ebpf"},
	{Key: "args", Kind: Strings, Usage: "arguments right after run; absent: --datakit-apiserver <this agent's API>"},
	{Key: "envs", Kind: Strings, Usage: "extra KEY=VALUE environment of the collector"},
	{Key: "grace_period", Kind: Duration, AgentDefault: "10s", MinDur: time.Nanosecond, Usage: "on stop: SIGTERM, then SIGKILL after this long"},

	// The collector's, as DataKit's input writes them.
	{Flag: "config", Kind: String, Usage: "TOML configuration file (not supported: pass the settings as flags)"},
	{Flag: "datakit-apiserver", Kind: URL, Default: "0.0.0.0:9529", Usage: "address of the parent datakit's HTTP API"},
	{Flag: "hostname", Kind: String, Usage: "value of the host tag (default: host from --tags, else the system host name); the agent passes its own"},
	{Key: "l7net_enabled", Env: []string{env + "L7NET_ENABLED"}, Flag: "l7net-enabled", Kind: List, Allowed: L7, Item: "protocol", Lenient: true,
		Usage: "L7 tracers to enable (agent default: httpflow)"},
	{Key: "l7net_disabled", Flag: "l7net-disabled", Kind: List, Allowed: L7, Item: "protocol", Lenient: true,
		Usage: "L7 tracers to disable, the others are on (used only when l7net_enabled is empty)"},
	{Key: "pprof_host", Env: []string{env + "PPROF_HOST"}, Flag: "pprof-host", Kind: String, Default: "127.0.0.1",
		Usage: "address of Go's pprof server (served only when pprof_port is set)"},
	{Key: "pprof_port", Env: []string{env + "PPROF_PORT"}, Flag: "pprof-port", Kind: Int, Min: 1, Max: 65535,
		Usage: "port of Go's pprof server; unset: none"},
	{Key: "ipv6_disabled", Env: []string{env + "IPV6_DISABLED"}, Flag: "ipv6-disabled", Kind: Bool, Usage: "do not report IPv6 flows"},
	{Key: "ephemeral_port", Env: []string{env + "EPHEMERAL_PORT"}, Flag: "ephemeral_port", Aliases: []string{"ephemeral-port"}, Kind: Int,
		Default: "0", Min: 0, Max: 65535, Unset: "-1", AgentDefault: "-1", BadEnvIgnored: true,
		Usage: "ports at or above this are aggregated as *; 0: read from the kernel"},
	{Key: "interval", Env: []string{env + "INTERVAL"}, Flag: "interval", Kind: Duration, Default: "60s", MinDur: time.Second,
		Usage: "aggregation and flush interval"},
	{Flag: "pidfile", Kind: String, Usage: "write the collector's pid here; refuse to start while another datakit-ebpf holds it"},
	{Flag: "log", Kind: String, Usage: "log file, rotated at 32 MiB with 5 kept (default: datakit-ebpf.log beside the executable, externals/ in an install dir; - for none); the log also goes to stderr, which the agent copies"},
	{Flag: "log-level", Kind: String, Default: "info", Allowed: []string{"debug", "info", "warn", "error"}, Item: "level", Usage: "log level"},
	{Flag: "service", Kind: String, Default: "ebpf", Usage: "value of the service tag"},
	{Key: "netlog_blacklist", Env: []string{env + "NETLOG_BLACKLIST", "ENV_NETLOG_BLACKLIST"}, ChildEnv: "DKE_NETLOG_NET_FILTER", Kind: String, NotYet: "bpf-netlog",
		Usage: "bpf-netlog packet filter"},
	{Key: "netlog_metric", Env: []string{env + "NETLOG_METRIC", "ENV_NETLOG_METRIC"}, Flag: "netlog-metric", Kind: Bool, AgentDefault: "true", NotYet: "bpf-netlog",
		Usage: "bpf-netlog: report metrics"},
	{Key: "netlog_metric_only", Env: []string{env + "NETLOG_METRIC_ONLY", "ENV_NETLOG_METRIC_ONLY"}, Kind: Bool, AgentDefault: "true", NotYet: "bpf-netlog",
		Usage: "bpf-netlog: metrics only (false adds --netlog-log)"},
	{Key: "netlog_log", Env: []string{env + "NETLOG_LOG", "ENV_NETLOG_LOG"}, Flag: "netlog-log", Kind: Bool, NotYet: "bpf-netlog", Usage: "bpf-netlog: report logs"},
	{Flag: "netlog-protocols", Kind: List, Default: "http", NotYet: "bpf-netlog", Usage: "bpf-netlog: L7 protocols"},
	{Flag: "container-endpoints", Kind: List, Usage: "Docker-API sockets (docker, podman) asked for container names and images, under HOST_ROOT (default /var/run/docker.sock, /run/podman/podman.sock)"},
	{Key: "trace_server", Env: []string{env + "TRACE_SERVER"}, Flag: "trace-server", Kind: URL, NotYet: "ebpf-trace", Usage: "ebpf-trace: address that receives spans"},
	{Key: "trace_env_list", Env: []string{env + "TRACE_ENV_LIST"}, Flag: "trace-env-list", Kind: List, NotYet: "ebpf-trace", Usage: "ebpf-trace: environment variables selecting processes"},
	{Key: "trace_env_blacklist", Env: []string{env + "TRACE_ENV_BLACKLIST"}, Flag: "trace-env-blacklist", Kind: List, NotYet: "ebpf-trace", Usage: "ebpf-trace: environment variables excluding processes"},
	{Key: "trace_name_list", Env: []string{env + "TRACE_NAME_LIST"}, Flag: "trace-name-list", Kind: List, NotYet: "ebpf-trace", Usage: "ebpf-trace: process names to trace"},
	{Key: "trace_name_blacklist", Env: []string{env + "TRACE_NAME_BLACKLIST"}, Flag: "trace-name-blacklist", Kind: List, NotYet: "ebpf-trace", Usage: "ebpf-trace: process names not to trace"},
	{Key: "trace_all_process", Flag: "trace-allprocess", Kind: Bool, Hidden: true, NotYet: "ebpf-trace", Usage: "ebpf-trace: removed from datakit-ebpf, ignored"},
	{Flag: "trace-protos", Kind: List, NotYet: "ebpf-trace", Usage: "ebpf-trace: protocols to trace"},
	{Flag: "trace-protos-blacklist", Kind: List, NotYet: "ebpf-trace", Usage: "ebpf-trace: protocols not to trace"},
	{Key: "conv_to_ddtrace", Env: []string{env + "CONV_TO_DDTRACE"}, Flag: "conv-to-ddtrace", Kind: Bool, NotYet: "ebpf-trace", Usage: "ebpf-trace: convert trace ids to ddtrace's"},
	{Key: "cpu_limit", Env: []string{env + "CPU_LIMIT"}, Flag: "res-cpu", Kind: Float,
		Usage: "CPU the collector may use, in cores (e.g. 0.5): GOMAXPROCS is rounded up from it; over it for 30 s, the collector exits and is restarted"},
	{Key: "mem_limit", Env: []string{env + "MEM_LIMIT"}, Flag: "res-mem", Kind: Size,
		Usage: "memory the collector may use (e.g. 256MiB): Go's memory limit; resident memory over it, the collector exits and is restarted"},
	{Key: "net_limit", Env: []string{env + "NET_LIMIT"}, Flag: "res-net", Kind: Size, Hidden: true,
		Usage: "bandwidth per second (e.g. 100MiB/s): any network interface but lo past it in or out, the collector exits and is restarted (DataKit passes --res-net for --res-bandwidth)"},
	{Flag: "res-bandwidth", Kind: Size, Usage: "bandwidth per second (e.g. 100MiB/s): any network interface but lo past it in or out, the collector exits and is restarted"},
	{Key: "sampling_rate", Env: []string{env + "SAMPLING_RATE"}, Flag: "sampling-rate", Kind: Float, MinF: 0.01, MaxF: 1,
		Usage: "keep one point in int(1/rate) of each plugin's points every interval, as DataKit samples"},
	{Key: "sampling_rate_pts_per_min", Env: []string{env + "SAMPLING_RATE_PTSPERMIN"}, Flag: "sampling-rate-ptsperminute", Kind: Int, Min: 1, Max: maxInt,
		Usage: "sample each category down to about this many points per minute (used only when sampling_rate is empty)"},
	{Key: "kubernetes_url", ChildEnv: "DKE_K8S_URL", Kind: String,
		Usage: "Kubernetes API server (default: the in-cluster address, else https://kubernetes.default:443); enrichment runs when a token is found"},
	{Key: "bearer_token", ChildEnv: "DKE_K8S_BEARER_TOKEN_PATH", Kind: String,
		Usage: "file holding the API server's bearer token (default: the service account's, /run/secrets/kubernetes.io/serviceaccount/token)"},
	{Key: "bearer_token_string", ChildEnv: "DKE_K8S_BEARER_TOKEN", Kind: String, Usage: "the API server's bearer token (wins over bearer_token)"},
	{Key: "workload_labels", Env: []string{env + "WORKLOAD_LABELS"}, ChildEnv: "DKE_K8S_WORKLOAD_LABELS", Kind: List,
		Usage: "labels of the src pod's workload added as tags"},
	{Key: "workload_label_prefix", Env: []string{env + "WORKLOAD_LABEL_PREFIX"}, ChildEnv: "DKE_K8S_WORKLOAD_LABEL_PREFIX", Kind: String,
		Usage: "prefix of those tags' keys (passed only with workload_labels; DataKit's agent passes it without DKE_, so its collector never applies it)"},

	// Ours.
	{Key: "netflow_ignore_cidrs", Env: []string{env + "NETFLOW_IGNORE_CIDRS"}, Flag: "netflow-ignore-cidrs", Kind: CIDRs,
		Usage: "flows whose remote address is in one of these CIDRs are not reported (loopback is kept by default)"},
	{Key: "netflow_max_sockets", Env: []string{env + "NETFLOW_MAX_SOCKETS"}, Flag: "netflow-max-sockets", Kind: Int, Default: "65536", Min: 1024, Max: 1 << 22, Unset: "0",
		Usage: "netflow: TCP sockets followed at once (a connection between two processes of this host has two); the map is preallocated, about 180 B each; a socket beyond it is counted in netflow_connections_untracked"},
	{Flag: "max-buffered-points", Kind: Int, Default: "100000", Min: 1, Max: maxInt, Usage: "points held in memory while the parent is unreachable (beyond 4096, or half of it, they spill to the spool)"},
	{Key: "httpflow_max_paths", Env: []string{env + "HTTPFLOW_MAX_PATHS"}, Flag: "httpflow-max-paths", Kind: Int, Default: "500", Min: 1, Max: maxInt, Unset: "0",
		Usage: "httpflow: distinct paths per (process, Host) per interval; more fold into path *"},
	{Key: "api_services", Env: []string{env + "API_SERVICES"}, Flag: "api-services", Kind: List, Item: "service",
		Valid: func(s string) error { _, _, err := APIService(s); return err },
		Usage: "api_endpoint: host-pattern=service entries naming the APIs this host calls, before the built-in table (* matches any characters: *.example.com=example)"},
	{Flag: "httpflow-tls-rescan", Kind: Duration, Default: "5s", MinDur: time.Second, Usage: "httpflow-tls: how often /proc is searched for new libssl files, programs with OpenSSL linked in and Go programs"},
	{Key: "dnsflow_ports", Env: []string{env + "DNSFLOW_PORTS"}, Flag: "dnsflow-ports", Kind: Ports, Default: "53", MaxItems: DNSPortsMax,
		Usage: "dnsflow: the DNS servers' ports"},
	{Key: "dnsflow_timeout", Env: []string{env + "DNSFLOW_TIMEOUT"}, Flag: "dnsflow-timeout", Kind: Duration, Default: "6s", MinDur: 100 * time.Millisecond,
		Usage: "dnsflow: a query unanswered this long is reported with rcode -1"},
	{Flag: "bash-rescan", Kind: Duration, Default: "5s", MinDur: time.Second, Usage: "ebpf-bash: how often /proc is searched for new bash binaries"},
	{Key: "bash_redact", Env: []string{env + "BASH_REDACT"}, Flag: "bash-redact", Kind: Rules,
		Usage: "ebpf-bash: redaction rules name=regexp, after the built-in ones; the regexp's group \"secret\" (or group 1) becomes ***"},
	{Flag: "bpf-objects", Kind: String, Usage: "directory of BPF objects (default: embedded in the binary)"},
	{Flag: "bpf-floor", Kind: Bool, Usage: "benchmark only: attach the same hooks with programs that return at once (no data)"},
	{Key: "enabled_plugins", Env: []string{env + "ENABLED_PLUGINS"}, Flag: "enabled", Kind: List, Allowed: Plugins, Item: "plugin", AgentDefault: "ebpf-net",
		Usage: "plugins to run (required on the command line)"},
	{Key: "tags", Flag: "tags", Kind: Tags, Usage: "tags added to every point ([inputs.ebpf.tags]; --tags k1=v1;k2=v2)"},
}

// ByKey returns the row of a TOML key.
func ByKey(key string) *Option {
	for i := range Table {
		if Table[i].Key == key && key != "" {
			return &Table[i]
		}
	}
	return nil
}

// ByFlag returns the row of a collector flag (or one of its aliases).
func ByFlag(flag string) *Option {
	for i := range Table {
		o := &Table[i]
		if o.Flag != "" && (o.Flag == flag || contains(o.Aliases, flag)) {
			return o
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
