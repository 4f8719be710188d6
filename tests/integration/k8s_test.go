package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"dkebpf/tests/kubeapi"
)

// The "node" of TestKubernetesTagsOnBothSidesOfAServiceCall: two pods, each a network namespace routed
// from this one (as a CNI does), and a Service whose ClusterIP this namespace DNATs to the server pod in
// PREROUTING (as kube-proxy does), so conntrack in the collector's namespace holds the translation.
const (
	clientPodIP = "10.244.1.2"
	serverPodIP = "10.244.2.2"
	clusterIP   = "10.96.50.50"
	servicePort = 80
	serverPort  = 8080
)

// kubeProxy routes between the pods and DNATs the ClusterIP to the server pod until the test ends.
func kubeProxy(t *testing.T) {
	fwd := strings.TrimSpace(run(t, "sysctl", "-n", "net.ipv4.ip_forward"))
	run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	t.Cleanup(func() { exec.Command("sysctl", "-qw", "net.ipv4.ip_forward="+fwd).Run() })
	table := fmt.Sprintf("dkebpf_kproxy_%d", os.Getpid())
	run(t, "nft", "add", "table", "ip", table)
	t.Cleanup(func() { exec.Command("nft", "delete", "table", "ip", table).Run() })
	run(t, "nft", "add", "chain", "ip", table, "pre", "{ type nat hook prerouting priority -100 ; }")
	run(t, "nft", "add", "rule", "ip", table, "pre", "ip", "daddr", clusterIP, "tcp", "dport", strconv.Itoa(servicePort),
		"dnat", "to", serverPodIP+":"+strconv.Itoa(serverPort))
}

// kubeObjects creates what a cluster would hold for the two pods: the client is loadgen-0 of StatefulSet
// loadgen, the server a pod of Deployment api (through ReplicaSet api-7c9), behind Service api.
type kubeObjects struct {
	cs kubernetes.Interface
	ns string
}

func (k kubeObjects) ctx() context.Context { return context.Background() }

func podTemplate(app string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: app, Image: "localhost/" + app}}}}
}

func controlledBy(kind, name string, uid types.UID, api string) []metav1.OwnerReference {
	yes := true
	return []metav1.OwnerReference{{APIVersion: api, Kind: kind, Name: name, UID: uid, Controller: &yes}}
}

func (k kubeObjects) create(t *testing.T) {
	t.Helper()
	one := int32(1)
	sel := func(app string) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
	}
	sts, err := k.cs.AppsV1().StatefulSets(k.ns).Create(k.ctx(), &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "loadgen", Labels: map[string]string{"team": "qa"}},
		Spec:       appsv1.StatefulSetSpec{Replicas: &one, Selector: sel("loadgen"), Template: podTemplate("loadgen")}}, metav1.CreateOptions{})
	must(t, err)
	k.pod(t, "loadgen-0", "loadgen", clientPodIP, controlledBy("StatefulSet", "loadgen", sts.UID, "apps/v1"))

	dep, err := k.cs.AppsV1().Deployments(k.ns).Create(k.ctx(), &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "api", Labels: map[string]string{"team": "backend"}},
		Spec:       appsv1.DeploymentSpec{Replicas: &one, Selector: sel("api"), Template: podTemplate("api")}}, metav1.CreateOptions{})
	must(t, err)
	_, err = k.cs.AppsV1().ReplicaSets(k.ns).Create(k.ctx(), &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "api-7c9", Labels: map[string]string{"app": "api"}, OwnerReferences: controlledBy("Deployment", "api", dep.UID, "apps/v1")},
		Spec:       appsv1.ReplicaSetSpec{Replicas: &one, Selector: sel("api"), Template: podTemplate("api")}}, metav1.CreateOptions{})
	must(t, err)
	_, err = k.cs.CoreV1().Services(k.ns).Create(k.ctx(), &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "api"},
		Spec: corev1.ServiceSpec{ClusterIP: clusterIP, Selector: map[string]string{"app": "api"},
			Ports: []corev1.ServicePort{{Port: servicePort, Protocol: corev1.ProtocolTCP}}}}, metav1.CreateOptions{})
	must(t, err)
}

