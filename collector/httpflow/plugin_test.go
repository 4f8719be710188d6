package httpflow

import (
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"testing"
	"time"

	"dkebpf/collector/elfsym"
	"dkebpf/collector/plugin/plugintest"
	"dkebpf/collector/target"
)

// fakeKernel is the httpflow part of netflow's BPF object: exchanges in, as the kernel lays them out.
type fakeKernel struct {
	events plugintest.Ring
	stats  []uint64
}

func (k *fakeKernel) DrainHTTP(fn func([]byte)) int             { return k.events.Drain(fn) }
func (k *fakeKernel) HTTPStats() []uint64                       { return k.stats }
func (k *fakeKernel) TLS() bool                                 { return false }
func (k *fakeKernel) SSLSymbols() []string                      { return nil }
func (k *fakeKernel) AttachSSL(string, map[string]uint64) error { return nil }
func (k *fakeKernel) GoTLS() bool                               { return false }
func (k *fakeKernel) GoTLSFuncs() []string                      { return nil }
func (k *fakeKernel) H2() bool                                  { return false }
func (k *fakeKernel) DrainH2(func([]byte)) int                  { return 0 }
func (k *fakeKernel) AttachGoTLS(string, map[string]elfsym.GoFunc) error {
	return nil
}

func TestPluginTurnsKernelExchangesIntoPoints(t *testing.T) {
	k := &fakeKernel{stats: []uint64{1, 2, 3, 4, 5, 6, 7}}
	for i := 0; i < 3; i++ {
		k.events = append(k.events, record(t, client(t, "GET /api/x?token=1 HTTP/1.1")))
	}
	k.events = append(k.events, []byte("short"))
	p := NewPlugin(k, PluginConfig{Config: Config{EphemeralPort: 32768, MaxPaths: 10}, Plain: true},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer p.Close()
	p.Drain()
	pt := one(t, p.Flush(time.Unix(100, 0)))
	checkFields(t, pt, map[string]any{"count": int64(3), "bytes_written": int64(300), "bytes_read": int64(3000)})
	checkFields(t, pt, map[string]any{"path": "/api/x", "method": "GET"})
	if pt.Tags["direction"] != "outgoing" || pt.Tags["http_host"] != "api.test:8080" {
		t.Errorf("tags %v", pt.Tags)
	}
	c := p.Counters()
	if c.Events != 4 || c.DecodeErrors != 1 || c.Lost != 1 || c.MapFull != 5 || c.Extra["desyncs"] != 4 || c.Extra["tls_calls"] != 7 {
		t.Errorf("counters %+v", c)
	}
}

// The host's libssl once, with every symbol; and Debian's BoringSSL (installed by scripts/install-deps.sh), with
// all but the _ex functions, which it does not have.
func TestLibsslTargetsAreTheHostLibsslWithItsSymbols(t *testing.T) {
	symbols := []string{"SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex", "SSL_free"}
	files, errs := target.NewFinder("/proc", Libssl(symbols)).Host()
	want := map[string]int{"libssl.so.3": len(symbols), "libssl.so.0": len(symbols) - 2}
	got := map[string]int{}
	for _, f := range files {
		got[filepath.Base(f.Path)] = len(f.Offsets)
	}
	if len(errs) != 0 || len(files) != len(want) || !maps.Equal(got, want) {
		t.Errorf("Host = %+v, %v; want each of %v once, with that many offsets", files, errs, want)
	}
}
