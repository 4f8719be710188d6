package options_test

import (
	"flag"
	"os"
	"regexp"
	"strings"
	"testing"

	"dkebpf/options"
)

var update = flag.Bool("update", false, "rewrite docs/agent.md's options table")

const (
	docsFile  = "../docs/agent.md"
	docsBegin = "<!-- options table: generated from options.Table; go test ./options -update rewrites it -->\n"
	docsEnd   = "<!-- end of options table -->"
)

func TestDocsListEveryKey(t *testing.T) {
	doc, err := os.ReadFile(docsFile)
	if err != nil {
		t.Fatal(err)
	}
	s := string(doc)
	begin, end := strings.Index(s, docsBegin), strings.Index(s, docsEnd)
	if begin < 0 || end < begin {
		t.Fatalf("%s: no options table between %q and %q", docsFile, docsBegin, docsEnd)
	}
	want := s[:begin+len(docsBegin)] + options.Markdown() + s[end:]
	if want == s {
		return
	}
	if *update {
		if err := os.WriteFile(docsFile, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s: the options table differs from options.Table; run go test ./options -update", docsFile)
}

// The shipped sample names every key (set or commented out) and no other.
func TestSampleNamesEveryKey(t *testing.T) {
	sample, err := os.ReadFile("../conf.d/samples/ebpf.conf.sample")
	if err != nil {
		t.Fatal(err)
	}
	named := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s*#?\s*(?:\[\[?inputs\.ebpf\.)?([a-z0-9_]+)(?:\s*=|\]\]?)`).FindAllStringSubmatch(string(sample), -1) {
		named[m[1]] = true
	}
	for i := range options.Table {
		if k := options.Table[i].Key; k != "" && !named[k] {
			t.Errorf("the sample does not name %s", k)
		}
	}
	for k := range named {
		if options.ByKey(k) == nil && k != "name" && k != "pattern" && k != "some_tag" { // inside tables
			t.Errorf("the sample names %s, which is no key", k)
		}
	}
}
