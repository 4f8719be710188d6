package kernelcheck

import (
	"os"
	"path/filepath"
	"testing"
)

func TestTracefsIsAWarning(t *testing.T) {
	dir := t.TempDir()
	mounts := filepath.Join(dir, "mounts")
	os.WriteFile(mounts, []byte("proc /proc proc rw 0 0\n"), 0o644)
	r := CheckTracefs(mounts)
	if r.OK || r.Hard || Failed([]Result{r}) {
		t.Errorf("without tracefs: %+v", r)
	}
	os.WriteFile(mounts, []byte("tracefs /sys/kernel/tracing tracefs rw 0 0\n"), 0o644)
	if r := CheckTracefs(mounts); !r.OK {
		t.Errorf("with tracefs: %+v", r)
	}
}

func TestCheckVersionNeedsTheRingBuffer(t *testing.T) {
	for release, ok := range map[string]bool{"6.1.0-18-amd64": true, "5.8": true, "5.7.19": false, "3.10.0-1160.el7.x86_64": false, "linux": false} {
		if r := CheckVersion(release); r.OK != ok || !r.Hard {
			t.Errorf("CheckVersion(%q) = %+v, want OK %v", release, r, ok)
		}
	}
}
