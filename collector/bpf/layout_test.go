package bpf

import (
	"dkebpf/collector/flow"

	"encoding/binary"
	"reflect"
	"strings"
	"testing"

	"dkebpf/collector/bash"
	"dkebpf/collector/dnsflow"
	"dkebpf/collector/httpflow"
	"dkebpf/collector/netflow"
)

// TestGoMirrorsMatchTheCompiledStructs compares every Go mirror with its C twin, field by field.
func TestGoMirrorsMatchTheCompiledStructs(t *testing.T) {
	nf, bs := NetflowObject(), BashObject()
	for cname, m := range map[string]struct {
		obj []byte
		val any
	}{
		"nf_tuple":   {nf, flow.Tuple{}},
		"nf_sock":    {nf, flow.Sock{}},
		"nf_tcp_rec": {nf, netflow.TCPRecord{}},
		"nf_udp_key": {nf, netflow.UDPKey{}},
		"nf_udp_val": {nf, netflow.UDPVal{}},
		"hf_event":   {nf, httpflow.Event{}},
		"df_event":   {nf, dnsflow.Event{}},
		"bash_line":  {bs, bash.Line{}},
		"bash_exec":  {bs, bash.Exec{}},
	} {
		checkMirror(t, m.obj, cname, m.val)
	}
}

func checkMirror(t *testing.T, obj []byte, cname string, goval any) {
	t.Helper()
	size, members, err := StructLayout(obj, cname)
	if err != nil {
		t.Fatal(err)
	}
	typ := reflect.TypeOf(goval)
	if got := binary.Size(goval); got != size {
		t.Errorf("%s: Go mirror %s has %d bytes, C has %d", cname, typ, got, size)
	}
	if typ.NumField() != len(members) {
		t.Errorf("%s: Go mirror has %d fields, C has %d (%v)", cname, typ.NumField(), len(members), members)
		return
	}
	off := 0
	for i, m := range members {
		f := typ.Field(i)
		if f.Name != "_" && !strings.EqualFold(f.Name, strings.ReplaceAll(m.Name, "_", "")) {
			t.Errorf("%s field %d: Go %s, C %s", cname, i, f.Name, m.Name)
		}
		if off != m.Offset {
			t.Errorf("%s.%s: Go offset %d, C offset %d", cname, m.Name, off, m.Offset)
		}
		off += binary.Size(reflect.New(f.Type).Elem().Interface())
	}
}
