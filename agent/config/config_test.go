package config

import (
	"bytes"
	"fmt"
	"log"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"dkebpf/inputs"
	"dkebpf/inputs/ebpf"
)

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func load(t *testing.T, dir string, env map[string]string) (*Config, string, error) {
	t.Helper()
	var logs bytes.Buffer
	c, err := Load(dir, Options{
		Lookup: func(k string) (string, bool) { v, ok := env[k]; return v, ok },
		Log:    log.New(&logs, "", 0),
	})
	return c, logs.String(), err
}

func TestDefaultsWhenNothingIsConfigured(t *testing.T) {
	dir := t.TempDir()
	c, _, err := load(t, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "localhost:9529" || c.StorePath != filepath.Join(dir, "data/points.db") ||
		c.MaxSize != 512<<20 || c.MaxAge.Hours() != 168 || c.Hostname == "" || len(c.Inputs) != 0 {
		t.Errorf("config = %+v", c)
	}
}

func TestShippedDatakitConfParses(t *testing.T) {
	body, err := os.ReadFile("../../conf.d/datakit.conf")
	if err != nil {
		t.Fatal(err)
	}
	dir := writeFiles(t, map[string]string{MainFile: string(body)})
	c, logs, err := load(t, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "localhost:9529" || c.MaxSize != 512<<20 || c.MaxAge.Hours() != 168 || c.Token != "" {
		t.Errorf("config = %+v", c)
	}
	if logs != "" {
		t.Errorf("the shipped datakit.conf draws warnings:\n%s", logs)
	}
}

func TestSampleAsHostConfStartsEbpf(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		MainFile:                "hostname = \"h1\"\n[http_api]\nlisten = \"0.0.0.0:19529\"\ntoken = \"t0ken\"\n",
		"conf.d/host/ebpf.conf": (&ebpf.Input{}).SampleConfig(),
	})
	c, _, err := load(t, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Inputs) != 1 || c.Inputs[0].File != "conf.d/host/ebpf.conf" {
		t.Fatalf("inputs = %+v", c.Inputs)
	}
	_, args, env := c.Inputs[0].Input.(*ebpf.Input).Command()
	want := "run --datakit-apiserver 127.0.0.1:19529 --hostname h1 --l7net-enabled httpflow --interval 60s --netlog-metric --enabled ebpf-net"
	if got := strings.Join(args, " "); got != want {
		t.Errorf("args = %s\nwant   %s", got, want)
	}
	wantEnv := "DKE_SPOOL_DIR=" + filepath.Join(dir, "data/ebpf-spool") + " DKE_API_TOKEN=t0ken"
	if got := strings.Join(env, " "); got != wantEnv {
		t.Errorf("env = %s\nwant  %s", got, wantEnv)
	}
}

