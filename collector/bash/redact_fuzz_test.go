package bash

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// fuzzContexts are places where any bare word is a secret; @@ marks it.
var fuzzContexts = []string{
	"sshpass -p @@ ssh -p 2222 host",
	"docker login -u me -p @@ registry.example.com",
	"redis-cli -h h -p 6379 -a @@ info",
	"mongosh -u admin -p @@ --quiet",
	"curl -u admin:@@ https://h/",
	"smbclient //h/s -U 'DOM\\user%@@'",
	"mysql -uroot -p@@ db",
	"htpasswd -b /etc/htpasswd admin @@",
	"kubectl --token=@@ get pods",
	"ldapsearch -x -w @@ -b dc=ex",
	"export GITHUB_TOKEN=@@; gh pr list",
}

// isBareSecret says whether s can stand for a secret in fuzzContexts: one bare shell word of ordinary
// characters that is not taken for a flag or a switch.
func isBareSecret(s string) bool {
	if s == "" || s[0] == '-' || isSwitch(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!%^*_+.,:~=@/-", c) >= 0) {
			return false
		}
	}
	return true
}

// FuzzRedact checks, for any line: no panic; valid UTF-8 stays valid; redacting again changes nothing;
// skipping regexps by their hints changes nothing; a line comes out changed only if a rule fired; a seed line
// keeps none of its secrets. And, for any bare word put where a secret goes, that the word is hidden whole
// and what comes before it is kept (but for the letters a token's format takes: -pypi-...).
func FuzzRedact(f *testing.F) {
	seedSecrets := map[string][]string{}
	for _, tt := range secretLines {
		for _, s := range secretsOf(tt.line, tt.want) {
			f.Add(tt.line, s)
			if !strings.Contains(tt.want, s) { /* oc login -u developer -p developer */
				seedSecrets[tt.line] = append(seedSecrets[tt.line], s)
			}
		}
	}
	for _, l := range plainLines {
		f.Add(l, "hunter2")
	}
	r, err := NewRedactor(nil)
	if err != nil {
		f.Fatal(err)
	}
	all := *r
	all.noHints = true
	f.Fuzz(func(t *testing.T, line, secret string) {
		if len(line) >= LineLen || len(secret) > 128 { /* the kernel captures less; long secrets only slow the search */
			t.Skip()
		}
		got, fired := r.Redact(line)
		if utf8.ValidString(line) && !utf8.ValidString(got) {
			t.Errorf("Redact(%q) = %q: not UTF-8", line, got)
		}
		if fired == nil && got != line {
			t.Errorf("Redact(%q) = %q, but no rule fired", line, got)
		}
		if again, _ := r.Redact(got); again != got {
			t.Errorf("Redact(%q) = %q, and again %q", line, got, again)
		}
		if want, wantFired := all.Redact(line); got != want || strings.Join(fired, ",") != strings.Join(wantFired, ",") {
			t.Errorf("Redact(%q) = %q %q with hints, %q %q without", line, got, fired, want, wantFired)
		}
		for _, s := range seedSecrets[line] {
			if len(s) >= 4 && strings.Contains(got, s) {
				t.Errorf("Redact(%q) = %q still holds %q", line, got, s)
			}
		}

		if !isBareSecret(secret) {
			return
		}
		for _, c := range fuzzContexts {
			prefix, suffix, _ := strings.Cut(c, "@@")
			l := prefix + secret + suffix
			got, _ := r.Redact(l)
			i := strings.Index(got, Mask)
			if i < 0 || !strings.HasPrefix(prefix, got[:i]) || /* a token's format may take a flag's letters: -pypi-... */
				len(secret) >= 4 && strings.Contains(got[i:], secret) && !strings.Contains(suffix, secret) {
				t.Errorf("Redact(%q) = %q: want %q hidden whole after (part of) %q", l, got, secret, prefix)
			}
		}
	})
}
