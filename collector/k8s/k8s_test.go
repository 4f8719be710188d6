package k8s

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"reflect"
	"strconv"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
)

func owned(kind, name string) []metav1.OwnerReference {
	yes := true
	return []metav1.OwnerReference{{Kind: kind, Name: name, Controller: &yes}}
}

func meta(name string, owners []metav1.OwnerReference, labels map[string]string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: "shop", Name: name, UID: types.UID("uid-" + name), OwnerReferences: owners, Labels: labels}
}

func pod(name, ip string, owners []metav1.OwnerReference) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: meta(name, owners, map[string]string{"team": "pod-" + name}),
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}}
}

// start runs the index against a fake API server holding objs and waits for its caches.
func start(t *testing.T, cfg Config, objs ...runtime.Object) (*Index, *fakeAPI) {
	t.Helper()
	api := newFakeAPI(t, objs...)
	cfg.URL, cfg.Token = api.srv.URL, "t"
	rc, err := cfg.restConfig()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := newClients(rc)
	if err != nil {
		t.Fatal(err)
	}
	cl.noWatchList = true // the fake answers lists and watches, not a list streamed as a watch
	ix := newIndex(cfg, cl)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ix.run(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), ix.synced...) {
		t.Fatal("caches did not sync")
	}
	return ix, api
}

func TestWorkloadsServicesAndAddresses(t *testing.T) {
	hostPod := pod("node-exporter-abc", "192.168.0.10", owned("DaemonSet", "node-exporter"))
	hostPod.Spec.HostNetwork = true
	hostPod.Spec.Containers = []corev1.Container{{Name: "c", Ports: []corev1.ContainerPort{{ContainerPort: 9100}}}}
	objs := []runtime.Object{
		&appsv1.Deployment{ObjectMeta: meta("web", nil, map[string]string{"team": "frontend"})},
		&appsv1.ReplicaSet{ObjectMeta: meta("web-7d4", owned("Deployment", "web"), nil)},
		pod("web-7d4-x", "10.0.0.5", owned("ReplicaSet", "web-7d4")),
		&appsv1.ReplicaSet{ObjectMeta: meta("lonely", nil, map[string]string{"team": "rs"})},
		pod("lonely-a", "10.0.0.6", owned("ReplicaSet", "lonely")),
		&batchv1.CronJob{ObjectMeta: meta("backup", nil, nil)},
		&batchv1.Job{ObjectMeta: meta("backup-123", owned("CronJob", "backup"), nil)},
		pod("backup-123-q", "10.0.0.7", owned("Job", "backup-123")),
		pod("db-0", "10.0.0.9", owned("StatefulSet", "db")),
		pod("debug", "10.0.0.8", nil),
		pod("odd", "10.0.0.4", owned("Widget", "w")),
		hostPod,
		&corev1.Service{ObjectMeta: meta("db-svc", nil, nil), Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.9",
			Ports: []corev1.ServicePort{{Port: 5432, Protocol: corev1.ProtocolTCP}}}},
		&discoveryv1.EndpointSlice{ObjectMeta: meta("db-svc-x1", nil, map[string]string{discoveryv1.LabelServiceName: "db-svc"}),
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.9"}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "db-0"}}}},
	}
	ix, _ := start(t, Config{WorkloadLabels: []string{"team"}, LabelPrefix: "wl_"}, objs...)
	cases := []struct {
		ip        string
		port      int32
		transport string
		want      Side
		ok        bool
	}{
		{"10.0.0.5", AnyPort, "tcp", Side{Namespace: "shop", Pod: "web-7d4-x", Workload: "web", WorkloadType: "deployment", Labels: map[string]string{"wl_team": "frontend"}}, true},
		{"::ffff:10.0.0.5", 80, "tcp", Side{Namespace: "shop", Pod: "web-7d4-x", Workload: "web", WorkloadType: "deployment", Labels: map[string]string{"wl_team": "frontend"}}, true},
		{"10.0.0.6", AnyPort, "tcp", Side{Namespace: "shop", Pod: "lonely-a", Workload: "lonely", WorkloadType: "replicaset", Labels: map[string]string{"wl_team": "rs"}}, true},
		{"10.0.0.7", AnyPort, "tcp", Side{Namespace: "shop", Pod: "backup-123-q", Workload: "backup", WorkloadType: "cronjob"}, true},
		{"10.0.0.9", 5432, "tcp", Side{Namespace: "shop", Pod: "db-0", Service: "db-svc", Workload: "db", WorkloadType: "statefulset"}, true},
		{"10.0.0.8", AnyPort, "udp", Side{Namespace: "shop", Pod: "debug", Workload: "debug", WorkloadType: "pod", Labels: map[string]string{"wl_team": "pod-debug"}}, true},
		{"10.0.0.4", AnyPort, "tcp", Side{Namespace: "shop", Pod: "odd", Workload: "w", WorkloadType: "unknown"}, true},
		{"10.96.0.9", 5432, "tcp", Side{Namespace: "shop", Service: "db-svc", Workload: "db", WorkloadType: "statefulset"}, true},
		{"10.96.0.9", 5432, "udp", Side{}, false},
		{"10.96.0.9", AnyPort, "tcp", Side{Namespace: "shop", Service: "db-svc", Workload: "db", WorkloadType: "statefulset"}, true},
		{"192.168.0.10", 9100, "tcp", Side{Namespace: "shop", Pod: "node-exporter-abc", Workload: "node-exporter", WorkloadType: "daemonset"}, true},
		{"192.168.0.10", 22, "tcp", Side{}, false}, // the node's own sshd
		{"192.168.0.10", AnyPort, "tcp", Side{}, false},
		{"10.0.0.99", AnyPort, "tcp", Side{}, false},
	}
	for _, c := range cases {
		got, ok := ix.ByAddr(netip.MustParseAddr(c.ip), c.port, c.transport)
		if ok != c.ok || !reflect.DeepEqual(got, c.want) {
			t.Errorf("ByAddr(%s, %d, %s) = %+v, %v; want %+v, %v", c.ip, c.port, c.transport, got, ok, c.want, c.ok)
		}
	}
	if got, ok := ix.PodByUID("uid-db-0"); !ok || got.Pod != "db-0" || got.Service != "db-svc" {
		t.Errorf("PodByUID(uid-db-0) = %+v, %v", got, ok)
	}
	if _, ok := ix.PodByUID("uid-nothing"); ok {
		t.Error("PodByUID of an unknown UID matched")
	}
}

