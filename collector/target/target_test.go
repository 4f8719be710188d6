package target

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"dkebpf/collector/elfsym"
	"dkebpf/collector/internal/proctest"
)

const (
	hostBash   = "/bin/bash"
	hostLibssl = "/usr/lib/x86_64-linux-gnu/libssl.so.3"
)

var sslSymbols = []string{"SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex", "SSL_free"}

// The two kinds of target the plugins define (bash.Targets, httpflow.Libssl; tested there against the host).
var (
	bashSpec = Spec{Plugin: "bash", What: "readline", Symbols: []string{"readline"},
		Exe:     func(path, comm string) bool { return filepath.Base(path) == "bash" || comm == "bash" },
		InRoots: []string{"/bin/bash", "/usr/bin/bash"}, SameAcrossDevices: true}
	sslSpec = Spec{Plugin: "httpflow-tls", What: "libssl", Symbols: sslSymbols, Partial: true,
		Mapped: func(path string) bool { return strings.HasPrefix(filepath.Base(path), "libssl.so") },
		Known:  []string{"/lib/x86_64-linux-gnu/libssl.so.3", hostLibssl}}
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dst, string(b))
	if err := os.Chmod(dst, 0o755); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func idOf(t *testing.T, path string) fileID {
	t.Helper()
	id, ok := regularFile(path)
	if !ok {
		t.Fatalf("%s is not a regular file", path)
	}
	return id
}

func file(t *testing.T, path, real string, offsets map[string]uint64) File {
	id := idOf(t, real)
	return File{Path: path, Dev: id.dev, Ino: id.ino, Offsets: offsets}
}

// nmReadline returns the file offset of readline in the ELF file at path, computed independently of
// debug/elf: its value from nm -D, through the PT_LOAD segment readelf -lW lists for it.
func nmReadline(t *testing.T, path string) map[string]uint64 {
	t.Helper()
	run := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).Output()
		if err != nil {
			t.Fatalf("%s %v: %v", name, args, err)
		}
		return string(out)
	}
	hex := func(s string) uint64 {
		v, err := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 64)
		if err != nil {
			t.Fatalf("parse %q: %v", s, err)
		}
		return v
	}
	var vaddr uint64
	found := false
	for _, l := range strings.Split(run("nm", "-D", path), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[1] == "T" && f[2] == "readline" {
			vaddr, found = hex(f[0]), true
		}
	}
	if !found {
		t.Fatalf("%s defines no readline (nm -D)", path)
	}
	for _, l := range strings.Split(run("readelf", "-lW", path), "\n") {
		if f := strings.Fields(l); len(f) > 5 && f[0] == "LOAD" {
			off, va, filesz := hex(f[1]), hex(f[2]), hex(f[4])
			if vaddr >= va && vaddr < va+filesz {
				return map[string]uint64{"readline": vaddr - va + off}
			}
		}
	}
	t.Fatalf("readline at %#x is in no LOAD segment of %s", vaddr, path)
	return nil
}

func need(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("no %s: %v", path, err)
	}
}

// fakeProc is one /proc/<pid> directory: root, exe and map_files entries are symlinks, as in procfs.
type fakeProc struct {
	name, root, exe, comm string // root "": the process is gone
	maps                  []string
	mapFiles              map[string]string
}

func writeFakeProc(t *testing.T, procRoot string, p fakeProc) {
	t.Helper()
	dir := filepath.Join(procRoot, p.name)
	if err := os.MkdirAll(filepath.Join(dir, "map_files"), 0o755); err != nil {
		t.Fatal(err)
	}
	if p.root != "" {
		symlink(t, p.root, dir+"/root")
	}
	if p.exe != "" {
		symlink(t, p.exe, dir+"/exe")
	}
	if p.comm != "" {
		writeFile(t, dir+"/comm", p.comm+"\n")
	}
	for rng, target := range p.mapFiles {
		symlink(t, target, filepath.Join(dir, "map_files", rng))
	}
	if p.maps != nil {
		writeFile(t, dir+"/maps", strings.Join(p.maps, "\n")+"\n")
	}
}

