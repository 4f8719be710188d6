// Package k8s names the Kubernetes pod, service and workload behind an address or a pod UID, for the
// enrichment stage (DataKit's k8s tags, ref §3.6). It keeps client-go shared informers of what it reads:
// the API server is watched in the background, lookups read the informers' caches and never wait for it,
// so a slow or absent API server leaves points untagged, never late.
//
// It reads the API through one REST client per API group/version over a scheme of only the kinds it reads,
// as small types of their JSON (types.go), not client-go's clientset, informer factory and k8s.io/api's
// types: those register every API group of Kubernetes at process start and link in the protobuf code of
// every type, megabytes of resident memory a collector without Kubernetes would pay too.
package k8s

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/klog/v2"
)

// ServiceAccountDir holds the pod's service-account token and the cluster's CA certificate.
const ServiceAccountDir = "/run/secrets/kubernetes.io/serviceaccount"

// DefaultURL is DataKit's API server address when neither kubernetes_url nor the in-cluster environment
// (KUBERNETES_SERVICE_HOST/PORT, set in every pod) names one.
const DefaultURL = "https://kubernetes.default:443"

// Config is how to reach the API server and what to tag.
type Config struct {
	URL            string   // kubernetes_url; "": the in-cluster address, else DefaultURL
	Token          string   // bearer_token_string; wins over TokenFile
	TokenFile      string   // bearer_token; "": the service account's token
	WorkloadLabels []string // workload_labels: labels of the src workload added as tags
	LabelPrefix    string   // workload_label_prefix: prepended to those tags' keys
	Logger         *slog.Logger
}

// ErrNoCredentials: no token was given and the service account's is absent, so this is not a pod with
// an API server to ask (DataKit starts its client only if it can build one).
var ErrNoCredentials = errors.New("no bearer token: neither bearer_token_string nor a token file")

// restConfig builds the client configuration. TLS is verified with the service account's CA when it is
// there (and the URL is the in-cluster one); otherwise, as DataKit does, it is not verified.
func (c Config) restConfig() (*rest.Config, error) {
	// JSON, decoded into types of the few fields read: every other field is skipped as it is read.
	rc := &rest.Config{Host: c.URL, BearerToken: c.Token, UserAgent: "datakit-ebpf", QPS: 20, Burst: 40,
		ContentConfig: rest.ContentConfig{ContentType: runtime.ContentTypeJSON}}
	inCluster := c.URL == ""
	if inCluster {
		rc.Host = DefaultURL
		if h, p := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT"); h != "" && p != "" {
			rc.Host = "https://" + h + ":" + p
		}
	}
	if c.Token == "" {
		f := c.TokenFile
		if f == "" {
			f = filepath.Join(ServiceAccountDir, "token")
		}
		if _, err := os.Stat(f); err != nil {
			if c.TokenFile == "" {
				return nil, ErrNoCredentials
			}
			return nil, fmt.Errorf("bearer_token: %w", err)
		}
		rc.BearerTokenFile = f // re-read by client-go as the kubelet rotates it
	}
	ca := filepath.Join(ServiceAccountDir, "ca.crt")
	if _, err := os.Stat(ca); err == nil && inCluster {
		rc.TLSClientConfig.CAFile = ca
	} else {
		rc.TLSClientConfig.Insecure = true
	}
	return rc, nil
}

// Index answers lookups from the informers' caches.
type Index struct {
	cfg    Config
	warned sync.Map // reflector name -> time of its last warning
	pods   cache.Indexer
	svcs   cache.Indexer
	slices cache.Indexer
	owners map[string]cache.Indexer // by kind: ReplicaSet, Deployment, StatefulSet, DaemonSet, Job, CronJob
	synced []cache.InformerSynced
	infs   []cache.SharedIndexInformer
}

// Start connects to the API server and starts the informers in the background until ctx ends. It returns
// at once: the caches fill as the API server answers, and lookups see what has arrived so far.
func Start(ctx context.Context, cfg Config) (*Index, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	rc, err := cfg.restConfig()
	if err != nil {
		return nil, err
	}
	cl, err := newClients(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client for %s: %w", rc.Host, err)
	}
	klog.SetSlogLogger(cfg.Logger.With("component", "client-go"))
	ix := newIndex(cfg, cl)
	cfg.Logger.Info("kubernetes: watching the API server", "url", rc.Host)
	ix.run(ctx)
	go ix.logSynced(ctx)
	return ix, nil
}

// apiScheme holds the kinds read here, and nothing else.
var apiScheme = sync.OnceValue(func() *runtime.Scheme {
	s := runtime.NewScheme()
	addTypes(s)
	return s
})

