package k8s

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Side is what Kubernetes says about one end of a flow. An empty string is a value not known (a service
// without its pod, a pod that no service selects).
type Side struct {
	Namespace, Pod, Service string
	Workload, WorkloadType  string            // DataKit's workload_type: deployment, replicaset, statefulset, daemonset, cronjob, job, pod, unknown
	Labels                  map[string]string // the workload's labels asked for by workload_labels, keys prefixed: tags as they are
}

// AnyPort is a port that is not known (DataKit's "*"): a pod IP still matches, a host-network pod does not.
const AnyPort = -1

const (
	byUID     = "uid"
	byIP      = "ip"
	byPod     = "pod"
	byService = "service"
)

func podUID(obj any) ([]string, error) { return []string{string(obj.(*Pod).UID)}, nil }

// podIPs indexes a pod by its IPs, a host-network pod by ip:port of each port its containers declare (its
// IP is the node's, shared by every host-network pod and process of the node).
func podIPs(obj any) ([]string, error) {
	p := obj.(*Pod)
	var keys []string
	for _, ip := range p.Status.PodIPs {
		if !p.Spec.HostNetwork {
			keys = append(keys, normIP(ip.IP))
			continue
		}
		for _, c := range p.Spec.Containers {
			for _, port := range c.Ports {
				keys = append(keys, hostPortKey(normIP(ip.IP), port.ContainerPort, port.Protocol))
			}
		}
	}
	if len(p.Status.PodIPs) == 0 && p.Status.PodIP != "" && !p.Spec.HostNetwork {
		keys = append(keys, normIP(p.Status.PodIP))
	}
	return keys, nil
}

func serviceIPs(obj any) ([]string, error) {
	s := obj.(*Service)
	ips := s.Spec.ClusterIPs
	if len(ips) == 0 && s.Spec.ClusterIP != "" {
		ips = []string{s.Spec.ClusterIP}
	}
	var keys []string
	for _, ip := range ips {
		if ip != clusterIPNone {
			keys = append(keys, normIP(ip))
		}
	}
	return keys, nil
}

func slicePods(obj any) ([]string, error) {
	e := obj.(*EndpointSlice)
	var keys []string
	for _, ep := range e.Endpoints {
		if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" {
			keys = append(keys, e.Namespace+"/"+ep.TargetRef.Name)
		}
	}
	return keys, nil
}

func sliceService(obj any) ([]string, error) {
	e := obj.(*EndpointSlice)
	if n := e.Labels[labelServiceName]; n != "" {
		return []string{e.Namespace + "/" + n}, nil
	}
	return nil, nil
}

// normIP writes an address as netip does, so "::ffff:10.0.0.1" and "10.0.0.1" are one key.
func normIP(s string) string {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return s
	}
	return a.Unmap().String()
}

func hostPortKey(ip string, port int32, proto string) string {
	if proto == "" {
		proto = protocolTCP
	}
	return ip + "|" + strconv.Itoa(int(port)) + "/" + proto
}

// protocol is the Kubernetes name of a flow's transport tag.
func protocol(transport string) string { return strings.ToUpper(transport) }

// PodByUID names the pod whose containers' cgroups carry this UID (exact, for processes on this node).
func (ix *Index) PodByUID(uid string) (Side, bool) {
	objs, _ := ix.pods.ByIndex(byUID, uid)
	if len(objs) == 0 {
		return Side{}, false
	}
	return ix.podSide(objs[0].(*Pod)), true
}

// ByAddr names the end of a flow at ip:port: a pod by its IP (a host-network pod only by a port it
// declares), else a service by its ClusterIP (and port, when known).
func (ix *Index) ByAddr(ip netip.Addr, port int32, transport string) (Side, bool) {
	if !ip.IsValid() {
		return Side{}, false
	}
	key := ip.Unmap().String()
	if p := ix.podAt(key, port, transport); p != nil {
		return ix.podSide(p), true
	}
	objs, _ := ix.svcs.ByIndex(byIP, key)
	for _, o := range objs {
		s := o.(*Service)
		if port == AnyPort || servesPort(s, port, protocol(transport)) {
			return ix.serviceSide(s), true
		}
	}
	return Side{}, false
}

// IsClusterIP reports whether ip is a service's ClusterIP.
func (ix *Index) IsClusterIP(ip netip.Addr) bool {
	objs, _ := ix.svcs.ByIndex(byIP, ip.Unmap().String())
	return len(objs) > 0
}

