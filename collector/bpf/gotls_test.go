package bpf

import (
	"debug/dwarf"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGoConnOffsetsAreGos checks the offsets hf_go_tie follows from a *tls.Conn to its descriptor against
// the debug information of a program the Go that builds us builds (go test leaves it out of test binaries).
func TestGoConnOffsetsAreGos(t *testing.T) {
	dir := t.TempDir()
	src := "package main\n\nimport (\n\t\"crypto/tls\"\n\t\"net\"\n)\n\nfunc main() { c, _ := net.Dial(\"tcp\", \"x\"); tls.Client(c, nil).Close() }\n"
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "prog")
	if out, err := exec.Command("go", "build", "-o", bin, filepath.Join(dir, "main.go")).CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, err := f.DWARF()
	if err != nil {
		t.Fatalf("debug information of %s: %v", bin, err)
	}
	field := map[string]int64{} // "type.field": offset
	want := map[string]bool{"crypto/tls.Conn.conn": true, "net.TCPConn.conn": true, "net.conn.fd": true,
		"net.netFD.pfd": true, "internal/poll.FD.Sysfd": true, "runtime.iface.data": true}
	r := d.Reader()
	for {
		e, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if e == nil {
			break
		}
		if e.Tag != dwarf.TagStructType {
			continue
		}
		name, _ := e.Val(dwarf.AttrName).(string)
		typ, err := d.Type(e.Offset)
		if err != nil {
			continue
		}
		st, ok := typ.(*dwarf.StructType)
		if !ok {
			continue
		}
		for _, m := range st.Field {
			if want[name+"."+m.Name] {
				field[name+"."+m.Name] = m.ByteOffset
			}
		}
		r.SkipChildren()
	}
	if len(field) != len(want) {
		t.Fatalf("found %v in the debug information, want all of %v", field, want)
	}
	if got := field["crypto/tls.Conn.conn"] + field["runtime.iface.data"]; got != goConnIfaceOff {
		t.Errorf("tls.Conn.conn's data word is at %d, goConnIfaceOff is %d", got, goConnIfaceOff)
	}
	if field["net.TCPConn.conn"] != 0 || field["net.conn.fd"] != 0 {
		t.Errorf("a *net.TCPConn does not point at its *netFD: %v", field)
	}
	if got := field["net.netFD.pfd"] + field["internal/poll.FD.Sysfd"]; got != goNetFDSysfdOff {
		t.Errorf("netFD.pfd.Sysfd is at %d, goNetFDSysfdOff is %d", got, goNetFDSysfdOff)
	}
}
