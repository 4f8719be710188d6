package kernelcheck

import (
	"os"
	"path/filepath"
	"testing"
)

func TestParseVersionAndCompare(t *testing.T) {
	tests := []struct {
		release string
		want    Version
		atLeast bool
	}{
		{"6.18.0", Version{6, 18, 0}, true},
		{"6.1.0-18-amd64", Version{6, 1, 0}, true},
		{"6.1.0-rt-amd64", Version{6, 1, 0}, true},
		{"5.10.0-28-cloud-amd64", Version{5, 10, 0}, true},
		{"5.8", Version{5, 8, 0}, true},
		{"5.7.19", Version{5, 7, 19}, false},
		{"4.19.0-26-amd64", Version{4, 19, 0}, false},
		{"3.10.0-1160.el7.x86_64", Version{3, 10, 0}, false},
		{"10.0.1", Version{10, 0, 1}, true},
	}
	for _, tc := range tests {
		v, err := ParseVersion(tc.release)
		if err != nil || v != tc.want {
			t.Errorf("ParseVersion(%q) = %v, %v; want %v", tc.release, v, err, tc.want)
		}
		if got := v.AtLeast(MinVersion); got != tc.atLeast {
			t.Errorf("%s AtLeast(%s) = %v, want %v", v, MinVersion, got, tc.atLeast)
		}
		if r := CheckVersion(tc.release); r.OK != tc.atLeast || !r.Hard {
			t.Errorf("CheckVersion(%q) = %+v", tc.release, r)
		}
	}
	for _, bad := range []string{"", "linux", "6"} {
		if _, err := ParseVersion(bad); err == nil {
			t.Errorf("ParseVersion(%q) succeeded", bad)
		}
	}
}

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