// apiPod creates the server pod name (of ReplicaSet api-7c9) and the Service's endpoints naming it.
func (k kubeObjects) apiPod(t *testing.T, name string) {
	rs, err := k.cs.AppsV1().ReplicaSets(k.ns).Get(k.ctx(), "api-7c9", metav1.GetOptions{})
	must(t, err)
	k.pod(t, name, "api", serverPodIP, controlledBy("ReplicaSet", "api-7c9", rs.UID, "apps/v1"))
	port, proto := int32(serverPort), corev1.ProtocolTCP
	slice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "api-x1", Labels: map[string]string{discoveryv1.LabelServiceName: "api"}},
		AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{{Port: &port, Protocol: &proto}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{serverPodIP}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: k.ns, Name: name}}}}
	k.cs.DiscoveryV1().EndpointSlices(k.ns).Delete(k.ctx(), slice.Name, metav1.DeleteOptions{}) // the previous pod's
	_, err = k.cs.DiscoveryV1().EndpointSlices(k.ns).Create(k.ctx(), slice, metav1.CreateOptions{})
	must(t, err)
}

// nodeAgentPod creates node-agent-x5z, a host-network pod of DaemonSet node-agent, and returns its UID.
func (k kubeObjects) nodeAgentPod(t *testing.T) types.UID {
	ds, err := k.cs.AppsV1().DaemonSets(k.ns).Create(k.ctx(), &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "node-agent", Labels: map[string]string{"team": "ops"}},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "node-agent"}},
			Template: podTemplate("node-agent")}}, metav1.CreateOptions{})
	must(t, err)
	return k.pod(t, "node-agent-x5z", "node-agent", "192.0.2.1", controlledBy("DaemonSet", "node-agent", ds.UID, "apps/v1"))
}

// pod creates a pod and sets its status as a kubelet would: running, at ip. It returns the pod's UID.
func (k kubeObjects) pod(t *testing.T, name, app, ip string, owners []metav1.OwnerReference) types.UID {
	t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": app}, OwnerReferences: owners}, Spec: podTemplate(app).Spec}
	p.Spec.HostNetwork = app == "node-agent"
	p, err := k.cs.CoreV1().Pods(k.ns).Create(k.ctx(), p, metav1.CreateOptions{})
	must(t, err)
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}, HostIP: "10.244.0.1"}
	_, err = k.cs.CoreV1().Pods(k.ns).UpdateStatus(k.ctx(), p, metav1.UpdateOptions{})
	must(t, err)
	return p.UID
}

