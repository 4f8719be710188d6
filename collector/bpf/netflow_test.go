package bpf

import "testing"

func TestSumPerCPUAddsEachCounterOverCPUs(t *testing.T) {
	// Two CPUs' copies of a 16-byte value (two counters).
	v := []byte{
		1, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0,
		2, 0, 0, 0, 0, 0, 0, 0, 20, 1, 0, 0, 0, 0, 0, 0,
	}
	got := sumPerCPU(v, 16)
	want := []byte{3, 0, 0, 0, 0, 0, 0, 0, 30, 1, 0, 0, 0, 0, 0, 0}
	if string(got) != string(want) {
		t.Errorf("sumPerCPU = %v, want %v", got, want)
	}
}
