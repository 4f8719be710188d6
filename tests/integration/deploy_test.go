package integration

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"dkebpf/options"
	"dkebpf/tests/kubeapi"
)

// deployManifest is the DaemonSet manifest users apply.
const deployManifest = "deploy/datakit-ebpf.yaml"

// enrichmentReads is every (API group, resource) Kubernetes enrichment reads: the ClusterRole grants these,
// read-only, and nothing else.
var enrichmentReads = []string{
	"/pods", "/services",
	"discovery.k8s.io/endpointslices",
	"apps/replicasets", "apps/deployments", "apps/statefulsets", "apps/daemonsets",
	"batch/jobs", "batch/cronjobs",
}

func TestDeployManifestIsAcceptedByARealAPIServer(t *testing.T) {
	srv := kubeapi.Start(t)
	docs := readManifest(t, filepath.Join(repoRoot, deployManifest))
	var kinds []string
	for _, d := range docs {
		kinds = append(kinds, d.GetKind())
	}
	want := []string{"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DaemonSet"}
	if !slices.Equal(kinds, want) {
		t.Fatalf("%s documents: %v, want %v", deployManifest, kinds, want)
	}

	dyn, err := dynamic.NewForConfig(srv.Config())
	must(t, err)
	dc, err := discovery.NewDiscoveryClientForConfig(srv.Config())
	must(t, err)
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	create := func(t *testing.T, obj *unstructured.Unstructured, dryRun bool) error {
		t.Helper()
		gvk := obj.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("%s: %v", gvk, err)
		}
		var r dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			r = dyn.Resource(m.Resource).Namespace(obj.GetNamespace())
		}
		// Strict: an unknown or duplicated field is an error, not a warning, so a typo cannot pass.
		opts := metav1.CreateOptions{FieldValidation: "Strict"}
		if dryRun {
			opts.DryRun = []string{metav1.DryRunAll}
		}
		_, err = r.Create(t.Context(), obj, opts)
		return err
	}

	// Objects in a namespace are refused, even in a dry run, while the namespace does not exist: the
	// Namespace is created for real (and strictly validated), everything else is a dry run.
	for _, d := range docs {
		if d.GetKind() == "Namespace" {
			if err := create(t, d, false); err != nil {
				t.Fatalf("create Namespace %s: %v", d.GetName(), err)
			}
		}
	}

	t.Run("every document passes a strict server-side dry run", func(t *testing.T) {
		for _, d := range docs {
			if d.GetKind() == "Namespace" {
				continue
			}
			if err := create(t, d, true); err != nil {
				t.Errorf("dry run of %s %s: %v", d.GetKind(), d.GetName(), err)
			}
		}
	})

	t.Run("a misspelt field is refused", func(t *testing.T) {
		ds := find(t, docs, "DaemonSet").DeepCopy()
		spec := ds.Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
		if _, ok := spec["hostPID"]; !ok {
			t.Fatal("the DaemonSet's pod spec has no hostPID to misspell")
		}
		spec["hostPid"] = spec["hostPID"]
		delete(spec, "hostPID")
		err := create(t, ds, true)
		if err == nil {
			t.Fatal("a DaemonSet with hostPid (for hostPID) passed the strict dry run")
		}
		if !apierrors.IsBadRequest(err) || !strings.Contains(err.Error(), "hostPid") {
			t.Errorf("misspelt field: %v, want 400 BadRequest naming hostPid", err)
		}
		t.Logf("refused as it should be: %v", err)
	})

	t.Run("the ClusterRole reads exactly what enrichment reads", func(t *testing.T) {
		var role rbacv1.ClusterRole
		fromUnstructured(t, find(t, docs, "ClusterRole"), &role)
		var got []string
		for _, r := range role.Rules {
			if v := slices.Sorted(slices.Values(r.Verbs)); !slices.Equal(v, []string{"get", "list", "watch"}) {
				t.Errorf("rule %v: verbs %v, want exactly get, list, watch", r, r.Verbs)
			}
			if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
				t.Errorf("rule %v: resourceNames or nonResourceURLs, want neither", r)
			}
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					got = append(got, g+"/"+res)
				}
			}
		}
		slices.Sort(got)
		if want := slices.Sorted(slices.Values(enrichmentReads)); !slices.Equal(got, want) {
			t.Errorf("ClusterRole grants %v, want exactly %v", got, want)
		}
	})

	t.Run("the DaemonSet runs as the bound ServiceAccount, unprivileged", func(t *testing.T) {
		var ds appsv1.DaemonSet
		fromUnstructured(t, find(t, docs, "DaemonSet"), &ds)
		var binding rbacv1.ClusterRoleBinding
		fromUnstructured(t, find(t, docs, "ClusterRoleBinding"), &binding)
		sa := find(t, docs, "ServiceAccount")
		pod := ds.Spec.Template.Spec
		if pod.ServiceAccountName != sa.GetName() || ds.Namespace != sa.GetNamespace() {
			t.Errorf("DaemonSet %s/%s runs as %q, want the manifest's ServiceAccount %s/%s",
				ds.Namespace, ds.Name, pod.ServiceAccountName, sa.GetNamespace(), sa.GetName())
		}
		wantSubject := rbacv1.Subject{Kind: "ServiceAccount", Name: sa.GetName(), Namespace: sa.GetNamespace()}
		if binding.RoleRef.Name != "datakit-ebpf" || !slices.Equal(binding.Subjects, []rbacv1.Subject{wantSubject}) {
			t.Errorf("ClusterRoleBinding binds %v to %v, want ClusterRole datakit-ebpf to %v", binding.RoleRef, binding.Subjects, wantSubject)
		}
		if !pod.HostPID {
			t.Error("hostPID is not set: the collector could not see the host's processes")
		}
		if len(pod.Containers) != 1 {
			t.Fatalf("%d containers, want 1", len(pod.Containers))
		}
		sc := pod.Containers[0].SecurityContext
		if sc == nil || sc.Capabilities == nil {
			t.Fatal("the container has no securityContext.capabilities")
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Error("the container is privileged")
		}
		if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
			t.Errorf("capabilities dropped: %v, want [ALL]", sc.Capabilities.Drop)
		}
	})

	t.Run("every ENV_INPUT_EBPF_ variable is an option with a valid value", func(t *testing.T) {
		var ds appsv1.DaemonSet
		fromUnstructured(t, find(t, docs, "DaemonSet"), &ds)
		n := 0
		for _, e := range ds.Spec.Template.Spec.Containers[0].Env {
			if !strings.HasPrefix(e.Name, "ENV_INPUT_EBPF_") {
				continue
			}
			n++
			o := optionByEnv(e.Name)
			if o == nil {
				t.Errorf("%s is not an option (options.Table)", e.Name)
				continue
			}
			// As the ebpf input reads it (ReadEnv), then checks it (Init).
			words, err := o.FromEnv(e.Value)
			if err == nil {
				_, err = o.Value(words)
			}
			if err != nil {
				t.Errorf("%s=%q: %v", e.Name, e.Value, err)
			}
		}
		if n == 0 {
			t.Error("the DaemonSet sets no ENV_INPUT_EBPF_ variable")
		}
	})

	t.Run("RBAC lets the ServiceAccount read enrichment's objects and nothing more", func(t *testing.T) {
		for _, kind := range []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding"} {
			if err := create(t, find(t, docs, kind), false); err != nil {
				t.Fatalf("create %s: %v", kind, err)
			}
		}
		sa := find(t, docs, "ServiceAccount")
		sars := srv.Client().AuthorizationV1().SubjectAccessReviews()
		user := "system:serviceaccount:" + sa.GetNamespace() + ":" + sa.GetName()
		allowed := func(verb, groupResource string) bool {
			group, resource, _ := strings.Cut(groupResource, "/")
			review, err := sars.Create(t.Context(), &authzv1.SubjectAccessReview{
				Spec: authzv1.SubjectAccessReviewSpec{
					User:               user,
					Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + sa.GetNamespace(), "system:authenticated"},
					ResourceAttributes: &authzv1.ResourceAttributes{Verb: verb, Group: group, Resource: resource},
				},
			}, metav1.CreateOptions{})
			must(t, err)
			return review.Status.Allowed
		}
		// The API server's RBAC authorizer reads roles and bindings from its own informers, so a binding just
		// created takes a moment to count: wait until the first grant shows (CI once asked 90 ms too early).
		deadline := time.Now().Add(10 * time.Second)
		for !allowed("get", enrichmentReads[0]) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		for _, gr := range enrichmentReads {
			for _, verb := range []string{"get", "list", "watch"} {
				if !allowed(verb, gr) {
					t.Errorf("%s may not %s %s", user, verb, gr)
				}
			}
			for _, verb := range []string{"create", "update", "patch", "delete"} {
				if allowed(verb, gr) {
					t.Errorf("%s may %s %s", user, verb, gr)
				}
			}
		}
		for _, gr := range []string{"/secrets", "/configmaps", "/nodes", "/endpoints", "rbac.authorization.k8s.io/clusterroles"} {
			if allowed("list", gr) {
				t.Errorf("%s may list %s", user, gr)
			}
		}
	})
}

