package bpf

/*
#include <stdlib.h>
#include <bpf/btf.h>

// Finds struct name in btf; returns its type id or a negative value.
static int find_struct(const struct btf *btf, const char *name)
{
	return btf__find_by_name_kind(btf, name, BTF_KIND_STRUCT);
}

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

// Finds enum name in btf; returns its type id or a negative value.
static int find_enum(const struct btf *btf, const char *name)
{
	return btf__find_by_name_kind(btf, name, BTF_KIND_ENUM);
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
	err = withBTF(obj, func(btf *C.struct_btf) error {
		cname := C.CString(name)
		defer C.free(unsafe.Pointer(cname))
		id := C.find_struct(btf, cname)
		if id < 0 {
			return fmt.Errorf("struct %s not in the object's BTF", name)
		}
		for i := 0; i < int(C.member_count(btf, id)); i++ {
			m := C.member_at(btf, id, C.int(i))
			members = append(members, Member{
				Name:   C.GoString(C.btf__name_by_offset(btf, m.name_off)),
				Offset: int(m.offset) / 8, // bit offset; these structs have no bitfields
			})
		}
		size = int(C.type_size(btf, id))
		return nil
	})
	return size, members, err
}

// EnumValues reads the members of a C enum from the BTF of a BPF object, so Go constants mirroring them can
// be checked against the compiled values.
func EnumValues(obj []byte, name string) (map[string]int64, error) {
	values := map[string]int64{}
	err := withBTF(obj, func(btf *C.struct_btf) error {
		cname := C.CString(name)
		defer C.free(unsafe.Pointer(cname))
		id := C.find_enum(btf, cname)
		if id < 0 {
			return fmt.Errorf("enum %s not in the object's BTF (does a BTF_ENUM name it?)", name)
		}
		for i := 0; i < int(C.member_count(btf, id)); i++ {
			e := C.member_of_enum(btf, id, C.int(i))
			values[C.GoString(C.btf__name_by_offset(btf, e.name_off))] = int64(e.val)
		}
		return nil
	})
	return values, err
}

// withBTF parses the BTF of an object (libbpf reads it from a file) for fn.
func withBTF(obj []byte, fn func(*C.struct_btf) error) error {
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
	return fn(btf)
}

// NetflowObject is the embedded netflow object (for layout tests).
func NetflowObject() []byte { return netflowObj }

// BashObject is the embedded bash object (for layout tests).
func BashObject() []byte { return bashObj }
