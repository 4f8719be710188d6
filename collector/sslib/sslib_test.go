package sslib

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"dkebpf/collector/elfsym"
	"dkebpf/collector/internal/proctest"
)

const hostLibssl = "/usr/lib/x86_64-linux-gnu/libssl.so.3"

var probeSymbols = []string{"SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex", "SSL_free"}

func needHostLibssl(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(hostLibssl); err != nil {
		t.Fatalf("no host libssl: %v", err)
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

func statID(t *testing.T, path string) fileID {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fileID{st.Dev, st.Ino}
}

// mapsLine formats a /proc/<pid>/maps line as the kernel does, path column padded.
func mapsLine(addrs, perms string, ino uint64, path string) string {
	return fmt.Sprintf("%s %s 0001f000 fe:00 %-26d %s", addrs, perms, ino, path)
}

// fakeProc is one /proc/<pid> directory: root and map_files entries are symlinks, as in procfs.
type fakeProc struct {
	name     string
	root     string // symlink target of root; "" for none (the process is gone)
	maps     []string
	mapFiles map[string]string
}

func writeFakeProc(t *testing.T, procRoot string, p fakeProc) {
	t.Helper()
	dir := filepath.Join(procRoot, p.name)
	if err := os.MkdirAll(filepath.Join(dir, "map_files"), 0o755); err != nil {
		t.Fatal(err)
	}
	if p.root != "" {
		if err := os.Symlink(p.root, filepath.Join(dir, "root")); err != nil {
			t.Fatal(err)
		}
	}
	for rng, target := range p.mapFiles {
		if err := os.Symlink(target, filepath.Join(dir, "map_files", rng)); err != nil {
			t.Fatal(err)
		}
	}
	if p.maps != nil {
		if err := os.WriteFile(filepath.Join(dir, "maps"), []byte(strings.Join(p.maps, "\n")+"\n"), 0o444); err != nil {
			t.Fatal(err)
		}
	}
}

func TestScanFakeProcFindsEachLibsslOnceThroughAnOpenablePath(t *testing.T) {
	needHostLibssl(t)
	tmp := t.TempDir()
	procRoot := filepath.Join(tmp, "proc")
	host := statID(t, hostLibssl)
	const libPath = "/usr/lib/x86_64-linux-gnu/libssl.so.3"

	/* a container: maps shows the path inside its mount namespace */
	container := filepath.Join(tmp, "container")
	copyFile(t, hostLibssl, container+libPath)
	/* a chroot in our mount namespace: maps shows the path from our root */
	chroot := filepath.Join(tmp, "chroot")
	copyFile(t, hostLibssl, chroot+libPath)
	/* a chroot inside a container: no candidate path is the mapped file, only map_files reaches it */
	nested := filepath.Join(tmp, "nested", "libssl.so.3")
	copyFile(t, hostLibssl, nested)
	/* upgraded under a running process: the old file is deleted, a new one has its name */
	oldLib, newLib := filepath.Join(tmp, "old", "libssl.so.3"), filepath.Join(tmp, "new", "libssl.so.3")
	copyFile(t, hostLibssl, oldLib)
	copyFile(t, hostLibssl, newLib)
	/* not an ELF file, and a copy only a non-numeric entry maps */
	broken, selfLib := filepath.Join(tmp, "broken", "libssl.so.1.1"), filepath.Join(tmp, "self", "libssl.so.3")
	copyFile(t, hostLibssl, selfLib)
	if err := os.MkdirAll(filepath.Dir(broken), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(broken, []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}

	const delRange, nestedRange = "7f0000001000-7f0000002000", "7f0000003000-7f0000004000"
	procs := []fakeProc{
		{name: "100", root: "/", maps: []string{
			mapsLine("7f00000a0000-7f00000b0000", "r--p", host.ino, libPath),
			mapsLine("7f00000b0000-7f00000c0000", "r-xp", host.ino, libPath),
			mapsLine("7f00000c0000-7f00000d0000", "r-xp", 99, "/usr/lib/x86_64-linux-gnu/libc.so.6"),
			"7f00000d0000-7f00000e0000 rw-p 00000000 00:00 0 ",
			mapsLine("7ffc00000000-7ffc00002000", "r-xp", 0, "[vdso]"),
		}},
		{name: "101", root: "/", maps: []string{mapsLine("7f00000b0000-7f00000c0000", "r-xp", host.ino, libPath)}},
		{name: "200", root: container, maps: []string{
			mapsLine("7f00000b0000-7f00000c0000", "r-xp", statID(t, container+libPath).ino, libPath),
		}},
		{name: "210", root: chroot, maps: []string{
			mapsLine("7f00000b0000-7f00000c0000", "r-xp", statID(t, chroot+libPath).ino, chroot+libPath),
		}},
		{name: "220", root: filepath.Join(tmp, "old"), mapFiles: map[string]string{nestedRange: nested}, maps: []string{
			mapsLine(nestedRange, "r-xp", statID(t, nested).ino, libPath),
		}},
		{name: "300", root: "/", mapFiles: map[string]string{delRange: oldLib}, maps: []string{
			mapsLine(delRange, "r-xp", statID(t, oldLib).ino, newLib+" (deleted)"),
		}},
		{name: "400", root: container, maps: []string{mapsLine("7f00000a0000-7f00000b0000", "r--p", 7, "/lib/libssl.so.3")}},
		{name: "500", maps: []string{mapsLine("7f00000b0000-7f00000c0000", "r-xp", host.ino, libPath)}},
		{name: "600", root: "/", maps: []string{mapsLine("7f00000b0000-7f00000c0000", "r-xp", statID(t, broken).ino, broken)}},
		{name: "700", root: "/"},
		{name: "self", root: "/", maps: []string{mapsLine("7f00000b0000-7f00000c0000", "r-xp", statID(t, selfLib).ino, selfLib)}},
	}
	for _, p := range procs {
		writeFakeProc(t, procRoot, p)
	}

	offs, err := elfsym.Offsets(hostLibssl, probeSymbols)
	if err != nil {
		t.Fatal(err)
	}
	lib := func(path, file string) Lib {
		id := statID(t, file)
		return Lib{Path: path, Dev: id.dev, Ino: id.ino, Offsets: offs}
	}
	want := []Lib{
		lib(libPath, hostLibssl),
		lib(filepath.Join(procRoot, "200", "root")+libPath, container+libPath),
		lib(chroot+libPath, chroot+libPath),
		lib(filepath.Join(procRoot, "220", "map_files", nestedRange), nested),
		lib(filepath.Join(procRoot, "300", "map_files", delRange), oldLib),
	}

	got, errs := Scan(procRoot, probeSymbols)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Scan:\n got %+v\nwant %+v", got, want)
	}
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), broken) {
		t.Errorf("errors = %v, want one naming %s", errs, broken)
	}
	if got[1].Ino == host.ino {
		t.Errorf("container copy has the host's inode %d", host.ino)
	}
}

