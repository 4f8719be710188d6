package sink

import (
	"strings"
	"testing"
)

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestEnvSinksAreDataKitsURLsMergedPerEngineAndRefusedWhenWrong(t *testing.T) {
	cfgs, _, err := FromEnv(envOf(map[string]string{
		"ENV_SINK_M": "influxdb://127.0.0.1:8086?database=db0&timeout=5s||victoriametrics://127.0.0.1:8428",
		"ENV_SINK_N": "victoriametrics://127.0.0.1:8428 || prometheus://127.0.0.1:10908?path=/api/v1/receive&id=thanos",
		"ENV_SINK_L": "influxdb://127.0.0.1:8086?timeout=5s&database=db0",
	}))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range cfgs {
		got = append(got, c.ID+" "+c.writeURL+" "+strings.Join(c.categories, ","))
	}
	want := "influxdb-127.0.0.1:8086 http://127.0.0.1:8086/write?db=db0&precision=ns metric,logging\n" +
		"victoriametrics-127.0.0.1:8428 http://127.0.0.1:8428/write metric,network\n" +
		"thanos http://127.0.0.1:10908/api/v1/receive network"
	if strings.Join(got, "\n") != want {
		t.Errorf("sinks:\n%s\nwant:\n%s", strings.Join(got, "\n"), want)
	}

	if _, set, err := FromEnv(envOf(map[string]string{"ENV_SINK_M": " "})); set || err != nil {
		t.Errorf("blank variable: set %v, err %v", set, err)
	}
	for env, want := range map[string]string{
		"graphite://h:1":                            "ENV_SINK_M: sink 1 (graphite://h:1): target:",
		"influxdb://h:1":                            "database:",
		"victoriametrics://h:1?colour=blue":         `key "colour"`,
		"victoriametrics://h:1?gzip=maybe":          "gzip:",
		"victoriametrics://h:1/write":               `path "/write"`,
		"h:1":                                       "want target://host:port",
		"influxdb://h:1?database=d&token=s3cr3t&x=": "token=REDACTED",
		"influxdb://h:1?database=d||influxdb://h:1?database=d&gzip=false": "two different sinks have the id",
	} {
		_, _, err := FromEnv(envOf(map[string]string{"ENV_SINK_M": env}))
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("%s: error %v, want one with %q (and no token)", env, err, want)
		}
	}
}
