package elfsym

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// StaticOffsets is Offsets for a library linked into an executable (OpenSSL built in): each symbol is looked
// up in the dynamic symbol table, then, if missing there, in the static one (.symtab, local functions
// included), so an executable that does not export them is probed too. A stripped file has no static table.
//
// The static table of a large executable is tens of MB with its names: both are read as streams, never
// held, so looking at every executable on a host costs reads, not memory.
func StaticOffsets(path string, symbols []string) (map[string]uint64, error) {
	offs, err := Offsets(path, symbols)
	if err == nil || !errors.Is(err, ErrNoSymbol) {
		return offs, err
	}
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open elf %s: %w", path, err)
	}
	defer f.Close()
	var missing []string
	for _, s := range symbols {
		if _, ok := offs[s]; !ok {
			missing = append(missing, s)
		}
	}
	vals, err := symtabValues(f, missing)
	if err != nil {
		return offs, fmt.Errorf("read static symbols of %s: %w", path, err)
	}
	return resolve(f, path, missing, vals, offs)
}

// symtabValues finds the values of the defined functions named in .symtab of a 64-bit little-endian ELF file
// (none without one): first the names' offsets in its string table, then the symbols that point there.
func symtabValues(f *elf.File, names []string) (map[string]uint64, error) {
	st := f.Section(".symtab")
	if st == nil || st.Type != elf.SHT_SYMTAB || f.Class != elf.ELFCLASS64 || f.Data != elf.ELFDATA2LSB ||
		int(st.Link) >= len(f.Sections) {
		return nil, nil
	}
	at, err := nameOffsets(f.Sections[st.Link].Open(), names)
	if err != nil || len(at) == 0 {
		return nil, err
	}
	vals := map[string]uint64{}
	r := bufio.NewReaderSize(st.Open(), 64<<10)
	var sym [24]byte // Elf64_Sym: name u32, info u8, other u8, shndx u16, value u64, size u64
	for {
		if _, err := io.ReadFull(r, sym[:]); err == io.EOF {
			return vals, nil
		} else if err != nil {
			return nil, err
		}
		name, ok := at[binary.LittleEndian.Uint32(sym[0:])]
		shndx := elf.SectionIndex(binary.LittleEndian.Uint16(sym[6:]))
		if !ok || elf.ST_TYPE(sym[4]) != elf.STT_FUNC || shndx == elf.SHN_UNDEF || shndx == elf.SHN_ABS {
			continue
		}
		if _, dup := vals[name]; !dup || elf.ST_BIND(sym[4]) == elf.STB_GLOBAL {
			vals[name] = binary.LittleEndian.Uint64(sym[8:])
		}
	}
}

// nameOffsets reads a string table and returns the offset of each of names in it. A linker may store a name
// as the end of a longer one (suffix merging), so every string ending in a name counts.
func nameOffsets(strtab io.Reader, names []string) (map[uint32]string, error) {
	at := map[uint32]string{}
	r := bufio.NewReaderSize(strtab, 64<<10)
	var off uint32
	for {
		s, err := r.ReadSlice(0)
		if err == bufio.ErrBufferFull { // a name longer than the buffer: not one of ours
			off += uint32(len(s))
			for err == bufio.ErrBufferFull {
				s, err = r.ReadSlice(0)
				off += uint32(len(s))
			}
			if err != nil {
				return at, ignoreEOF(err)
			}
			continue
		}
		if err != nil {
			return at, ignoreEOF(err)
		}
		str := bytes.TrimSuffix(s, []byte{0})
		for _, name := range names {
			if bytes.HasSuffix(str, []byte(name)) {
				at[off+uint32(len(str)-len(name))] = name
			}
		}
		off += uint32(len(s))
	}
}

func ignoreEOF(err error) error {
	if err == io.EOF {
		return nil
	}
	return err
}