func TestScanMissingProcRootIsAnError(t *testing.T) {
	libs, errs := Scan(filepath.Join(t.TempDir(), "nope"), probeSymbols)
	if len(libs) != 0 || len(errs) != 1 {
		t.Fatalf("Scan = %v, %v; want one error", libs, errs)
	}
}

// startHolding starts cmd held on a stdin pipe, and waits until its maps show libssl.
func startHolding(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	return proctest.StartHeld(t, cmd, "mapping libssl", func(pid int) bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
		return err == nil && strings.Contains(string(b), "/libssl.so")
	})
}

func findLib(libs []Lib, id fileID) (Lib, bool) {
	for _, l := range libs {
		if l.id() == id {
			return l, true
		}
	}
	return Lib{}, false
}

func TestScanRealProcFindsLibsslOfARunningPython(t *testing.T) {
	needHostLibssl(t)
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("no python3")
	}
	pid := startHolding(t, exec.Command(py, "-c", "import ssl, sys; sys.stdin.read()"))
	if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid)); !strings.Contains(string(b), hostLibssl) {
		t.Fatalf("python3 does not map %s", hostLibssl)
	}

	libs, errs := Scan("/proc", probeSymbols)
	for _, err := range errs {
		t.Log(err)
	}
	l, ok := findLib(libs, statID(t, hostLibssl))
	if !ok {
		t.Fatalf("Scan(/proc) = %+v, missing %s", libs, hostLibssl)
	}
	want, _ := elfsym.Offsets(hostLibssl, probeSymbols)
	if l.Path != hostLibssl || !reflect.DeepEqual(l.Offsets, want) {
		t.Errorf("got %+v, want path %s offsets %v", l, hostLibssl, want)
	}
}