// podAt returns the pod with this IP, preferring the live one: after a pod is deleted and another gets
// its IP, both may be listed for a while.
func (ix *Index) podAt(ip string, port int32, transport string) *Pod {
	objs, _ := ix.pods.ByIndex(byIP, ip)
	if len(objs) == 0 && port != AnyPort {
		objs, _ = ix.pods.ByIndex(byIP, hostPortKey(ip, port, protocol(transport)))
	}
	var best *Pod
	for _, o := range objs {
		p := o.(*Pod)
		if best == nil || rank(p) > rank(best) || (rank(p) == rank(best) && best.CreationTimestamp.Before(&p.CreationTimestamp)) {
			best = p
		}
	}
	return best
}

// rank orders pods sharing an IP: running, then pending, then terminating or finished.
func rank(p *Pod) int {
	switch {
	case p.DeletionTimestamp != nil || p.Status.Phase == podSucceeded || p.Status.Phase == podFailed:
		return 0
	case p.Status.Phase == podRunning:
		return 2
	}
	return 1
}

func servesPort(s *Service, port int32, proto string) bool {
	for _, p := range s.Spec.Ports {
		pp := p.Protocol
		if pp == "" {
			pp = protocolTCP
		}
		if p.Port == port && pp == proto {
			return true
		}
	}
	return false
}

func (ix *Index) podSide(p *Pod) Side {
	s := Side{Namespace: p.Namespace, Pod: p.Name, Service: ix.serviceOf(p)}
	var labels map[string]string
	s.Workload, s.WorkloadType, labels = ix.workload(p)
	s.Labels = ix.pick(labels)
	return s
}

// serviceOf is the first (by name) service whose endpoints name the pod.
func (ix *Index) serviceOf(p *Pod) string {
	objs, _ := ix.slices.ByIndex(byPod, p.Namespace+"/"+p.Name)
	var names []string
	for _, o := range objs {
		names = append(names, o.(*EndpointSlice).Labels[labelServiceName])
	}
	slices.Sort(names)
	if len(names) == 0 {
		return ""
	}
	return names[0]
}

// serviceSide is a service reached without knowing which pod answered: its workload is named when all
// its endpoints' pods belong to one.
func (ix *Index) serviceSide(svc *Service) Side {
	s := Side{Namespace: svc.Namespace, Service: svc.Name}
	objs, _ := ix.slices.ByIndex(byService, svc.Namespace+"/"+svc.Name)
	first := true
	for _, o := range objs {
		for _, ep := range o.(*EndpointSlice).Endpoints {
			po, ok, _ := ix.pods.GetByKey(svc.Namespace + "/" + ep.TargetRef.Name)
			if !ok {
				continue
			}
			name, typ, _ := ix.workload(po.(*Pod))
			if first {
				s.Workload, s.WorkloadType, first = name, typ, false
			} else if name != s.Workload || typ != s.WorkloadType {
				s.Workload, s.WorkloadType = "", ""
				return s
			}
		}
	}
	return s
}

// workload follows the pod's controller: ReplicaSet to its Deployment, Job to its CronJob; a pod with no
// controller is its own workload. It returns the workload's labels when workload labels are asked for.
func (ix *Index) workload(p *Pod) (name, typ string, labels map[string]string) {
	ref := controller(p.OwnerReferences)
	if ref == nil {
		return p.Name, "pod", p.Labels
	}
	name, kind := ref.Name, ref.Kind
	if kind == "ReplicaSet" || kind == "Job" {
		if o, ok := ix.owner(kind, p.Namespace, name); ok {
			if up := controller(o.GetOwnerReferences()); up != nil && (up.Kind == "Deployment" || up.Kind == "CronJob") {
				name, kind = up.Name, up.Kind
			}
		}
	}
	if o, ok := ix.owner(kind, p.Namespace, name); ok {
		labels = o.GetLabels()
	}
	switch kind {
	case "Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob":
		return name, strings.ToLower(kind), labels
	}
	return name, "unknown", labels
}

func controller(refs []metav1.OwnerReference) *metav1.OwnerReference {
	for i := range refs {
		if refs[i].Controller != nil && *refs[i].Controller {
			return &refs[i]
		}
	}
	if len(refs) > 0 {
		return &refs[0]
	}
	return nil
}

// owner is a workload object from its informer's cache (kinds without one are not looked up).
func (ix *Index) owner(kind, ns, name string) (metav1.Object, bool) {
	idx := ix.owners[kind]
	if idx == nil {
		return nil, false
	}
	o, ok, _ := idx.GetByKey(ns + "/" + name)
	if !ok {
		return nil, false
	}
	m, ok := o.(metav1.Object)
	return m, ok
}

// pick keeps the labels workload_labels asks for, their keys prefixed with workload_label_prefix.
func (ix *Index) pick(labels map[string]string) map[string]string {
	var out map[string]string
	for _, k := range ix.cfg.WorkloadLabels {
		if v, ok := labels[k]; ok {
			if out == nil {
				out = map[string]string{}
			}
			out[ix.cfg.LabelPrefix+k] = v
		}
	}
	return out
}