func TestConfigErrorsNameFileKeyAndValue(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		env   map[string]string
		want  []string
	}{
		{"bad interval", map[string]string{"conf.d/host/ebpf.conf": "[[inputs.ebpf]]\ninterval = \"abc\"\n"}, nil,
			[]string{`conf.d/host/ebpf.conf: inputs.ebpf.interval: invalid duration "abc"`, `(line 2)`}},
		{"unknown key", map[string]string{"conf.d/host/ebpf.conf": "# ebpf\n[[inputs.ebpf]]\n  interval = \"10s\"\n  intervall = \"1m\"\n"}, nil,
			[]string{`conf.d/host/ebpf.conf: inputs.ebpf.intervall: unknown key (did you mean "interval"?) (line 4)`}},
		{"unknown key in a sub-table", map[string]string{"conf.d/host/ebpf.conf": "[[inputs.ebpf]]\n[inputs.ebpf.tag]\n  a = \"b\"\n"}, nil,
			[]string{`conf.d/host/ebpf.conf: inputs.ebpf.tag: unknown key (did you mean "tags"?) (line 2)`}},
		{"wrong type", map[string]string{"conf.d/host/ebpf.conf": "[[inputs.ebpf]]\nipv6_disabled = \"yes\"\n"}, nil,
			[]string{`conf.d/host/ebpf.conf: inputs.ebpf.ipv6_disabled: want a boolean (true or false), got the string "yes"`}},
		{"syntax", map[string]string{"conf.d/host/ebpf.conf": "[[inputs.ebpf]\n"}, nil,
			[]string{`conf.d/host/ebpf.conf: toml:`}},
		{"twice", map[string]string{"conf.d/host/ebpf.conf": "[[inputs.ebpf]]\n", "conf.d/x/more.conf": "\n[[inputs.ebpf]]\n"}, nil,
			[]string{`conf.d/x/more.conf: inputs.ebpf: declared more than once (also in conf.d/host/ebpf.conf); it may be declared only once (line 2)`}},
		{"all errors reported", map[string]string{
			"conf.d/a/ebpf.conf": "[[inputs.ebpf]]\nenabled_plugins = [\"nope\"]\n",
			"conf.d/b/bad.conf":  "x = \n",
		}, nil, []string{`conf.d/a/ebpf.conf: inputs.ebpf.enabled_plugins: unknown plugin "nope" (allowed:`, `conf.d/b/bad.conf: toml:`}},
		{"env on enabled input", nil, map[string]string{"ENV_ENABLE_INPUTS": "ebpf", "ENV_INPUT_EBPF_EPHEMERAL_PORT": "-5"},
			[]string{`env ENV_ENABLE_INPUTS: inputs.ebpf.ephemeral_port (from ENV_INPUT_EBPF_EPHEMERAL_PORT): -5 out of range`}},
		{"misspelt input", map[string]string{"conf.d/host/ebpf.conf": "[[inputs.epbf]]\n  interval = \"10s\"\n"}, nil,
			[]string{`conf.d/host/ebpf.conf: inputs.epbf: unknown input (did you mean "ebpf"? known: ebpf) (line 1)`}},
		{"input in capitals", map[string]string{"conf.d/host/ebpf.conf": "[[inputs.EBPF]]\n"}, nil,
			[]string{`conf.d/host/ebpf.conf: inputs.EBPF: unknown input (did you mean "ebpf"? known: ebpf) (line 1)`}},
		{"input, not inputs", map[string]string{"conf.d/host/ebpf.conf": "\n[[input.ebpf]]\n  interval = \"10s\"\n"}, nil,
			[]string{`conf.d/host/ebpf.conf: input.ebpf: unknown table (did you mean [[inputs.ebpf]]?) (line 2)`}},
		{"input, not inputs, misspelt", map[string]string{"conf.d/host/ebpf.conf": "[[input.epbf]]\n"}, nil,
			[]string{`conf.d/host/ebpf.conf: input.epbf: unknown table (did you mean [[inputs.ebpf]]?) (line 1)`}},
		{"sink without database", map[string]string{"conf.d/datakit.conf": "[sinks]\n[[sinks.sink]]\n  target = \"influxdb\"\n  host = \"localhost:8086\"\n"}, nil,
			[]string{`conf.d/datakit.conf: sinks.sink[0].database: missing (target influxdb writes to /write?db=<database>)`}},
		{"two sinks, one id", map[string]string{"conf.d/datakit.conf": "[[sinks.sink]]\n  target = \"victoriametrics\"\n  host = \"a:1\"\n  id = \"x\"\n[[sinks.sink]]\n  target = \"victoriametrics\"\n  host = \"b:1\"\n  id = \"x\"\n"}, nil,
			[]string{`conf.d/datakit.conf: sinks.sink[1].id: "x" is sinks.sink[0]'s too`}},
		{"env sink without database", nil, map[string]string{"ENV_SINK_N": "influxdb://localhost:8086"},
			[]string{`ENV_SINK_N: sink 1 (influxdb://localhost:8086): database: missing`}},
		{"input as a key", map[string]string{"conf.d/host/ebpf.conf": "input = \"ebpf\"\n"}, nil,
			[]string{`conf.d/host/ebpf.conf: input: unknown key (did you mean [[inputs.<name>]]?) (line 1)`}},
		{"misspelt input in ENV_ENABLE_INPUTS", nil, map[string]string{"ENV_ENABLE_INPUTS": "cpu,epbf"},
			[]string{`ENV_ENABLE_INPUTS: inputs.epbf: unknown input (did you mean "ebpf"? known: ebpf)`}},
		{"token with a space", map[string]string{MainFile: "[http_api]\ntoken = \"my secret\"\n"}, nil,
			[]string{`conf.d/datakit.conf: http_api.token: contains a blank, control or non-ASCII character`}},
		{"env token with a newline", nil, map[string]string{"ENV_HTTP_TOKEN": "abc\n"},
			[]string{`ENV_HTTP_TOKEN: contains a blank, control or non-ASCII character`}},
		{"main key", map[string]string{MainFile: "[store]\nmax_age = \"forever\"\n"}, nil,
			[]string{`conf.d/datakit.conf: store.max_age: invalid duration "forever"`}},
		{"main known key, bad value", map[string]string{MainFile: "[http_api]\nlisten = \"/tmp/datakit.sock\"\n"}, nil,
			[]string{`conf.d/datakit.conf: http_api.listen: invalid address "/tmp/datakit.sock"`}},
		{"main known key, wrong type", map[string]string{MainFile: "[store]\nmax_size_mb = \"1G\"\n"}, nil,
			[]string{`conf.d/datakit.conf: toml: line 2 (last key "store.max_size_mb")`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := load(t, writeFiles(t, tc.files), tc.env)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v\nwant it to contain %q", err, w)
				}
			}
		})
	}
}

