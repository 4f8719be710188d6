package elfsym

import (
	"bufio"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"golang.org/x/arch/x86/x86asm"
)

// ErrNotGo is wrapped by the error GoFunctions returns for a file that is not a Go program it can read (no
// .gopclntab, a Go older than 1.18, another architecture than amd64).
var ErrNotGo = errors.New("not a Go 1.18+ amd64 executable")

// GoFunc is where a Go function's uprobes go, as file offsets.
// A Go function is probed at its returns, never with a uretprobe: the kernel's return trampoline swaps the
// return address on the goroutine's stack, which Go moves when it grows and walks when it unwinds.
// Nor is it probed at its entry for what it does once: when the goroutine's stack is too small, the
// prologue's stack check calls morestack, which grows the stack and runs the function again from its entry,
// so an entry probe can fire twice for one call. Body is past that check, with the arguments still in their
// registers: it is reached once per call.
type GoFunc struct {
	Entry   uint64 // the function's first instruction
	Body    uint64 // the first instruction after the stack check
	Returns []uint64
}

// pclntab header magics (Go 1.18, and 1.20 onwards): the layout of the words below is the same.
const (
	go118Magic = 0xfffffff0
	go120Magic = 0xfffffff1
)

// GoFunctions finds the Go functions named (full names: "crypto/tls.(*Conn).Write") in the Go executable at
// path, from its .gopclntab, the function table the Go runtime itself needs: it survives `strip` and
// `-ldflags=-s -w`. The table is streamed, not loaded: a large program costs this process no memory. If some
// functions are missing, the error wraps ErrNoSymbol and the map holds the others; a file that is not a Go
// program wraps ErrNotGo.
func GoFunctions(path string, names []string) (map[string]GoFunc, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open elf %s: %w", path, err)
	}
	defer f.Close()
	sect := f.Section(".gopclntab")
	if sect == nil || f.Machine != elf.EM_X86_64 || f.Class != elf.ELFCLASS64 {
		return nil, fmt.Errorf("%s: %w", path, ErrNotGo)
	}
	tab := sect.Open().(io.ReaderAt)
	var hdr [8 + 8*8]byte
	if _, err := tab.ReadAt(hdr[:], 0); err != nil {
		return nil, fmt.Errorf("%s: read .gopclntab header: %w", path, err)
	}
	le := binary.LittleEndian
	if m := le.Uint32(hdr[:]); (m != go118Magic && m != go120Magic) || hdr[7] != 8 {
		return nil, fmt.Errorf("%s: %w (pclntab magic %#x)", path, ErrNotGo, m)
	}
	word := func(i int) uint64 { return le.Uint64(hdr[8+8*i:]) }
	nfunc, textStart, nameTab, funcTab := word(0), word(2), word(3), word(7)
	if textStart == 0 {
		if textStart, err = goText(f, sect.Addr, sect.Addr+nameTab); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}

	nameOffs, err := findNames(io.NewSectionReader(tab, int64(nameTab), int64(funcTab-nameTab)), names)
	if err != nil {
		return nil, fmt.Errorf("%s: read function names: %w", path, err)
	}
	// The function table: nfunc (entry offset, _func offset) pairs, then the end of the last function.
	ft := make([]byte, nfunc*8+4)
	if _, err := tab.ReadAt(ft, int64(funcTab)); err != nil {
		return nil, fmt.Errorf("%s: read function table: %w", path, err)
	}
	// Each _func starts with its entry offset and name offset; they follow one another in table order.
	r := bufio.NewReaderSize(io.NewSectionReader(tab, int64(funcTab), 1<<62), 32<<10)
	var pos uint64
	vals := map[string][2]uint64{} // start, end
	for i := range nfunc {
		fo := uint64(le.Uint32(ft[i*8+4:]))
		if fo < pos {
			return nil, fmt.Errorf("%s: function table out of order at %d", path, i)
		}
		if _, err := r.Discard(int(fo - pos)); err != nil {
			return nil, fmt.Errorf("%s: read function %d: %w", path, i, err)
		}
		var fn [8]byte
		if _, err := io.ReadFull(r, fn[:]); err != nil {
			return nil, fmt.Errorf("%s: read function %d: %w", path, i, err)
		}
		pos = fo + 8
		if name, ok := nameOffs[int32(le.Uint32(fn[4:]))]; ok {
			end := uint64(le.Uint32(ft[(i+1)*8:]))
			vals[name] = [2]uint64{textStart + uint64(le.Uint32(fn[:])), textStart + end}
		}
	}

	out := make(map[string]GoFunc, len(names))
	var missing []string
	for _, name := range names {
		v, ok := vals[name]
		if !ok {
			missing = append(missing, name)
			continue
		}
		gf, err := goFunc(f, v[0], v[1])
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", path, name, err)
		}
		out[name] = gf
	}
	if len(missing) > 0 {
		return out, fmt.Errorf("find Go functions in %s: %w: %s", path, ErrNoSymbol, strings.Join(missing, ", "))
	}
	return out, nil
}