func TestScanRealProcFindsLibsslInAChroot(t *testing.T) {
	if os.Geteuid() != 0 && os.Getenv("DKEBPF_SKIP_ROOT_TESTS") == "1" {
		t.Skip("chroot needs root (DKEBPF_SKIP_ROOT_TESTS=1)")
	}
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatal("no openssl")
	}
	out, err := exec.Command("ldd", openssl).Output()
	if err != nil {
		t.Fatalf("ldd %s: %v", openssl, err)
	}
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	copyFile(t, openssl, dir+"/usr/bin/openssl")
	var libssl string
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		/* "libssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)" */
		for _, f := range strings.Fields(sc.Text()) {
			if strings.HasPrefix(f, "/") {
				copyFile(t, f, dir+f)
				if strings.HasPrefix(filepath.Base(f), "libssl.so") {
					libssl = dir + f
				}
			}
		}
	}
	if libssl == "" {
		t.Fatalf("%s does not link libssl", openssl)
	}
	cmd := exec.Command("/usr/bin/openssl", "enc", "-aes-128-cbc", "-pbkdf2", "-pass", "pass:x")
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: dir}
	startHolding(t, cmd)

	libs, errs := Scan("/proc", probeSymbols)
	for _, err := range errs {
		t.Log(err)
	}
	id := statID(t, libssl)
	l, ok := findLib(libs, id)
	if !ok {
		t.Fatalf("Scan(/proc) = %+v, missing the chroot's %s (inode %d)", libs, libssl, id.ino)
	}
	if l.Path != libssl || len(l.Offsets) != len(probeSymbols) {
		t.Errorf("got %+v, want path %s and %d offsets", l, libssl, len(probeSymbols))
	}
}

func TestKnownFindsHostLibsslOnce(t *testing.T) {
	needHostLibssl(t)
	libs, errs := Known(probeSymbols)
	for _, err := range errs {
		t.Error(err)
	}
	id, n := statID(t, hostLibssl), 0
	for _, l := range libs {
		if l.id() == id {
			n++
			if len(l.Offsets) != len(probeSymbols) {
				t.Errorf("%s: offsets %v", l.Path, l.Offsets)
			}
		}
	}
	if n != 1 {
		t.Errorf("Known = %+v: host libssl found %d times, want once", libs, n)
	}
}

func TestTrackerReturnsEachLibraryOnce(t *testing.T) {
	a := Lib{Path: "/a/libssl.so.3", Dev: 1, Ino: 10}
	aElsewhere := Lib{Path: "/proc/9/root/a/libssl.so.3", Dev: 1, Ino: 10}
	b := Lib{Path: "/b/libssl.so.3", Dev: 1, Ino: 11}
	c := Lib{Path: "/c/libssl.so.3", Dev: 2, Ino: 10}
	var tr Tracker
	steps := []struct {
		in, want []Lib
	}{
		{[]Lib{a}, []Lib{a}},
		{[]Lib{a, aElsewhere}, nil},
		{[]Lib{b, a, c, b}, []Lib{b, c}},
		{nil, nil},
	}
	for i, s := range steps {
		if got := tr.New(s.in); !reflect.DeepEqual(got, s.want) {
			t.Errorf("step %d: New = %v, want %v", i, got, s.want)
		}
	}
}

func TestParseMapsLine(t *testing.T) {
	tests := []struct {
		line string
		want mapping
		ok   bool
	}{
		{"7f00-7f10 r-xp 0001f000 fe:00 326786                     /usr/lib/libssl.so.3",
			mapping{"7f00-7f10", "r-xp", "/usr/lib/libssl.so.3", 326786}, true},
		{"7f00-7f10 r-xp 0001f000 fe:00 12 /opt/my app/libssl.so.3 (deleted)",
			mapping{"7f00-7f10", "r-xp", "/opt/my app/libssl.so.3 (deleted)", 12}, true},
		{"7f00-7f10 rw-p 00000000 00:00 0 ", mapping{}, false},
		{"7f00-7f10 rw-p 00000000 00:00 0", mapping{}, false},
		{"", mapping{}, false},
	}
	for _, tt := range tests {
		got, ok := parseMapsLine(tt.line)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseMapsLine(%q) = %+v, %v; want %+v, %v", tt.line, got, ok, tt.want, tt.ok)
		}
	}
}