// A client pod calls a Service's ClusterIP; kube-proxy's DNAT (here: nftables) sends it to the server pod.
// Both sides' points carry every k8s tag of both pods, the client's names the Service it called and the
// pod that answered (dst_nat_ip), and bytes are exact. The server pod is then deleted and another takes its
// IP: the next calls are tagged with the new pod.
func TestKubernetesTagsOnBothSidesOfAServiceCall(t *testing.T) {
	api := kubeapi.Start(t)
	ns := fmt.Sprintf("shop-%d", os.Getpid())
	api.CreateNamespace(t, ns)
	k := kubeObjects{cs: api.Client(), ns: ns}
	k.create(t)
	k.apiPod(t, "api-7c9-aaaaa")

	cli := routedNetns(t, "client", clientPodIP, "10.244.1.1")
	srv := routedNetns(t, "server", serverPodIP, "10.244.2.1")
	kubeProxy(t)

	// The collector starts while its API server is unreachable (a proxy not yet listening): points flow
	// without k8s tags, and the tags come once the API server answers.
	proxy := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	a := startAgent(t, fmt.Sprintf(`  kubernetes_url = "https://%s"
  bearer_token = %q
  workload_labels = ["team"]
  workload_label_prefix = "wl_"`, proxy, manifestServiceAccountToken(t, api)))

	var l net.Listener
	must(t, srv.sockets(func() (err error) {
		l, err = net.Listen("tcp4", net.JoinHostPort(serverPodIP, strconv.Itoa(serverPort)))
		return
	}))
	_, served, servedWG := serveAll(t, l)

	direct := &counted{}
	var c net.Conn
	must(t, cli.sockets(func() (err error) {
		c, err = net.Dial("tcp4", net.JoinHostPort(serverPodIP, strconv.Itoa(serverPort)))
		return
	}))
	must(t, exchange(c, direct, 700, 1700))
	c.Close()
	servedWG.Wait()
	untagged := settle(t, a, "API server unreachable: the client pod's side", totals{written: 700, read: 1700, established: 1, closed: 1}, func() flowSum {
		return sumFlows(a.query("netflow", "5m", "direction:outgoing", "dst_ip:"+serverPodIP))
	})
	for _, p := range untagged.points {
		if v, ok := p.Tags["src_k8s_pod_name"]; ok {
			t.Errorf("API server unreachable: src_k8s_pod_name=%q on %v", v, p.Tags)
		}
	}
	served.wrote.Store(0)
	served.read.Store(0)
	forward(t, proxy, strings.TrimPrefix(api.URL, "https://"))
	a.waitFor("the collector's kubernetes caches", 90*time.Second, func() bool { return strings.Contains(a.log.String(), "kubernetes: caches synced") })
	for _, line := range strings.Split(a.log.String(), "\n") {
		if strings.Contains(line, "kubernetes: caches synced") || strings.Contains(line, "client-go") {
			t.Log(line)
		}
	}

	round := func(what, serverPod string, conns int) {
		t.Helper()
		sent := &counted{}
		for i := 0; i < conns; i++ {
			var c net.Conn
			must(t, cli.sockets(func() (err error) {
				c, err = net.Dial("tcp4", net.JoinHostPort(clusterIP, strconv.Itoa(servicePort)))
				return
			}))
			must(t, exchange(c, sent, 1000+i*100, 3000+i*10))
			c.Close()
		}
		servedWG.Wait()
		want := totals{written: sent.wrote.Load(), read: sent.read.Load(), established: int64(conns), closed: int64(conns)}
		client := settle(t, a, what+": the client pod's side", want, func() flowSum {
			return sumFlows(a.query("netflow", "5m", "direction:outgoing", "dst_ip:"+clusterIP, "dst_k8s_pod_name:"+serverPod))
		})
		want.written, want.read = served.wrote.Load(), served.read.Load()
		server := settle(t, a, what+": the server pod's side", want, func() flowSum {
			return sumFlows(a.query("netflow", "5m", "direction:incoming", "src_ip:"+serverPodIP, "src_k8s_pod_name:"+serverPod))
		})
		loadgen := []string{ns, "loadgen-0", "N/A", "loadgen", "loadgen", "statefulset"}
		apiSide := []string{ns, serverPod, "api", "api", "api", "deployment"}
		for _, p := range client.points {
			checkK8sTags(t, what+" client", p, loadgen, apiSide, "qa")
			if p.Tags["dst_nat_ip"] != serverPodIP || p.Tags["dst_nat_port"] != strconv.Itoa(serverPort) {
				t.Errorf("%s client: dst_nat_ip:port = %s:%s, want %s:%d", what, p.Tags["dst_nat_ip"], p.Tags["dst_nat_port"], serverPodIP, serverPort)
			}
		}
		for _, p := range server.points {
			checkK8sTags(t, what+" server", p, apiSide, loadgen, "backend")
		}
		served.wrote.Store(0)
		served.read.Store(0)
	}
	round("first pod", "api-7c9-aaaaa", 3)

	must(t, k.cs.CoreV1().Pods(ns).Delete(k.ctx(), "api-7c9-aaaaa", metav1.DeleteOptions{}))
	k.apiPod(t, "api-7c9-bbbbb")
	time.Sleep(time.Second) // the watch event reaches the collector's informer
	round("the pod recreated with the same IP", "api-7c9-bbbbb", 2)

	// A process of a pod whose address says nothing (host network, 127.0.0.1) is its pod exactly: the
	// kubelet's cgroup of the pod, /kubepods/…/pod<uid>/, holds its container.
	uid := k.nodeAgentPod(t)
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer web.Close()
	port := web.Listener.Addr().(*net.TCPAddr).Port
	const curls = 3
	id := startContainerWith(t, fmt.Sprintf("dkebpf-k8s-%d", os.Getpid()), []string{"--cgroup-parent", "/kubepods/besteffort/pod" + string(uid)},
		"bash", "-c", fmt.Sprintf("for i in $(seq %d); do curl -sS -o /dev/null http://127.0.0.1:%d/; done; sleep 600", curls, port))
	var agentFlows []lpPoint
	a.waitFor("the node agent's curl flows", 20*time.Second, func() bool {
		agentFlows = a.query("netflow", "5m", "process_name:curl", "dst_port:"+strconv.Itoa(port))
		return sumFlows(agentFlows).closed == curls
	})
	time.Sleep(2 * interval)
	agentFlows = a.query("netflow", "5m", "process_name:curl", "dst_port:"+strconv.Itoa(port))
	if got := sumFlows(agentFlows); got.established != curls || got.closed != curls {
		t.Errorf("node agent's curl: %d established, %d closed, want %d", got.established, got.closed, curls)
	}
	na := []string{"N/A", "N/A", "N/A", "N/A", "N/A", "N/A"}
	for _, p := range agentFlows {
		checkK8sTags(t, "node agent's curl", p, []string{ns, "node-agent-x5z", "N/A", "node-agent", "node-agent", "daemonset"}, na, "ops")
		if p.Tags["container_id"] != id {
			t.Errorf("node agent's curl: container_id %q, want %s", p.Tags["container_id"], id)
		}
	}
}