// clients reads the API groups the index watches: one REST client per group/version, sharing one
// transport and one rate limit (as a clientset's do).
type clients struct {
	core, apps, batch, discovery rest.Interface
	params                       runtime.ParameterCodec
	noWatchList                  bool // the server cannot stream a list as watch events (a test's)
}

// IsWatchListSemanticsUnSupported tells client-go's reflectors (through
// cache.ToListWatcherWithWatchListSemantics) whether to try streaming the initial list (WatchList) first.
func (c *clients) IsWatchListSemanticsUnSupported() bool { return c.noWatchList }

func newClients(rc *rest.Config) (*clients, error) {
	cfg := *rc
	hc, err := rest.HTTPClientFor(&cfg)
	if err != nil {
		return nil, err
	}
	// One limiter for the four clients, at restConfig's QPS and burst.
	cfg.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(cfg.QPS, cfg.Burst)
	s := apiScheme()
	codecs := serializer.NewCodecFactory(s).WithoutConversion()
	client := func(gv schema.GroupVersion, apiPath string) (rest.Interface, error) {
		c := cfg
		c.GroupVersion, c.APIPath, c.NegotiatedSerializer = &gv, apiPath, codecs
		return rest.RESTClientForConfigAndClient(&c, hc)
	}
	cl := &clients{params: runtime.NewParameterCodec(s)}
	for _, g := range []struct {
		c       *rest.Interface
		gv      schema.GroupVersion
		apiPath string
	}{
		{&cl.core, coreV1, "/api"},
		{&cl.apps, appsV1, "/apis"},
		{&cl.batch, batchV1, "/apis"},
		{&cl.discovery, discoveryV1, "/apis"},
	} {
		if *g.c, err = client(g.gv, g.apiPath); err != nil {
			return nil, err
		}
	}
	return cl, nil
}

// listWatch lists and watches a resource in every namespace, as client-go's typed clients do.
func (c *clients) listWatch(rc rest.Interface, resource string) *cache.ListWatch {
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			return c.request(rc, resource, &opts).Do(ctx).Get()
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.Watch = true
			return c.request(rc, resource, &opts).Watch(ctx)
		},
	}
}

func (c *clients) request(rc rest.Interface, resource string, opts *metav1.ListOptions) *rest.Request {
	var timeout time.Duration
	if opts.TimeoutSeconds != nil {
		timeout = time.Duration(*opts.TimeoutSeconds) * time.Second
	}
	return rc.Get().Resource(resource).VersionedParams(opts, c.params).Timeout(timeout)
}

