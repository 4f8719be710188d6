package bash

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

const hostBash = "/bin/bash"

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

func idOf(t *testing.T, path string) fileID {
	t.Helper()
	id, ok := regularFile(path)
	if !ok {
		t.Fatalf("%s is not a regular file", path)
	}
	return id
}

// nmReadline returns the file offset of readline in the ELF file at path, computed independently of
// debug/elf: its value from nm -D, through the PT_LOAD segment readelf -lW lists for it.
func nmReadline(t *testing.T, path string) uint64 {
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
				return vaddr - va + off
			}
		}
	}
	t.Fatalf("readline at %#x is in no LOAD segment of %s", vaddr, path)
	return 0
}

func needHostBash(t *testing.T) uint64 {
	t.Helper()
	if _, err := os.Stat(hostBash); err != nil {
		t.Fatalf("no %s: %v", hostBash, err)
	}
	return nmReadline(t, hostBash)
}

func TestHostFindsEachHostBashFileOnce(t *testing.T) {
	off := needHostBash(t)
	f := NewFinder("/proc")
	bins, errs := f.Host()
	for _, err := range errs {
		t.Error(err)
	}
	var want []Binary
	seen := map[fileID]bool{}
	for _, p := range hostPaths {
		if id, ok := regularFile(p); ok && !seen[id] {
			seen[id] = true
			want = append(want, Binary{Path: p, Dev: id.dev, Ino: id.ino, Offset: off})
		}
	}
	if !reflect.DeepEqual(bins, want) {
		t.Errorf("Host = %+v, want %+v", bins, want)
	}
	if bins, errs := f.Host(); len(bins) != 0 || len(errs) != 0 {
		t.Errorf("second Host = %+v, %v; want nothing", bins, errs)
	}
}

func TestScanFakeProcFindsEachBashOnceThroughAnOpenablePath(t *testing.T) {
	off := needHostBash(t)
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

	procs := []struct{ pid, root, exe, comm string }{
		{"1", "/", "/usr/bin/bash", "bash"},
		{"2", "/", "/usr/bin/sleep", "sleep"},
		{"10", tmp + "/container", tmp + "/container/usr/bin/bash", "bash"},
		{"11", tmp + "/container", "/usr/bin/tail", "tail"},
		{"20", tmp + "/alpine", "/bin/busybox", "sh"},
		{"21", tmp + "/scripts", "/usr/bin/python3", "python3"},
		{"30", tmp + "/chroot", tmp + "/chroot/opt/bin/mybash", "bash"},
		{"40", tmp + "/hlroot", real, "bash"},
		{"50", "", hostBash, "bash"}, // gone: no root
		{"60", tmp + "/idle", "/usr/bin/sleep", "sleep"},
		{"self", tmp + "/selfroot", tmp + "/selfroot/bin/bash", "bash"},
	}
	for _, p := range procs {
		dir := filepath.Join(proc, p.pid)
		if p.root != "" {
			symlink(t, p.root, dir+"/root")
		}
		symlink(t, p.exe, dir+"/exe")
		writeFile(t, dir+"/comm", p.comm+"\n")
	}

	bin := func(path, file string) Binary {
		id := idOf(t, file)
		return Binary{Path: path, Dev: id.dev, Ino: id.ino, Offset: off}
	}
	want := []Binary{bin("/usr/bin/bash", "/usr/bin/bash")}
	if idOf(t, "/bin/bash") != idOf(t, "/usr/bin/bash") {
		want = append(want, bin("/bin/bash", "/bin/bash"))
	}
	want = append(want,
		bin(tmp+"/container/usr/bin/bash", tmp+"/container/usr/bin/bash"),
		bin(tmp+"/chroot/opt/bin/mybash", tmp+"/chroot/opt/bin/mybash"),
		bin(proc+"/40/root"+real, real),
		bin(proc+"/60/root/bin/bash", tmp+"/idle/bin/bash"),
	)

	f := NewFinder(proc)
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
	/* Check alone finds a process's bash; Forget makes a binary new again */
	g := NewFinder(proc)
	if got, errs := g.Check(40); !reflect.DeepEqual(got, []Binary{want[len(want)-2]}) || len(errs) != 0 {
		t.Errorf("Check(40) = %+v, %v; want %+v", got, errs, want[len(want)-2])
	}
	if got, _ := g.Check(50); len(got) != 0 {
		t.Errorf("Check(50) of a gone process = %+v", got)
	}
	g.Forget(want[len(want)-2].Dev, want[len(want)-2].Ino)
	if got, _ := g.Check(40); len(got) != 1 {
		t.Errorf("Check(40) after Forget = %+v, want the binary again", got)
	}
}

