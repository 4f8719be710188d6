package bash

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParsePasswdTakesTheFirstLoginNameOfEachUid(t *testing.T) {
	in := strings.Join([]string{
		"root:x:0:0:root:/root:/bin/bash",
		"# comment:x:5:5::/:/bin/sh",
		"",
		"toor:x:0:0:second root:/root:/bin/sh",
		"alice:x:1000:1000:Alice Liddell,,,:/home/alice:/bin/bash",
		"+nisuser:x:7:7:::",
		"-:x:8:8:::",
		"bad:x:notanumber:1:::",
		"short:x",
		":x:9:9:::",
		"bob:*:4294967295:1:::", // the largest uid
		"big:x:4294967296:1:::", // too large for a uid
	}, "\n")
	got, err := parsePasswd(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint32]string{0: "root", 1000: "alice", 4294967295: "bob"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parsePasswd = %v, want %v", got, want)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
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

func TestUserNameComesFromTheProcessRootThenTheHost(t *testing.T) {
	tmp := t.TempDir()
	proc := filepath.Join(tmp, "proc")
	host := filepath.Join(tmp, "host")
	writeFile(t, host+"/etc/passwd", "root:x:0:0:Super User:/root:/bin/bash\ndebian:x:1000:1000:Debian User:/home/debian:/bin/bash\n")
	/* a container with its own users */
	writeFile(t, tmp+"/c1/etc/passwd", "app:x:1000:1000:The App:/app:/bin/sh\n")
	/* a container whose /etc/passwd is an absolute link: it resolves inside the container's root */
	writeFile(t, tmp+"/c2/etc/passwd.real", "inside:x:1000:1000::/:/bin/sh\n")
	symlink(t, "/etc/passwd.real", tmp+"/c2/etc/passwd")
	/* a container without a passwd file */
	if err := os.MkdirAll(tmp+"/c3/etc", 0o755); err != nil {
		t.Fatal(err)
	}
	symlink(t, host, proc+"/1/root")
	symlink(t, tmp+"/c1", proc+"/100/root")
	symlink(t, tmp+"/c1", proc+"/101/root")
	symlink(t, tmp+"/c2", proc+"/200/root")
	symlink(t, tmp+"/c3", proc+"/300/root")

	u := NewUsers(proc, host+"/etc/passwd")
	tests := []struct {
		pid, uid uint32
		want     string
	}{
		{1, 0, "root"},        // login name, not the GECOS "Super User"
		{1, 1000, "debian"},   // a host process
		{100, 1000, "app"},    // the container's user, not the host's of the same uid
		{101, 1000, "app"},    // same container, same (cached) file
		{100, 0, "root"},      // not in the container's passwd: the host's
		{200, 1000, "inside"}, // link resolved in the container's root
		{300, 1000, "debian"}, // no passwd in the container
		{999, 1000, "debian"}, // process gone, never seen
		{100, 4242, "4242"},   // nowhere
	}
	for _, tt := range tests {
		if got := u.Name(tt.pid, tt.uid); got != tt.want {
			t.Errorf("Name(pid %d, uid %d) = %q, want %q", tt.pid, tt.uid, got, tt.want)
		}
	}
	if u.reads != 3 {
		t.Errorf("parsed %d passwd files, want 3 (host, c1, c2)", u.reads)
	}

	/* the container's bash exits: its last line still gets the container's name */
	if err := os.Remove(proc + "/100/root"); err != nil {
		t.Fatal(err)
	}
	if got := u.Name(100, 1000); got != "app" {
		t.Errorf("Name after the process exited = %q, want app", got)
	}
}

func TestUserNamesAreCachedUntilThePasswdFileChanges(t *testing.T) {
	tmp := t.TempDir()
	passwd := tmp + "/root/etc/passwd"
	writeFile(t, passwd, "alice:x:1000:1000::/:/bin/sh\n")
	symlink(t, tmp+"/root", tmp+"/proc/7/root")
	u := NewUsers(tmp+"/proc", passwd)

	for range 5 {
		if got := u.Name(7, 1000); got != "alice" {
			t.Fatalf("Name = %q, want alice", got)
		}
	}
	if u.reads != 1 {
		t.Errorf("5 lookups parsed the file %d times, want 1", u.reads)
	}

	/* useradd-style replacement (a new inode) and an in-place edit are both seen */
	writeFile(t, passwd+".new", "alice:x:1000:1000::/:/bin/sh\ncarol:x:1001:1001::/:/bin/sh\n")
	if err := os.Rename(passwd+".new", passwd); err != nil {
		t.Fatal(err)
	}
	if got := u.Name(7, 1001); got != "carol" {
		t.Errorf("after replacing the file: Name = %q, want carol", got)
	}
	f, err := os.OpenFile(passwd, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("dave:x:1002:1002::/:/bin/sh\n")
	f.Close()
	if got := u.Name(7, 1002); got != "dave" {
		t.Errorf("after appending: Name = %q, want dave", got)
	}
}

func TestOpenInRootRefusesToLeaveTheRoot(t *testing.T) {
	tmp := t.TempDir()
	writeFile(t, tmp+"/outside", "secret")
	writeFile(t, tmp+"/root/etc/inside", "ok")
	symlink(t, "../../outside", tmp+"/root/etc/dotdot")
	f, err := openInRoot(tmp+"/root", "etc/inside")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	/* ".." at the root stays at the root, as in a chroot: root/outside does not exist */
	if f, err := openInRoot(tmp+"/root", "etc/dotdot"); err == nil {
		f.Close()
		t.Error("a link climbing out of the root was followed")
	}
}
