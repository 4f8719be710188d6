package bash

import (
	"dkebpf/options"

	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
)

// Mask replaces each hidden secret.
const Mask = "***"

// Rule is a redaction rule: Pattern is a Go regexp (RE2 syntax); the part of a match it hides is the capture
// group named "secret" (the first one that took part in the match), else group 1, else the whole match.
type Rule = options.RedactRule

// extent says how secretEnd finds where a default rule's secret ends (its regexp finds where it starts).
type extent uint8

const (
	exact  extent = iota // the regexp's group is the secret (user rules, url-password)
	word                 // a shell word: a flag's argument, a token
	assign               // the value of KEY=value: inside quotes it runs to the closing quote, '&' or ';'
	header               // an HTTP header value: inside quotes it runs to the closing quote
	quoted               // (secretEnd) a JSON string value inside quotes
)

type defaultRule struct {
	Rule
	ext extent
}

// Pieces of the default patterns. The default rules' regexps only find where a secret starts; where it ends
// is for secretEnd to say, from the shell's quoting.
const (
	// the first byte of a value (after KEY=, --flag=): secretEnd may find it empty (password= x)
	valueStart = `(?P<secret>.)`
	// the first byte of a word after a flag and blanks: a word starting with '-' is taken for another flag
	argStart = `(?P<secret>[^\s-])`
	// the first byte of a token, a header value
	wordStart = `(?P<secret>\S)`
	// a JSON string value ({"password": "x"})
	jsonVal = `(?P<secret>")`
	// what may come before a command name: start of line, a separator, a path, an opening quote
	cmdStart = "(?:^|[\\s;&|(/'\"`])"
	// the arguments between a command name and the flag of interest
	args = `(?:[ \t]+[^\s;&|]+)*?[ \t]+`

	passKeys  = `(?:pass(?:w(?:or)?d|phrase)?|pwd)`
	tokenKeys = `(?:token|secret|api_?key|secret_?key|private_?key)`
)

// defaultRules are applied before the user's rules, in this order (the package documentation lists them).
var defaultRules = []defaultRule{
	{Rule{Name: "password", Pattern: `(?i)(?:^|[^\w-])\w*` + passKeys + `=` + valueStart + `|"\w*` + passKeys + `"\s*:\s*` + jsonVal}, assign},
	{Rule{Name: "password-flag", Pattern: `(?i)(?:^|[\s'"])--?(?:[\w-]*-)?pass(?:w(?:or)?d|phrase|in|out)?(?:=` + valueStart + `|[ \t]+` + argStart + `)`}, word},
	{Rule{Name: "mysql-p", Pattern: cmdStart + `(?:mysql\w*|mariadb[\w-]*)` + args + `-p` + wordStart}, word},
	{Rule{Name: "authorization", Pattern: `(?i)\bauthorization:[ \t]*(?:(?:basic|bearer|digest|token|negotiate|ntlm|hoba|mutual|` +
		`aws4-hmac-sha256|apikey|dpop|jwt|oauth|ssws)[ \t]+)?` + wordStart}, header},
	{Rule{Name: "bearer", Pattern: `(?i)\bbearer[ \t]+` + wordStart}, word},
	{Rule{Name: "aws-secret", Pattern: `(?i)(?:^|[^\w${])aws_secret_access_key(?:=|:[ \t]*|[ \t]+)` + wordStart}, word},
	{Rule{Name: "token-env", Pattern: `(?i)(?:^|[^\w$-])\w*` + tokenKeys + `=` + valueStart + `|"\w*` + tokenKeys + `"\s*:\s*` + jsonVal}, assign},
	{Rule{Name: "token-flag", Pattern: `(?i)(?:^|[\s'"])--?(?:[\w-]*-)?(?:token|secret|api-?key)(?:=` + valueStart + `|[ \t]+` + argStart + `)`}, word},
	{Rule{Name: "secret-header", Pattern: `(?i)(?:^|[\s'"])(?:x-)?(?:api-?key|auth-?token|access-?token|vault-token|private-token|` +
		`(?:set-)?cookie)[ \t]*:[ \t]*` + wordStart}, header},
	{Rule{Name: "url-password", Pattern: `(?i)\b[a-z][a-z0-9+.-]*://[^\s/?#@:'"]*:(?P<secret>[^\s/?#'"]+)@`}, exact},
	{Rule{Name: "curl-user", Pattern: cmdStart + `curl` + args + `(?:-u[ \t]*|--user(?:=|[ \t]+))(?:'[^':]*:|"[^":]*:|[^\s:'"]*:)` + wordStart}, header},
}

