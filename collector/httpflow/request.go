package httpflow

import (
	"bytes"
	"strings"
	"unicode/utf8"

	"dkebpf/collector/route"
)

// Request is what the captured start of a request message says (ref §3.3).
type Request struct {
	Method  string // GET PUT POST HEAD PATCH DELETE OPTIONS
	Path    string // the request-target without scheme, host, query and fragment
	Version string // "1.0", "1.1" (any "HTTP/d.d"), or "" when the capture ends before it
	// Truncated: the request line does not end in the captured bytes (or its first write, HF_F_REQ_SPLIT),
	// so Path may be only the start of the real one.
	Truncated bool
}

// methods are the methods DataKit reports, as constants so that parsing does not allocate them.
var methods = [...]string{"GET", "PUT", "POST", "HEAD", "PATCH", "DELETE", "OPTIONS"}

// ParseRequest parses req, the first bytes of a request message: its request line and perhaps the start of
// its headers. split is the event's HF_F_REQ_SPLIT flag. ok is false for what DataKit does not report: another
// method (CONNECT, TRACE, …), a request-target that is neither origin-form ("/…") nor absolute-form
// ("http://…", "https://…"; so "OPTIONS *" is not reported), control characters in the target, or a complete
// request line that does not end in "HTTP/d.d".
//
// The path is the request-target; absolute-form loses its scheme and host ("/" when nothing follows the host);
// the query ("?…") and fragment ("#…") are stripped, so URLs do not leak secrets into points.
//
// When the request line did not fit (Truncated), the path is what was captured of the target (still without
// query), and the version is the request line's own if the capture reached past it, else "": the version is in
// no other captured byte (the response's status line is not kept), and guessing "1.1" would put invented values
// into the aggregation key.
func ParseRequest(req []byte, split bool) (r Request, ok bool) {
	line, complete := req, false
	if i := bytes.IndexByte(req, '\n'); i >= 0 {
		line, complete = req[:i], true
		line = bytes.TrimSuffix(line, []byte{'\r'})
	}
	r.Truncated = !complete || split

	sp := bytes.IndexByte(line, ' ')
	if sp < 0 {
		return Request{}, false
	}
	for _, m := range methods {
		if string(line[:sp]) == m {
			r.Method = m
			break
		}
	}
	if r.Method == "" {
		return Request{}, false
	}

	target, rest, targetEnded := line[sp+1:], []byte(nil), false
	if i := bytes.IndexByte(target, ' '); i >= 0 {
		target, rest, targetEnded = target[:i], target[i+1:], true
	}
	if complete && !targetEnded {
		return Request{}, false // HTTP/0.9 or garbage: not an HTTP/1.x request line
	}
	if targetEnded {
		v, vok := version(bytes.TrimRight(rest, " \t\r")) // '\r': a capture may end between "\r" and "\n"
		if !vok && (complete || len(rest) >= len("HTTP/d.d")) {
			return Request{}, false
		}
		r.Version = v
	}

	path, ok := requestPath(target, !targetEnded)
	if !ok {
		return Request{}, false
	}
	r.Path = path
	return r, true
}

