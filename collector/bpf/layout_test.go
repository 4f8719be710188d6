package bpf

import (
	"encoding/binary"
	"reflect"
	"strings"
	"testing"

	"dkebpf/collector/dnsflow"
	"dkebpf/collector/httpflow"
	"dkebpf/collector/netflow"
)

// TestGoMirrorsMatchTheCompiledStructs compares every Go mirror with its C twin, field by field.
func TestGoMirrorsMatchTheCompiledStructs(t *testing.T) {
	for cname, goval := range map[string]any{
		"nf_tuple":   netflow.Tuple{},
		"nf_sock":    netflow.Sock{},
		"nf_tcp_rec": netflow.TCPRecord{},
		"nf_udp_key": netflow.UDPKey{},
		"nf_udp_val": netflow.UDPVal{},
		"hf_event":   httpflow.Event{},
		"df_event":   dnsflow.Event{},
	} {
		size, members, err := StructLayout(NetflowObject(), cname)
		if err != nil {
			t.Fatal(err)
		}
		typ := reflect.TypeOf(goval)
		if got := binary.Size(goval); got != size {
			t.Errorf("%s: Go mirror %s has %d bytes, C has %d", cname, typ, got, size)
		}
		if typ.NumField() != len(members) {
			t.Errorf("%s: Go mirror has %d fields, C has %d (%v)", cname, typ.NumField(), len(members), members)
			continue
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
}