func TestARecreatedPodTakesItsIPOver(t *testing.T) {
	ix, api := start(t, Config{}, pod("old", "10.0.0.5", nil))
	now := metav1.Now()
	old := pod("old", "10.0.0.5", nil)
	old.DeletionTimestamp = &now // terminating, still listed
	api.put(old)
	api.put(pod("new", "10.0.0.5", nil))
	waitFor(t, ix, "new")
	api.delete(pod("new", "10.0.0.5", nil))
	waitFor(t, ix, "old")
}

func waitFor(t *testing.T, ix *Index, want string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		got, _ := ix.ByAddr(netip.MustParseAddr("10.0.0.5"), AnyPort, "tcp")
		if got.Pod == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("10.0.0.5 is pod %q, want %q", got.Pod, want)
		}
	}
}

// decode reads an object of k8s.io/api's full types as the index does: from its JSON, into the small types.
func decode(t *testing.T, o runtime.Object) runtime.Object {
	t.Helper()
	gvks, _, err := fakeScheme().ObjectKinds(o)
	if err != nil {
		t.Fatal(err)
	}
	o.GetObjectKind().SetGroupVersionKind(gvks[0])
	b, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := serializer.NewCodecFactory(apiScheme()).UniversalDeserializer().Decode(b, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestDecodeAndSlimKeepWhatLookupsRead(t *testing.T) {
	p := pod("web", "10.0.0.5", owned("ReplicaSet", "web-1"))
	p.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
	p.Annotations = map[string]string{"big": "x"}
	p.Spec.HostNetwork = true
	p.Spec.Containers = []corev1.Container{{Name: "a", Image: "nginx", Env: []corev1.EnvVar{{Name: "A", Value: "1"}}},
		{Name: "b", Ports: []corev1.ContainerPort{{ContainerPort: 80, Protocol: corev1.ProtocolUDP}}}}
	got, _ := slim(false)(decode(t, p))
	s := got.(*Pod)
	if s.ManagedFields != nil || s.Annotations != nil || s.Labels != nil || len(s.Spec.Containers) != 1 {
		t.Errorf("slim pod kept too much: %+v", s)
	}
	want := Pod{Spec: PodSpec{HostNetwork: true, Containers: []Container{{Ports: []ContainerPort{{ContainerPort: 80, Protocol: "UDP"}}}}},
		Status: PodStatus{Phase: podRunning, PodIP: "10.0.0.5", PodIPs: []PodIP{{IP: "10.0.0.5"}}}}
	if s.Name != "web" || s.Namespace != "shop" || s.UID != "uid-web" || s.OwnerReferences[0].Name != "web-1" ||
		!reflect.DeepEqual(s.Spec, want.Spec) || !reflect.DeepEqual(s.Status, want.Status) {
		t.Errorf("slim pod lost what lookups read: %+v", s)
	}
	if c := s.DeepCopyObject().(*Pod); !reflect.DeepEqual(c, s) || &c.Spec.Containers[0].Ports[0] == &s.Spec.Containers[0].Ports[0] {
		t.Errorf("DeepCopyObject = %+v, want a copy of %+v", c, s)
	}
	if withLabels, _ := slim(true)(decode(t, p)); withLabels.(*Pod).Labels["team"] != "pod-web" {
		t.Error("slim(true) dropped the labels")
	}
	svc := &corev1.Service{ObjectMeta: meta("db", nil, map[string]string{"a": "b"}), Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.9",
		ClusterIPs: []string{"10.96.0.9", "fd00::9"}, Ports: []corev1.ServicePort{{Name: "pg", Port: 5432, Protocol: corev1.ProtocolTCP}}}}
	gotSvc, _ := slim(true)(decode(t, svc))
	if s := gotSvc.(*Service); s.Labels != nil || !reflect.DeepEqual(s.Spec, ServiceSpec{ClusterIP: "10.96.0.9",
		ClusterIPs: []string{"10.96.0.9", "fd00::9"}, Ports: []ServicePort{{Port: 5432, Protocol: protocolTCP}}}) {
		t.Errorf("service decoded as %+v", s)
	}
	es := &discoveryv1.EndpointSlice{ObjectMeta: meta("db-x", nil, map[string]string{labelServiceName: "db", "other": "x"}),
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.9"}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "db-0"}}}}
	gotES, _ := slim(false)(decode(t, es))
	if e := gotES.(*EndpointSlice); !reflect.DeepEqual(e.Labels, map[string]string{labelServiceName: "db"}) ||
		!reflect.DeepEqual(e.Endpoints, []Endpoint{{TargetRef: &ObjectReference{Kind: "Pod", Name: "db-0"}}}) {
		t.Errorf("endpoint slice decoded as %+v", e)
	}
}

func TestNoCredentialsOutsideAPod(t *testing.T) {
	if _, err := (Config{}).restConfig(); err != ErrNoCredentials && !fileExists(ServiceAccountDir+"/token") {
		t.Errorf("restConfig without a token = %v, want ErrNoCredentials", err)
	}
	if _, err := (Config{TokenFile: "/nonexistent/token"}).restConfig(); err == nil {
		t.Error("a missing bearer_token file was accepted")
	}
	rc, err := (Config{URL: "https://10.0.0.1:6443", Token: "t"}).restConfig()
	if err != nil || rc.Host != "https://10.0.0.1:6443" || rc.BearerToken != "t" || !rc.TLSClientConfig.Insecure {
		t.Errorf("restConfig with a URL and token = %+v, %v", rc, err)
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func TestPodsAreListedInPages(t *testing.T) {
	var objs []runtime.Object
	for i := range 2*listPage + 1 {
		objs = append(objs, pod("p"+strconv.Itoa(i), "10.1."+strconv.Itoa(i/250)+"."+strconv.Itoa(i%250), nil))
	}
	ix, api := start(t, Config{}, objs...)
	api.mu.Lock()
	lists := api.lists["/api/v1/pods"]
	api.mu.Unlock()
	if ix.Pods() != 2*listPage+1 || lists != 3 {
		t.Errorf("%d pods cached in %d list requests, want %d in 3", ix.Pods(), lists, 2*listPage+1)
	}
	if got, ok := ix.ByAddr(netip.MustParseAddr("10.1.4.0"), AnyPort, "tcp"); !ok || got.Pod != "p1000" {
		t.Errorf("ByAddr(10.1.4.0) = %+v, %v", got, ok)
	}
}