// version returns "d.d" of "HTTP/d.d".
func version(b []byte) (string, bool) {
	if len(b) != len("HTTP/d.d") || string(b[:5]) != "HTTP/" || !isDigit(b[5]) || b[6] != '.' || !isDigit(b[7]) {
		return "", false
	}
	switch string(b[5:]) {
	case "1.1":
		return "1.1", true
	case "1.0":
		return "1.0", true
	}
	return string(b[5:]), true
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// requestPath returns the path of a request-target; cut means the capture ended inside the target.
func requestPath(t []byte, cut bool) (string, bool) {
	for _, c := range t {
		if c <= ' ' || c == 0x7f {
			return "", false
		}
	}
	if len(t) == 0 {
		return "", false
	}
	if t[0] != '/' {
		rest, ok := cutScheme(t)
		if !ok {
			return "", false
		}
		// The authority ends at the path, the query or the fragment; without a path the path is "/".
		i := bytes.IndexAny(rest, "/?#")
		if i < 0 || rest[i] != '/' {
			return "/", true
		}
		t = rest[i:]
	}
	if i := bytes.IndexAny(t, "?#"); i >= 0 {
		t, cut = t[:i], false
	}
	if cut { // the capture may have split a multi-byte character
		for n := 1; n < utf8.UTFMax && n <= len(t); n++ {
			if utf8.RuneStart(t[len(t)-n]) {
				if !utf8.FullRune(t[len(t)-n:]) {
					t = t[:len(t)-n]
				}
				break
			}
		}
	}
	if !utf8.Valid(t) {
		return strings.ToValidUTF8(string(t), "\uFFFD"), true // line protocol needs valid UTF-8
	}
	return string(t), true
}

// cutScheme removes a leading "http://" or "https://" (the scheme is case-insensitive).
func cutScheme(t []byte) ([]byte, bool) {
	for _, s := range []string{"http://", "https://"} {
		if len(t) >= len(s) && strings.EqualFold(string(t[:len(s)]), s) {
			return t[len(s):], true
		}
	}
	return nil, false
}

// ParseHost normalises the captured value of a Host header (the bytes after "Host:", perhaps followed by
// further headers): cut at the line end, spaces trimmed, lower-cased, the port kept (it tells APIs apart).
// It returns "" when there is no usable value: empty, or bytes no host name has (controls, spaces, non-ASCII,
// backslash), which also keeps the tag encodable as line protocol.
func ParseHost(b []byte) string {
	if i := bytes.IndexAny(b, "\r\n"); i >= 0 {
		b = b[:i]
	}
	b = bytes.Trim(b, " \t")
	if len(b) == 0 {
		return ""
	}
	upper := false
	for _, c := range b {
		if c <= ' ' || c >= 0x7f || c == '\\' {
			return ""
		}
		upper = upper || ('A' <= c && c <= 'Z')
	}
	if upper {
		return strings.ToLower(string(b))
	}
	return string(b)
}

// parseCacheSize bounds each memo of parseCache; a full memo is emptied and refilled.
const parseCacheSize = 4096

type parsedRequest struct {
	r  Request
	ok bool
}

// parseCache memoises ParseRequest (its path made a route template) and ParseHost by their raw bytes, so
// that the same request line or host, seen again, costs one map lookup and no allocation.
type parseCache struct {
	reqs  [2]map[string]parsedRequest // indexed by the split flag
	hosts map[string]string
	line  []byte // h2Request's request line
}

func newParseCache() parseCache {
	return parseCache{
		reqs:  [2]map[string]parsedRequest{{}, {}},
		hosts: map[string]string{},
	}
}

func (c *parseCache) request(req []byte, split bool) (Request, bool) {
	// The result depends on the request line only: keying by it ignores the headers captured after it.
	if i := bytes.IndexByte(req, '\n'); i >= 0 {
		req = req[:i+1]
	}
	s := 0
	if split {
		s = 1
	}
	m := c.reqs[s]
	if p, hit := m[string(req)]; hit {
		return p.r, p.ok
	}
	r, ok := ParseRequest(req, split)
	r.Path = route.Template(r.Path) // points carry the route, never an identifier of the path
	if len(m) >= parseCacheSize {
		clear(m)
	}
	m[string(req)] = parsedRequest{r, ok}
	return r, ok
}

// h2Request is the Request of an HTTP/2 stream's :method and :path: the same methods and path rules as
// HTTP/1.x (ParseRequest of the request line they make), version "2".
func (c *parseCache) h2Request(method, path string) (Request, bool) {
	c.line = append(append(append(append(c.line[:0], method...), ' '), path...), " HTTP/2.0\n"...)
	r, ok := c.request(c.line, false)
	r.Version = "2"
	return r, ok
}

func (c *parseCache) host(b []byte) string {
	if i := bytes.IndexAny(b, "\r\n"); i >= 0 {
		b = b[:i]
	}
	if h, hit := c.hosts[string(b)]; hit {
		return h
	}
	h := ParseHost(b)
	if len(c.hosts) >= parseCacheSize {
		clear(c.hosts)
	}
	c.hosts[string(b)] = h
	return h
}