// readManifest decodes every non-empty document of a multi-document YAML file.
func readManifest(t *testing.T, path string) []*unstructured.Unstructured {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	var out []*unstructured.Unstructured
	for {
		var raw runtime.RawExtension
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", path, len(out)+1, err)
		}
		if raw.Raw = bytes.TrimSpace(raw.Raw); len(raw.Raw) == 0 || string(raw.Raw) == "null" {
			continue
		}
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(raw.Raw); err != nil {
			t.Fatalf("%s: document %d: %v", path, len(out)+1, err)
		}
		out = append(out, obj)
	}
	return out
}

// find returns the manifest's only document of a kind.
func find(t *testing.T, docs []*unstructured.Unstructured, kind string) *unstructured.Unstructured {
	t.Helper()
	var found *unstructured.Unstructured
	for _, d := range docs {
		if d.GetKind() == kind {
			if found != nil {
				t.Fatalf("more than one %s in the manifest", kind)
			}
			found = d
		}
	}
	if found == nil {
		t.Fatalf("no %s in the manifest", kind)
	}
	return found
}

func fromUnstructured(t *testing.T, u *unstructured.Unstructured, into any) {
	t.Helper()
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, into, true); err != nil {
		t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
	}
}

// optionByEnv is the option an ENV_INPUT_EBPF_* (or legacy) variable sets, or nil.
func optionByEnv(name string) *options.Option {
	for i := range options.Table {
		if slices.Contains(options.Table[i].Env, name) {
			return &options.Table[i]
		}
	}
	return nil
}
