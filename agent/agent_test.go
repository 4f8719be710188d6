package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	_ "dkebpf/inputs/all"
	"dkebpf/inputs/external"
)

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func writeFile(t *testing.T, path, body string, mode os.FileMode) {
	t.Helper()
	os.MkdirAll(filepath.Dir(path), 0o755)
	if err := os.WriteFile(path, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
}

func TestAgentRunsCollectorAndStoresWrites(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "conf.d/datakit.conf"), "[http_api]\nlisten = \"127.0.0.1:0\"\n", 0o644)
	writeFile(t, filepath.Join(dir, "conf.d/host/ebpf.conf"),
		"[[inputs.ebpf]]\ncmd = \"fake-collector\"\ngrace_period = \"2s\"\n[inputs.ebpf.tags]\nb = \"2\"\na = \"1\"\n", 0o644)
	writeFile(t, filepath.Join(dir, "fake-collector"), "#!/bin/sh\necho \"argv: $*\" >&2\nexec sleep 60\n", 0o755)

	logs := &syncBuffer{}
	addrCh := make(chan net.Addr, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{Dir: dir, Log: log.New(logs, "", 0),
			Lookup: func(string) (string, bool) { return "", false },
			Ready:  func(a net.Addr) { addrCh <- a }})
	}()
	var base string
	select {
	case a := <-addrCh:
		base = "http://" + a.String()
	case err := <-done:
		t.Fatalf("agent exited: %v\n%s", err, logs.String())
	}

	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "[ebpf] argv: run --datakit-apiserver 127.0.0.1:0") {
		if time.Now().After(deadline) {
			t.Fatalf("collector did not start:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "--enabled ebpf-net --tags a=1;b=2") {
		t.Errorf("argv lacks sorted tags:\n%s", logs.String())
	}

	resp, err := http.Post(base+"/v1/write/network?input=ebpf-net%2Fnetflow", "", strings.NewReader("netflow,host=h bytes=1i\n"))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("write: %v %v", resp, err)
	}
	resp.Body.Close()
	resp, err = http.Get(base + "/v1/query?measurement=netflow&since=1m")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(body), "netflow,host=h bytes=1i ") {
		t.Errorf("query = %q", body)
	}

	resp, err = http.Get(base + "/v1/externals")
	if err != nil {
		t.Fatal(err)
	}
	var states []external.State
	json.NewDecoder(resp.Body).Decode(&states)
	resp.Body.Close()
	if len(states) != 1 || states[0].Name != "ebpf" || states[0].PID == 0 || states[0].Starts != 1 {
		t.Errorf("externals = %+v", states)
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
	out := logs.String()
	order := []string{"ebpf: stopping pid", "agent: inputs stopped", "agent: http api closed", "agent: store closed"}
	last := -1
	for _, s := range order {
		i := strings.Index(out, s)
		if i <= last {
			t.Errorf("shutdown order: %q missing or out of order:\n%s", s, out)
		}
		last = i
	}
}

func TestAgentRefusesToStartOnConfigError(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "conf.d/host/ebpf.conf"), "[[inputs.ebpf]]\ninterval = \"abc\"\n", 0o644)
	err := Run(context.Background(), Options{Dir: dir, Log: log.New(io.Discard, "", 0),
		Lookup: func(string) (string, bool) { return "", false }})
	if err == nil || !strings.Contains(err.Error(), `conf.d/host/ebpf.conf: inputs.ebpf.interval: invalid duration "abc"`) {
		t.Errorf("err = %v", err)
	}
	if _, statErr := os.Stat(filepath.Join(dir, "data")); statErr == nil {
		t.Error("store created despite the config error")
	}
}
