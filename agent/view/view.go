// Package view serves the agent's local web page: a read-only page at /view/ and the JSON it draws from at
// /view/api/..., each answer aggregated in Go over one time range of the local store, streaming, with a cap
// on the points read per request.
package view

import (
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"log"
	"net/http"
	"net/url"
	"strings"
	"time"

	"dkebpf/agent/api"
	"dkebpf/agent/store"
)

//go:embed assets
var assets embed.FS

// Store is what the page reads.
type Store interface {
	Scan(q store.Query, keys []string, fn func(p *store.Point) error) error
	Query(q store.Query) ([]store.Point, error)
	Evicted() int64
	Damaged() int64
}

// Defaults of Options.
const (
	// DefaultMaxScan is the most points one answer reads (about 4 s of netflow on this 2-core VM): a range holding
	// more is cut, newest kept, and the answer says so.
	DefaultMaxScan = 2_000_000
	// Buckets is the number of time buckets of a chart.
	Buckets = 120
	// maxConcurrent answers are computed at once; more are answered 429.
	maxConcurrent = 2
)

// Options configure a Handler.
type Options struct {
	Store Store
	// Token, when set, is the agent's API token: the page and its JSON need it, as a header (as the API),
	// or once as ?token= on the page, which sets a cookie for /view/.
	Token   string
	MaxScan int              // default DefaultMaxScan
	Now     func() time.Time // default time.Now
	Log     *log.Logger      // default log.Default()
}

// Handler serves / (a redirect), /view/ and /view/api/.
type Handler struct {
	opts   Options
	mux    *http.ServeMux
	static http.Handler
	sem    chan struct{}
}

// New returns the page's handler.
func New(opts Options) *Handler {
	if opts.MaxScan <= 0 {
		opts.MaxScan = DefaultMaxScan
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = log.Default()
	}
	sub, _ := fs.Sub(assets, "assets")
	h := &Handler{opts: opts, mux: http.NewServeMux(), static: http.StripPrefix("/view/", http.FileServerFS(sub)),
		sem: make(chan struct{}, maxConcurrent)}
	h.mux.HandleFunc("GET /view/api/netflow", h.api(h.netflow))
	h.mux.HandleFunc("GET /view/api/httpflow", h.api(h.httpflow))
	h.mux.HandleFunc("GET /view/api/apis", h.api(h.apis))
	h.mux.HandleFunc("GET /view/api/dnsflow", h.api(h.dnsflow))
	h.mux.HandleFunc("GET /view/api/bash", h.api(h.bash))
	h.mux.HandleFunc("GET /view/api/health", h.api(h.health))
	h.mux.HandleFunc("GET /view/", h.page)
	return h
}

// Mount returns a handler serving the page at / and /view/ and everything else with next (the API, whose
// token check the page does not pass through: it checks the same token itself).
func Mount(next http.Handler, opts Options) http.Handler {
	v := New(opts)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" || r.URL.Path == "/view" || strings.HasPrefix(r.URL.Path, "/view/") {
			v.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// cookieName holds a digest of the token (not the token) once ?token= was given.
const cookieName = "dkebpf_view"

func (h *Handler) cookieValue() string {
	d := sha256.Sum256([]byte("dkebpf-view\x00" + h.opts.Token))
	return hex.EncodeToString(d[:])
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "the page is read-only", http.StatusMethodNotAllowed)
		return
	}
	if r.URL.Path == "/" || r.URL.Path == "/view" {
		u := url.URL{Path: "/view/", RawQuery: r.URL.RawQuery}
		http.Redirect(w, r, u.String(), http.StatusFound)
		return
	}
	if h.opts.Token != "" {
		q := r.URL.Query()
		if tok := q.Get("token"); tok != "" && !strings.HasPrefix(r.URL.Path, "/view/api/") {
			if subtle.ConstantTimeCompare([]byte(tok), []byte(h.opts.Token)) != 1 {
				h.unauthorized(w)
				return
			}
			http.SetCookie(w, &http.Cookie{Name: cookieName, Value: h.cookieValue(), Path: "/view/", HttpOnly: true,
				SameSite: http.SameSiteStrictMode})
			q.Del("token")
			u := url.URL{Path: r.URL.Path, RawQuery: q.Encode()}
			http.Redirect(w, r, u.String(), http.StatusSeeOther) // the token leaves the address bar
			return
		}
		if !h.authorized(r) {
			h.unauthorized(w)
			return
		}
	}
	h.mux.ServeHTTP(w, r)
}

func (h *Handler) authorized(r *http.Request) bool {
	eq := func(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }
	if c, err := r.Cookie(cookieName); err == nil && eq(c.Value, h.cookieValue()) {
		return true
	}
	got := api.RequestToken(r)
	return got != "" && eq(got, h.opts.Token)
}

func (h *Handler) unauthorized(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = w.Write([]byte("this agent has an API token: open /view/?token=<token> once (it sets a cookie for this page),\n" +
		"or send Authorization: Bearer <token> or X-Token: <token>\n"))
}

func (h *Handler) page(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.Header().Set("Cache-Control", "no-cache")
	h.static.ServeHTTP(w, r)
}

// api wraps an answer: its range from ?range=, a concurrency bound, JSON out.
func (h *Handler) api(fn func(w window) (any, error)) http.HandlerFunc {
	return func(rw http.ResponseWriter, r *http.Request) {
		win, err := newWindow(r.URL.Query().Get("range"), h.opts.Now())
		if err != nil {
			jsonError(rw, http.StatusBadRequest, err.Error())
			return
		}
		select {
		case h.sem <- struct{}{}:
			defer func() { <-h.sem }()
		default:
			rw.Header().Set("Retry-After", "1")
			jsonError(rw, http.StatusTooManyRequests, "the page's queries are busy, retry in a second")
			return
		}
		start := time.Now()
		out, err := fn(win)
		if err != nil {
			h.opts.Log.Printf("view: %s: %v", r.URL.Path, err)
			jsonError(rw, http.StatusInternalServerError, err.Error())
			return
		}
		rw.Header().Set("Content-Type", "application/json")
		rw.Header().Set("Cache-Control", "no-store")
		rw.Header().Set("X-Elapsed-Ms", time.Since(start).Round(time.Millisecond).String())
		_ = json.NewEncoder(rw).Encode(out)
	}
}

func jsonError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
