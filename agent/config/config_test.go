package config

import (
	"bytes"
	"log"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
	c, _, err := load(t, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "localhost:9529" || c.MaxSize != 512<<20 || c.MaxAge.Hours() != 168 {
		t.Errorf("config = %+v", c)
	}
}

func TestSampleAsHostConfStartsEbpf(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		MainFile:                "hostname = \"h1\"\n[http_api]\nlisten = \"0.0.0.0:19529\"\n",
		"conf.d/host/ebpf.conf": (&ebpf.Input{}).SampleConfig(),
	})
	c, _, err := load(t, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Inputs) != 1 || c.Inputs[0].File != "conf.d/host/ebpf.conf" {
		t.Fatalf("inputs = %+v", c.Inputs)
	}
	_, args, _ := c.Inputs[0].Input.(*ebpf.Input).Command()
	want := "run --datakit-apiserver 127.0.0.1:19529 --hostname h1 --l7net-enabled httpflow --interval 60s --netlog-metric --enabled ebpf-net"
	if got := strings.Join(args, " "); got != want {
		t.Errorf("args = %s\nwant   %s", got, want)
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
			[]string{`conf.d/host/ebpf.conf: inputs.ebpf.interval: invalid duration "abc"`}},
		{"unknown key", map[string]string{"conf.d/host/ebpf.conf": "[[inputs.ebpf]]\nintervall = \"1m\"\n"}, nil,
			[]string{`conf.d/host/ebpf.conf: inputs.ebpf.intervall: unknown key`}},
		{"wrong type", map[string]string{"conf.d/host/ebpf.conf": "[[inputs.ebpf]]\nipv6_disabled = \"yes\"\n"}, nil,
			[]string{`conf.d/host/ebpf.conf: inputs.ebpf.ipv6_disabled: want a boolean (true or false), got the string "yes"`}},
		{"syntax", map[string]string{"conf.d/host/ebpf.conf": "[[inputs.ebpf]\n"}, nil,
			[]string{`conf.d/host/ebpf.conf: toml:`}},
		{"twice", map[string]string{"conf.d/host/ebpf.conf": "[[inputs.ebpf]]\n", "conf.d/x/more.conf": "[[inputs.ebpf]]\n"}, nil,
			[]string{`conf.d/x/more.conf: inputs.ebpf: declared more than once (also in conf.d/host/ebpf.conf)`}},
		{"all errors reported", map[string]string{
			"conf.d/a/ebpf.conf": "[[inputs.ebpf]]\nenabled_plugins = [\"nope\"]\n",
			"conf.d/b/bad.conf":  "x = \n",
		}, nil, []string{`conf.d/a/ebpf.conf: inputs.ebpf.enabled_plugins: unknown plugin "nope" (allowed:`, `conf.d/b/bad.conf: toml:`}},
		{"env on enabled input", nil, map[string]string{"ENV_ENABLE_INPUTS": "ebpf", "ENV_INPUT_EBPF_EPHEMERAL_PORT": "-5"},
			[]string{`env ENV_ENABLE_INPUTS: inputs.ebpf.ephemeral_port (from ENV_INPUT_EBPF_EPHEMERAL_PORT): -5 out of range`}},
		{"main key", map[string]string{MainFile: "[store]\nmax_age = \"forever\"\n"}, nil,
			[]string{`conf.d/datakit.conf: store.max_age: invalid duration "forever"`}},
		{"main unknown key", map[string]string{MainFile: "[http_api]\nlisten_addr = \"x\"\n"}, nil,
			[]string{`conf.d/datakit.conf: http_api.listen_addr: unknown key`}},
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
	if len(c.Inputs) != 0 || !strings.Contains(logs, "conf.d/host/cpu.conf: inputs.cpu: unknown input, ignored") {
		t.Errorf("inputs %v, logs %q", c.Inputs, logs)
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