// forward accepts on addr from now on and joins each connection to to, until the test ends.
func forward(t *testing.T, addr, to string) {
	l, err := net.Listen("tcp", addr)
	must(t, err)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", to)
				if err != nil {
					return
				}
				defer u.Close()
				go io.Copy(u, c)
				io.Copy(c, u)
			}()
		}
	}()
}

// manifestServiceAccountToken creates the manifest's ServiceAccount, ClusterRole and binding for real and
// returns a file holding a token of that account: the collector then reads only what the ClusterRole
// grants, so a permission missing from the manifest fails the test (informers that cannot list never sync).
func manifestServiceAccountToken(t *testing.T, api *kubeapi.Server) string {
	t.Helper()
	cs := api.Client()
	var sa corev1.ServiceAccount
	var role rbacv1.ClusterRole
	var binding rbacv1.ClusterRoleBinding
	docs := readManifest(t, filepath.Join(repoRoot, deployManifest))
	fromUnstructured(t, find(t, docs, "ServiceAccount"), &sa)
	fromUnstructured(t, find(t, docs, "ClusterRole"), &role)
	fromUnstructured(t, find(t, docs, "ClusterRoleBinding"), &binding)
	api.CreateNamespace(t, sa.Namespace)
	ctx := context.Background()
	_, err := cs.CoreV1().ServiceAccounts(sa.Namespace).Create(ctx, &sa, metav1.CreateOptions{})
	must(t, err)
	_, err = cs.RbacV1().ClusterRoles().Create(ctx, &role, metav1.CreateOptions{})
	must(t, err)
	_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, &binding, metav1.CreateOptions{})
	must(t, err)
	tr, err := cs.CoreV1().ServiceAccounts(sa.Namespace).CreateToken(ctx, sa.Name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	must(t, err)
	file := filepath.Join(t.TempDir(), "token")
	must(t, os.WriteFile(file, []byte(tr.Status.Token), 0o600))
	return file
}

var k8sTagNames = []string{"k8s_namespace", "k8s_pod_name", "k8s_service_name", "k8s_deployment_name", "k8s_workload_name", "k8s_workload_type"}

// checkK8sTags checks src_/dst_ and the mirrored client_/server_ k8s tags, sub_source and the src
// workload's label.
func checkK8sTags(t *testing.T, what string, p lpPoint, src, dst []string, team string) {
	t.Helper()
	cli, srv := src, dst
	if p.Tags["conn_side"] == "server" {
		cli, srv = dst, src
	}
	var bad []string
	for _, side := range []struct {
		prefix string
		want   []string
	}{{"src_", src}, {"dst_", dst}, {"client_", cli}, {"server_", srv}} {
		for i, n := range k8sTagNames {
			if got := p.Tags[side.prefix+n]; got != side.want[i] {
				bad = append(bad, fmt.Sprintf("%s%s=%q want %q", side.prefix, n, got, side.want[i]))
			}
		}
	}
	if p.Tags["sub_source"] != "K8s" {
		bad = append(bad, fmt.Sprintf("sub_source=%q", p.Tags["sub_source"]))
	}
	if p.Tags["wl_team"] != team {
		bad = append(bad, fmt.Sprintf("wl_team=%q want %q", p.Tags["wl_team"], team))
	}
	if len(bad) > 0 {
		t.Errorf("%s: %s\n%v", what, strings.Join(bad, "; "), p.Tags)
	}
}