// mapsLine formats a /proc/<pid>/maps line as the kernel does, path column padded.
func mapsLine(addrs, perms string, ino uint64, path string) string {
	return fmt.Sprintf("%s %s 0001f000 fe:00 %-26d %s", addrs, perms, ino, path)
}

func TestHostFindsEachFileOfOurRootOnce(t *testing.T) {
	need(t, hostBash)
	need(t, hostLibssl)
	off := nmReadline(t, hostBash)
	f := NewFinder("/proc", bashSpec)
	got, errs := f.Host()
	for _, err := range errs {
		t.Error(err)
	}
	var want []File
	seen := map[fileID]bool{}
	for _, p := range bashSpec.InRoots {
		if id, ok := regularFile(p); ok && !seen[id] {
			seen[id] = true
			want = append(want, file(t, p, p, off))
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Host = %+v, want %+v", got, want)
	}
	if got, errs := f.Host(); len(got) != 0 || len(errs) != 0 {
		t.Errorf("second Host = %+v, %v; want nothing", got, errs)
	}

	libs, errs := NewFinder("/proc", sslSpec).Host()
	for _, err := range errs {
		t.Error(err)
	}
	offs, _ := elfsym.Offsets(hostLibssl, sslSymbols)
	if n := len(findAll(libs, idOf(t, hostLibssl))); n != 1 || len(libs[0].Offsets) != len(sslSymbols) || !reflect.DeepEqual(libs[0].Offsets, offs) {
		t.Errorf("libssl Host = %+v: want the host's libssl once with its %d offsets", libs, len(sslSymbols))
	}
}

func TestScanFakeProcFindsEachBashOnceThroughAnOpenablePath(t *testing.T) {
	need(t, hostBash)
	off := nmReadline(t, hostBash)
	tmp, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	proc := tmp + "/proc"

	/* a container running bash, with a merged /usr; the exe path is as a chroot in our namespace shows it */
	copyFile(t, hostBash, tmp+"/container/usr/bin/bash")
	symlink(t, "usr/bin", tmp+"/container/bin")
	/* a container with a bash that has no readline of its own (here: dash), and one with a script */
	copyFile(t, "/bin/dash", tmp+"/alpine/bin/bash")
	writeFile(t, tmp+"/scripts/usr/bin/bash", "#!/bin/sh\nexec /bin/sh \"$@\"\n")
	/* a bash under another name, known by its comm */
	copyFile(t, hostBash, tmp+"/chroot/opt/bin/mybash")
	/* the exe path as the process's mount namespace shows it: <root>/<path> is the same file */
	real := tmp + "/hl/real/bash"
	copyFile(t, hostBash, real)
	if err := os.MkdirAll(filepath.Dir(tmp+"/hlroot"+real), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(real, tmp+"/hlroot"+real); err != nil {
		t.Fatal(err)
	}
	/* a container whose bash nobody runs yet */
	copyFile(t, hostBash, tmp+"/idle/bin/bash")
	copyFile(t, hostBash, tmp+"/selfroot/bin/bash")

	for _, p := range []fakeProc{
		{name: "1", root: "/", exe: "/usr/bin/bash", comm: "bash"},
		{name: "2", root: "/", exe: "/usr/bin/sleep", comm: "sleep"},
		{name: "10", root: tmp + "/container", exe: tmp + "/container/usr/bin/bash", comm: "bash"},
		{name: "11", root: tmp + "/container", exe: "/usr/bin/tail", comm: "tail"},
		{name: "20", root: tmp + "/alpine", exe: "/bin/busybox", comm: "sh"},
		{name: "21", root: tmp + "/scripts", exe: "/usr/bin/python3", comm: "python3"},
		{name: "30", root: tmp + "/chroot", exe: tmp + "/chroot/opt/bin/mybash", comm: "bash"},
		{name: "40", root: tmp + "/hlroot", exe: real, comm: "bash"},
		{name: "50", exe: hostBash, comm: "bash"}, // gone: no root
		{name: "60", root: tmp + "/idle", exe: "/usr/bin/sleep", comm: "sleep"},
		{name: "self", root: tmp + "/selfroot", exe: tmp + "/selfroot/bin/bash", comm: "bash"},
	} {
		writeFakeProc(t, proc, p)
	}

	want := []File{file(t, "/usr/bin/bash", "/usr/bin/bash", off)}
	if idOf(t, "/bin/bash") != idOf(t, "/usr/bin/bash") {
		want = append(want, file(t, "/bin/bash", "/bin/bash", off))
	}
	want = append(want,
		file(t, tmp+"/container/usr/bin/bash", tmp+"/container/usr/bin/bash", off),
		file(t, tmp+"/chroot/opt/bin/mybash", tmp+"/chroot/opt/bin/mybash", off),
		file(t, proc+"/40/root"+real, real, off),
		file(t, proc+"/60/root/bin/bash", tmp+"/idle/bin/bash", off),
	)

	f := NewFinder(proc, bashSpec)
	got, errs := f.Scan()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Scan:\n got %+v\nwant %+v", got, want)
	}
	if len(errs) != 2 || !errors.Is(errs[0], elfsym.ErrNoSymbol) || !strings.Contains(errs[0].Error(), proc+"/20/root/bin/bash") ||
		errors.Is(errs[1], elfsym.ErrNoSymbol) || !strings.Contains(errs[1].Error(), proc+"/21/root/usr/bin/bash") {
		t.Errorf("errors = %v, want readline missing from %s/20/root/bin/bash, then %s/21/root/usr/bin/bash not ELF", errs, proc, proc)
	}

	/* everything is known now: nothing new, no error repeated */
	if got, errs := f.Scan(); len(got) != 0 || len(errs) != 0 {
		t.Errorf("second Scan = %+v, %v; want nothing", got, errs)
	}
	if got, errs := f.Check(60); len(got) != 0 || len(errs) != 0 {
		t.Errorf("Check(60) after Scan = %+v, %v; want nothing", got, errs)
	}
	/* Check alone finds a process's bash; Forget makes a file new again */
	g := NewFinder(proc, bashSpec)
	if got, errs := g.Check(40); !reflect.DeepEqual(got, []File{want[len(want)-2]}) || len(errs) != 0 {
		t.Errorf("Check(40) = %+v, %v; want %+v", got, errs, want[len(want)-2])
	}
	if got, _ := g.Check(50); len(got) != 0 {
		t.Errorf("Check(50) of a gone process = %+v", got)
	}
	g.Forget(want[len(want)-2].Dev, want[len(want)-2].Ino)
	if got, _ := g.Check(40); len(got) != 1 {
		t.Errorf("Check(40) after Forget = %+v, want the file again", got)
	}
}

func TestScanFakeProcFindsEachLibsslOnceThroughAnOpenablePath(t *testing.T) {
	need(t, hostLibssl)
	tmp := t.TempDir()
	procRoot := filepath.Join(tmp, "proc")
	host := idOf(t, hostLibssl)
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
	writeFile(t, broken, "junk")

	const delRange, nestedRange = "7f0000001000-7f0000002000", "7f0000003000-7f0000004000"
	for _, p := range []fakeProc{
		{name: "100", root: "/", maps: []string{
			mapsLine("7f00000a0000-7f00000b0000", "r--p", host.ino, libPath),
			mapsLine("7f00000b0000-7f00000c0000", "r-xp", host.ino, libPath),
			mapsLine("7f00000c0000-7f00000d0000", "r-xp", 99, "/usr/lib/x86_64-linux-gnu/libc.so.6"),
			"7f00000d0000-7f00000e0000 rw-p 00000000 00:00 0 ",
			mapsLine("7ffc00000000-7ffc00002000", "r-xp", 0, "[vdso]"),
		}},
		{name: "101", root: "/", maps: []string{mapsLine("7f00000b0000-7f00000c0000", "r-xp", host.ino, libPath)}},
		{name: "200", root: container, maps: []string{
			mapsLine("7f00000b0000-7f00000c0000", "r-xp", idOf(t, container+libPath).ino, libPath),
		}},
		{name: "210", root: chroot, maps: []string{
			mapsLine("7f00000b0000-7f00000c0000", "r-xp", idOf(t, chroot+libPath).ino, chroot+libPath),
		}},
		{name: "220", root: filepath.Join(tmp, "old"), mapFiles: map[string]string{nestedRange: nested}, maps: []string{
			mapsLine(nestedRange, "r-xp", idOf(t, nested).ino, libPath),
		}},
		{name: "300", root: "/", mapFiles: map[string]string{delRange: oldLib}, maps: []string{
			mapsLine(delRange, "r-xp", idOf(t, oldLib).ino, newLib+" (deleted)"),
		}},
		{name: "400", root: container, maps: []string{mapsLine("7f00000a0000-7f00000b0000", "r--p", 7, "/lib/libssl.so.3")}},
		{name: "500", maps: []string{mapsLine("7f00000b0000-7f00000c0000", "r-xp", host.ino, libPath)}},
		{name: "600", root: "/", maps: []string{mapsLine("7f00000b0000-7f00000c0000", "r-xp", idOf(t, broken).ino, broken)}},
		{name: "700", root: "/"},
		{name: "self", root: "/", maps: []string{mapsLine("7f00000b0000-7f00000c0000", "r-xp", idOf(t, selfLib).ino, selfLib)}},
	} {
		writeFakeProc(t, procRoot, p)
	}

	offs, err := elfsym.Offsets(hostLibssl, sslSymbols)
	if err != nil {
		t.Fatal(err)
	}
	want := []File{
		file(t, libPath, hostLibssl, offs),
		file(t, filepath.Join(procRoot, "200", "root")+libPath, container+libPath, offs),
		file(t, chroot+libPath, chroot+libPath, offs),
		file(t, filepath.Join(procRoot, "220", "map_files", nestedRange), nested, offs),
		file(t, filepath.Join(procRoot, "300", "map_files", delRange), oldLib, offs),
	}
	got, errs := NewFinder(procRoot, sslSpec).Scan()
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
	files, errs := NewFinder(filepath.Join(t.TempDir(), "nope"), bashSpec).Scan()
	if len(files) != 0 || len(errs) != 1 {
		t.Fatalf("Scan = %v, %v; want one error", files, errs)
	}
}

func findAll(files []File, id fileID) []File {
	var found []File
	for _, f := range files {
		if f.Dev == id.dev && f.Ino == id.ino {
			found = append(found, f)
		}
	}
	return found
}

// startExe starts cmd (held on a pipe) and waits until its exe is want.
func startExe(t *testing.T, cmd *exec.Cmd, want string) int {
	t.Helper()
	return proctest.StartHeld(t, cmd, "exe "+want, func(pid int) bool {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		return err == nil && strings.TrimSuffix(l, " (deleted)") == want
	})
}

// startMapping starts cmd (held on a pipe) and waits until its maps show libssl.
func startMapping(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	return proctest.StartHeld(t, cmd, "mapping libssl", func(pid int) bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
		return err == nil && strings.Contains(string(b), "/libssl.so")
	})
}