func TestUnknownInputIsIgnoredWithWarning(t *testing.T) {
	dir := writeFiles(t, map[string]string{"conf.d/host/cpu.conf": "[[inputs.cpu]]\npercpu = true\n"})
	c, logs, err := load(t, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := "config: WARNING: conf.d/host/cpu.conf: inputs.cpu: unknown input, ignored (line 1): this agent implements only ebpf"
	if len(c.Inputs) != 0 || !strings.Contains(logs, want) {
		t.Errorf("inputs %v, logs %q\nwant them to contain %q", c.Inputs, logs, want)
	}
}

// dataKitInputs are the names DataKit 1.x registers its inputs under.
var dataKitInputs = []string{
	"apache", "awslambda", "beats_output", "cassandra", "cat", "chrony", "clickhousev1", "cloudprober",
	"cockroachdb", "consul", "container", "coredns", "couchbase", "couchdb", "cpu", "db2", "ddtrace", "demo",
	"dialtesting", "disk", "diskio", "dk", "doris", "ebpftrace", "elasticsearch", "etcd", "external", "flinkv1",
	"gitlab", "gpu_smi", "graphite", "host_healthcheck", "host_processes", "hostdir", "hostobject", "iis",
	"influxdb", "ipmi", "jaeger", "jenkins", "jvm", "kafka", "kafkamq", "kubernetes", "kubernetesprometheus",
	"logfwd", "logfwdserver", "logging", "logstreaming", "lsblk", "mem", "memcached", "mongodb", "mysql",
	"neo4j", "net", "netflow", "netstat", "newrelic", "nfs", "nginx", "nsq", "oceanbase", "opentelemetry",
	"oracle", "pinpoint", "ploffload", "postgresql", "profile", "prom", "prom_remote_write", "promtail",
	"promv2", "proxy", "pushgateway", "pyroscope", "pythond", "rabbitmq", "redis", "rum", "self", "sensors",
	"skywalking", "smart", "snmp", "socket", "solr", "sqlserver", "ssh", "statsd", "swap", "system", "tdengine",
	"tomcat", "vsphere", "windows_event", "windowsremote", "xfsquota", "zabbix_exporter", "zipkin",
}

func TestDataKitsOwnInputsWarnAndGoOn(t *testing.T) {
	files := map[string]string{"conf.d/host/ebpf.conf": "[[inputs.ebpf]]\n"}
	for _, name := range dataKitInputs {
		files["conf.d/dk/"+name+".conf"] = "[[inputs." + name + "]]\n  interval = \"10s\"\n"
	}
	c, logs, err := load(t, writeFiles(t, files), map[string]string{"ENV_ENABLE_INPUTS": strings.Join(dataKitInputs, ",")})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Inputs) != 1 || c.Inputs[0].Name != "ebpf" {
		t.Errorf("inputs = %v", c.InputNames)
	}
	for _, name := range dataKitInputs {
		for _, want := range []string{
			"config: WARNING: conf.d/dk/" + name + ".conf: inputs." + name + ": unknown input, ignored (line 1)",
			"config: WARNING: ENV_ENABLE_INPUTS: inputs." + name + ": unknown input, ignored: ",
		} {
			if !strings.Contains(logs, want) {
				t.Errorf("no warning %q", want)
			}
		}
	}
}

func TestOtherTopLevelKeysOfAnInputFileWarn(t *testing.T) {
	dir := writeFiles(t, map[string]string{"conf.d/host/ebpf.conf": "[[inputs.ebpf]]\n\n[agent]\n  interval = \"10s\"\n"})
	c, logs, err := load(t, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Inputs) != 1 || !strings.Contains(logs, "config: conf.d/host/ebpf.conf: agent: unknown table, ignored (line 3)\n") {
		t.Errorf("inputs %v, logs %q", c.InputNames, logs)
	}
}

