// Package route turns a request path into its route template: each segment that carries an identifier or a
// secret is replaced by a placeholder, so /users/123 and /users/124 are one endpoint, /users/{id}, and no
// identifier reaches a point. The rules go by a segment's form alone: a number, a UUID, a long hexadecimal
// string (a hash, an object id), a long mixed-case token (an API key, a session, a JWT), an email address.
// What no rule recognises (names, slugs) a Learner learns per host: a position with many distinct segments.
package route

import "strings"

// Placeholders, as they appear in a template.
const (
	ID    = "{id}"    // a number: /users/123
	UUID  = "{uuid}"  // 8-4-4-4-12 hexadecimal digits
	Hash  = "{hash}"  // MinHash or more hexadecimal digits, at least one a digit: hashes, object ids
	Token = "{token}" // MinToken or more of [A-Za-z0-9_.-], with a digit, an upper- and a lower-case letter
	Email = "{email}" // a segment with an @ (or %40) between other characters
)

// Lengths from which a segment is a hash or a token: below them, hexadecimal words ("cafe", "deadbeef") and
// mixed-case names ("getUser2") stay as they are.
const (
	MinHash  = 16
	MinToken = 20
)

// maxExt is the longest extension kept after a placeholder (".tar.gz", ".json").
const maxExt = 10

// Template returns path with each identifier segment replaced by its placeholder; a file extension after
// one stays (/files/<sha256>.tar.gz is /files/{hash}.tar.gz). A path without identifiers is returned as
// it is, without allocating.
func Template(path string) string {
	var b []byte // nil until a segment is replaced
	start := 0   // of the current segment
	for i := 0; i <= len(path); i++ {
		if i < len(path) && path[i] != '/' {
			continue
		}
		seg := path[start:i]
		p, ext := placeholder(seg)
		switch {
		case p != "":
			if b == nil {
				b = append(make([]byte, 0, len(path)), path[:start]...)
			}
			b = append(append(b, p...), ext...)
		case b != nil:
			b = append(b, seg...)
		}
		if i < len(path) && b != nil {
			b = append(b, '/')
		}
		start = i + 1
	}
	if b == nil {
		return path
	}
	return string(b)
}

// placeholder is the placeholder of a segment and the extension kept after it, or "".
func placeholder(seg string) (p, ext string) {
	if at := strings.IndexByte(seg, '@'); at > 0 && at+1 < len(seg) {
		return Email, ""
	}
	if at := strings.Index(seg, "%40"); at > 0 && at+3 < len(seg) {
		return Email, ""
	}
	if i := strings.IndexByte(seg, '.'); i > 0 && isExt(seg[i:]) {
		if p := kind(seg[:i]); p != "" {
			return p, seg[i:]
		}
	}
	return kind(seg), ""
}

// isExt reports whether s is a file extension: dot-separated parts of letters and digits, each starting
// with a letter, maxExt bytes at most.
func isExt(s string) bool {
	if len(s) < 2 || len(s) > maxExt {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if i+1 == len(s) || !isLetter(s[i+1]) {
				return false
			}
		case !isLetter(c) && !isDigit(c):
			return false
		}
	}
	return true
}

// kind is the placeholder of a whole segment (no extension), or "".
func kind(s string) string {
	if s == "" {
		return ""
	}
	var digits, hex, upper, lower int
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isDigit(c):
			digits++
			hex++
		case 'a' <= c && c <= 'z':
			lower++
			if c <= 'f' {
				hex++
			}
		case 'A' <= c && c <= 'Z':
			upper++
			if c <= 'F' {
				hex++
			}
		case c == '_' || c == '-' || c == '.':
		default:
			return "" // no rule has other bytes
		}
	}
	switch {
	case digits == len(s):
		return ID
	case isUUID(s):
		return UUID
	case hex == len(s) && len(s) >= MinHash && digits > 0:
		return Hash
	case len(s) >= MinToken && digits > 0 && upper > 0 && lower > 0:
		return Token
	}
	return ""
}

// isUUID reports whether s is 8-4-4-4-12 hexadecimal digits.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if c != '-' {
				return false
			}
		} else if !isDigit(c) && !('a' <= c && c <= 'f') && !('A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

func isDigit(c byte) bool  { return '0' <= c && c <= '9' }
func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