func TestScanRealProcFindsARunningBashWhoseFileWasDeleted(t *testing.T) {
	need(t, hostBash)
	off := nmReadline(t, hostBash)
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	copyFile(t, hostBash, dir+"/bash")
	id := idOf(t, dir+"/bash")
	pid := startExe(t, exec.Command(dir+"/bash", "--norc", "--noprofile", "-c", "read x"), dir+"/bash")
	if err := os.Remove(dir + "/bash"); err != nil {
		t.Fatal(err)
	}
	files, _ := NewFinder("/proc", bashSpec).Scan()
	want := File{Path: fmt.Sprintf("/proc/%d/exe", pid), Dev: id.dev, Ino: id.ino, Offsets: off}
	if found := findAll(files, id); len(found) != 1 || !reflect.DeepEqual(found[0], want) {
		t.Errorf("Scan(/proc) found %+v for the deleted bash, want once %+v", found, want)
	}
}

func TestScanRealProcFindsLibsslOfARunningPython(t *testing.T) {
	need(t, hostLibssl)
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("no python3")
	}
	pid := startMapping(t, exec.Command(py, "-c", "import ssl, sys; sys.stdin.read()"))
	if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid)); !strings.Contains(string(b), hostLibssl) {
		t.Fatalf("python3 does not map %s", hostLibssl)
	}
	files, _ := NewFinder("/proc", sslSpec).Scan()
	want, _ := elfsym.Offsets(hostLibssl, sslSymbols)
	if found := findAll(files, idOf(t, hostLibssl)); len(found) != 1 || found[0].Path != hostLibssl || !reflect.DeepEqual(found[0].Offsets, want) {
		t.Errorf("Scan(/proc) found %+v for the host's libssl, want it once with offsets %v", found, want)
	}
}