// findNames returns the offset in the function name table of each of names (NUL-terminated there).
func findNames(r io.Reader, names []string) (map[int32]string, error) {
	br := bufio.NewReaderSize(r, 32<<10)
	out := map[int32]string{}
	var off int32
	for {
		s, err := br.ReadSlice(0)
		if errors.Is(err, bufio.ErrBufferFull) {
			// A name longer than the buffer (generic instantiations): not one we look for.
			n := int32(len(s))
			for errors.Is(err, bufio.ErrBufferFull) {
				s, err = br.ReadSlice(0)
				n += int32(len(s))
			}
			off += n
			continue
		}
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if name := s[:len(s)-1]; slices.ContainsFunc(names, func(n string) bool { return n == string(name) }) {
			out[off] = string(name)
		}
		off += int32(len(s))
	}
}

// goText is the address of runtime.text, where the function table's entry offsets start, when the
// table's header leaves it to the linker (external linking, after the C start code). From the symbol table
// if there is one, else from the runtime's moduledata: its first word points at the table and its 23rd is
// text. In a fixed executable moduledata is in the data; in a position-independent one its words are
// relative relocations.
func goText(f *elf.File, tabAddr, nameAddr uint64) (uint64, error) {
	if syms, err := f.Symbols(); err == nil {
		for _, s := range syms {
			if s.Name == "runtime.text" {
				return s.Value, nil
			}
		}
	}
	const textWord = 22
	le := binary.LittleEndian
	for _, s := range f.Sections {
		if s.Type != elf.SHT_PROGBITS || s.Flags&elf.SHF_WRITE == 0 || s.Flags&elf.SHF_ALLOC == 0 {
			continue
		}
		r := bufio.NewReaderSize(s.Open(), 32<<10)
		var md [textWord + 1]uint64
		var w [8]byte
		for i := 0; ; i++ {
			if _, err := io.ReadFull(r, w[:]); err != nil {
				break
			}
			copy(md[:], md[1:])
			md[textWord] = le.Uint64(w[:])
			if i >= textWord && md[0] == tabAddr && md[1] == nameAddr && md[textWord] != 0 {
				return md[textWord], nil
			}
		}
	}
	// Position-independent: R_X86_64_RELATIVE entries, whose addends are the values.
	rela := f.Section(".rela.dyn")
	if rela == nil {
		return 0, errors.New("no runtime.text: no symbol table, no moduledata in the data, no relocations")
	}
	relocs := func(fn func(off, addend uint64) bool) {
		r := bufio.NewReaderSize(rela.Open(), 32<<10)
		var e [24]byte
		for {
			if _, err := io.ReadFull(r, e[:]); err != nil {
				return
			}
			if le.Uint64(e[8:])&0xffffffff == uint64(elf.R_X86_64_RELATIVE) && fn(le.Uint64(e[:]), le.Uint64(e[16:])) {
				return
			}
		}
	}
	var md, text uint64
	relocs(func(off, addend uint64) bool {
		if addend == tabAddr {
			md = off
		}
		return md != 0
	})
	relocs(func(off, addend uint64) bool {
		if md != 0 && off == md+textWord*8 {
			text = addend
		}
		return text != 0
	})
	if text == 0 {
		return 0, errors.New("no runtime.text: no symbol table, no moduledata found")
	}
	return text, nil
}

// goFunc disassembles the function at [start, end) for the end of its stack check and its return instructions.
func goFunc(f *elf.File, start, end uint64) (GoFunc, error) {
	prog := loadSegment(f.Progs, start)
	if prog == nil || end <= start || end-start > 1<<20 || end > prog.Vaddr+prog.Filesz {
		return GoFunc{}, fmt.Errorf("code at %#x-%#x is in no PT_LOAD segment", start, end)
	}
	code := make([]byte, end-start)
	if _, err := prog.ReadAt(code, int64(start-prog.Vaddr)); err != nil {
		return GoFunc{}, fmt.Errorf("read code: %w", err)
	}
	toFile := prog.Off - prog.Vaddr
	gf := GoFunc{Entry: start + toFile}
	guardCmp := false // the previous instruction compared the stack pointer with the goroutine's stack guard
	for i := 0; i < len(code); {
		inst, err := x86asm.Decode(code[i:], 64)
		if err != nil {
			i++
			continue
		}
		if gf.Body == 0 {
			if guardCmp && inst.Op == x86asm.JBE {
				gf.Body = start + uint64(i+inst.Len) + toFile
			} else if i+inst.Len >= 32 {
				return GoFunc{}, fmt.Errorf("code at %#x does not start as a Go function does (no stack check)", start)
			}
			m, ok := inst.Args[1].(x86asm.Mem)
			guardCmp = inst.Op == x86asm.CMP && ok && m.Base == x86asm.R14 && m.Disp == 16 // cmp rsp or r12, 16(r14)
		}
		if inst.Op == x86asm.RET {
			gf.Returns = append(gf.Returns, start+uint64(i)+toFile)
		}
		i += inst.Len
	}
	if len(gf.Returns) == 0 {
		return GoFunc{}, fmt.Errorf("no return instruction in %#x-%#x", start, end)
	}
	return gf, nil
}
