package enrich

import (
	"maps"
	"net/netip"
	"testing"

	"dkebpf/collector/container"
	"dkebpf/collector/k8s"
	"dkebpf/collector/point"
)

type fake struct{}

func (fake) ByMntns(ns uint32) (container.Info, bool) {
	return container.Info{ID: "c1", Name: "web", PodUID: "uid-web"}, ns == 7
}
func (fake) ByPid(pid uint32) (container.Info, bool) { return container.Info{ID: "c2"}, pid == 42 }

func TestContainersByNamespaceThenPid(t *testing.T) {
	pts := []point.Point{
		{Name: "bash", Mntns: 7},                                          // no tags yet
		{Name: "netflow", Tags: map[string]string{"pid": "42"}},           // no namespace: by pid
		{Name: "netflow", Tags: map[string]string{"pid": "42"}, Mntns: 8}, // a namespace that is no container's
		{Name: "netflow", Tags: map[string]string{"pid": "43"}},
	}
	Points(pts, fake{}, nil)
	want := []map[string]string{{"container_id": "c1", "container_name": "web"}, {"pid": "42", "container_id": "c2"}, {"pid": "42"}, {"pid": "43"}}
	for i, p := range pts {
		if !maps.Equal(p.Tags, want[i]) {
			t.Errorf("point %d: tags %v, want %v", i, p.Tags, want[i])
		}
	}
}

// pods knows the pod web (by UID and at 10.0.0.5), the pod db at 10.0.0.9:5432, and the service db-svc at
// ClusterIP 10.96.0.9:5432 whose pod is not known without NAT.
type pods struct{}

var (
	web   = k8s.Side{Namespace: "shop", Pod: "web-7d4-x", Service: "web", Workload: "web", WorkloadType: "deployment", Labels: map[string]string{"wl_team": "a"}}
	db    = k8s.Side{Namespace: "shop", Pod: "db-0", Service: "db-headless", Workload: "db", WorkloadType: "statefulset"}
	dbSvc = k8s.Side{Namespace: "shop", Service: "db-svc", Workload: "db", WorkloadType: "statefulset"}
)

func (pods) PodByUID(uid string) (k8s.Side, bool) { return web, uid == "uid-web" }
func (pods) ByAddr(ip netip.Addr, port int32, transport string) (k8s.Side, bool) {
	switch ip.String() {
	case "10.0.0.5":
		return web, true
	case "10.0.0.9":
		return db, true
	case "10.96.0.9":
		return dbSvc, port == 5432 && transport == "tcp"
	}
	return k8s.Side{}, false
}

func side(prefix string, s ...string) map[string]string {
	m := map[string]string{}
	for i, n := range sideTags {
		m[prefix+n] = s[i]
	}
	return m
}

func TestKubernetesTagsOnBothSides(t *testing.T) {
	flowTags := func(kv ...string) map[string]string {
		m := map[string]string{"transport": "tcp", "conn_side": "client"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	webTags := []string{"shop", "web-7d4-x", "web", "web", "web", "deployment"}
	dbTags := []string{"shop", "db-0", "db-svc", "db", "db", "statefulset"} // through the service called
	svcTags := []string{"shop", "N/A", "db-svc", "db", "db", "statefulset"}
	na := []string{"N/A", "N/A", "N/A", "N/A", "N/A", "N/A"}
	cases := []struct {
		name       string
		mntns      uint32
		tags       map[string]string
		src, dst   []string // nil: no k8s tags at all
		serverSide bool
	}{
		{"pod by cgroup calls a ClusterIP that DNAT sent to a pod", 7,
			flowTags("src_ip", "192.168.1.1", "src_port", "*", "dst_ip", "10.96.0.9", "dst_port", "5432", "dst_nat_ip", "10.0.0.9", "dst_nat_port", "5432"), webTags, dbTags, false},
		{"ClusterIP without NAT names the service, not a pod", 7,
			flowTags("src_ip", "192.168.1.1", "src_port", "*", "dst_ip", "10.96.0.9", "dst_port", "5432", "dst_nat_ip", "N/A", "dst_nat_port", "N/A"), webTags, svcTags, false},
		{"service port that it does not serve", 0,
			flowTags("src_ip", "10.0.0.5", "src_port", "*", "dst_ip", "10.96.0.9", "dst_port", "80"), webTags, na, false},
		{"incoming: the local pod by IP is the server", 0,
			flowTags("src_ip", "10.0.0.5", "src_port", "8080", "dst_ip", "1.2.3.4", "dst_port", "*", "conn_side", "server"), webTags, na, true},
		{"no side known", 0, flowTags("src_ip", "192.168.1.1", "src_port", "*", "dst_ip", "1.2.3.4", "dst_port", "80"), nil, nil, false},
	}
	for _, c := range cases {
		pts := []point.Point{{Name: "netflow", Tags: c.tags, Mntns: c.mntns}}
		before := maps.Clone(c.tags)
		Points(pts, fake{}, pods{})
		want := maps.Clone(before)
		if c.mntns == 7 {
			want["container_id"], want["container_name"] = "c1", "web"
		}
		if c.src != nil {
			cli, srv := c.src, c.dst
			if c.serverSide {
				cli, srv = c.dst, c.src
			}
			for _, m := range []map[string]string{side("src_", c.src...), side("dst_", c.dst...), side("client_", cli...), side("server_", srv...)} {
				maps.Copy(want, m)
			}
			want["sub_source"] = "K8s"
			want["wl_team"] = "a"
		}
		if !maps.Equal(pts[0].Tags, want) {
			t.Errorf("%s:\n got %v\nwant %v", c.name, pts[0].Tags, want)
		}
	}
}

func TestBashLineGetsItsPodUnprefixed(t *testing.T) {
	pts := []point.Point{{Name: "bash", Mntns: 7, Tags: map[string]string{"cmd": "ls"}}, {Name: "bash", Mntns: 9}}
	Points(pts, fake{}, pods{})
	want := side("", "shop", "web-7d4-x", "web", "web", "web", "deployment")
	want["cmd"], want["container_id"], want["container_name"] = "ls", "c1", "web"
	if !maps.Equal(pts[0].Tags, want) {
		t.Errorf("bash in a pod: got %v, want %v", pts[0].Tags, want)
	}
	if len(pts[1].Tags) != 0 {
		t.Errorf("bash on the host: got %v, want no tags", pts[1].Tags)
	}
}
