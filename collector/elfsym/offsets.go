// Package elfsym finds the file offsets of an ELF file's symbols, the addresses uprobes are attached at
// (libssl's SSL_read for httpflow, bash's readline for bash): its dynamic symbols, for a library linked
// into an executable its static ones (StaticOffsets), and for a Go program its functions' entries and return
// instructions from the Go runtime's own table, which stripping keeps (GoFunctions).
package elfsym

import (
	"debug/elf"
	"errors"
	"fmt"
	"strings"
)

// ErrNoSymbol is wrapped by the error Offsets returns when a file lacks some of the symbols asked for
// (OpenSSL 1.1.0 has no SSL_read_ex; a bash linked to libreadline.so has no readline of its own).
var ErrNoSymbol = errors.New("symbol not found")

// Offsets returns the file offset of each symbol defined in the ELF file at path (a shared object or a
// position-independent or fixed executable), looked up in the dynamic symbol table (a versioned name such as
// SSL_write@@OPENSSL_3.0.0 matches "SSL_write"; the default version wins). An undefined symbol (one the file
// imports from a library) counts as missing. If some symbols are missing the error wraps ErrNoSymbol, names
// the file and the symbols, and the map still holds the symbols that were found.
func Offsets(path string, symbols []string) (map[string]uint64, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open elf %s: %w", path, err)
	}
	defer f.Close()
	syms, err := f.DynamicSymbols()
	if err != nil {
		return nil, fmt.Errorf("read dynamic symbols of %s: %w", path, err)
	}

	want := make(map[string]bool, len(symbols))
	for _, s := range symbols {
		want[s] = true
	}
	found := make(map[string]elf.Symbol, len(symbols))
	for _, s := range syms {
		name, _, _ := strings.Cut(s.Name, "@")
		if !want[name] || s.Section == elf.SHN_UNDEF || s.Section == elf.SHN_ABS {
			continue
		}
		/* keep the first definition unless a later one is the default (non-hidden) version */
		if prev, ok := found[name]; ok && !(isHidden(prev) && !isHidden(s)) {
			continue
		}
		found[name] = s
	}

	vals := make(map[string]uint64, len(found))
	for name, s := range found {
		vals[name] = s.Value
	}
	return resolve(f, path, symbols, vals, make(map[string]uint64, len(symbols)))
}

// resolve adds to offs the file offset of each of symbols that vals has a value for. If some have none, the
// error wraps ErrNoSymbol and names them; offs still holds the others.
func resolve(f *elf.File, path string, symbols []string, vals, offs map[string]uint64) (map[string]uint64, error) {
	var missing []string
	for _, name := range symbols {
		v, ok := vals[name]
		if !ok {
			missing = append(missing, name)
			continue
		}
		off, ok := fileOffset(f.Progs, v)
		if !ok {
			return nil, fmt.Errorf("symbol %s in %s: value %#x is in no PT_LOAD segment", name, path, v)
		}
		offs[name] = off
	}
	if len(missing) > 0 {
		return offs, fmt.Errorf("find symbols in %s: %w: %s", path, ErrNoSymbol, strings.Join(missing, ", "))
	}
	return offs, nil
}

func isHidden(s elf.Symbol) bool { return s.HasVersion && s.VersionIndex.IsHidden() }

// fileOffset converts a virtual address to a file offset through the PT_LOAD segment whose file image holds it.
func fileOffset(progs []*elf.Prog, vaddr uint64) (uint64, bool) {
	if p := loadSegment(progs, vaddr); p != nil {
		return vaddr - p.Vaddr + p.Off, true
	}
	return 0, false
}

// loadSegment is the PT_LOAD segment whose file bytes hold vaddr, nil if none does.
func loadSegment(progs []*elf.Prog, vaddr uint64) *elf.Prog {
	for _, p := range progs {
		if p.Type == elf.PT_LOAD && vaddr >= p.Vaddr && vaddr < p.Vaddr+p.Filesz {
			return p
		}
	}
	return nil
}