// DefaultRules returns the built-in rules, in the order they are applied. Their patterns only find where a
// secret starts; where it ends is found from the shell's quoting (see the package documentation), which user
// rules do not get: a user rule hides exactly what its group matches.
func DefaultRules() []Rule {
	rules := make([]Rule, len(defaultRules))
	for i, r := range defaultRules {
		rules[i] = r.Rule
	}
	return rules
}

// compiledDefaults compiles the default rules once.
var compiledDefaults = sync.OnceValue(func() []compiled {
	cs := make([]compiled, len(defaultRules))
	for i, d := range defaultRules {
		c, err := compile(d.Rule, d.ext)
		if err != nil {
			panic(err) // the default patterns are tested
		}
		cs[i] = c
	}
	return cs
})

type compiled struct {
	name   string
	re     *regexp.Regexp
	groups []int // capture groups named "secret", in order; nil: group 1, or the whole match without groups
	ext    extent
}

// Redactor hides secrets in command lines. It is safe for concurrent use.
type Redactor struct {
	rules []compiled
}

// NewRedactor returns a Redactor applying the default rules, then the user's rules in their order. A user rule
// cannot replace or disable a default one: its name must differ from every other rule's. An invalid rule is an
// error naming it.
func NewRedactor(user []Rule) (*Redactor, error) {
	r := &Redactor{rules: slices.Clone(compiledDefaults())}
	names := map[string]bool{}
	for _, d := range defaultRules {
		names[d.Name] = true
	}
	for _, u := range user {
		if u.Name == "" {
			return nil, fmt.Errorf("redaction rule with pattern %q: the rule has no name", u.Pattern)
		}
		if names[u.Name] {
			return nil, fmt.Errorf("redaction rule %q: the name is taken (by a default rule or an earlier rule); "+
				"user rules are added after the defaults and cannot replace them", u.Name)
		}
		if u.Pattern == "" {
			return nil, fmt.Errorf("redaction rule %q: the pattern is empty", u.Name)
		}
		c, err := compile(u, exact)
		if err != nil {
			return nil, err
		}
		r.rules = append(r.rules, c)
		names[u.Name] = true
	}
	return r, nil
}

func compile(r Rule, ext extent) (compiled, error) {
	re, err := regexp.Compile(r.Pattern)
	if err != nil {
		return compiled{}, fmt.Errorf("redaction rule %q: pattern %q: %w", r.Name, r.Pattern, err)
	}
	c := compiled{name: r.Name, re: re, ext: ext}
	for i, n := range re.SubexpNames() {
		if n == "secret" {
			c.groups = append(c.groups, i)
		}
	}
	if c.groups == nil && re.NumSubexp() > 0 {
		c.groups = []int{1}
	}
	return c, nil
}

// secret returns the bounds of the rule's secret in match m; false if its group took no part.
func (c *compiled) secret(m []int) (int, int, bool) {
	if c.groups == nil {
		return m[0], m[1], true
	}
	for _, g := range c.groups {
		if m[2*g] >= 0 {
			return m[2*g], m[2*g+1], true
		}
	}
	return 0, 0, false
}

// Redact returns line with every secret a rule finds replaced by Mask, and the names of the rules that found
// one, in rule order, each once. All rules look at the original line; overlapping secrets become one Mask.
func (r *Redactor) Redact(line string) (out string, fired []string) {
	var spans [][2]int
	var quotes []byte // quote state before each byte, computed at the first match
	for i := range r.rules {
		c := &r.rules[i]
		hit := false
		for _, m := range c.re.FindAllStringSubmatchIndex(line, -1) {
			s, e, ok := c.secret(m)
			if !ok {
				continue
			}
			if c.ext != exact {
				if quotes == nil {
					quotes = quoteStates(line)
				}
				e = secretEnd(line, s, quotes[s], c.ext)
			}
			if e <= s {
				continue
			}
			spans = append(spans, [2]int{s, e})
			hit = true
		}
		if hit {
			fired = append(fired, c.name)
		}
	}
	if len(spans) == 0 {
		return line, nil
	}
	slices.SortFunc(spans, func(a, b [2]int) int { return a[0] - b[0] })
	var b strings.Builder
	b.Grow(len(line))
	pos := 0
	for i := 0; i < len(spans); {
		s, e := spans[i][0], spans[i][1]
		for i++; i < len(spans) && spans[i][0] <= e; i++ {
			e = max(e, spans[i][1])
		}
		b.WriteString(line[pos:s])
		b.WriteString(Mask)
		pos = e
	}
	b.WriteString(line[pos:])
	return b.String(), fired
}