func TestDataKitMainConfLoadsWithWarnings(t *testing.T) {
	body, err := os.ReadFile("testdata/datakit-1.x.conf")
	if err != nil {
		t.Fatal(err)
	}
	dir := writeFiles(t, map[string]string{MainFile: string(body)})
	var logs bytes.Buffer
	c, err := LoadMainLog(dir, log.New(&logs, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	if c.Hostname != "dk-host-1" || c.Listen != "localhost:19529" || c.Token != "" {
		t.Errorf("hostname %q, listen %q, token %q; want dk-host-1, localhost:19529 and none", c.Hostname, c.Listen, c.Token)
	}
	wantTags := map[string]string{"ip": "__datakit_ip", "host": "dk-host-1", "cluster": "prod"}
	if !maps.Equal(c.GlobalTags, wantTags) {
		t.Errorf("global tags %v, want %v", c.GlobalTags, wantTags)
	}
	// One line per unknown key, or per unknown table (not per key inside it), in the file's order.
	var want []string
	for _, w := range []struct{ key, kind string }{
		{"default_enabled_inputs", "key"}, {"enable_pprof", "key"}, {"pprof_listen", "key"}, {"protect_mode", "key"},
		{"datakit_user", "key"}, {"ulimit", "key"}, {"point_pool", "table"}, {"dca", "table"}, {"dk_upgrader", "table"},
		{"pipeline", "table"}, {"http_api.disable_404page", "key"}, {"http_api.public_apis", "key"},
		{"http_api.timeout", "key"}, {"http_api.close_idle_connection", "key"}, {"http_api.request_rate_limit", "key"},
		{"http_api.rum_origin_ip_header", "key"}, {"http_api.rum_app_id_white_list", "key"},
		{"http_api.allowed_cors_origins", "key"}, {"http_api.tls", "table"}, {"io", "table"}, {"recorder", "table"},
		{"dataway", "table"}, {"logging", "table"}, {"election", "table"}, {"global_election_tags", "table"},
		{"environments", "table"}, {"resource_limit", "table"}, {"git_repos", "table"}, {"crypto", "table"},
		{"remote_job", "table"},
	} {
		want = append(want, fmt.Sprintf("config: conf.d/datakit.conf: %s: unknown %s, ignored (line %d)", w.key, w.kind, lineOf(t, body, w.key)))
	}
	want = append(want, `config: conf.d/datakit.conf: global_host_tags.ip: "__datakit_ip" is not resolved by this agent; the tag is added as written`)
	got := strings.Split(strings.TrimSuffix(logs.String(), "\n"), "\n")
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// The agent starts on it (with a token when it listens beyond loopback).
	if _, _, err := load(t, dir, map[string]string{"ENV_HTTP_LISTEN": "0.0.0.0:9529", "ENV_HTTP_TOKEN": "t"}); err != nil {
		t.Error(err)
	}
}

// lineOf finds the line of key (a top-level key, a [table], or table.key) in a TOML file by hand.
func lineOf(t *testing.T, body []byte, key string) int {
	t.Helper()
	table, k, dotted := strings.Cut(key, ".")
	inTable := !dotted
	for n, line := range strings.Split(string(body), "\n") {
		s := strings.TrimSpace(line)
		switch {
		case !dotted && (s == "["+key+"]" || strings.HasPrefix(s, key+" ")):
			return n + 1
		case dotted && s == "["+table+"]":
			inTable = true
		case dotted && inTable && (s == "["+key+"]" || strings.HasPrefix(s, k+" ")):
			return n + 1
		}
	}
	t.Fatalf("%s not in the file", key)
	return 0
}

func TestLoadMainKeepsItsSignature(t *testing.T) {
	dir := writeFiles(t, map[string]string{MainFile: "[http_api]\n  listen = \"0.0.0.0:9529\"\n  token = \"abc\"\n"})
	c, err := LoadMain(dir)
	if err != nil || c.Listen != "0.0.0.0:9529" || c.Token != "abc" {
		t.Errorf("LoadMain: %+v, %v", c, err)
	}
	// LoadMain does not ask for a token: `datakit query` only dials the API.
	dir = writeFiles(t, map[string]string{MainFile: "[http_api]\n  listen = \"0.0.0.0:9529\"\n"})
	if _, err := LoadMain(dir); err != nil {
		t.Errorf("LoadMain without a token: %v", err)
	}
}

func TestNonLoopbackListenNeedsAToken(t *testing.T) {
	tests := []struct {
		name, conf string
		env        map[string]string
		token      string // "" with wantErr ""
		wantErr    string
	}{
		{"default", "", nil, "", ""},
		{"localhost", "[http_api]\nlisten = \"localhost:9529\"\n", nil, "", ""},
		{"LOCALHOST", "[http_api]\nlisten = \"LOCALHOST:9529\"\n", nil, "", ""},
		{"127.0.0.1", "[http_api]\nlisten = \"127.0.0.1:9529\"\n", nil, "", ""},
		{"127.1.2.3", "[http_api]\nlisten = \"127.1.2.3:9529\"\n", nil, "", ""},
		{"::1", "[http_api]\nlisten = \"[::1]:9529\"\n", nil, "", ""},
		{"0.0.0.0 without token", "[http_api]\nlisten = \"0.0.0.0:9529\"\n", nil, "",
			`conf.d/datakit.conf: http_api.listen "0.0.0.0:9529" is not a loopback address: flows and bash history would be readable by anyone who can reach it; ` +
				`set http_api.token in conf.d/datakit.conf or ENV_HTTP_TOKEN (clients then send Authorization: Bearer <token> or X-Token: <token>), or listen on localhost:9529`},
		{"empty host", "[http_api]\nlisten = \":9530\"\n", nil, "", `http_api.listen ":9530" is not a loopback address`},
		{"::", "[http_api]\nlisten = \"[::]:9529\"\n", nil, "", `http_api.listen "[::]:9529" is not a loopback address`},
		{"LAN address", "[http_api]\nlisten = \"10.0.0.5:9529\"\n", nil, "", `http_api.listen "10.0.0.5:9529" is not a loopback address`},
		{"host name", "[http_api]\nlisten = \"myhost:9529\"\n", nil, "", `http_api.listen "myhost:9529" is not a loopback address`},
		{"ENV_HTTP_LISTEN without token", "", map[string]string{"ENV_HTTP_LISTEN": "0.0.0.0:9529"}, "",
			`ENV_HTTP_LISTEN "0.0.0.0:9529" is not a loopback address`},
		{"token in the file", "[http_api]\nlisten = \"0.0.0.0:9529\"\ntoken = \"from-file\"\n", nil, "from-file", ""},
		{"token from env", "", map[string]string{"ENV_HTTP_LISTEN": "0.0.0.0:9529", "ENV_HTTP_TOKEN": "from-env"}, "from-env", ""},
		{"env token wins", "[http_api]\ntoken = \"from-file\"\n", map[string]string{"ENV_HTTP_TOKEN": "from-env"}, "from-env", ""},
		{"empty env token keeps the file's", "[http_api]\ntoken = \"from-file\"\n", map[string]string{"ENV_HTTP_TOKEN": ""}, "from-file", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{"conf.d/host/ebpf.conf": "[[inputs.ebpf]]\n"}
			if tc.conf != "" {
				files[MainFile] = tc.conf
			}
			c, _, err := load(t, writeFiles(t, files), tc.env)
			switch {
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("err = %v\nwant it to contain %q", err, tc.wantErr)
				}
			case err != nil:
				t.Error(err)
			case c.Token != tc.token:
				t.Errorf("token = %q, want %q", c.Token, tc.token)
			default:
				_, _, env := c.Inputs[0].Input.(*ebpf.Input).Command()
				has := slices.Contains(env, "DKE_API_TOKEN="+tc.token)
				if has != (tc.token != "") || (tc.token == "" && strings.Contains(strings.Join(env, " "), "DKE_API_TOKEN")) {
					t.Errorf("collector env %q; want DKE_API_TOKEN=%s only when a token is set", env, tc.token)
				}
			}
		})
	}
}

