// Package kubeapi runs a real kube-apiserver, backed by its own etcd on loopback, for tests: code that talks to
// Kubernetes meets the real API (list/watch, RBAC, validation, subresources), and tests create the objects
// they need, since no kubelet, scheduler or controller-manager runs.
package kubeapi

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Version is the kube-apiserver release scripts/kube-apiserver.sh builds.
const Version = "v1.37.2"

// Token is the static bearer token of user admin in group system:masters (allowed everything under RBAC).
const Token = "dkebpf-test-token"

// readyTimeout bounds the start of etcd and then of the API server.
const readyTimeout = 60 * time.Second

// Server is a running API server; Start stops it when the test ends.
type Server struct {
	URL       string // https://127.0.0.1:<port>, a self-signed certificate
	Token     string // bearer token of a cluster admin
	TokenFile string // the --token-auth-file (token,user,uid,"groups")
	Dir       string // data, keys, certificates and logs of this server

	t testing.TB
}

// Binary returns the cached kube-apiserver that scripts/kube-apiserver.sh builds.
func Binary() (string, error) {
	cache := os.Getenv("DKEBPF_KUBE_CACHE")
	if cache == "" {
		cache = "/var/cache/dkebpf-kube"
	}
	bin := filepath.Join(cache, "kube-apiserver-"+Version)
	if fi, err := os.Stat(bin); err != nil || fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("kube-apiserver %s not found at %s: run scripts/kube-apiserver.sh (make kube-apiserver) first", Version, bin)
	}
	return bin, nil
}

// Start runs etcd and kube-apiserver on free loopback ports with a fresh t.TempDir(), waits until /readyz
// answers ok, and stops both when the test ends. A missing binary fails the test: it never skips.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatalf("etcd not found (Debian's etcd-server): run scripts/kube-apiserver.sh, which installs it: %v", err)
	}
	s := &Server{Token: Token, Dir: t.TempDir(), t: t}

	// etcd: its own data dir, client and peer ports on loopback.
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	etcd := start(t, filepath.Join(s.Dir, "etcd.log"), etcdBin,
		"--name=dkebpf-test", "--data-dir="+filepath.Join(s.Dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=dkebpf-test="+peerURL)
	etcd.waitReady(t, &http.Client{Timeout: 2 * time.Second}, etcdURL+"/health", "", `"health":"true"`)

	// The service-account signing key, and the static token of a cluster admin.
	keyFile := filepath.Join(s.Dir, "sa.key")
	writeRSAKey(t, keyFile)
	s.TokenFile = filepath.Join(s.Dir, "tokens.csv")
	if err := os.WriteFile(s.TokenFile, []byte(Token+`,admin,admin,"system:masters"`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	port := freePort(t)
	s.URL = fmt.Sprintf("https://127.0.0.1:%d", port)
	api := start(t, filepath.Join(s.Dir, "kube-apiserver.log"), bin,
		"--etcd-servers="+etcdURL,
		"--service-account-key-file="+keyFile,
		"--service-account-signing-key-file="+keyFile,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--authorization-mode=RBAC", // so the RBAC objects a test creates are the ones that decide
		"--token-auth-file="+s.TokenFile,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--endpoint-reconciler-type=none", // a loopback advertise address is refused otherwise
		fmt.Sprintf("--secure-port=%d", port),
		"--cert-dir="+filepath.Join(s.Dir, "certs"),
		"--service-cluster-ip-range=10.96.0.0/16")
	insecure := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	api.waitReady(t, insecure, s.URL+"/readyz", Token, "ok")
	return s
}

// Config is a client-go configuration for the cluster admin (TLS not verified: the certificate is self-signed).
func (s *Server) Config() *rest.Config {
	return &rest.Config{
		Host:            s.URL,
		BearerToken:     s.Token,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true},
		QPS:             100,
		Burst:           200,
	}
}

// Client is a typed clientset for the cluster admin.
func (s *Server) Client() kubernetes.Interface {
	c, err := kubernetes.NewForConfig(s.Config())
	if err != nil {
		s.t.Fatalf("kubeapi: clientset for %s: %v", s.URL, err)
	}
	return c
}

// CreateNamespace creates a namespace and its "default" ServiceAccount, which the missing controller-manager
// would otherwise create and without which Pods are refused.
func (s *Server) CreateNamespace(t testing.TB, name string) *corev1.Namespace {
	t.Helper()
	c := s.Client()
	ns, err := c.CoreV1().Namespaces().Create(t.Context(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kubeapi: create namespace %s: %v", name, err)
	}
	_, err = c.CoreV1().ServiceAccounts(name).Create(t.Context(),
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kubeapi: create serviceaccount %s/default: %v", name, err)
	}
	return ns
}

// proc is a child process whose output goes to a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	told bool // the log's tail is already in a failure message
}

// start runs bin with args, its output in logPath; the test's cleanup stops it (SIGTERM, then SIGKILL) and
// reaps it, and shows the log's tail if the test failed. Cleanups run last-first: the API server stops
// before its etcd.
func start(t testing.TB, logPath, bin string, args ...string) *proc {
	t.Helper()
	out, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{name: filepath.Base(bin), log: logPath, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = out, out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // no orphan if the test binary dies
	if err := p.cmd.Start(); err != nil {
		out.Close()
		t.Fatalf("kubeapi: start %s: %v", bin, err)
	}
	go func() { p.cmd.Wait(); out.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() && !p.told {
			t.Logf("%s log (last lines of %s):\n%s", p.name, p.log, tail(p.log, 30))
		}
	})
	return p
}

// stopTimeout bounds a graceful stop: an API server holding 10 000 pods (TestCollectorMemoryWith10000Pods)
// was once seen to need more than 15 s.
const stopTimeout = 60 * time.Second

func (p *proc) stop(t testing.TB) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		p.cmd.Process.Kill()
		<-p.done
		t.Errorf("kubeapi: %s did not stop within %s of SIGTERM; killed", p.name, stopTimeout)
	}
}

// waitReady polls url (with a bearer token if given) until it answers 200 with a body containing want. It
// fails at once if the process exits, and after readyTimeout otherwise, with the tail of the process's log.
func (p *proc) waitReady(t testing.TB, c *http.Client, url, token, want string) {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	last := "no answer"
	for {
		select {
		case <-p.done:
			p.told = true
			t.Fatalf("kubeapi: %s exited before %s was ready (%v); last lines of %s:\n%s",
				p.name, url, p.cmd.ProcessState, p.log, tail(p.log, 40))
		default:
		}
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if resp, err := c.Do(req); err != nil {
			last = err.Error()
		} else {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && bytes.Contains(body, []byte(want)) {
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
		}
		if time.Now().After(deadline) {
			p.told = true
			t.Fatalf("kubeapi: %s not ready within %s (%s: %s); last lines of %s:\n%s",
				p.name, readyTimeout, url, last, p.log, tail(p.log, 40))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// writeRSAKey writes a fresh 2048-bit RSA private key in PEM: it signs and verifies service-account tokens.
func writeRSAKey(t testing.TB, path string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// tail is the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
