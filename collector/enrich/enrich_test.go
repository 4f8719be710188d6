package enrich

import (
	"testing"

	"dkebpf/collector/container"
	"dkebpf/collector/point"
)

type fake struct{}

func (fake) ByMntns(ns uint32) (container.Info, bool) {
	return container.Info{ID: "c1", Name: "web"}, ns == 7
}
func (fake) ByPid(pid uint32) (container.Info, bool) { return container.Info{ID: "c2"}, pid == 42 }

func TestAddContainersByNamespaceThenPid(t *testing.T) {
	pts := []point.Point{
		{Name: "bash", Mntns: 7},                                          // no tags yet
		{Name: "netflow", Tags: map[string]string{"pid": "42"}},           // no namespace: by pid
		{Name: "netflow", Tags: map[string]string{"pid": "42"}, Mntns: 8}, // a namespace that is no container's
		{Name: "netflow", Tags: map[string]string{"pid": "43"}},
	}
	AddContainers(pts, fake{})
	want := []map[string]string{{"container_id": "c1", "container_name": "web"}, {"pid": "42", "container_id": "c2"}, {"pid": "42"}, {"pid": "43"}}
	for i, p := range pts {
		if len(p.Tags) != len(want[i]) {
			t.Errorf("point %d: tags %v, want %v", i, p.Tags, want[i])
			continue
		}
		for k, v := range want[i] {
			if p.Tags[k] != v {
				t.Errorf("point %d: tags %v, want %v", i, p.Tags, want[i])
			}
		}
	}
}
