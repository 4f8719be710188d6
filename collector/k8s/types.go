package k8s

import (
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The objects the index reads, as small Go types of only the fields its lookups use, decoded from the
// API's JSON (the decoder skips every other field as it reads). They stand in for k8s.io/api's types:
// those carry protobuf code that links in every core type, about 6 MB of every collector's resident
// memory (the binary's pages and its init), on Kubernetes or not.

// Pod is a core/v1 Pod: its addresses, the ports a host-network pod declares, its phase and owners.
type Pod struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              PodSpec   `json:"spec"`
	Status            PodStatus `json:"status"`
}

type PodSpec struct {
	HostNetwork bool        `json:"hostNetwork,omitempty"`
	Containers  []Container `json:"containers,omitempty"`
}

type Container struct {
	Ports []ContainerPort `json:"ports,omitempty"`
}

type ContainerPort struct {
	ContainerPort int32  `json:"containerPort"`
	Protocol      string `json:"protocol,omitempty"` // "" is TCP
}

type PodStatus struct {
	Phase  string  `json:"phase,omitempty"`
	PodIP  string  `json:"podIP,omitempty"`
	PodIPs []PodIP `json:"podIPs,omitempty"`
}

type PodIP struct {
	IP string `json:"ip"`
}

// Pod phases and the ClusterIP of a headless service, as the API writes them.
const (
	podRunning    = "Running"
	podSucceeded  = "Succeeded"
	podFailed     = "Failed"
	clusterIPNone = "None"
	protocolTCP   = "TCP"
)

// Service is a core/v1 Service: its ClusterIPs and ports.
type Service struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              ServiceSpec `json:"spec"`
}

type ServiceSpec struct {
	ClusterIP  string        `json:"clusterIP,omitempty"`
	ClusterIPs []string      `json:"clusterIPs,omitempty"`
	Ports      []ServicePort `json:"ports,omitempty"`
}

type ServicePort struct {
	Port     int32  `json:"port"`
	Protocol string `json:"protocol,omitempty"` // "" is TCP
}

// EndpointSlice is a discovery/v1 EndpointSlice: its service (a label) and the pods behind it.
type EndpointSlice struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Endpoints         []Endpoint `json:"endpoints"`
}

// labelServiceName is the label naming an EndpointSlice's service.
const labelServiceName = "kubernetes.io/service-name"

type Endpoint struct {
	TargetRef *ObjectReference `json:"targetRef,omitempty"`
}

type ObjectReference struct {
	Kind string `json:"kind,omitempty"`
	Name string `json:"name,omitempty"`
}

// Workload is a ReplicaSet, Deployment, StatefulSet, DaemonSet, Job or CronJob, read only for its
// metadata: its owner and its labels.
type Workload struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
}

// The lists the API returns.
type (
	PodList struct {
		metav1.TypeMeta `json:",inline"`
		metav1.ListMeta `json:"metadata"`
		Items           []Pod `json:"items"`
	}
	ServiceList struct {
		metav1.TypeMeta `json:",inline"`
		metav1.ListMeta `json:"metadata"`
		Items           []Service `json:"items"`
	}
	EndpointSliceList struct {
		metav1.TypeMeta `json:",inline"`
		metav1.ListMeta `json:"metadata"`
		Items           []EndpointSlice `json:"items"`
	}
	WorkloadList struct {
		metav1.TypeMeta `json:",inline"`
		metav1.ListMeta `json:"metadata"`
		Items           []Workload `json:"items"`
	}
)

var (
	coreV1      = schema.GroupVersion{Version: "v1"}
	appsV1      = schema.GroupVersion{Group: "apps", Version: "v1"}
	batchV1     = schema.GroupVersion{Group: "batch", Version: "v1"}
	discoveryV1 = schema.GroupVersion{Group: "discovery.k8s.io", Version: "v1"}
)

// addTypes registers the types above under the kinds they decode, and the meta types (list options,
// watch events, status) in each group version.
func addTypes(s *runtime.Scheme) {
	add := func(gv schema.GroupVersion, kind string, obj, list runtime.Object) {
		s.AddKnownTypeWithName(gv.WithKind(kind), obj)
		s.AddKnownTypeWithName(gv.WithKind(kind+"List"), list)
	}
	add(coreV1, "Pod", &Pod{}, &PodList{})
	add(coreV1, "Service", &Service{}, &ServiceList{})
	add(discoveryV1, "EndpointSlice", &EndpointSlice{}, &EndpointSliceList{})
	for _, k := range []string{"ReplicaSet", "Deployment", "StatefulSet", "DaemonSet"} {
		add(appsV1, k, &Workload{}, &WorkloadList{})
	}
	for _, k := range []string{"Job", "CronJob"} {
		add(batchV1, k, &Workload{}, &WorkloadList{})
	}
	for _, gv := range []schema.GroupVersion{coreV1, appsV1, batchV1, discoveryV1} {
		metav1.AddToGroupVersion(s, gv)
	}
}

// DeepCopyObject copies, as runtime.Object asks.

func (p *Pod) DeepCopyObject() runtime.Object {
	c := &Pod{TypeMeta: p.TypeMeta, Spec: PodSpec{HostNetwork: p.Spec.HostNetwork}, Status: p.Status}
	p.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	for _, ct := range p.Spec.Containers {
		c.Spec.Containers = append(c.Spec.Containers, Container{Ports: slices.Clone(ct.Ports)})
	}
	c.Status.PodIPs = slices.Clone(p.Status.PodIPs)
	return c
}

func (s *Service) DeepCopyObject() runtime.Object {
	c := &Service{TypeMeta: s.TypeMeta, Spec: s.Spec}
	s.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	c.Spec.ClusterIPs, c.Spec.Ports = slices.Clone(s.Spec.ClusterIPs), slices.Clone(s.Spec.Ports)
	return c
}

func (e *EndpointSlice) DeepCopyObject() runtime.Object {
	c := &EndpointSlice{TypeMeta: e.TypeMeta}
	e.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	for _, ep := range e.Endpoints {
		if ep.TargetRef != nil {
			ref := *ep.TargetRef
			ep.TargetRef = &ref
		}
		c.Endpoints = append(c.Endpoints, ep)
	}
	return c
}

func (w *Workload) DeepCopyObject() runtime.Object {
	c := &Workload{TypeMeta: w.TypeMeta}
	w.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	return c
}

func (l *PodList) DeepCopyObject() runtime.Object {
	return &PodList{l.TypeMeta, *l.ListMeta.DeepCopy(), copyItems(l.Items)}
}

func (l *ServiceList) DeepCopyObject() runtime.Object {
	return &ServiceList{l.TypeMeta, *l.ListMeta.DeepCopy(), copyItems(l.Items)}
}

func (l *EndpointSliceList) DeepCopyObject() runtime.Object {
	return &EndpointSliceList{l.TypeMeta, *l.ListMeta.DeepCopy(), copyItems(l.Items)}
}

func (l *WorkloadList) DeepCopyObject() runtime.Object {
	return &WorkloadList{l.TypeMeta, *l.ListMeta.DeepCopy(), copyItems(l.Items)}
}

// copyItems deep-copies a list's items.
func copyItems[T any, P interface {
	*T
	runtime.Object
}](items []T) []T {
	if items == nil {
		return nil
	}
	out := make([]T, len(items))
	for i := range items {
		out[i] = *P(&items[i]).DeepCopyObject().(P)
	}
	return out
}
