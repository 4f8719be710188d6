package integration

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"dkebpf/tests/kubeapi"
)

// What the collector's informers cost for a cluster of 10 000 pods (10 per ReplicaSet of a Deployment,
// 1 000 Services with an EndpointSlice each), against the same collector without Kubernetes: both
// collectors' peak resident memory (VmHWM), logged. The bound is a regression guard, well above today's.
const (
	clusterPods         = 10000
	podsPerReplicaSet   = 10
	clusterServices     = 1000
	clusterNamespaces   = 20
	informerMemoryBound = 150 << 20
)

func TestCollectorMemoryWith10000Pods(t *testing.T) {
	api := kubeapi.Start(t)
	t0 := time.Now()
	fillCluster(t, api)
	t.Logf("created %d pods (with status), %d replicasets and deployments, %d services and endpointslices in %s",
		clusterPods, clusterPods/podsPerReplicaSet, clusterServices, time.Since(t0).Round(time.Second))

	without := collectorPeakRSS(t, "")
	with := collectorPeakRSS(t, fmt.Sprintf("  kubernetes_url = %q\n  bearer_token_string = %q\n  workload_labels = [\"team\"]", api.URL, api.Token))
	t.Logf("collector VmHWM: %d MiB with Kubernetes enrichment of %d pods, %d MiB without: %d MiB for the informers",
		with>>20, clusterPods, without>>20, (with-without)>>20)
	if with-without > informerMemoryBound {
		t.Errorf("informers for %d pods cost %d MiB, over the %d MiB bound", clusterPods, (with-without)>>20, informerMemoryBound>>20)
	}
}

// collectorPeakRSS runs an agent with this ebpf.conf extra until its collector has flushed twice (and,
// with Kubernetes, synced every pod), and returns the collector's VmHWM in bytes.
func collectorPeakRSS(t *testing.T, extra string) int64 {
	a := startAgent(t, extra)
	defer a.stop()
	if extra != "" {
		want := fmt.Sprintf("caches synced\" pods=%d ", clusterPods)
		a.waitFor("all pods in the collector's caches", 3*time.Minute, func() bool { return strings.Contains(a.log.String(), want) })
		for _, line := range strings.Split(a.log.String(), "\n") {
			if strings.Contains(line, "caches synced") {
				t.Log(line)
			}
		}
	}
	time.Sleep(2 * interval)
	pid := a.collector().PID
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	must(t, err)
	var hwm int64 = -1
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "VmRSS:") || strings.HasPrefix(line, "VmHWM:") {
			t.Logf("collector (Kubernetes %v) %s", extra != "", strings.Join(strings.Fields(line), " "))
		}
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			must(t, err)
			hwm = kb << 10
		}
	}
	if hwm < 0 {
		t.Fatalf("no VmHWM in /proc/%d/status", pid)
	}
	return hwm
}

// fillCluster creates the objects with 32 concurrent writers.
func fillCluster(t *testing.T, api *kubeapi.Server) {
	rc := api.Config()
	rc.QPS, rc.Burst = 5000, 10000
	cs, err := kubernetes.NewForConfig(rc)
	must(t, err)
	for n := 0; n < clusterNamespaces; n++ {
		api.CreateNamespace(t, fmt.Sprintf("scale-%d", n))
	}
	jobs := make(chan func(context.Context) error)
	var wg sync.WaitGroup
	var once sync.Once
	var firstErr error
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for job := range jobs {
				if err := job(context.Background()); err != nil {
					once.Do(func() { firstErr = err })
				}
			}
		}()
	}
	for rs := 0; rs < clusterPods/podsPerReplicaSet; rs++ {
		jobs <- func(ctx context.Context) error { return createReplicaSet(ctx, cs, rs) }
	}
	for s := 0; s < clusterServices; s++ {
		jobs <- func(ctx context.Context) error { return createService(ctx, cs, s) }
	}
	close(jobs)
	wg.Wait()
	must(t, firstErr)
}

func scaleNamespace(i int) string { return fmt.Sprintf("scale-%d", i%clusterNamespaces) }

// createReplicaSet creates Deployment app-<i>, its ReplicaSet and its pods, each running at 10.<i>.<j>.
func createReplicaSet(ctx context.Context, cs kubernetes.Interface, i int) error {
	ns, name := scaleNamespace(i), fmt.Sprintf("app-%d", i)
	labels := map[string]string{"app": name, "team": "t" + strconv.Itoa(i%7), "tier": "backend", "env": "prod",
		"version": "v1.2.3", "app.kubernetes.io/part-of": "shop"}
	tmpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: scalePodSpec(name)}
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}}
	dep, err := cs.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: appsv1.DeploymentSpec{Selector: sel, Template: tmpl}}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	rs, err := cs.AppsV1().ReplicaSets(ns).Create(ctx, &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-5d8f7c", Labels: labels, OwnerReferences: controlledBy("Deployment", name, dep.UID, "apps/v1")},
		Spec:       appsv1.ReplicaSetSpec{Selector: sel, Template: tmpl}}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	for j := 0; j < podsPerReplicaSet; j++ {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-5d8f7c-%05d", name, j), Labels: labels,
			OwnerReferences: controlledBy("ReplicaSet", rs.Name, rs.UID, "apps/v1")}, Spec: scalePodSpec(name)}
		p, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		ip := fmt.Sprintf("10.%d.%d.%d", 1+i/250, i%250, j+1)
		p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}, HostIP: "192.168.0.10",
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
		if _, err := cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	return nil
}

// scalePodSpec is a typical pod: an app container and a sidecar, with ports, env and resources.
func scalePodSpec(app string) corev1.PodSpec {
	res := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("512Mi")}}
	env := []corev1.EnvVar{{Name: "APP", Value: app}, {Name: "LOG_LEVEL", Value: "info"}, {Name: "PORT", Value: "8080"},
		{Name: "DB_HOST", Value: "db.shop.svc.cluster.local"}, {Name: "FEATURE_FLAGS", Value: "a,b,c"}}
	return corev1.PodSpec{Containers: []corev1.Container{
		{Name: app, Image: "registry.example.com/shop/" + app + ":v1.2.3", Env: env, Resources: res,
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "metrics", ContainerPort: 9090}}},
		{Name: "proxy", Image: "registry.example.com/mesh/proxy:1.20", Env: env[:2], Resources: res,
			Ports: []corev1.ContainerPort{{Name: "admin", ContainerPort: 15000}}},
	}}
}

// createService creates Service svc-<i> selecting app-<i>, and its EndpointSlice naming the app's pods.
func createService(ctx context.Context, cs kubernetes.Interface, i int) error {
	ns, app := scaleNamespace(i), fmt.Sprintf("app-%d", i)
	svc, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("svc-%d", i)},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": app}, Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}}},
		metav1.CreateOptions{})
	if err != nil {
		return err
	}
	port, proto := int32(8080), corev1.ProtocolTCP
	slice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: svc.Name + "-x1", Labels: map[string]string{discoveryv1.LabelServiceName: svc.Name}},
		AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{{Port: &port, Protocol: &proto}}}
	for j := 0; j < podsPerReplicaSet; j++ {
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.%d.%d.%d", 1+i/250, i%250, j+1)},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: fmt.Sprintf("%s-5d8f7c-%05d", app, j)}})
	}
	_, err = cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice, metav1.CreateOptions{})
	return err
}
