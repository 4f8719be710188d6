package elfsym

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// staticOpenSSL builds a program with OpenSSL linked in from Debian's libssl.a, exporting nothing.
func staticOpenSSL(t *testing.T, strip bool) string {
	t.Helper()
	dir := t.TempDir()
	src, bin := filepath.Join(dir, "main.c"), filepath.Join(dir, "static-ssl")
	prog := "#include <openssl/ssl.h>\nint main(int c, char **v) { SSL *s = SSL_new(SSL_CTX_new(TLS_method())); char b[1];\n" +
		"if (c > 5) { SSL_read(s, b, 1); SSL_write(s, b, 1); SSL_read_ex(s, b, 1, 0); SSL_write_ex(s, b, 1, 0); } SSL_free(s); return 0; }\n"
	if out, err := exec.Command("sh", "-c", "printf '%s' \"$0\" > "+src, prog).CombinedOutput(); err != nil {
		t.Fatalf("write %s: %v\n%s", src, err, out)
	}
	args := []string{"-O2", "-o", bin, src, "-Wl,-Bstatic", "-lssl", "-lcrypto", "-Wl,-Bdynamic", "-lpthread", "-ldl"}
	if strip {
		args = append(args, "-s")
	}
	if out, err := exec.Command("cc", args...).CombinedOutput(); err != nil {
		t.Fatalf("cc %v: %v\n%s", args, err, out)
	}
	if out, _ := exec.Command("ldd", bin).Output(); strings.Contains(string(out), "libssl") {
		t.Fatalf("%s links libssl.so:\n%s", bin, out)
	}
	return bin
}

func TestStaticOffsetsFindOpenSSLLinkedIn(t *testing.T) {
	bin := staticOpenSSL(t, false)
	if _, err := Offsets(bin, probeSymbols); !errors.Is(err, ErrNoSymbol) {
		t.Fatalf("Offsets (dynamic symbols only) = %v, want ErrNoSymbol: the program exports nothing", err)
	}
	want := readelfTableOffsets(t, bin, probeSymbols, "--syms")
	if len(want) != len(probeSymbols) {
		t.Fatalf("readelf found %v, want all of %v", want, probeSymbols)
	}
	got, err := StaticOffsets(bin, probeSymbols)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range probeSymbols {
		if got[s] != want[s] {
			t.Errorf("%s: offset %#x, readelf says %#x", s, got[s], want[s])
		}
	}
}

func TestStaticOffsetsOfAStrippedOrUnrelatedFileAreMissing(t *testing.T) {
	for _, path := range []string{staticOpenSSL(t, true), "/bin/bash"} {
		got, err := StaticOffsets(path, probeSymbols)
		if !errors.Is(err, ErrNoSymbol) || len(got) != 0 {
			t.Errorf("StaticOffsets(%s) = %v, %v; want ErrNoSymbol and no offsets", path, got, err)
		}
	}
}

func TestStaticOffsetsOfHostLibsslAreItsDynamicOnes(t *testing.T) {
	needHostLibssl(t)
	dyn, err := Offsets(hostLibssl, probeSymbols)
	if err != nil {
		t.Fatal(err)
	}
	got, err := StaticOffsets(hostLibssl, probeSymbols)
	if err != nil || len(got) != len(dyn) {
		t.Fatalf("StaticOffsets = %v, %v; want %v", got, err, dyn)
	}
	for s, off := range dyn {
		if got[s] != off {
			t.Errorf("%s: %#x, want %#x", s, got[s], off)
		}
	}
}

func TestNameOffsetsFindsSuffixMergedNames(t *testing.T) {
	strtab := "\x00main\x00my_SSL_read\x00SSL_write\x00SSL_read_ex\x00"
	got, err := nameOffsets(strings.NewReader(strtab), []string{"SSL_read", "SSL_write", "SSL_free"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint32]string{uint32(strings.Index(strtab, "SSL_read\x00")): "SSL_read", uint32(strings.Index(strtab, "SSL_write")): "SSL_write"}
	if len(got) != len(want) {
		t.Fatalf("nameOffsets = %v, want %v", got, want)
	}
	for off, name := range want {
		if got[off] != name {
			t.Errorf("offset %d: %q, want %q", off, got[off], name)
		}
	}
}
