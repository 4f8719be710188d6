package procfs

import (
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestListeningPortsReadsOnlyListenState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tcp")
	os.WriteFile(path, []byte(`  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0000000000000000 100 0 0 10 0
   1: 0100007F:8A2C 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 1235 1 0000000000000000 20 4 30 10 -1
   2: 00000000000000000000000000000000:0035 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 99 1
`), 0o644)
	got := listeningPorts(path)
	if len(got) != 2 || got[0] != 8080 || got[1] != 53 {
		t.Errorf("got %v, want [8080 53]", got)
	}
}

// The real /proc: a port this test listens on is found in the test's own network namespace.
func TestListenersFindsThisProcessListener(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	for _, ln := range Listeners("/proc") {
		if ln.Port == port && ln.Netns == uint32(st.Ino) {
			return
		}
	}
	t.Errorf("listener on port %d in netns %d not found", port, st.Ino)
}