func TestScanMissingProcRootIsAnError(t *testing.T) {
	bins, errs := NewFinder(filepath.Join(t.TempDir(), "nope")).Scan()
	if len(bins) != 0 || len(errs) != 1 {
		t.Fatalf("Scan = %v, %v; want one error", bins, errs)
	}
}

// startBash starts cmd (a bash reading a line from a pipe) and waits until its exe is want.
func startBash(t *testing.T, cmd *exec.Cmd, want string) int {
	t.Helper()
	return proctest.StartHeld(t, cmd, "exe "+want, func(pid int) bool {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		return err == nil && strings.TrimSuffix(l, " (deleted)") == want
	})
}

func findAll(bins []Binary, id fileID) []Binary {
	var found []Binary
	for _, b := range bins {
		if b.Dev == id.dev && b.Ino == id.ino {
			found = append(found, b)
		}
	}
	return found
}

func TestScanRealProcFindsARunningBashWhoseFileWasDeleted(t *testing.T) {
	off := needHostBash(t)
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	copyFile(t, hostBash, dir+"/bash")
	id := idOf(t, dir+"/bash")
	pid := startBash(t, exec.Command(dir+"/bash", "--norc", "--noprofile", "-c", "read x"), dir+"/bash")
	if err := os.Remove(dir + "/bash"); err != nil {
		t.Fatal(err)
	}

	bins, _ := NewFinder("/proc").Scan()
	found := findAll(bins, id)
	want := Binary{Path: fmt.Sprintf("/proc/%d/exe", pid), Dev: id.dev, Ino: id.ino, Offset: off}
	if len(found) != 1 || found[0] != want {
		t.Errorf("Scan(/proc) found %+v for the deleted bash, want once %+v", found, want)
	}
}

func TestScanRealProcFindsTheBashOfAChrootOnce(t *testing.T) {
	if os.Geteuid() != 0 && os.Getenv("DKEBPF_SKIP_ROOT_TESTS") == "1" {
		t.Skip("chroot needs root (DKEBPF_SKIP_ROOT_TESTS=1)")
	}
	off := needHostBash(t)
	out, err := exec.Command("ldd", hostBash).Output()
	if err != nil {
		t.Fatalf("ldd %s: %v", hostBash, err)
	}
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	/* a merged-/usr root: /bin/bash and /usr/bin/bash are one file, different from the host's */
	copyFile(t, hostBash, dir+"/usr/bin/bash")
	symlink(t, "usr/bin", dir+"/bin")
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		/* "libtinfo.so.6 => /lib/x86_64-linux-gnu/libtinfo.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)" */
		for _, f := range strings.Fields(sc.Text()) {
			if strings.HasPrefix(f, "/") {
				copyFile(t, f, dir+f)
			}
		}
	}
	id := idOf(t, dir+"/usr/bin/bash")
	if id == idOf(t, hostBash) {
		t.Fatal("harness: the chroot's bash is the host's file")
	}
	cmd := exec.Command("/usr/bin/bash", "--norc", "--noprofile", "-c", "read x")
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: dir}
	startBash(t, cmd, dir+"/usr/bin/bash")

	f := NewFinder("/proc")
	bins, _ := f.Scan()
	want := Binary{Path: dir + "/usr/bin/bash", Dev: id.dev, Ino: id.ino, Offset: off}
	if found := findAll(bins, id); len(found) != 1 || found[0] != want {
		t.Errorf("Scan(/proc) found %+v for the chroot's bash, want once %+v", found, want)
	}
	if found := findAll(bins, idOf(t, hostBash)); len(found) != 1 || found[0].Offset != off {
		t.Errorf("Scan(/proc) found %+v for the host's bash, want it once", found)
	}
	bins, _ = f.Scan()
	if found := findAll(bins, id); len(found) != 0 {
		t.Errorf("second Scan found the chroot's bash again: %+v", found)
	}
}

// Containers of one image see one bash file through overlay mounts with different devices: probing it
// once per mount would report every line once per container.
func TestOverlayMountsOfOneLowerFileAreOneBinary(t *testing.T) {
	if os.Geteuid() != 0 && os.Getenv("DKEBPF_SKIP_ROOT_TESTS") == "1" {
		t.Skip("mounting needs root (DKEBPF_SKIP_ROOT_TESTS=1)")
	}
	dir := t.TempDir()
	for _, d := range []string{"lower/bin", "u1", "w1", "m1", "u2", "w2", "m2"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(t, "/bin/bash", filepath.Join(dir, "lower/bin/bash"))
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
	f := NewFinder("/proc")
	var r run
	f.addPath(&r, filepath.Join(dir, "m1/bin/bash"))
	f.addPath(&r, filepath.Join(dir, "m2/bin/bash"))
	if len(r.bins) != 1 || len(r.errs) != 0 {
		t.Errorf("binaries = %+v, errors = %v; want the file once", r.bins, r.errs)
	}
}
