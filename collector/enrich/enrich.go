// Package enrich adds to every plugin's points what the kernel does not know: the container of the
// process a point names, and the Kubernetes pods, services and workloads at both ends of a flow.
package enrich

import (
	"net/netip"
	"strconv"

	"dkebpf/collector/container"
	"dkebpf/collector/k8s"
	"dkebpf/collector/point"
)

// Containers names the container of a mount namespace or of a live process (container.Resolver).
type Containers interface {
	ByMntns(ns uint32) (container.Info, bool)
	ByPid(pid uint32) (container.Info, bool)
}

// Pods names the Kubernetes end of a flow (k8s.Index).
type Pods interface {
	PodByUID(uid string) (k8s.Side, bool)
	ByAddr(ip netip.Addr, port int32, transport string) (k8s.Side, bool)
}

// Points tags one flush's points: containers, then, when pods is not nil, Kubernetes.
func Points(pts []point.Point, c Containers, pods Pods) {
	for i := range pts {
		p := &pts[i]
		if p.Tags == nil {
			p.Tags = map[string]string{}
		}
		info, ok := containerOf(p, c)
		if ok {
			info.AddTags(p.Tags)
		} else {
			info = container.Info{}
		}
		if pods != nil {
			addK8s(p.Tags, info.PodUID, pods)
		}
	}
}

// containerOf finds the container of the point's process. The mount namespace the kernel recorded is the
// key; a point without one (a connection found open at start, whose owner came from /proc) falls back to
// its pid, which must still be alive.
func containerOf(p *point.Point, c Containers) (container.Info, bool) {
	info, ok := c.ByMntns(p.Mntns)
	if ok || p.Mntns != 0 {
		return info, ok
	}
	pid, err := strconv.ParseUint(p.Tags["pid"], 10, 32)
	if err != nil || pid == 0 {
		return container.Info{}, false
	}
	return c.ByPid(uint32(pid))
}

// sideTags are DataKit's k8s tags of one side, after its prefix (src_, dst_, client_, server_).
var sideTags = []string{"k8s_namespace", "k8s_pod_name", "k8s_service_name", "k8s_deployment_name", "k8s_workload_name", "k8s_workload_type"}

func sideValues(s k8s.Side) []string {
	return []string{s.Namespace, s.Pod, s.Service, s.Workload, s.Workload, s.WorkloadType}
}

// addK8s writes DataKit's k8s tags (ref §3.6). The local side (src) is the pod of the process's
// container when it runs in one (exact), else the pod or service at src_ip:src_port; the remote side (dst)
// is the pod the kernel's DNAT chose (dst_nat_ip) with the service that was called, else the pod or
// service at dst_ip:dst_port. A side without a match gets N/A when the other matched; the workload labels
// are the src pod's. A point that names no address (bash) gets the unprefixed tags of its pod.
func addK8s(t map[string]string, podUID string, pods Pods) {
	transport := t["transport"]
	src, srcOK := k8s.Side{}, false
	if podUID != "" {
		src, srcOK = pods.PodByUID(podUID)
	}
	if t["src_ip"] == "" {
		if srcOK {
			write(t, "", src)
		}
		return
	}
	if !srcOK {
		src, srcOK = pods.ByAddr(addr(t["src_ip"]), port(t["src_port"]), transport)
	}
	dst, dstOK := pods.ByAddr(addr(t["dst_ip"]), port(t["dst_port"]), transport)
	if nat := addr(t["dst_nat_ip"]); nat.IsValid() {
		if pod, ok := pods.ByAddr(nat, port(t["dst_nat_port"]), transport); ok {
			if dstOK && dst.Pod == "" && dst.Service != "" {
				pod.Service = dst.Service // the service called, which the pod may share with others
			}
			dst, dstOK = pod, true
		}
	}
	if !srcOK && !dstOK {
		return
	}
	if !srcOK {
		src = k8s.Side{}
	}
	if !dstOK {
		dst = k8s.Side{}
	}
	client, server := src, dst
	if t["conn_side"] == "server" {
		client, server = dst, src
	}
	write(t, "src_", src)
	write(t, "dst_", dst)
	write(t, "client_", client)
	write(t, "server_", server)
	t["sub_source"] = "K8s"
	for k, v := range src.Labels {
		t[k] = v
	}
}

func write(t map[string]string, prefix string, s k8s.Side) {
	for i, v := range sideValues(s) {
		if v == "" {
			v = "N/A"
		}
		t[prefix+sideTags[i]] = v
	}
}

func addr(s string) netip.Addr {
	a, _ := netip.ParseAddr(s) // "", "N/A": the zero Addr, which matches nothing
	return a
}

func port(s string) int32 {
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return k8s.AnyPort // "*"
	}
	return int32(p)
}
