package hfload

import (
	"testing"

	"dkebpf/collector/bpf"
)

func TestLoad(t *testing.T) {
	n, err := bpf.OpenNetflow(bpf.Options{HTTP: true, TLS: true})
	if err != nil {
		t.Fatal(err)
	}
	n.Close()
}
