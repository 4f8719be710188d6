package httpflow

import (
	"bytes"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"dkebpf/collector/plugin/plugintest"
	"dkebpf/collector/point"
	"dkebpf/collector/route"
)

// fuzzRequests are request captures for the seeds: the unit tests' and the odd ones a capture produces.
var fuzzRequests = []string{
	get,
	"GET /search?q=secret&token=x HTTP/1.1\r\n",
	"GET /page#top HTTP/1.1\r\n",
	"POST /form HTTP/1.0\r\n\r\n",
	"PUT /x HTTP/1.1\nHost: a\n",
	"GET http://example.com:8080/a/b?c=d HTTP/1.1\r\n",
	"GET HTTP://Example.com/x HTTP/1.1\r\n",
	"HEAD http://example.com HTTP/1.1\r\n",
	"GET http://example.com?x=1 HTTP/1.1\r\n",
	"OPTIONS * HTTP/1.1\r\n",
	"GET /very/long/path/that/goes/on",
	"GET /a HTTP/1.0\r",
	"GET /a HTTP/1.",
	"GET /caf\xc3",
	"GET /\xff HTTP/1.1\r\n",
	"GET /a\x01b HTTP/1.1\r\n",
	"GET  HTTP/1.1\r\n",
	"GET /\r\n",
	"GE",
	"",
	"HTTP/1.1 200 OK\r\n",
	"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", // a TLS ClientHello, not HTTP
	"GET /" + strings.Repeat("a/", 200) + "?q=1 HTTP/1.1\r\n",
	"DELETE /" + strings.Repeat("\xe2\x82\xac", ReqLen/3) + " HTTP/1.1\r\n", // cut inside a character at ReqLen
}

// FuzzEventDecode decodes arbitrary records and hands them, twice, to a Plugin logging at debug level:
// a record shorter than its lengths say is an error, a long enough one decodes to the mirror that encodes
// back to its bytes (padding aside), and nothing the kernel could send panics or yields a point that
// line protocol cannot carry.
func FuzzEventDecode(f *testing.F) {
	for _, req := range fuzzRequests {
		f.Add(record(f, client(f, req)))
		f.Add(record(f, server(f, req)))
	}
	e := client(f, get)
	e.ReqLen, e.HostLen = 255, 255 // lengths beyond the buffers
	f.Add(record(f, e))
	e = client(f, "GET /start")
	e.Flags, e.Status = FlagReqSplit|FlagTLS, 101
	f.Add(record(f, e))
	short := record(f, client(f, get))
	f.Add(short[:len(short)-1])
	f.Add([]byte("short"))

	log := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var e Event
		err := e.UnmarshalBinary(b)
		size := SizeHead // what the record's lengths say it holds
		if len(b) >= SizeHead {
			size += min(int(b[100]), ReqLen) + min(int(b[101]), HostLen)
		}
		if len(b) < size {
			if err == nil {
				t.Fatalf("decoding a %d-byte record of %d succeeded", len(b), size)
			}
			return
		}
		if err != nil {
			t.Fatalf("decoding a %d-byte record: %v", len(b), err)
		}
		raw, err := e.AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		want := bytes.Clone(b[:size])
		want[39] = 0         // the padding of the tuple
		clear(want[102:104]) // after HostLen
		clear(want[108:112]) // and after Mntns
		if !bytes.Equal(raw, want) {
			t.Errorf("decoded %+v re-encodes to\n%x\nwant\n%x", e, raw, want)
		}
		dirty := Event{Pid: 7, ReqLen: 9, Status: 500}
		dirty.Req[ReqLen-1], dirty.Host[HostLen-1] = 'x', 'y'
		if err := dirty.UnmarshalBinary(b); err != nil || dirty != e {
			t.Errorf("decoding into a used Event gave %+v, %v; want %+v", dirty, err, e)
		}

		k := &fakeKernel{events: plugintest.Ring{b, b}}
		p := NewPlugin(k, PluginConfig{Config: Config{MaxPaths: 1}}, log)
		p.Drain()
		pts := p.Flush(time.Unix(100, 0))
		st := p.agg.Stats()
		n := st.Ignored + st.Unparsable + st.NoAddress
		for _, pt := range pts {
			n += uint64(pt.Fields["count"].(int64))
			checkPoint(t, pt)
		}
		if n != 2 {
			t.Errorf("2 exchanges: %d in points, stats %+v", n, st)
		}
	})
}

// checkPoint checks what httpflow itself puts into a point.
func checkPoint(t *testing.T, pt point.Point) {
	t.Helper()
	path := pt.Fields["path"].(string)
	if path != FoldedPath && !validPath(path) {
		t.Errorf("point with path %q", path)
	}
	if !slices.Contains(methods[:], pt.Fields["method"].(string)) {
		t.Errorf("point with method %q", pt.Fields["method"])
	}
	if h := pt.Tags[HostTag]; h != "N/A" && ParseHost([]byte(h)) != h {
		t.Errorf("point with host %q", h)
	}
	// The process name is the kernel's comm, which httpflow does not clean: encode what httpflow makes.
	own := point.Point{Name: pt.Name, Tags: map[string]string{HostTag: pt.Tags[HostTag]}, Fields: pt.Fields, Time: pt.Time}
	if _, err := point.NewEncoder(nil).Encode(own); err != nil {
		t.Errorf("point %+v: %v", own, err)
	}
}

