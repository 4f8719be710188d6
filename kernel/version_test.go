package kernel

import "testing"

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
		if got := v.AtLeast(Version{5, 8, 0}); got != tc.atLeast {
			t.Errorf("%s AtLeast(5.8.0) = %v, want %v", v, got, tc.atLeast)
		}
	}
	for _, bad := range []string{"", "linux", "6"} {
		if _, err := ParseVersion(bad); err == nil {
			t.Errorf("ParseVersion(%q) succeeded", bad)
		}
	}
}

func TestRunningIsThisKernel(t *testing.T) {
	if v, ok := Running(); !ok || !v.AtLeast(Version{5, 8, 0}) {
		t.Errorf("Running() = %v, %v (release %q)", v, ok, Release())
	}
}