func TestTokenIsNeverShownInErrors(t *testing.T) {
	for _, conf := range []string{
		"[http_api]\ntoken = \"s3cret value\"\n",
		"[http_api]\ntoken = \"s3cret\"\nlisten = \"nope\"\n",
	} {
		_, _, err := load(t, writeFiles(t, map[string]string{MainFile: conf}), nil)
		if err == nil || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("err = %v: want an error that does not show the token", err)
		}
	}
}

func TestClosestInputName(t *testing.T) {
	known := []string{"ebpf"}
	for name, want := range map[string]string{
		"epbf": "ebpf", "ebfp": "ebpf", "ebp": "ebpf", "bpf": "ebpf", "ebpff": "ebpf", "EBPF": "ebpf", "e-bpf": "ebpf",
		"epbff": "", "ebpftrace": "", "cpu": "", "self": "", "net": "", "": "",
	} {
		if got := inputs.Closest(name, known); got != want {
			t.Errorf("Closest(%q) = %q, want %q", name, got, want)
		}
	}
	if got := inputs.Closest("imputs", []string{"inputs"}); got != "inputs" {
		t.Errorf("Closest(imputs) = %q", got)
	}
}

func TestKeyLines(t *testing.T) {
	doc := `top = 1            # line 1
[a]
  b = 2
  "quoted key" = 3
  c.d = 4
  s = """
x = 5
"""
  arr = [
    "y = 6",
    { z = 7 },
  ]
[[e.f]]
  g = 8
[[e.f]]
  g = 9
  'lit' = 10
`
	lines := scanKeyLines([]byte(doc))
	want := keyLines{"top": 1, "a": 2, "a.b": 3, "a.quoted key": 4, "a.c": 5, "a.c.d": 5, "a.s": 6, "a.arr": 9,
		"e": 13, "e.f": 13, "e.f.g": 14, "e.f.lit": 17}
	if !maps.Equal(lines, want) {
		t.Errorf("lines = %v\nwant    %v", lines, want)
	}
}

