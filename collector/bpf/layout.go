package bpf

/*
#include <stdlib.h>
#include <bpf/btf.h>

static const struct btf_member *member_at(const struct btf *btf, int id, int i)
{
	return btf_members(btf__type_by_id(btf, id)) + i;
}

static int member_count(const struct btf *btf, int id)
{
	return btf_vlen(btf__type_by_id(btf, id));
}

static int type_size(const struct btf *btf, int id)
{
	return btf__type_by_id(btf, id)->size;
}

static const struct btf_enum *member_of_enum(const struct btf *btf, int id, int i)
{
	return btf_enum(btf__type_by_id(btf, id)) + i;
}
*/
import "C"

import (
	"fmt"
	"os"
	"strings"
	"unsafe"
)

// Member is one field of a C struct as the compiled object's BTF describes it.
type Member struct {
	Name   string
	Offset int // bytes
}

// StructLayout reads a struct's size and members from the BTF of a BPF object, so Go mirrors can be
// checked against what the compiler really laid out.
func StructLayout(obj []byte, name string) (size int, members []Member, err error) {
	err = withType(obj, C.BTF_KIND_STRUCT, "struct "+name, func(btf *C.struct_btf, id C.int) {
		for i := 0; i < int(C.member_count(btf, id)); i++ {
			m := C.member_at(btf, id, C.int(i))
			members = append(members, Member{
				Name:   C.GoString(C.btf__name_by_offset(btf, m.name_off)),
				Offset: int(m.offset) / 8, // bit offset; these structs have no bitfields
			})
		}
		size = int(C.type_size(btf, id))
	})
	return size, members, err
}

// EnumValues reads the members of a C enum from the BTF of a BPF object (a BTF_ENUM puts it there), so Go
// constants mirroring them can be checked against the compiled values.
func EnumValues(obj []byte, name string) (map[string]int64, error) {
	values := map[string]int64{}
	err := withType(obj, C.BTF_KIND_ENUM, "enum "+name, func(btf *C.struct_btf, id C.int) {
		for i := 0; i < int(C.member_count(btf, id)); i++ {
			e := C.member_of_enum(btf, id, C.int(i))
			values[C.GoString(C.btf__name_by_offset(btf, e.name_off))] = int64(e.val)
		}
	})
	return values, err
}

// withType parses the BTF of an object (libbpf reads it from a file) and hands fn the id of the type named
// what ("struct nf_tuple", "enum nf_stat").
func withType(obj []byte, kind int, what string, fn func(btf *C.struct_btf, id C.int)) error {
	f, err := os.CreateTemp("", "layout-*.bpf.o")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(obj); err != nil {
		return err
	}
	f.Close()
	cpath := C.CString(f.Name())
	defer C.free(unsafe.Pointer(cpath))
	btf := C.btf__parse_elf(cpath, nil)
	if btf == nil {
		return fmt.Errorf("parse BTF of %s", f.Name())
	}
	defer C.btf__free(btf)
	_, name, _ := strings.Cut(what, " ")
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	id := C.btf__find_by_name_kind(btf, cname, C.__u32(kind))
	if id < 0 {
		return fmt.Errorf("%s not in the object's BTF", what)
	}
	fn(btf, id)
	return nil
}

// NetflowObject is the embedded netflow object (for layout tests).
func NetflowObject() []byte { return netflowObj }

// BashObject is the embedded bash object (for layout tests).
func BashObject() []byte { return bashObj }

// ProcessObject is the embedded process object (for layout tests).
func ProcessObject() []byte { return processObj }
