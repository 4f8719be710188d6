package flow

import "testing"

func TestCommMakesAnyProcessNameAValidTagValue(t *testing.T) {
	for in, want := range map[string]string{
		"nginx":          "nginx",
		"a\nb\x7fc":      "a?b?c",
		"caf\xc3\xa9":    "café",
		"bad\xffutf8":    "bad?utf8",
		"fifteen-chars!": "fifteen-chars!",
	} {
		var b [16]byte
		copy(b[:], in)
		if got := Comm(b); got != want {
			t.Errorf("Comm(%q) = %q, want %q", in, got, want)
		}
	}
}
