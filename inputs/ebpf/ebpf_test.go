package ebpf

import (
	"bytes"
	"io"
	"log"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"dkebpf/inputs"
	"dkebpf/options"
)

var testEnv = inputs.Env{
	InstallDir: "/opt/dk",
	APIAddr:    "localhost:9529",
	Hostname:   "node1",
	Log:        log.New(io.Discard, "", 0),
}

// decode parses conf like the agent does and returns the single ebpf input.
func decode(t *testing.T, conf string) *Input {
	t.Helper()
	var f struct {
		Inputs map[string][]toml.Primitive `toml:"inputs"`
	}
	md, err := toml.Decode(conf, &f)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Inputs["ebpf"]) != 1 {
		t.Fatalf("want one [[inputs.ebpf]], got %d", len(f.Inputs["ebpf"]))
	}
	in := New(testEnv)
	if err := md.PrimitiveDecode(f.Inputs["ebpf"][0], in); err != nil {
		t.Fatal(err)
	}
	if u := md.Undecoded(); len(u) > 0 {
		t.Fatalf("undecoded keys: %v", u)
	}
	return in
}

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestShippedSampleIsSampleConfig(t *testing.T) {
	shipped, err := os.ReadFile("../../conf.d/samples/ebpf.conf.sample")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(shipped, []byte((&Input{}).SampleConfig())) {
		t.Error("conf.d/samples/ebpf.conf.sample differs from SampleConfig(); copy inputs/ebpf/ebpf.conf.sample over it")
	}
}

func TestSampleCommandLine(t *testing.T) {
	in := decode(t, (&Input{}).SampleConfig())
	if err := in.ReadEnv(env(nil)); err != nil {
		t.Fatal(err)
	}
	if err := in.Init(); err != nil {
		t.Fatal(err)
	}
	path, args, extraEnv := in.Command()
	if path != "/opt/dk/externals/datakit-ebpf" {
		t.Errorf("path = %q", path)
	}
	want := "run --datakit-apiserver localhost:9529 --hostname node1 --l7net-enabled httpflow " +
		"--interval 60s --netlog-metric --enabled ebpf-net"
	if got := strings.Join(args, " "); got != want {
		t.Errorf("args =\n  %s\nwant\n  %s", got, want)
	}
	if want := []string{"DKE_SPOOL_DIR=/opt/dk/data/ebpf-spool"}; !slices.Equal(extraEnv, want) {
		t.Errorf("env = %q, want %q (no DKE_API_TOKEN: the agent wants none)", extraEnv, want)
	}
	if u := in.Unsupported(); len(u) != 0 {
		t.Errorf("sample sets unsupported keys %v", u)
	}
}

