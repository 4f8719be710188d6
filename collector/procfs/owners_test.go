package procfs

import (
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestLookupFindsThisProcessBySocketInode(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	comm, _ := os.ReadFile("/proc/self/comm")
	var ns syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/mnt", &ns); err != nil {
		t.Fatal(err)
	}

	o := NewOwners("/proc")
	if _, ok := o.Lookup(st.Ino); ok {
		t.Fatal("found an owner before any scan")
	}
	o.wait() // the miss started one, in the background
	got, ok := o.Lookup(st.Ino)
	if !ok || got.Pid != uint32(os.Getpid()) || got.Comm != strings.TrimSpace(string(comm)) || got.Mntns != uint32(ns.Ino) || ns.Ino == 0 {
		t.Fatalf("Lookup(%d) = %+v, %v; want pid %d, mount namespace %d (as the kernel reports it)", st.Ino, got, ok, os.Getpid(), ns.Ino)
	}
	if _, ok := o.Lookup(1 << 62); ok {
		t.Error("found an owner for an inode no process holds")
	}
}

func TestLookupScansAtMostOncePerRefresh(t *testing.T) {
	dir := t.TempDir()
	o := NewOwners(dir)
	o.now = func() time.Time { return time.Unix(1000, 0) } // scans take no time: only Refresh limits them
	if _, ok := o.Lookup(1); ok {
		t.Fatal("found an owner in an empty /proc")
	}
	o.wait()
	if err := os.MkdirAll(dir+"/7/fd", 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(dir+"/7/comm", []byte("late\n"), 0o644)
	os.Symlink("socket:[1]", dir+"/7/fd/3")
	o.Lookup(1)
	o.wait()
	if _, ok := o.Lookup(1); ok {
		t.Error("rescanned /proc before Refresh")
	}
	o.Refresh()
	o.Lookup(1)
	o.wait()
	if got, ok := o.Lookup(1); !ok || got.Pid != 7 || got.Comm != "late" {
		t.Errorf("after Refresh: %+v, %v", got, ok)
	}
}

func TestLookupWaitsTenScansLengthsBeforeTheNext(t *testing.T) {
	dir := t.TempDir()
	o := NewOwners(dir)
	clock := time.Unix(1000, 0)
	// Each reading of the clock is 1 s later (they are all made under o.mu): a scan "takes" 1 s.
	o.now = func() time.Time { clock = clock.Add(time.Second); return clock }
	o.Lookup(1)
	o.wait()
	if err := os.MkdirAll(dir+"/7/fd", 0o755); err != nil {
		t.Fatal(err)
	}
	os.Symlink("socket:[1]", dir+"/7/fd/3")
	o.Refresh()
	o.Lookup(1) // 2 s after the last scan started: too soon
	o.wait()
	if _, ok := o.Lookup(1); ok {
		t.Error("rescanned 2 s after a scan that took 1 s")
	}
	clock = clock.Add(10 * time.Second)
	o.Refresh()
	o.Lookup(1)
	o.wait()
	if got, ok := o.Lookup(1); !ok || got.Pid != 7 {
		t.Errorf("10 scans' lengths later: %+v, %v", got, ok)
	}
}