// chrootWith copies exe and the libraries ldd lists for it into a fresh directory, and returns it.
func chrootWith(t *testing.T, exe string) string {
	t.Helper()
	if os.Geteuid() != 0 && os.Getenv("DKEBPF_SKIP_ROOT_TESTS") == "1" {
		t.Skip("chroot needs root (DKEBPF_SKIP_ROOT_TESTS=1)")
	}
	out, err := exec.Command("ldd", exe).Output()
	if err != nil {
		t.Fatalf("ldd %s: %v", exe, err)
	}
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		/* "libssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)" */
		for _, f := range strings.Fields(sc.Text()) {
			if strings.HasPrefix(f, "/") {
				copyFile(t, f, dir+f)
			}
		}
	}
	return dir
}

func TestScanRealProcFindsTheBashOfAChrootOnce(t *testing.T) {
	need(t, hostBash)
	off := nmReadline(t, hostBash)
	dir := chrootWith(t, hostBash)
	/* a merged-/usr root: /bin/bash and /usr/bin/bash are one file, different from the host's */
	copyFile(t, hostBash, dir+"/usr/bin/bash")
	symlink(t, "usr/bin", dir+"/bin")
	id := idOf(t, dir+"/usr/bin/bash")
	if id == idOf(t, hostBash) {
		t.Fatal("harness: the chroot's bash is the host's file")
	}
	cmd := exec.Command("/usr/bin/bash", "--norc", "--noprofile", "-c", "read x")
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: dir}
	startExe(t, cmd, dir+"/usr/bin/bash")

	f := NewFinder("/proc", bashSpec)
	files, _ := f.Scan()
	want := File{Path: dir + "/usr/bin/bash", Dev: id.dev, Ino: id.ino, Offsets: off}
	if found := findAll(files, id); len(found) != 1 || !reflect.DeepEqual(found[0], want) {
		t.Errorf("Scan(/proc) found %+v for the chroot's bash, want once %+v", found, want)
	}
	if found := findAll(files, idOf(t, hostBash)); len(found) != 1 || !reflect.DeepEqual(found[0].Offsets, off) {
		t.Errorf("Scan(/proc) found %+v for the host's bash, want it once", found)
	}
	if files, _ = f.Scan(); len(findAll(files, id)) != 0 {
		t.Errorf("second Scan found the chroot's bash again: %+v", files)
	}
}