func TestCommandLineWithTagsAndEnvOverrides(t *testing.T) {
	in := decode(t, `
[[inputs.ebpf]]
  cmd = "/usr/local/bin/datakit-ebpf"
  args = ["--datakit-apiserver", "127.0.0.1:19529", "--hostname=fixed"]
  envs = ["HOST_ROOT=/rootfs"]
  interval = "30s"
  enabled_plugins = ["ebpf-net"]
  pprof_port = "6061"
  cpu_limit = "1.5"
  netlog_blacklist = "port 22"
  workload_labels = ["app"]
  [inputs.ebpf.tags]
    zone = "b"
    app = "shop"
    env = "prod"
`)
	err := in.ReadEnv(env(map[string]string{
		"ENV_INPUT_EBPF_ENABLED_PLUGINS":      "ebpf-net, ebpf-bash",
		"ENV_INPUT_EBPF_IPV6_DISABLED":        "1",
		"ENV_INPUT_EBPF_EPHEMERAL_PORT":       "32768",
		"ENV_INPUT_EBPF_INTERVAL":             "2m",
		"ENV_INPUT_EBPF_L7NET_ENABLED":        "httpflow,httpflow-tls",
		"ENV_NETLOG_METRIC":                   "False", // legacy name
		"ENV_INPUT_EBPF_SAMPLING_RATE":        "0.5",
		"ENV_INPUT_EBPF_NETFLOW_IGNORE_CIDRS": "127.0.0.0/8,::1/128",
		"ENV_INPUT_EBPF_HTTPFLOW_MAX_PATHS":   "50",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Init(); err != nil {
		t.Fatal(err)
	}
	path, args, extraEnv := in.Command()
	if path != "/usr/local/bin/datakit-ebpf" {
		t.Errorf("path = %q", path)
	}
	want := "run --datakit-apiserver 127.0.0.1:19529 --hostname=fixed --l7net-enabled httpflow,httpflow-tls " +
		"--pprof-port 6061 --ipv6-disabled --ephemeral_port 32768 --interval 2m " +
		"--res-cpu 1.5 --sampling-rate 0.5 --netflow-ignore-cidrs 127.0.0.0/8,::1/128 --httpflow-max-paths 50 " +
		"--enabled ebpf-net,ebpf-bash --tags app=shop;env=prod;zone=b"
	if got := strings.Join(args, " "); got != want {
		t.Errorf("args =\n  %s\nwant\n  %s", got, want)
	}
	wantEnv := "DKE_NETLOG_NET_FILTER=port 22|DKE_K8S_WORKLOAD_LABELS=app|DKE_SPOOL_DIR=/opt/dk/data/ebpf-spool|HOST_ROOT=/rootfs"
	if got := strings.Join(extraEnv, "|"); got != wantEnv {
		t.Errorf("env = %q, want %q", got, wantEnv)
	}
	wantUnsupported := "netlog_blacklist netlog_metric"
	if got := strings.Join(in.Unsupported(), " "); got != wantUnsupported {
		t.Errorf("unsupported = %q, want %q", got, wantUnsupported)
	}
}

func TestCollectorGetsTheAPITokenAndSpoolDirInItsEnvironment(t *testing.T) {
	e := testEnv
	e.APIToken = "s3cret"
	in := decode(t, "[[inputs.ebpf]]\nenvs = [\"DKE_SPOOL_DIR=/var/spool/dk\"]\n")
	in.env = e
	if err := in.Init(); err != nil {
		t.Fatal(err)
	}
	_, args, extraEnv := in.Command()
	want := []string{"DKE_SPOOL_DIR=/opt/dk/data/ebpf-spool", "DKE_API_TOKEN=s3cret", "DKE_SPOOL_DIR=/var/spool/dk"}
	if !slices.Equal(extraEnv, want) {
		t.Errorf("env = %q, want %q (the input's envs last, so they win)", extraEnv, want)
	}
	if strings.Contains(strings.Join(args, " "), "s3cret") {
		t.Errorf("args %q carry the token: anyone can read them in ps", args)
	}
}

func TestUnknownKeySuggestsTheClosest(t *testing.T) {
	for conf, want := range map[string]string{
		`intervall = "1m"`:       `inputs.ebpf.intervall: unknown key (did you mean "interval"?)`,
		`enabled_plugin = ["x"]`: `inputs.ebpf.enabled_plugin: unknown key (did you mean "enabled_plugins"?)`,
		`percpu = true`:          `inputs.ebpf.percpu: unknown key`,
	} {
		in := decode(t, "[[inputs.ebpf]]\n"+conf+"\n")
		err := in.Init()
		if err == nil || err.Error() != want {
			t.Errorf("%s: err = %v, want %s", conf, err, want)
		}
	}
}

func TestDefaultsWithoutConfig(t *testing.T) {
	in := New(testEnv)
	if err := in.Init(); err != nil {
		t.Fatal(err)
	}
	_, args, _ := in.Command()
	want := "run --datakit-apiserver localhost:9529 --hostname node1 --l7net-enabled httpflow --netlog-metric --enabled ebpf-net"
	if got := strings.Join(args, " "); got != want {
		t.Errorf("args = %s, want %s", got, want)
	}
}

func TestRelativeCmdIsUnderInstallDir(t *testing.T) {
	in := decode(t, "[[inputs.ebpf]]\ncmd = \"bin/collector\"\n")
	if err := in.Init(); err != nil {
		t.Fatal(err)
	}
	if p, _, _ := in.Command(); p != "/opt/dk/bin/collector" {
		t.Errorf("path = %q", p)
	}
}

func TestInvalidValuesAreRejectedNamingTheKey(t *testing.T) {
	tests := []struct {
		name, conf string
		env        map[string]string
		want       string
	}{
		{"bad interval", `interval = "abc"`, nil, `inputs.ebpf.interval: invalid duration "abc"`},
		{"short interval", `interval = "500ms"`, nil, `inputs.ebpf.interval: "500ms" is below the minimum 1s`},
		{"interval from env", ``, map[string]string{"ENV_INPUT_EBPF_INTERVAL": "x"}, `inputs.ebpf.interval (from ENV_INPUT_EBPF_INTERVAL): invalid duration "x"`},
		{"unknown plugin", `enabled_plugins = ["ebpf-net", "ebpf-nett"]`, nil, `inputs.ebpf.enabled_plugins: unknown plugin "ebpf-nett" (allowed: ebpf-net, ebpf-bash, ebpf-process, ebpf-conntrack, ebpf-trace, bpf-netlog)`},
		{"unknown l7", `l7net_enabled = ["grpc"]`, nil, `inputs.ebpf.l7net_enabled: unknown protocol "grpc" (allowed: httpflow, httpflow-tls)`},
		{"unknown l7 disabled", `l7net_disabled = ["h2"]`, nil, `inputs.ebpf.l7net_disabled: unknown protocol "h2"`},
		{"port range", `ephemeral_port = 70000`, nil, `inputs.ebpf.ephemeral_port: 70000 out of range`},
		{"negative path cap", `httpflow_max_paths = -1`, nil, `inputs.ebpf.httpflow_max_paths: -1 out of range`},
		{"bad cidr", `netflow_ignore_cidrs = ["10.0.0.0/33"]`, nil, `inputs.ebpf.netflow_ignore_cidrs: invalid CIDR "10.0.0.0/33"`},
		{"bad cidr from env", ``, map[string]string{"ENV_INPUT_EBPF_NETFLOW_IGNORE_CIDRS": "1.2.3.4"}, `(from ENV_INPUT_EBPF_NETFLOW_IGNORE_CIDRS): invalid CIDR "1.2.3.4"`},
		{"bad grace", `grace_period = "soon"`, nil, `inputs.ebpf.grace_period: invalid duration "soon"`},
		{"bad tag", "[inputs.ebpf.tags]\n\"a;b\" = \"c\"", nil, `inputs.ebpf.tags.a;b: invalid tag`},
		{"dns port range", `dnsflow_ports = [53, 0]`, nil, `inputs.ebpf.dnsflow_ports: 0 out of range (allowed: 1..65535)`},
		{"api service without a name", `api_services = ["api.example.com"]`, nil, `inputs.ebpf.api_services: "api.example.com": want host-pattern=service`},
		{"bad api host pattern", `api_services = ["api[.example.com=x"]`, nil, `inputs.ebpf.api_services: "api[.example.com=x": bad host pattern`},
		{"too many dns ports", `dnsflow_ports = [1,2,3,4,5,6,7,8,9]`, nil, `inputs.ebpf.dnsflow_ports: 9 ports (allowed: at most 8)`},
		{"short dns timeout", `dnsflow_timeout = "10ms"`, nil, `inputs.ebpf.dnsflow_timeout: "10ms" is below the minimum 100ms`},
		{"bad redact regexp", "[[inputs.ebpf.bash_redact]]\nname = \"ticket\"\npattern = \"(\"", nil,
			`inputs.ebpf.bash_redact[0].pattern: rule ticket: invalid regexp "(": error parsing regexp: missing closing )`},
		{"redact rule name taken", "[[inputs.ebpf.bash_redact]]\nname = \"bearer\"\npattern = \"x\"", nil, `inputs.ebpf.bash_redact[0].name: "bearer" is taken by a built-in`},
		{"unnamed redact rule", "[[inputs.ebpf.bash_redact]]\npattern = \"x\"", nil, `inputs.ebpf.bash_redact[0].name: "": want a non-empty name`},
		{"bad redact regexp from env", ``, map[string]string{"ENV_INPUT_EBPF_BASH_REDACT": `[{"name":"t","pattern":"a(b"}]`},
			`inputs.ebpf.bash_redact[0].pattern (from ENV_INPUT_EBPF_BASH_REDACT): rule t: invalid regexp "a(b"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := decode(t, "[[inputs.ebpf]]\n"+tc.conf+"\n")
			if err := in.ReadEnv(env(tc.env)); err != nil {
				t.Fatal(err)
			}
			err := in.Init()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestEnvBoolParsing(t *testing.T) {
	for v, want := range map[string]bool{"": false, "f": false, "false": false, "FALSE": false,
		"False": false, "0": false, "1": true, "true": true, "yes": true, "no": true} {
		if got := options.ParseEnvBool(v); got != want {
			t.Errorf("parseBool(%q) = %v, want %v", v, got, want)
		}
	}
}

func TestBadEphemeralPortEnvIsIgnored(t *testing.T) {
	in := New(testEnv)
	if err := in.ReadEnv(env(map[string]string{"ENV_INPUT_EBPF_EPHEMERAL_PORT": "lots"})); err != nil {
		t.Fatal(err)
	}
	if err := in.Init(); err != nil {
		t.Fatal(err)
	}
	if _, args, _ := in.Command(); slices.Contains(args, "--ephemeral_port") {
		t.Errorf("args = %q: want ephemeral_port at its default -1 (no flag)", args)
	}
}

func TestDNSFlowAndBashSettingsReachTheCollector(t *testing.T) {
	in := decode(t, `[[inputs.ebpf]]
  enabled_plugins = ["ebpf-net", "ebpf-bash"]
  dnsflow_ports = [53, 5353]
  dnsflow_timeout = "3s"
  [[inputs.ebpf.bash_redact]]
    name = "ticket"
    pattern = 'TICKET-(?P<secret>[0-9]+)'
`)
	err := in.ReadEnv(env(map[string]string{
		"ENV_INPUT_EBPF_BASH_REDACT": `[{"name":"pin","pattern":"pin=(\\d+)"}]`,
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Init(); err != nil {
		t.Fatal(err)
	}
	_, args, _ := in.Command()
	want := "--dnsflow-ports 53,5353 --dnsflow-timeout 3s --bash-redact pin=pin=(\\d+) --enabled ebpf-net,ebpf-bash"
	if got := strings.Join(args, " "); !strings.Contains(got, want) {
		t.Errorf("args =\n  %s\nwant them to contain\n  %s", got, want)
	}
	if err := in.ReadEnv(env(map[string]string{"ENV_INPUT_EBPF_BASH_REDACT": `not json`})); err == nil ||
		!strings.Contains(err.Error(), "ENV_INPUT_EBPF_BASH_REDACT: want a JSON list") {
		t.Errorf("bad JSON: err = %v", err)
	}
}