func TestEnvEnabledInputGetsDefaultsAndEnv(t *testing.T) {
	dir := t.TempDir()
	c, _, err := load(t, dir, map[string]string{"ENV_ENABLE_INPUTS": "cpu,ebpf", "ENV_INPUT_EBPF_ENABLED_PLUGINS": "ebpf-bash"})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Inputs) != 1 {
		t.Fatalf("inputs = %+v", c.Inputs)
	}
	path, args, _ := c.Inputs[0].Input.(*ebpf.Input).Command()
	if path != filepath.Join(dir, "externals/datakit-ebpf") || args[len(args)-1] != "ebpf-bash" {
		t.Errorf("command = %s %v", path, args)
	}
}

func TestClientAddr(t *testing.T) {
	for in, want := range map[string]string{
		"localhost:9529": "localhost:9529", "0.0.0.0:9529": "127.0.0.1:9529",
		":9529": "127.0.0.1:9529", "[::]:9529": "[::1]:9529", "10.1.2.3:80": "10.1.2.3:80",
	} {
		if got := ClientAddr(in); got != want {
			t.Errorf("ClientAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestEnvHostnameAndGlobalHostTags(t *testing.T) {
	dir := writeFiles(t, map[string]string{MainFile: "hostname = \"from-conf\"\n[global_host_tags]\n  cluster = \"prod\"\n  host = \"__datakit_hostname\"\n"})
	c, _, err := load(t, dir, map[string]string{"ENV_HOSTNAME": "node-7"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Hostname != "node-7" || c.GlobalTags["cluster"] != "prod" || c.GlobalTags["host"] != "node-7" {
		t.Errorf("hostname %q, global tags %v; want node-7 and {cluster: prod, host: node-7}", c.Hostname, c.GlobalTags)
	}
	c, _, err = load(t, dir, nil)
	if err != nil || c.Hostname != "from-conf" || c.GlobalTags["host"] != "from-conf" {
		t.Errorf("without ENV_HOSTNAME: %q %v %v", c.Hostname, c.GlobalTags, err)
	}
	bad := writeFiles(t, map[string]string{MainFile: "[global_host_tags]\n  \"a=b\" = \"x\"\n"})
	if _, _, err := load(t, bad, nil); err == nil || !strings.Contains(err.Error(), "conf.d/datakit.conf: global_host_tags.a=b: invalid tag") {
		t.Errorf("bad tag key: err = %v", err)
	}
}

func TestEnvSinksReplaceTheSinksOfDatakitConf(t *testing.T) {
	dir := writeFiles(t, map[string]string{MainFile: "[[sinks.sink]]\n  target = \"victoriametrics\"\n  host = \"a:1\"\n"})
	c, logs, err := load(t, dir, map[string]string{"ENV_SINK_M": "influxdb://127.0.0.1:8086?database=db0", "ENV_SINK_N": "influxdb://127.0.0.1:8086?database=db0"})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Main.Sinks.Sink) != 1 || c.Main.Sinks.Sink[0].ID != "influxdb-127.0.0.1:8086" || strings.Join(c.Main.Sinks.Sink[0].Categories, ",") != "M,N" {
		t.Errorf("sinks = %+v", c.Main.Sinks.Sink)
	}
	if !strings.Contains(logs, "ENV_SINK_* are set: they replace the 1 sink(s) of conf.d/datakit.conf") {
		t.Errorf("logs: %s", logs)
	}
}