func TestScanRealProcFindsLibsslInAChroot(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatal("no openssl")
	}
	dir := chrootWith(t, openssl)
	copyFile(t, openssl, dir+"/usr/bin/openssl")
	libs, _ := filepath.Glob(dir + "/*/x86_64-linux-gnu/libssl.so*")
	if len(libs) != 1 {
		t.Fatalf("%s links %d libssl files (%v), want one", openssl, len(libs), libs)
	}
	libssl := libs[0]
	cmd := exec.Command("/usr/bin/openssl", "enc", "-aes-128-cbc", "-pbkdf2", "-pass", "pass:x")
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: dir}
	startMapping(t, cmd)

	files, _ := NewFinder("/proc", sslSpec).Scan()
	id := idOf(t, libssl)
	if found := findAll(files, id); len(found) != 1 || found[0].Path != libssl || len(found[0].Offsets) != len(sslSymbols) {
		t.Errorf("Scan(/proc) found %+v for the chroot's %s (inode %d), want it once with %d offsets", found, libssl, id.ino, len(sslSymbols))
	}
}

// Containers of one image see one bash file through overlay mounts with different devices: probing it
// once per mount would report every line once per container.
func TestOverlayMountsOfOneLowerFileAreOneTarget(t *testing.T) {
	if os.Geteuid() != 0 && os.Getenv("DKEBPF_SKIP_ROOT_TESTS") == "1" {
		t.Skip("mounting needs root (DKEBPF_SKIP_ROOT_TESTS=1)")
	}
	dir := t.TempDir()
	for _, d := range []string{"lower/bin", "u1", "w1", "m1", "u2", "w2", "m2"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(t, hostBash, filepath.Join(dir, "lower/bin/bash"))
	for _, m := range []string{"1", "2"} {
		opts := fmt.Sprintf("lowerdir=%s/lower,upperdir=%s/u%s,workdir=%s/w%s", dir, dir, m, dir, m)
		if err := unix.Mount("overlay", filepath.Join(dir, "m"+m), "overlay", 0, opts); err != nil {
			t.Fatalf("mount overlay: %v", err)
		}
		t.Cleanup(func() { unix.Unmount(filepath.Join(dir, "m"+m), 0) })
	}
	one, two := idOf(t, filepath.Join(dir, "m1/bin/bash")), idOf(t, filepath.Join(dir, "m2/bin/bash"))
	if one.dev == two.dev {
		t.Fatalf("the two overlay mounts share device %d: the test shows nothing", one.dev)
	}
	for _, tc := range []struct {
		spec Spec
		want int
	}{{bashSpec, 1}, {Spec{Plugin: "x", Symbols: []string{"readline"}}, 2}} {
		f := NewFinder("/proc", tc.spec)
		var r run
		f.addPath(&r, filepath.Join(dir, "m1/bin/bash"))
		f.addPath(&r, filepath.Join(dir, "m2/bin/bash"))
		if len(r.files) != tc.want || len(r.errs) != 0 {
			t.Errorf("SameAcrossDevices %v: files = %+v, errors = %v; want %d", tc.spec.SameAcrossDevices, r.files, r.errs, tc.want)
		}
	}
}

func TestParseMapsLine(t *testing.T) {
	tests := []struct {
		line string
		want Mapping
		ok   bool
	}{
		{"7f00-7f10 r-xp 0001f000 fe:00 326786                     /usr/lib/libssl.so.3",
			Mapping{"7f00-7f10", "r-xp", "/usr/lib/libssl.so.3", 326786}, true},
		{"7f00-7f10 r-xp 0001f000 fe:00 12 /opt/my app/libssl.so.3 (deleted)",
			Mapping{"7f00-7f10", "r-xp", "/opt/my app/libssl.so.3 (deleted)", 12}, true},
		{"7f00-7f10 rw-p 00000000 00:00 0 ", Mapping{}, false},
		{"7f00-7f10 rw-p 00000000 00:00 0", Mapping{}, false},
		{"", Mapping{}, false},
	}
	for _, tt := range tests {
		got, ok := ParseMapsLine(tt.line)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseMapsLine(%q) = %+v, %v; want %+v, %v", tt.line, got, ok, tt.want, tt.ok)
		}
	}
}