// validPath says what a reported path always is: origin-form, no query or fragment, no blank or control
// characters, valid UTF-8.
func validPath(p string) bool {
	return strings.HasPrefix(p, "/") && !strings.ContainsAny(p, "?# \t\r\n\x00\x7f") && utf8.ValidString(p) &&
		!strings.ContainsFunc(p, func(r rune) bool { return r < ' ' })
}

// FuzzParseRequest checks ParseRequest's contract on arbitrary captures: what is reported has a known method,
// a valid path without query, a well-formed version and the right Truncated flag; what is not is the zero
// Request; the bytes after the request line do not matter (the parse cache relies on it); and a capture cut
// inside a reported request line reports a prefix of its path.
func FuzzParseRequest(f *testing.F) {
	for _, req := range fuzzRequests {
		f.Add([]byte(req), false)
	}
	f.Add([]byte("GET /start"), true)
	f.Add([]byte("POST /login?user=x"), true)
	f.Add([]byte("GET /a HTTP/1.1\r\n"), true)
	f.Fuzz(func(t *testing.T, req []byte, split bool) {
		if len(req) > 4*ReqLen {
			return // the kernel captures ReqLen bytes; longer inputs only slow the fuzzer's minimization
		}
		r, ok := ParseRequest(req, split)
		if !ok {
			if r != (Request{}) {
				t.Errorf("ParseRequest(%q, %v) = %+v, not ok: want the zero Request", req, split, r)
			}
		} else {
			if !slices.Contains(methods[:], r.Method) {
				t.Errorf("ParseRequest(%q) method %q", req, r.Method)
			}
			if !validPath(r.Path) || len(r.Path) > 3*len(req) {
				t.Errorf("ParseRequest(%q) path %q", req, r.Path)
			}
			if v := r.Version; v != "" && (len(v) != 3 || !isDigit(v[0]) || v[1] != '.' || !isDigit(v[2])) {
				t.Errorf("ParseRequest(%q) version %q", req, v)
			}
			if want := split || bytes.IndexByte(req, '\n') < 0; r.Truncated != want {
				t.Errorf("ParseRequest(%q, %v) truncated %v, want %v", req, split, r.Truncated, want)
			}
			if !r.Truncated && r.Version == "" {
				t.Errorf("ParseRequest(%q) complete without a version", req)
			}
		}

		line := req
		if i := bytes.IndexByte(req, '\n'); i >= 0 {
			line = req[:i]
			if r2, ok2 := ParseRequest(req[:i+1], split); r2 != r || ok2 != ok {
				t.Errorf("ParseRequest(%q) = %+v, %v; its request line alone %+v, %v", req, r, ok, r2, ok2)
			}
		}
		c := newParseCache()
		routed := r
		routed.Path = route.Template(r.Path) // the cache's requests carry the route
		for range 2 {
			if r2, ok2 := c.request(req, split); r2 != routed || ok2 != ok {
				t.Errorf("cache.request(%q) = %+v, %v; ParseRequest with its route %+v, %v", req, r2, ok2, routed, ok)
			}
		}

		// A capture cut inside the target or version of a reported origin-form line still reports it.
		sp := bytes.IndexByte(line, ' ')
		if !ok || r.Truncated || line[sp+1] != '/' {
			return
		}
		for cut := sp + 2; cut < len(line); cut++ {
			rc, okc := ParseRequest(line[:cut], false)
			if !okc || !rc.Truncated || rc.Method != r.Method || !strings.HasPrefix(r.Path, rc.Path) ||
				rc.Version != "" && rc.Version != r.Version {
				t.Errorf("ParseRequest(%q) = %+v, %v; of the whole line %q: %+v", line[:cut], rc, okc, line, r)
			}
		}
	})
}

// FuzzParseHost checks that a parsed Host header is a lower-case run of printable ASCII without backslash
// (so a valid line-protocol tag), unchanged by parsing it again, and the cache's answer.
func FuzzParseHost(f *testing.F) {
	for _, h := range []string{
		" api.example.com\r\nUser-Agent: curl\r\n", " localhost:8080\r\n", " API.Example.COM\r\n", "\tx.test  \r\n",
		" a.b\nAccept: */*", " averyveryverylonghostname", " [::1]:8080\r\n", " \r\n", "", " a b\r\n",
		" caf\xc3\xa9.fr\r\n", " a\\\r\n", "\x00", " " + strings.Repeat("h", 2*HostLen),
	} {
		f.Add([]byte(h))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 4*HostLen {
			return // the kernel captures HostLen bytes; longer inputs only slow the fuzzer's minimization
		}
		h := ParseHost(b)
		if h == "" {
			return
		}
		for i := 0; i < len(h); i++ {
			if c := h[i]; c <= ' ' || c >= 0x7f || c == '\\' || 'A' <= c && c <= 'Z' {
				t.Fatalf("ParseHost(%q) = %q: byte %#x", b, h, c)
			}
		}
		if len(h) > len(b) || !bytes.Contains(bytes.ToLower(b), []byte(h)) {
			t.Errorf("ParseHost(%q) = %q: not from the capture", b, h)
		}
		if h2 := ParseHost([]byte(" " + h + "\r\n")); h2 != h {
			t.Errorf("ParseHost(%q) = %q, but ParseHost of that is %q", b, h, h2)
		}
		c := newParseCache()
		if hc := c.host(b); hc != h {
			t.Errorf("cache.host(%q) = %q, ParseHost %q", b, hc, h)
		}
		if _, err := point.NewEncoder(nil).Encode(point.Point{Name: "httpflow", Tags: map[string]string{HostTag: h},
			Fields: map[string]any{"count": int64(1)}}); err != nil {
			t.Errorf("host %q: %v", h, err)
		}
	})
}