// newIndex makes the informers reading through cl (a test server's in tests) and indexes their caches.
func newIndex(cfg Config, cl *clients) *Index {
	ix := &Index{cfg: cfg, owners: map[string]cache.Indexer{}}
	keepLabels := len(cfg.WorkloadLabels) > 0
	trim := slim(keepLabels)
	add := func(lw *cache.ListWatch, obj runtime.Object, idx cache.Indexers) cache.Indexer {
		inf := cache.NewSharedIndexInformer(cache.ToListWatcherWithWatchListSemantics(lw, cl), obj, 0,
			cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
		must(inf.SetTransform(trim))
		must(inf.SetWatchErrorHandlerWithContext(func(_ context.Context, r *cache.Reflector, err error) { ix.watchFailed(r, err) }))
		if idx != nil {
			must(inf.AddIndexers(idx))
		}
		ix.synced = append(ix.synced, inf.HasSynced)
		ix.infs = append(ix.infs, inf)
		return inf.GetIndexer()
	}
	ix.pods = add(pagedPods(cl, trim), &Pod{}, cache.Indexers{byUID: podUID, byIP: podIPs})
	ix.svcs = add(cl.listWatch(cl.core, "services"), &Service{}, cache.Indexers{byIP: serviceIPs})
	ix.slices = add(cl.listWatch(cl.discovery, "endpointslices"), &EndpointSlice{}, cache.Indexers{byPod: slicePods, byService: sliceService})
	ix.owners["ReplicaSet"] = add(cl.listWatch(cl.apps, "replicasets"), &Workload{}, nil)
	ix.owners["Job"] = add(cl.listWatch(cl.batch, "jobs"), &Workload{}, nil)
	// The workloads themselves are read only for their labels.
	if keepLabels {
		ix.owners["Deployment"] = add(cl.listWatch(cl.apps, "deployments"), &Workload{}, nil)
		ix.owners["StatefulSet"] = add(cl.listWatch(cl.apps, "statefulsets"), &Workload{}, nil)
		ix.owners["DaemonSet"] = add(cl.listWatch(cl.apps, "daemonsets"), &Workload{}, nil)
		ix.owners["CronJob"] = add(cl.listWatch(cl.batch, "cronjobs"), &Workload{}, nil)
	}
	return ix
}

// run starts the informers until ctx ends.
func (ix *Index) run(ctx context.Context) {
	for _, inf := range ix.infs {
		go inf.RunWithContext(ctx)
	}
}

// watchFailed says why the API server could not be listed or watched (down, a bad token, a permission
// missing), at most once a minute per resource: client-go retries with backoff meanwhile.
func (ix *Index) watchFailed(r *cache.Reflector, err error) {
	now := time.Now()
	if last, ok := ix.warned.Load(r.TypeDescription()); ok && now.Sub(last.(time.Time)) < time.Minute {
		return
	}
	ix.warned.Store(r.TypeDescription(), now)
	ix.cfg.Logger.Warn("kubernetes: list/watch failed, retrying", "resource", r.TypeDescription(), "err", err)
}

// logSynced says when the caches first hold the whole cluster (until then lookups may miss), and warns
// while they do not: client-go retries an unreachable API server quietly.
func (ix *Index) logSynced(ctx context.Context) {
	t0 := time.Now()
	for wait := 30 * time.Second; ; wait = time.Minute {
		waitCtx, cancel := context.WithTimeout(ctx, wait)
		synced := cache.WaitForCacheSync(waitCtx.Done(), ix.synced...)
		cancel()
		switch {
		case synced:
			ix.cfg.Logger.Info("kubernetes: caches synced", "pods", ix.Pods(), "services", len(ix.svcs.ListKeys()),
				"took", time.Since(t0).Round(time.Millisecond))
			return
		case ctx.Err() != nil:
			return
		}
		ix.cfg.Logger.Warn("kubernetes: not synced yet: is the API server reachable, and the token allowed to list? points go untagged meanwhile",
			"waited", time.Since(t0).Round(time.Second))
	}
}

// Pods is how many pods the cache holds.
func (ix *Index) Pods() int { return len(ix.pods.ListKeys()) }

// Synced reports whether every informer has listed once.
func (ix *Index) Synced() bool {
	for _, s := range ix.synced {
		if !s() {
			return false
		}
	}
	return true
}

// listPage is how many pods one list request returns.
const listPage = 500

// pagedPods lists and watches the pods, except that the first list (and any relist) is fetched in pages,
// each page cut down by slim before the next: a cluster's whole list of full pods (about 20 KB each
// decoded, with managed fields and specs) is never in memory at once. An API server that streams the
// initial list (WatchList) is used that way first, which is bounded too.
func pagedPods(cl *clients, slim cache.TransformFunc) *cache.ListWatch {
	lw := cl.listWatch(cl.core, "pods")
	lw.ListWithContextFunc = func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
		// Pages need a consistent read: the watch cache's "any version" (0) ignores limits.
		opts.ResourceVersion, opts.ResourceVersionMatch, opts.Limit = "", "", listPage
		all := &PodList{}
		for {
			page := &PodList{}
			if err := cl.request(cl.core, "pods", &opts).Do(ctx).Into(page); err != nil {
				return nil, err
			}
			for i := range page.Items {
				p, _ := slim(&page.Items[i])
				all.Items = append(all.Items, *p.(*Pod))
			}
			all.ResourceVersion = page.ResourceVersion
			if page.Continue == "" {
				return all, nil
			}
			opts.Continue = page.Continue
		}
	}
	return lw
}

func must(err error) {
	if err != nil {
		panic(err) // only when called after the informer started: a programming error
	}
}

// slim keeps of each object's metadata what lookups read (the types hold nothing else), so 10 000 pods
// cost little memory. Labels are kept only when workload labels are asked for, and of an EndpointSlice
// only the one naming its service. It changes the object in place, as client-go allows.
func slim(keepLabels bool) cache.TransformFunc {
	return func(obj any) (any, error) {
		a, ok := obj.(metav1.ObjectMetaAccessor)
		if !ok {
			return obj, nil // a deletion tombstone
		}
		m := a.GetObjectMeta().(*metav1.ObjectMeta)
		var labels map[string]string
		switch o := obj.(type) {
		case *Pod:
			o.Spec.Containers = slices.DeleteFunc(o.Spec.Containers, func(c Container) bool { return len(c.Ports) == 0 })
			if keepLabels {
				labels = m.Labels
			}
		case *Workload:
			if keepLabels {
				labels = m.Labels
			}
		case *EndpointSlice:
			labels = map[string]string{labelServiceName: m.Labels[labelServiceName]}
		}
		*m = metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion,
			CreationTimestamp: m.CreationTimestamp, DeletionTimestamp: m.DeletionTimestamp, OwnerReferences: m.OwnerReferences,
			Labels: labels}
		return obj, nil
	}
}