// linkedSSLSpec is sslSpec with httpflow.Libssl's executables: OpenSSL linked in.
var linkedSSLSpec = func() Spec {
	s := sslSpec
	s.Exe, s.Linked = func(string, string) bool { return true }, true
	return s
}()

func TestScanRealProcFindsOpenSSLLinkedIntoARunningExecutable(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	src, bin := dir+"/main.c", dir+"/static-ssl"
	writeFile(t, src, "#include <openssl/ssl.h>\n#include <unistd.h>\nint main(void) { char b = 0; SSL *s = SSL_new(SSL_CTX_new(TLS_method()));\n"+
		"if (read(0, &b, 1) == 1 && b == 'x') { SSL_read(s, &b, 1); SSL_write(s, &b, 1); SSL_read_ex(s, &b, 1, 0); SSL_write_ex(s, &b, 1, 0); }\n"+
		"SSL_free(s); return 0; }\n")
	if out, err := exec.Command("cc", "-O2", "-o", bin, src, "-Wl,-Bstatic", "-lssl", "-lcrypto", "-Wl,-Bdynamic", "-lpthread", "-ldl").CombinedOutput(); err != nil {
		t.Fatalf("cc: %v\n%s", err, out)
	}
	want, err := elfsym.StaticOffsets(bin, sslSymbols)
	if err != nil {
		t.Fatal(err)
	}
	pid := startExe(t, exec.Command(bin), bin)
	f := NewFinder("/proc", linkedSSLSpec)
	files, errs := f.Scan()
	id := idOf(t, bin)
	if found := findAll(files, id); len(found) != 1 || !reflect.DeepEqual(found[0].Offsets, want) {
		t.Errorf("Scan(/proc) found %+v for process %d with OpenSSL linked in, want it once with offsets %v", found, pid, want)
	}
	for _, err := range errs {
		t.Errorf("an executable without OpenSSL was reported: %v", err)
	}
	if files, _ := f.Scan(); len(findAll(files, id)) != 0 {
		t.Error("a second Scan handed the executable out again")
	}
	if files, _ := NewFinder("/proc", sslSpec).Scan(); len(findAll(files, id)) != 0 {
		t.Error("without Linked, an executable with OpenSSL linked in is a target")
	}
}