// quoteStates returns, for each byte of line and for its end, the shell quote it is inside: 0, '\” or '"'.
// A backslash outside single quotes escapes the next byte.
func quoteStates(line string) []byte {
	st := make([]byte, len(line)+1)
	var q byte
	for i := 0; i < len(line); i++ {
		st[i] = q
		c := line[i]
		switch {
		case q != '\'' && c == '\\':
			if i+1 < len(line) {
				i++
				st[i] = q
			}
		case q == 0 && (c == '\'' || c == '"'):
			q = c
		case q != 0 && c == q:
			q = 0
		}
	}
	st[len(line)] = q
	return st
}

// secretEnd returns where a secret that starts at s ends, given the quote q the line is inside at s (the
// default rules' regexps only say where secrets start). It returns s when there is nothing to hide.
//
// Outside quotes the secret is the rest of its shell word: up to a blank or an operator (; & | < > ( )),
// with quoted parts taken whole (PGPASSWORD='x y', password=ab'c d'). Inside quotes a word secret ends at a
// blank, ; & or |, an assignment's value at ; or & (a query string's next parameter), a header's value
// only at the closing quote; all end at the closing quote. Quotes of the other kind inside quotes are taken
// whole (sh -c "mysql -p'x y'"). A JSON string value ("password": "x" in a single-quoted argument) ends
// at the next blank or , } ] after its closing quote.
func secretEnd(line string, s int, q byte, ext extent) int {
	n := len(line)
	if s >= n || (q != 0 && line[s] == q) {
		return s
	}
	i := s
	if q == 0 {
		var in byte
	word:
		for ; i < n; i++ {
			c := line[i]
			switch in {
			case 0:
				switch {
				case c == '\\':
					i++
				case c == '\'' || c == '"':
					in = c
				case isBlank(c) || strings.IndexByte(";&|<>()", c) >= 0:
					break word
				}
			case '\'':
				if c == '\'' {
					in = 0
				}
			case '"':
				if c == '\\' {
					i++
				} else if c == '"' {
					in = 0
				}
			}
		}
		return min(i, n)
	}
inside:
	for i < n {
		c := line[i]
		switch {
		case c == '\\' && q == '"':
			i += 2
			continue
		case c == q:
			break inside
		case c == '\'' || c == '"':
			if i == s && ext == assign && c == '"' && strings.HasSuffix(strings.TrimRight(line[:s], " \t"), ":") {
				ext = quoted /* a JSON string value */
			}
			i = nestedEnd(line, i, q)
			continue
		case ext == word && (isBlank(c) || c == ';' || c == '&' || c == '|'):
			break inside
		case ext == assign && (c == ';' || c == '&'):
			break inside
		case ext == quoted && (isBlank(c) || strings.IndexByte(",}];&|", c) >= 0):
			break inside
		}
		i++
	}
	return min(i, n)
}

// nestedEnd returns the end of the string quoted by line[i] (a quote of the other kind than q, the quote the
// line is inside): just past its closing quote, or at q's closing quote, or at the end of the line. A
// backslash escapes the next byte (a JSON string's \"), except the single quote that ends q.
func nestedEnd(line string, i int, q byte) int {
	nq := line[i]
	for i++; i < len(line); i++ {
		switch line[i] {
		case '\\':
			if q == '"' || i+1 < len(line) && line[i+1] != q { /* nothing escapes a single quote's end */
				i++
			}
		case nq:
			return i + 1
		case q:
			return i
		}
	}
	return len(line)
}

func isBlank(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}
