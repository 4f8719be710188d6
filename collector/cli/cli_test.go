package cli

import (
	"bytes"
	"errors"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func parseRunArgs(t *testing.T, args ...string) (*RunConfig, string, error) {
	t.Helper()
	var stderr bytes.Buffer
	cmd, err := Parse(append([]string{"run"}, args...), &stderr)
	if err != nil {
		return nil, stderr.String(), err
	}
	if cmd.Name != "run" || cmd.Run == nil {
		t.Fatalf("Parse got command %+v, want run", cmd)
	}
	return cmd.Run, stderr.String(), nil
}

func TestParseAcceptsDataKitDefaultCommandLine(t *testing.T) {
	c, stderr, err := parseRunArgs(t, strings.Fields(
		"--datakit-apiserver 0.0.0.0:9529 --hostname h --l7net-enabled httpflow --pprof-host 127.0.0.1 --pprof-port 6061 --netlog-metric --enabled ebpf-net")...)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if c.APIServer != "http://0.0.0.0:9529" {
		t.Errorf("APIServer = %q, want http://0.0.0.0:9529", c.APIServer)
	}
	if c.Hostname != "h" || c.Service != "ebpf" || c.Interval != time.Minute || c.LogLevel != "info" {
		t.Errorf("Hostname, Service, Interval, LogLevel = %q, %q, %v, %q", c.Hostname, c.Service, c.Interval, c.LogLevel)
	}
	if !slices.Equal(c.Enabled, []string{"ebpf-net"}) || !c.Plugin("ebpf-net") || c.Plugin("ebpf-bash") {
		t.Errorf("Enabled = %q", c.Enabled)
	}
	if !slices.Equal(c.L7NetEnabled, []string{"httpflow"}) {
		t.Errorf("L7NetEnabled = %q", c.L7NetEnabled)
	}
	if c.PprofHost != "127.0.0.1" || c.PprofPort != 6061 || !c.NetlogMetric {
		t.Errorf("pprof %q:%d netlog-metric %v", c.PprofHost, c.PprofPort, c.NetlogMetric)
	}
	if c.MaxBufferedPoints != 100000 || c.BPFObjects != "" || c.EphemeralPort != 0 || c.IPv6Disabled {
		t.Errorf("defaults: %+v", c)
	}
	// pprof is served; --netlog-metric, which DataKit always passes, does not warn.
	if len(c.Warnings) != 0 || stderr != "" {
		t.Errorf("Warnings = %q, want none; stderr %q, want empty", c.Warnings, stderr)
	}
}

func TestParseRunValues(t *testing.T) {
	tests := []struct {
		name  string
		args  string
		check func(*RunConfig) bool
	}{
		{"tags separated by semicolons as DataKit joins them", "--tags a=1;b=2",
			func(c *RunConfig) bool { return maps.Equal(c.Tags, map[string]string{"a": "1", "b": "2"}) }},
		{"tags separated by commas", "--tags a=1,b=2",
			func(c *RunConfig) bool { return maps.Equal(c.Tags, map[string]string{"a": "1", "b": "2"}) }},
		{"repeated tags flags and empty items", "--tags a=1; --tags b=2,,c=",
			func(c *RunConfig) bool { return maps.Equal(c.Tags, map[string]string{"a": "1", "b": "2", "c": ""}) }},
		{"api server with scheme kept", "--datakit-apiserver https://dk.example:9529/",
			func(c *RunConfig) bool { return c.APIServer == "https://dk.example:9529" }},
		{"interval as Go duration", "--interval 1s",
			func(c *RunConfig) bool { return c.Interval == time.Second }},
		{"interval below DataKit's 60s minimum is kept", "--interval 10s",
			func(c *RunConfig) bool { return c.Interval == 10*time.Second }},
		{"several plugins", "--enabled ebpf-net,ebpf-bash",
			func(c *RunConfig) bool {
				return c.Plugin("ebpf-net") && c.Plugin("ebpf-bash") && !c.Plugin("bpf-netlog")
			}},
		{"ephemeral port with underscore", "--ephemeral_port 32768",
			func(c *RunConfig) bool { return c.EphemeralPort == 32768 }},
		{"ephemeral port with dash", "--ephemeral-port 49152",
			func(c *RunConfig) bool { return c.EphemeralPort == 49152 }},
		{"legacy ipv6-disabled true", "--ipv6-disabled true",
			func(c *RunConfig) bool { return c.IPv6Disabled }},
		{"legacy ipv6-disabled false", "--ipv6-disabled false",
			func(c *RunConfig) bool { return !c.IPv6Disabled }},
		{"bare ipv6-disabled", "--ipv6-disabled",
			func(c *RunConfig) bool { return c.IPv6Disabled }},
		{"ignore cidrs are masked", "--netflow-ignore-cidrs 10.1.2.3/8,fd00::/8",
			func(c *RunConfig) bool {
				return slices.Equal(c.IgnoreCIDRs, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")})
			}},
		{"our flags", "--max-buffered-points 10 --bpf-objects /tmp/o --log-level debug --service s",
			func(c *RunConfig) bool {
				return c.MaxBufferedPoints == 10 && c.BPFObjects == "/tmp/o" && c.LogLevel == "debug" && c.Service == "s"
			}},
		{"httpflow flags", "--httpflow-max-paths 7 --httpflow-tls-rescan 30s",
			func(c *RunConfig) bool { return c.HTTPMaxPaths == 7 && c.SSLRescan == 30*time.Second }},
		{"httpflow defaults", "",
			func(c *RunConfig) bool { return c.HTTPMaxPaths == 500 && c.SSLRescan == 5*time.Second }},
		{"l7net-enabled lists the tracers on", "--l7net-enabled httpflow-tls",
			func(c *RunConfig) bool { return c.L7("httpflow-tls") && !c.L7("httpflow") }},
		{"l7net-disabled turns the others on", "--l7net-disabled httpflow-tls",
			func(c *RunConfig) bool { return c.L7("httpflow") && !c.L7("httpflow-tls") }},
		{"no l7net flag: no tracer", "",
			func(c *RunConfig) bool { return !c.L7("httpflow") && !c.L7("httpflow-tls") }},
		{"res-net is treated as res-bandwidth", "--res-net 10M",
			func(c *RunConfig) bool { return c.ResBandwidth == 10e6 && containsSubstring(c.Warnings, "--res-net") }},
		{"trace-allprocess is ignored", "--trace-allprocess",
			func(c *RunConfig) bool { return containsSubstring(c.Warnings, "--trace-allprocess") }},
		{"unknown l7 values are dropped with a warning", "--l7net-enabled httpflow,grpc --l7net-disabled httpflow-tls",
			func(c *RunConfig) bool {
				return slices.Equal(c.L7NetEnabled, []string{"httpflow"}) && slices.Equal(c.L7NetDisabled, []string{"httpflow-tls"}) &&
					containsSubstring(c.Warnings, `"grpc"`) && len(c.Warnings) == 1
			}},
		{"unsupported flags warn", "--trace-server 1.2.3.4:9529 --res-cpu 1.5 --sampling-rate 0.5",
			func(c *RunConfig) bool {
				return c.TraceServer == "http://1.2.3.4:9529" && c.ResCPU == 1.5 && c.SamplingRate == 0.5 && len(c.Warnings) == 1 &&
					!containsSubstring(c.Warnings, "--res-cpu") && !containsSubstring(c.Warnings, "--sampling-rate")
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := strings.Fields(tt.args)
			if !strings.Contains(tt.args, "--enabled") {
				args = append(args, "--enabled", "ebpf-net")
			}
			c, stderr, err := parseRunArgs(t, args...)
			if err != nil {
				t.Fatalf("Parse(%q): %v", args, err)
			}
			if !tt.check(c) {
				t.Errorf("Parse(%q) = %+v", args, c)
			}
			if stderr != "" {
				t.Errorf("Parse printed %q; warnings are the caller's to log", stderr)
			}
		})
	}
}

func TestParseRunErrorsNameTheFlag(t *testing.T) {
	tests := []struct {
		args string
		want string // substrings of the error
	}{
		{"--enabled ebpf-net --interval 500ms", "--interval 500ms"},
		{"--enabled ebpf-net --interval abc", `"--interval"`},
		{"--enabled bogus", `--enabled bogus: unknown plugin "bogus"`},
		{"--enabled ebpf-net,bogus", `"bogus"`},
		{"", "--enabled is required"},
		{"--enabled ebpf-net --tags a=1;b", `"--tags" flag: "b": want k=v`},
		{"--enabled ebpf-net --tags a=1=2", `"a=1=2"`},
		{"--enabled ebpf-net --tags =x", `"=x"`},
		{"--enabled ebpf-net --config /etc/x.toml", "--config is not supported yet"},
		{"--enabled ebpf-net --log-level trace", "--log-level"},
		{"--enabled ebpf-net --ephemeral-port 70000", "70000"},
		{"--enabled ebpf-net --ephemeral_port -1", "-1"},
		{"--enabled ebpf-net --netflow-ignore-cidrs 10.0.0.0/33", "--netflow-ignore-cidrs"},
		{"--enabled ebpf-net --max-buffered-points 0", "--max-buffered-points"},
		{"--enabled ebpf-net --httpflow-max-paths 0", "--httpflow-max-paths"},
		{"--enabled ebpf-net --httpflow-tls-rescan 10ms", "--httpflow-tls-rescan"},
		{"--enabled ebpf-net --no-such-flag", "no-such-flag"},
		{"--enabled ebpf-net --ipv6_disabled", "ipv6_disabled"},
		{"--enabled ebpf-net stray", "stray"},
		{"--enabled ebpf-net --datakit-apiserver http://", "--datakit-apiserver"},
	}
	for _, tt := range tests {
		t.Run(tt.args, func(t *testing.T) {
			_, _, err := parseRunArgs(t, strings.Fields(tt.args)...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse(%q) error = %v, want one containing %q", tt.args, err, tt.want)
			}
		})
	}
}

func TestParseCommands(t *testing.T) {
	tests := []struct {
		args      []string
		wantName  string
		wantUsage bool // error is ErrUsage and usage was printed
		wantHelp  bool // error is ErrHelp (exit 0) and usage was printed
		wantErr   bool
	}{
		{args: []string{"version"}, wantName: "version"},
		{args: []string{"check"}, wantName: "check"},
		{args: nil, wantUsage: true},
		{args: []string{"help"}, wantHelp: true},
		{args: []string{"--help"}, wantHelp: true},
		{args: []string{"-h"}, wantHelp: true},
		{args: []string{"bogus"}, wantUsage: true},
		{args: []string{"run", "--help"}, wantHelp: true},
		{args: []string{"version", "x"}, wantErr: true},
		{args: []string{"check", "x"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stderr bytes.Buffer
			cmd, err := Parse(tt.args, &stderr)
			switch {
			case tt.wantUsage:
				if !errors.Is(err, ErrUsage) || !strings.Contains(stderr.String(), "usage:") {
					t.Errorf("got %v and stderr %q, want ErrUsage and the usage", err, stderr.String())
				}
			case tt.wantHelp:
				if !errors.Is(err, ErrHelp) || !strings.Contains(stderr.String(), "usage:") {
					t.Errorf("got %v and stderr %q, want ErrHelp and the usage", err, stderr.String())
				}
			case tt.wantErr:
				if err == nil {
					t.Error("want an error")
				}
			case err != nil || cmd.Name != tt.wantName:
				t.Errorf("got %+v, %v, want command %q", cmd, err, tt.wantName)
			}
		})
	}
}

func TestGlobalTags(t *testing.T) {
	osHost, _ := os.Hostname()
	if osHost == "" {
		osHost = "no-value"
	}
	tests := []struct {
		name string
		c    RunConfig
		want map[string]string
	}{
		{"hostname flag wins",
			RunConfig{Hostname: "h", Service: "ebpf", Tags: map[string]string{"host": "t", "env": "prod"}},
			map[string]string{"host": "h", "service": "ebpf", "env": "prod"}},
		{"host from tags",
			RunConfig{Service: "ebpf", Tags: map[string]string{"host": "t"}},
			map[string]string{"host": "t", "service": "ebpf"}},
		{"system host name",
			RunConfig{Service: "ebpf"},
			map[string]string{"host": osHost, "service": "ebpf"}},
		{"custom tags do not override service",
			RunConfig{Hostname: "h", Service: "ebpf", Tags: map[string]string{"service": "x"}},
			map[string]string{"host": "h", "service": "ebpf"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := maps.Clone(tt.c.Tags)
			if got := tt.c.GlobalTags(); !maps.Equal(got, tt.want) {
				t.Errorf("GlobalTags() = %v, want %v", got, tt.want)
			}
			if !maps.Equal(tt.c.Tags, before) {
				t.Errorf("GlobalTags modified Tags: %v, was %v", tt.c.Tags, before)
			}
		})
	}
}

func containsSubstring(list []string, sub string) bool {
	return slices.ContainsFunc(list, func(s string) bool { return strings.Contains(s, sub) })
}

func TestParseRunReadsTheAgentsSpoolDirAndToken(t *testing.T) {
	t.Setenv("DKE_SPOOL_DIR", " /opt/datakit/data/ebpf-spool\n")
	t.Setenv("DKE_API_TOKEN", "s3cret")
	c, _, err := parseRunArgs(t, "--enabled", "ebpf-net")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if c.SpoolDir != "/opt/datakit/data/ebpf-spool" || c.APIToken != "s3cret" {
		t.Errorf("SpoolDir, APIToken = %q, %q", c.SpoolDir, c.APIToken)
	}
	if len(c.Warnings) != 0 {
		t.Errorf("Warnings = %q, want none", c.Warnings)
	}

	t.Setenv("DKE_SPOOL_DIR", "")
	os.Unsetenv("DKE_API_TOKEN")
	c, _, err = parseRunArgs(t, "--enabled", "ebpf-net")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if c.SpoolDir != "" || c.APIToken != "" {
		t.Errorf("unset: SpoolDir, APIToken = %q, %q, want none", c.SpoolDir, c.APIToken)
	}
}
