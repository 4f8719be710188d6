package elfsym

import (
	"debug/elf"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"
)

var goTLSFuncs = []string{"crypto/tls.(*Conn).Read", "crypto/tls.(*Conn).Write", "crypto/tls.(*Conn).Close"}

// goTLSProgram builds a Go program that uses crypto/tls, with the go build flags given.
func goTLSProgram(t *testing.T, env []string, flags ...string) string {
	t.Helper()
	dir := t.TempDir()
	src := "package main\n\nimport (\n\t\"crypto/tls\"\n\t\"os\"\n)\n\nfunc main() {\n" +
		"\tc, err := tls.Dial(\"tcp\", os.Args[1], nil)\n\tif err != nil {\n\t\treturn\n\t}\n" +
		"\tc.Write([]byte(\"x\"))\n\tc.Read(make([]byte, 1))\n\tc.Close()\n}\n"
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module gotls\n\ngo 1.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "gotls")
	cmd := exec.Command("go", append(append([]string{"build", "-o", bin}, flags...), ".")...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %v: %v\n%s", flags, err, out)
	}
	return bin
}

// objdumpFunc gives, as file offsets, the first instruction `go tool objdump` shows in the function, the one
// after its first JBE (the stack check's), and its RET instructions.
func objdumpFunc(t *testing.T, bin, fn string) (entry, body uint64, rets []uint64) {
	t.Helper()
	out, err := exec.Command("go", "tool", "objdump", "-s", "^"+regexp.QuoteMeta(fn)+"$", bin).Output()
	if err != nil {
		t.Fatalf("go tool objdump %s: %v", fn, err)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	line := regexp.MustCompile(`(?m)^\s+\S+:\d+\s+0x([0-9a-f]+)\s+[0-9a-f]+\s+(\S+)`)
	afterJBE := false
	for i, m := range line.FindAllStringSubmatch(string(out), -1) {
		addr, _ := strconv.ParseUint(m[1], 16, 64)
		off, ok := fileOffset(f.Progs, addr)
		if !ok {
			t.Fatalf("%s: %#x is in no segment", fn, addr)
		}
		if i == 0 {
			entry = off
		}
		if afterJBE && body == 0 {
			body = off
		}
		afterJBE = m[2] == "JBE"
		if m[2] == "RET" {
			rets = append(rets, off)
		}
	}
	return entry, body, rets
}

func TestGoFunctionsFindEntriesBodiesAndReturnsInEveryBuildMode(t *testing.T) {
	builds := []struct {
		name  string
		env   []string
		flags []string
	}{
		{"default", []string{"CGO_ENABLED=0"}, nil},
		{"pie", []string{"CGO_ENABLED=0"}, []string{"-buildmode=pie"}},
		{"cgo-external", []string{"CGO_ENABLED=1"}, []string{"-ldflags=-linkmode=external"}},
		{"cgo-external-pie", []string{"CGO_ENABLED=1"}, []string{"-buildmode=pie", "-ldflags=-linkmode=external"}},
	}
	for _, b := range builds {
		t.Run(b.name, func(t *testing.T) {
			bin := goTLSProgram(t, b.env, b.flags...)
			got, err := GoFunctions(bin, goTLSFuncs)
			if err != nil {
				t.Fatal(err)
			}
			for _, fn := range goTLSFuncs {
				entry, body, rets := objdumpFunc(t, bin, fn)
				if g := got[fn]; g.Entry != entry || g.Body != body || body <= entry || body > entry+32 ||
					!slices.Equal(g.Returns, rets) || len(rets) == 0 {
					t.Errorf("%s: entry %#x body %#x returns %#x; go tool objdump says %#x, %#x and %#x",
						fn, g.Entry, g.Body, g.Returns, entry, body, rets)
				}
			}
			// Stripped of its symbol table and DWARF, the same code is found through .gopclntab alone.
			stripped := filepath.Join(t.TempDir(), "stripped")
			if out, err := exec.Command("strip", "-o", stripped, bin).CombinedOutput(); err != nil {
				t.Fatalf("strip: %v\n%s", err, out)
			}
			if sf, err := elf.Open(stripped); err != nil {
				t.Fatal(err)
			} else if _, err := sf.Symbols(); !errors.Is(err, elf.ErrNoSymbols) {
				t.Fatalf("the stripped build still has a symbol table (%v)", err)
			}
			gs, err := GoFunctions(stripped, goTLSFuncs)
			if err != nil {
				t.Fatal(err)
			}
			for _, fn := range goTLSFuncs {
				if gs[fn].Entry != got[fn].Entry || gs[fn].Body != got[fn].Body || !slices.Equal(gs[fn].Returns, got[fn].Returns) {
					t.Errorf("stripped %s: %+v; before strip %+v", fn, gs[fn], got[fn])
				}
			}
		})
	}
}

func TestGoFunctionsOfOtherFiles(t *testing.T) {
	if _, err := GoFunctions("/bin/bash", goTLSFuncs); !errors.Is(err, ErrNotGo) {
		t.Errorf("GoFunctions(/bin/bash) = %v, want ErrNotGo", err)
	}
	// A Go program without crypto/tls: every function is missing, none is invented.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	got, err := GoFunctions(self, []string{"main.nonexistent", "testing.MainStart"})
	if !errors.Is(err, ErrNoSymbol) || len(got) != 1 {
		t.Errorf("GoFunctions(test binary) = %v, %v; want only testing.MainStart and ErrNoSymbol", got, err)
	}
}