var goSpec = Spec{Plugin: "httpflow-tls", What: "Go crypto/tls", Exe: func(string, string) bool { return true }, Go: true,
	Symbols: []string{"crypto/tls.(*Conn).Write", "crypto/tls.(*Conn).Read", "crypto/tls.(*Conn).Close"}}

// A stripped Go program with crypto/tls is found by a scan of every process, with its functions' entries and
// returns; no other executable on the host (bash, the C runtime's, Go programs without crypto/tls) is reported.
func TestScanRealProcFindsGoCryptoTLSInARunningStrippedProgram(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir+"/go.mod", "module gotls\n\ngo 1.22\n")
	writeFile(t, dir+"/main.go", "package main\n\nimport (\n\t\"crypto/tls\"\n\t\"os\"\n)\n\n"+
		"func main() {\n\tb := make([]byte, 1)\n\tos.Stdin.Read(b)\n\tif b[0] == 'x' {\n\t\tc := tls.Client(nil, nil)\n\t\tc.Write(b)\n\t\tc.Read(b)\n\t\tc.Close()\n\t}\n}\n")
	bin := dir + "/gotls"
	build := exec.Command("go", "build", "-ldflags=-s -w", "-o", bin, ".")
	build.Dir = dir
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	want, err := elfsym.GoFunctions(bin, goSpec.Symbols)
	if err != nil {
		t.Fatal(err)
	}
	pid := startExe(t, exec.Command(bin), bin)
	f := NewFinder("/proc", goSpec)
	files, errs := f.Scan()
	id := idOf(t, bin)
	if found := findAll(files, id); len(found) != 1 || !reflect.DeepEqual(found[0].Funcs, want) {
		t.Errorf("Scan(/proc) found %+v for Go process %d, want it once with %v", found, pid, want)
	}
	for _, err := range errs {
		t.Errorf("an executable without Go's crypto/tls was reported: %v", err)
	}
	if files, _ := f.Scan(); len(findAll(files, id)) != 0 {
		t.Error("a second Scan handed the executable out again")
	}
}
