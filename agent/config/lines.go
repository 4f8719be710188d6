package config

import (
	"fmt"
	"slices"
	"strings"
)

// keyLines maps every key and table of a TOML document, as its parts joined with "." (unquoted), to the
// line (from 1) where it first appears. BurntSushi/toml keeps key positions to itself, so this is a
// line-by-line scan, good enough to point at a key in a message: it knows table headers, dotted and quoted
// keys, and skips comments, the lines inside multi-line strings and the elements of multi-line arrays.
type keyLines map[string]int

func scanKeyLines(data []byte) keyLines {
	lines := keyLines{}
	var table []string
	closing := "" // the delimiter that ends the multi-line string we are in
	for n, line := range strings.Split(string(data), "\n") {
		s := strings.TrimSpace(line)
		if closing != "" {
			if strings.Contains(s, closing) {
				closing = ""
			}
			continue
		}
		if s == "" || s[0] == '#' {
			continue
		}
		if s[0] == '[' {
			inner := strings.TrimPrefix(s[1:], "[")
			parts, rest, ok := parseKey(inner)
			if ok && strings.HasPrefix(rest, "]") {
				table = parts
				lines.add(table, n+1)
			}
			continue
		}
		parts, rest, ok := parseKey(s)
		if !ok || !strings.HasPrefix(rest, "=") {
			continue
		}
		lines.add(append(slices.Clone(table), parts...), n+1)
		value := strings.TrimSpace(rest[1:])
		for _, delim := range []string{`"""`, `'''`} {
			if strings.HasPrefix(value, delim) && strings.Count(value, delim) == 1 {
				closing = delim
			}
		}
	}
	return lines
}

// add records key and its dotted prefixes at line, where not seen before.
func (l keyLines) add(key []string, line int) {
	for i := range key {
		k := strings.Join(key[:i+1], ".")
		if _, seen := l[k]; !seen {
			l[k] = line
		}
	}
}

// at returns " (line N)" for key (its parts joined with "."), or "" when it is not known.
func (l keyLines) at(key string) string {
	if n, ok := l[key]; ok {
		return fmt.Sprintf(" (line %d)", n)
	}
	return ""
}

// parseKey reads a dotted key (bare, "basic" or 'literal' parts) at the start of s and returns its parts
// and the rest of s with leading blanks removed.
func parseKey(s string) (parts []string, rest string, ok bool) {
	for {
		s = strings.TrimLeft(s, " \t")
		var part string
		switch {
		case s == "":
			return nil, "", false
		case s[0] == '"':
			end := 1
			var b strings.Builder
			for end < len(s) && s[end] != '"' {
				if s[end] == '\\' && end+1 < len(s) {
					end++
				}
				b.WriteByte(s[end])
				end++
			}
			if end >= len(s) {
				return nil, "", false
			}
			part, s = b.String(), s[end+1:]
		case s[0] == '\'':
			end := strings.IndexByte(s[1:], '\'')
			if end < 0 {
				return nil, "", false
			}
			part, s = s[1:end+1], s[end+2:]
		default:
			end := 0
			for end < len(s) && isBareKeyChar(s[end]) {
				end++
			}
			if end == 0 {
				return nil, "", false
			}
			part, s = s[:end], s[end:]
		}
		parts = append(parts, part)
		s = strings.TrimLeft(s, " \t")
		if !strings.HasPrefix(s, ".") {
			return parts, s, true
		}
		s = s[1:]
	}
}

func isBareKeyChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}
