package elfsym

import (
	"debug/elf"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const hostLibssl = "/usr/lib/x86_64-linux-gnu/libssl.so.3"

var probeSymbols = []string{"SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex", "SSL_free"}

func needHostLibssl(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(hostLibssl); err != nil {
		t.Fatalf("no host libssl: %v", err)
	}
}

// readelfOffsets computes the file offsets of symbols with readelf, independently of debug/elf: of the
// dynamic symbol table's.
func readelfOffsets(t *testing.T, path string, symbols []string) map[string]uint64 {
	return readelfTableOffsets(t, path, symbols, "--dyn-syms")
}

// readelfTableOffsets is readelfOffsets of the tables readelf's option names ("--dyn-syms", "--syms").
func readelfTableOffsets(t *testing.T, path string, symbols []string, table string) map[string]uint64 {
	t.Helper()
	run := func(args ...string) []string {
		out, err := exec.Command("readelf", args...).Output()
		if err != nil {
			t.Fatalf("readelf %v: %v", args, err)
		}
		return strings.Split(string(out), "\n")
	}
	hex := func(s string) uint64 {
		v, err := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 64)
		if err != nil {
			t.Fatalf("parse %q: %v", s, err)
		}
		return v
	}
	type seg struct{ off, vaddr, filesz uint64 }
	var segs []seg
	for _, l := range run("-lW", path) {
		if f := strings.Fields(l); len(f) > 5 && f[0] == "LOAD" {
			segs = append(segs, seg{hex(f[1]), hex(f[2]), hex(f[4])})
		}
	}
	want := map[string]bool{}
	for _, s := range symbols {
		want[s] = true
	}
	offs := map[string]uint64{}
	for _, l := range run("-W", table, path) {
		/* "Num: Value Size Type Bind Vis Ndx Name", defined symbols only */
		f := strings.Fields(l)
		if len(f) < 8 || f[6] == "UND" {
			continue
		}
		name, _, _ := strings.Cut(f[7], "@")
		if !want[name] {
			continue
		}
		v := hex(f[1])
		for _, s := range segs {
			if v >= s.vaddr && v < s.vaddr+s.filesz {
				offs[name] = v - s.vaddr + s.off
			}
		}
	}
	return offs
}

func TestOffsetsMatchReadelfOnHostLibssl(t *testing.T) {
	needHostLibssl(t)
	want := readelfOffsets(t, hostLibssl, probeSymbols)
	if len(want) != len(probeSymbols) {
		t.Fatalf("readelf found %v, want all of %v", want, probeSymbols)
	}
	got, err := Offsets(hostLibssl, probeSymbols)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range probeSymbols {
		if got[s] != want[s] {
			t.Errorf("%s: offset %#x, readelf says %#x", s, got[s], want[s])
		}
	}
	if len(got) != len(probeSymbols) {
		t.Errorf("got %d offsets, want %d: %v", len(got), len(probeSymbols), got)
	}
}

func TestOffsetsReportsMissingSymbolsAndKeepsFoundOnes(t *testing.T) {
	needHostLibssl(t)
	got, err := Offsets(hostLibssl, []string{"SSL_read", "SSL_no_such_function", "OPENSSL_3.0.0"})
	if !errors.Is(err, ErrNoSymbol) {
		t.Fatalf("err = %v, want ErrNoSymbol", err)
	}
	for _, s := range []string{hostLibssl, "SSL_no_such_function", "OPENSSL_3.0.0"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not name %s", err, s)
		}
	}
	if _, ok := got["SSL_read"]; !ok || len(got) != 1 {
		t.Errorf("offsets = %v, want only SSL_read", got)
	}
}

func TestOffsetsRejectsNonELFNamingTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "libssl.so.3")
	if err := os.WriteFile(path, []byte("not an elf file"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Offsets(path, probeSymbols)
	if err == nil || !strings.Contains(err.Error(), path) || errors.Is(err, ErrNoSymbol) {
		t.Fatalf("err = %v, want an open error naming %s", err, path)
	}
}

func TestOffsetsFindReadlineInHostBash(t *testing.T) {
	const bash = "/bin/bash"
	if _, err := os.Stat(bash); err != nil {
		t.Fatalf("no host bash: %v", err)
	}
	want := readelfOffsets(t, bash, []string{"readline"})
	if _, ok := want["readline"]; !ok {
		t.Fatalf("%s defines no readline of its own (linked to libreadline.so?)", bash)
	}
	got, err := Offsets(bash, []string{"readline"})
	if err != nil {
		t.Fatal(err)
	}
	if got["readline"] != want["readline"] || len(got) != 1 {
		t.Errorf("Offsets(%s) = %v, readelf says readline at %#x", bash, got, want["readline"])
	}
}

func TestOffsetsTreatsAnImportedSymbolAsMissing(t *testing.T) {
	const bash = "/bin/bash"
	if _, err := os.Stat(bash); err != nil {
		t.Fatalf("no host bash: %v", err)
	}
	/* bash calls strlen from libc: its dynamic symbol table lists strlen as undefined */
	got, err := Offsets(bash, []string{"strlen"})
	if !errors.Is(err, ErrNoSymbol) || len(got) != 0 {
		t.Errorf("Offsets(%s, strlen) = %v, %v; want ErrNoSymbol and no offsets", bash, got, err)
	}
}

func TestFileOffsetUsesTheContainingLoadSegment(t *testing.T) {
	progs := []*elf.Prog{
		{ProgHeader: elf.ProgHeader{Type: elf.PT_LOAD, Off: 0, Vaddr: 0, Filesz: 0x1000}},
		{ProgHeader: elf.ProgHeader{Type: elf.PT_DYNAMIC, Off: 0x1000, Vaddr: 0x1000, Filesz: 0x100}},
		{ProgHeader: elf.ProgHeader{Type: elf.PT_LOAD, Off: 0x1000, Vaddr: 0x201000, Filesz: 0x800, Memsz: 0x2000}},
	}
	tests := []struct {
		name  string
		vaddr uint64
		want  uint64
		ok    bool
	}{
		{"first segment, vaddr equals offset", 0x35, 0x35, true},
		{"second segment is shifted", 0x201010, 0x1010, true},
		{"last byte of file image", 0x2017ff, 0x17ff, true},
		{"bss has no file offset", 0x201800, 0, false},
		{"only PT_LOAD counts", 0x1050, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := fileOffset(progs, tt.vaddr)
			if got != tt.want || ok != tt.ok {
				t.Errorf("fileOffset(%#x) = %#x, %v; want %#x, %v", tt.vaddr, got, ok, tt.want, tt.ok)
			}
		})
	}
}
