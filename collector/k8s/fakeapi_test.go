package k8s

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
)

// fakeScheme holds k8s.io/api's full types, which the tests' objects are, so the index decodes the JSON
// the real types write.
var fakeScheme = sync.OnceValue(func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme, discoveryv1.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
})

// fakeAPI is an API server in memory speaking the API's JSON: lists (paged by limit and continue) and
// watches of the resources the index reads, in every namespace, and changes made by the test.
type fakeAPI struct {
	t       *testing.T
	srv     *httptest.Server
	mu      sync.Mutex
	rv      int
	objs    map[string]map[string]runtime.Object // by collection path, then namespace/name
	events  []fakeEvent
	changed chan struct{} // closed at each change
	done    chan struct{}
	lists   map[string]int // requests per collection path
}

type fakeEvent struct {
	path string
	rv   int
	typ  watch.EventType
	obj  runtime.Object
}

func newFakeAPI(t *testing.T, objs ...runtime.Object) *fakeAPI {
	a := &fakeAPI{t: t, objs: map[string]map[string]runtime.Object{}, changed: make(chan struct{}),
		done: make(chan struct{}), lists: map[string]int{}}
	for _, o := range objs {
		a.put(o)
	}
	a.srv = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(func() { close(a.done); a.srv.Close() })
	return a
}

// path is the collection an object belongs to: /api/v1/pods, /apis/apps/v1/replicasets, ….
func (a *fakeAPI) path(o runtime.Object) string {
	gvks, _, err := fakeScheme().ObjectKinds(o)
	if err != nil {
		a.t.Fatal(err)
	}
	gvk := gvks[0]
	o.GetObjectKind().SetGroupVersionKind(gvk)
	res := strings.ToLower(gvk.Kind) + "s"
	if gvk.Group == "" {
		return "/api/" + gvk.Version + "/" + res
	}
	return "/apis/" + gvk.Group + "/" + gvk.Version + "/" + res
}

func (a *fakeAPI) change(typ watch.EventType, o runtime.Object) {
	o = o.DeepCopyObject()
	p := a.path(o)
	m, _ := apimeta.Accessor(o)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.rv++
	m.SetResourceVersion(strconv.Itoa(a.rv))
	key := m.GetNamespace() + "/" + m.GetName()
	if a.objs[p] == nil {
		a.objs[p] = map[string]runtime.Object{}
	}
	if typ == watch.Deleted {
		delete(a.objs[p], key)
	} else {
		a.objs[p][key] = o
	}
	a.events = append(a.events, fakeEvent{p, a.rv, typ, o})
	close(a.changed)
	a.changed = make(chan struct{})
}

// put creates or updates an object.
func (a *fakeAPI) put(o runtime.Object) {
	m, _ := apimeta.Accessor(o)
	a.mu.Lock()
	_, exists := a.objs[a.path(o.DeepCopyObject())][m.GetNamespace()+"/"+m.GetName()]
	a.mu.Unlock()
	typ := watch.Added
	if exists {
		typ = watch.Modified
	}
	a.change(typ, o)
}

func (a *fakeAPI) delete(o runtime.Object) { a.change(watch.Deleted, o) }

func (a *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if r.Method != http.MethodGet || q.Get("sendInitialEvents") == "true" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
			Status: metav1.StatusFailure, Reason: metav1.StatusReasonBadRequest, Code: http.StatusBadRequest, Message: "not supported here"})
		return
	}
	if q.Get("watch") == "true" {
		a.watch(w, r)
		return
	}
	a.list(w, r)
}

func (a *fakeAPI) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	a.mu.Lock()
	a.lists[r.URL.Path]++
	var keys []string
	for k := range a.objs[r.URL.Path] {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	from, _ := strconv.Atoi(q.Get("continue"))
	keys = keys[min(from, len(keys)):]
	next := ""
	if limit, _ := strconv.Atoi(q.Get("limit")); limit > 0 && limit < len(keys) {
		keys, next = keys[:limit], strconv.Itoa(from+limit)
	}
	items := make([]json.RawMessage, 0, len(keys))
	for _, k := range keys {
		b, err := json.Marshal(a.objs[r.URL.Path][k])
		if err != nil {
			a.t.Error(err)
		}
		items = append(items, b)
	}
	rv := a.rv
	a.mu.Unlock()
	i := strings.LastIndexByte(r.URL.Path, '/')
	gv := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path[:i], "/api/"), "/apis/")
	kind := ""
	for gvk := range fakeScheme().AllKnownTypes() {
		if gvk.GroupVersion().String() == gv && strings.ToLower(gvk.Kind)+"s" == r.URL.Path[i+1:] {
			kind = gvk.Kind + "List"
		}
	}
	if kind == "" {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"apiVersion": gv, "kind": kind,
		"metadata": metav1.ListMeta{ResourceVersion: strconv.Itoa(rv), Continue: next}, "items": items})
}

func (a *fakeAPI) watch(w http.ResponseWriter, r *http.Request) {
	since, _ := strconv.Atoi(r.URL.Query().Get("resourceVersion"))
	timeout := time.Minute
	if s, err := strconv.Atoi(r.URL.Query().Get("timeoutSeconds")); err == nil && s > 0 {
		timeout = time.Duration(s) * time.Second
	}
	end := time.After(timeout)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
	enc := json.NewEncoder(w)
	for {
		a.mu.Lock()
		var send []fakeEvent
		for _, e := range a.events {
			if e.path == r.URL.Path && e.rv > since {
				send = append(send, e)
			}
		}
		changed := a.changed
		a.mu.Unlock()
		for _, e := range send {
			if err := enc.Encode(map[string]any{"type": e.typ, "object": e.obj}); err != nil {
				return
			}
			since = e.rv
		}
		w.(http.Flusher).Flush()
		select {
		case <-changed:
		case <-r.Context().Done():
			return
		case <-a.done:
			return
		case <-end:
			return
		}
	}
}
