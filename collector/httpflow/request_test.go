package httpflow

import (
	"strconv"
	"strings"
	"testing"
)

func TestParseRequest(t *testing.T) {
	for _, tc := range []struct {
		name  string
		req   string
		split bool
		want  Request
		ok    bool
	}{
		{"origin form", "GET /api/v1/users HTTP/1.1\r\nHost: a\r\n", false, Request{"GET", "/api/v1/users", "1.1", false}, true},
		{"query string stripped", "GET /search?q=secret&token=x HTTP/1.1\r\n", false, Request{"GET", "/search", "1.1", false}, true},
		{"fragment stripped", "GET /page#top HTTP/1.1\r\n", false, Request{"GET", "/page", "1.1", false}, true},
		{"HTTP/1.0", "POST /form HTTP/1.0\r\n\r\n", false, Request{"POST", "/form", "1.0", false}, true},
		{"bare LF line end", "PUT /x HTTP/1.1\nHost: a\n", false, Request{"PUT", "/x", "1.1", false}, true},
		{"absolute form loses scheme and host", "GET http://example.com:8080/a/b?c=d HTTP/1.1\r\n", false, Request{"GET", "/a/b", "1.1", false}, true},
		{"absolute https form", "DELETE https://example.com/items/7 HTTP/1.1\r\n", false, Request{"DELETE", "/items/7", "1.1", false}, true},
		{"absolute form scheme is case-insensitive", "GET HTTP://Example.com/x HTTP/1.1\r\n", false, Request{"GET", "/x", "1.1", false}, true},
		{"absolute form without path is /", "HEAD http://example.com HTTP/1.1\r\n", false, Request{"HEAD", "/", "1.1", false}, true},
		{"absolute form with query but no path is /", "GET http://example.com?x=1 HTTP/1.1\r\n", false, Request{"GET", "/", "1.1", false}, true},
		{"every reported method", "PATCH /p HTTP/1.1\r\n", false, Request{"PATCH", "/p", "1.1", false}, true},
		{"OPTIONS with a path", "OPTIONS /cors HTTP/1.1\r\n", false, Request{"OPTIONS", "/cors", "1.1", false}, true},
		{"truncated: line does not end in the capture", "GET /very/long/path/that/goes/on", false, Request{"GET", "/very/long/path/that/goes/on", "", true}, true},
		{"truncated: query stripped when seen", "GET /a/b?token=abc", false, Request{"GET", "/a/b", "", true}, true},
		{"truncated after the target: version known", "GET /a HTTP/1.1", false, Request{"GET", "/a", "1.1", true}, true},
		{"truncated between CR and LF", "GET /a HTTP/1.0\r", false, Request{"GET", "/a", "1.0", true}, true},
		{"truncated inside the version", "GET /a HTTP/1.", false, Request{"GET", "/a", "", true}, true},
		{"truncated inside a multi-byte character", "GET /caf\xc3", false, Request{"GET", "/caf", "", true}, true},
		{"split flag marks a complete-looking line truncated", "GET /start", true, Request{"GET", "/start", "", true}, true},
		{"split flag with the query already seen", "POST /login?user=x", true, Request{"POST", "/login", "", true}, true},
		{"invalid UTF-8 replaced", "GET /\xff HTTP/1.1\r\n", false, Request{"GET", "/\ufffd", "1.1", false}, true},

		{"bad method", "CONNECT example.com:443 HTTP/1.1\r\n", false, Request{}, false},
		{"TRACE not reported", "TRACE / HTTP/1.1\r\n", false, Request{}, false},
		{"lower-case method", "get / HTTP/1.1\r\n", false, Request{}, false},
		{"OPTIONS * is not a path", "OPTIONS * HTTP/1.1\r\n", false, Request{}, false},
		{"authority form", "GET example.com HTTP/1.1\r\n", false, Request{}, false},
		{"other scheme", "GET ftp://example.com/x HTTP/1.1\r\n", false, Request{}, false},
		{"HTTP/0.9 line without version", "GET /\r\n", false, Request{}, false},
		{"not an HTTP version", "GET / FOO/1.1\r\n", false, Request{}, false},
		{"control character in target", "GET /a\x01b HTTP/1.1\r\n", false, Request{}, false},
		{"empty target", "GET  HTTP/1.1\r\n", false, Request{}, false},
		{"no space after method", "GET\r\n", false, Request{}, false},
		{"empty", "", false, Request{}, false},
		{"response, not request", "HTTP/1.1 200 OK\r\n", false, Request{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := ParseRequest([]byte(tc.req), tc.split)
			if ok != tc.ok || got != tc.want {
				t.Errorf("ParseRequest(%q, %v) = %+v, %v; want %+v, %v", tc.req, tc.split, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestParseHost(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"value after Host: with leading space and next header", " api.example.com\r\nUser-Agent: curl\r\n", "api.example.com"},
		{"port kept", " localhost:8080\r\n", "localhost:8080"},
		{"lower-cased", " API.Example.COM\r\n", "api.example.com"},
		{"tabs and trailing spaces trimmed", "\tx.test  \r\n", "x.test"},
		{"bare LF", " a.b\nAccept: */*", "a.b"},
		{"cut by the capture", " averyveryverylonghostname", "averyveryverylonghostname"},
		{"IPv6 literal", " [::1]:8080\r\n", "[::1]:8080"},
		{"empty value", " \r\n", ""},
		{"nothing captured", "", ""},
		{"space inside", " a b\r\n", ""},
		{"non-ASCII", " caf\xc3\xa9.fr\r\n", ""},
		{"backslash", " a\\\r\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ParseHost([]byte(tc.in)); got != tc.want {
				t.Errorf("ParseHost(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestParseCacheAnswersLikeTheParser(t *testing.T) {
	c := newParseCache()
	for range 2 { // miss, then hit
		for _, tc := range []struct {
			req   string
			split bool
		}{
			{"GET /a?x HTTP/1.1\r\nHost: h\r\n", false},
			{"GET /a?x HTTP/1.1\r\nHost: other\r\nAccept: */*", false}, // same line, other headers
			{"GET /a", false},
			{"GET /a", true},
			{"TRACE / HTTP/1.1\r\n", false},
		} {
			wr, wok := ParseRequest([]byte(tc.req), tc.split)
			if r, ok := c.request([]byte(tc.req), tc.split); r != wr || ok != wok {
				t.Errorf("cache.request(%q, %v) = %+v, %v; want %+v, %v", tc.req, tc.split, r, ok, wr, wok)
			}
		}
		for _, h := range []string{" A.b\r\nX: y", " A.b\r\nZ: w", ""} {
			if got, want := c.host([]byte(h)), ParseHost([]byte(h)); got != want {
				t.Errorf("cache.host(%q) = %q, want %q", h, got, want)
			}
		}
	}
	if n := len(c.reqs[0]) + len(c.reqs[1]); n != 4 {
		t.Errorf("cache holds %d request lines, want 4 (headers after the line are not part of the key)", n)
	}
}

func TestParseCacheStaysBounded(t *testing.T) {
	c := newParseCache()
	for i := range 3 * parseCacheSize {
		c.request([]byte("GET /"+strings.Repeat("x", i%97)+string(rune('a'+i%26))+"/"+strconv.Itoa(i)+" HTTP/1.1\r\n"), false)
		c.host([]byte(" h" + strconv.Itoa(i)))
	}
	if len(c.reqs[0]) > parseCacheSize || len(c.hosts) > parseCacheSize {
		t.Errorf("cache grew to %d requests, %d hosts; bound %d", len(c.reqs[0]), len(c.hosts), parseCacheSize)
	}
}

func BenchmarkParseCacheHit(b *testing.B) {
	c := newParseCache()
	req := []byte("GET /api/v1/users/list?page=2 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: bench")
	host := []byte(" api.example.com\r\nUser-Agent: bench")
	b.ReportAllocs()
	for b.Loop() {
		c.request(req, false)
		c.host(host)
	}
}
