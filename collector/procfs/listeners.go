package procfs

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Listener is a listening TCP port in one network namespace (by its inode).
type Listener struct {
	Netns uint32
	Port  uint16
}

// tcpListen is the state column of /proc/net/tcp for TCP_LISTEN.
const tcpListen = "0A"

// Listeners returns the listening TCP ports (v4 and v6) of every network namespace a process under root
// is in, read once per namespace from one of its processes' net/tcp and net/tcp6.
func Listeners(root string) []Listener {
	dirs, _ := filepath.Glob(filepath.Join(root, "[0-9]*"))
	seen := map[uint64]bool{}
	var out []Listener
	for _, dir := range dirs {
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join(dir, "ns", "net"), &st) != nil || seen[st.Ino] {
			continue
		}
		seen[st.Ino] = true
		for _, f := range []string{"tcp", "tcp6"} {
			for _, port := range listeningPorts(filepath.Join(dir, "net", f)) {
				out = append(out, Listener{Netns: uint32(st.Ino), Port: port})
			}
		}
	}
	return out
}

// listeningPorts reads the local ports in state LISTEN of one /proc/net/tcp{,6} file.
func listeningPorts(path string) []uint16 {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var ports []uint16
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		// "  0: 0100007F:1F90 00000000:0000 0A ..." : sl, local address:port, remote, state.
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || fields[3] != tcpListen {
			continue
		}
		i := strings.LastIndexByte(fields[1], ':')
		if p, err := strconv.ParseUint(fields[1][i+1:], 16, 16); i >= 0 && err == nil {
			ports = append(ports, uint16(p))
		}
	}
	return ports
}
