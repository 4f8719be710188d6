package integration

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"dkebpf/tests/integration/gotls"
)

// buildGoTLS builds testdata/gotls as name (its process name), with the symbol table and debug information or
// stripped of both (-s -w: only the Go runtime's own function table is left).
func buildGoTLS(t *testing.T, name string, stripped bool) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	args := []string{"build", "-o", bin}
	if stripped {
		args = append(args, "-ldflags=-s -w")
	}
	cmd := exec.Command("go", append(args, "./testdata/gotls/main.go")...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build gotls: %v\n%s", err, out)
	}
	if out, _ := exec.Command("file", bin).Output(); stripped != strings.Contains(string(out), ", stripped") {
		t.Fatalf("harness: %s is not what was asked (stripped %v): %s", bin, stripped, out)
	}
	return bin
}

// startAgentProbingSelf starts the agent with httpflow and waits until its collector probes this test program's
// own crypto/tls.
func startAgentProbingSelf(t *testing.T) *agent {
	a := startAgent(t, httpflowConf)
	self, err := os.Executable()
	must(t, err)
	waitGoProbed(t, a, self)
	return a
}

// waitGoProbed waits until the collector says it probes the Go program exe.
func waitGoProbed(t *testing.T, a *agent, exe string) {
	t.Helper()
	a.waitFor(exe+" probed", max(30*time.Second, 10*interval), func() bool {
		for _, line := range strings.Split(a.log.String(), "\n") {
			if strings.Contains(line, "probing Go crypto/tls") && strings.Contains(line, exe) {
				return true
			}
		}
		return false
	})
}

// runGoTLSClient runs the gotls client against port once the collector probes it.
func runGoTLSClient(t *testing.T, a *agent, bin string, port int) clientRun {
	t.Helper()
	pid, reqs := runGoTLSProgram(t, a, bin, "client", port)
	var run clientRun
	for _, r := range reqs {
		run.record(pid, sentRequest{Process: filepath.Base(bin), Method: r[0].(string), Target: r[1].(string), Status: int(r[2].(float64)), Version: "1.1"})
	}
	return run
}

// runGoTLSProgram runs the gotls program's mode (client, h2client) against port once the collector probes it (a
// Go program is found by a rescan: one that made its calls before would not be seen), and returns its pid and
// its [method, target, status] per request.
func runGoTLSProgram(t *testing.T, a *agent, bin, mode string, port int) (int, [][]any) {
	t.Helper()
	cmd := exec.Command(bin, mode, strconv.Itoa(port))
	stdin, err := cmd.StdinPipe()
	must(t, err)
	stdout, err := cmd.StdoutPipe()
	must(t, err)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	must(t, cmd.Start())
	defer cmd.Process.Kill()
	ready := make([]byte, len("ready\n"))
	if _, err := io.ReadFull(stdout, ready); err != nil || string(ready) != "ready\n" {
		t.Fatalf("gotls %s did not start (%q, %v):\n%s", mode, ready, err, stderr.String())
	}
	waitGoProbed(t, a, bin)
	_, err = stdin.Write([]byte("go\n"))
	must(t, err)
	out, err := io.ReadAll(stdout)
	must(t, err)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("gotls %s: %v\n%s", mode, err, stderr.String())
	}
	var reqs [][]any
	if err := json.Unmarshal(out, &reqs); err != nil {
		t.Fatalf("gotls %s output %q: %v", mode, out, err)
	}
	return cmd.Process.Pid, reqs
}

// Go's crypto/tls is probed in each Go program, whether or not it was stripped: the gotls server (package
// gotls: HTTP/1.1 by hand over a crypto/tls listener, reading a keep-alive request's first byte alone as
// net/http's server does) against net/http's client, curl and Python (OpenSSL), every count and byte exact
// on both sides against the server's own account.
func TestHTTPFlowCapturesGoCryptoTLSOnBothSides(t *testing.T) {
	a := startAgent(t, httpflowConf)
	for _, c := range []struct {
		what                           string
		serverStripped, clientStripped bool
	}{
		{"server with symbols, stripped client", false, true},
		{"stripped server, client with symbols", true, false},
	} {
		t.Run(c.what, func(t *testing.T) {
			server := buildGoTLS(t, "gotls-server", c.serverStripped)
			client := buildGoTLS(t, "gotls-client", c.clientStripped)
			srv := tlsServer{"gotls-server", func(_ *testing.T, port int, log, cert, key string) []string {
				return []string{server, "server", strconv.Itoa(port), log, cert, key}
			}}
			port, pid, log, _ := srv.start(t)
			waitGoProbed(t, a, server)
			run := runGoTLSClient(t, a, client, port)
			url := func(target string) string { return "https://127.0.0.1:" + strconv.Itoa(port) + target }
			for _, target := range []string{"/one", "/two?secret=1", "/missing"} {
				run.merge(runCurl(t, "1.1", url(target)))
			}
			run.merge(runPython(t, "https", port))
			truth := serverTruth(t, run, waitServerLog(t, log, len(run.sent)), port, srv.name, []string{strconv.Itoa(pid)})
			settleHTTPFlows(t, a, c.what, truth)
		})
	}
}

// goSelfSignedCert is a fresh self-signed certificate for localhost, made in Go (the kernel matrix's guests
// have no openssl).
func goSelfSignedCert(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// Go's crypto/tls on both sides in one Go program, the test itself (not stripped; it runs in the kernel
// matrix's guests, which have neither a Go toolchain nor curl): the gotls server in a goroutine, net/http's
// client in another, exact on both sides against the server's account.
func TestHTTPFlowGoCryptoTLSClientAndServer(t *testing.T) {
	a := startAgentProbingSelf(t)

	port, served := serveGoTLS(t)
	comm := selfComm(t)
	reqs, err := gotls.Client("https://127.0.0.1:"+strconv.Itoa(port), comm)
	must(t, err)
	var run clientRun
	for _, r := range reqs {
		run.record(os.Getpid(), sentRequest{Process: comm, Method: r[0].(string), Target: r[1].(string), Status: r[2].(int), Version: "1.1"})
	}
	settleHTTPFlows(t, a, "Go crypto/tls in one process", serverTruth(t, run, served(len(run.sent)), port, comm, []string{strconv.Itoa(os.Getpid())}))
}

// A goroutine whose stack is too small for crypto/tls.(*Conn).Write runs the function's entry twice: once to
// find the stack short (morestack grows it), once more to run. Each request here is written by a goroutine
// from another depth of recursion, so some of those writes meet the stack's end: each must count once. In the
// kernel matrix it also proves that on a preemptible kernel (6.1-rt), where the server's and the client's uprobe
// programs can interleave on one CPU, neither parse mixes in the other's bytes (3 of 4 runs failed there while
// the scratch was per CPU).
func TestHTTPFlowGoCryptoTLSWritesFromGrowingStacks(t *testing.T) {
	a := startAgentProbingSelf(t)

	port, served := serveGoTLS(t)
	comm := selfComm(t)
	c, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port), &tls.Config{InsecureSkipVerify: true})
	must(t, err)
	defer c.Close()
	must(t, c.Handshake())
	br := bufio.NewReader(c)
	// Three kinds in turn: a write parsed twice would pair each later response with the wrong request.
	kinds := []struct {
		target string
		status int
	}{{"/deep", 200}, {"/missing", 404}, {"/empty", 204}}
	var run clientRun
	for depth := range 3000 {
		k := kinds[depth%len(kinds)]
		request := []byte("GET " + k.target + " HTTP/1.1\r\nHost: 127.0.0.1:" + strconv.Itoa(port) + "\r\nX-Truth-Client: " + comm + "\r\n\r\n")
		done := make(chan error)
		go func() { done <- writeAtDepth(depth, c, br, request, k.status) }()
		must(t, <-done)
		run.record(os.Getpid(), sentRequest{Process: comm, Method: "GET", Target: k.target, Status: k.status, Version: "1.1"})
	}
	settleHTTPFlows(t, a, "Go writes at every stack depth", serverTruth(t, run, served(len(run.sent)), port, comm, []string{strconv.Itoa(os.Getpid())}))
}

// writeAtDepth recurses depth calls deep, then sends request on c and reads its response whole, which must
// have status.
//
//go:noinline
func writeAtDepth(depth int, c *tls.Conn, br *bufio.Reader, request []byte, status int) error {
	if depth > 0 {
		return writeAtDepth(depth-1, c, br, request, status)
	}
	if _, err := c.Write(request); err != nil {
		return err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != status {
		return fmt.Errorf("status %d, want %d", resp.StatusCode, status)
	}
	return nil
}

// serveGoTLS serves gotls.Serve on a crypto/tls listener in this process. served(n) waits (10 s at most) for n
// requests to be logged and returns the log.
func serveGoTLS(t *testing.T) (port int, served func(n int) []accessEntry) {
	port = freePort(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port), &tls.Config{Certificates: []tls.Certificate{goSelfSignedCert(t)}})
	must(t, err)
	t.Cleanup(func() { ln.Close() })
	var mu sync.Mutex
	var log []accessEntry
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				gotls.Serve(c, port, func(e gotls.Entry) {
					mu.Lock()
					defer mu.Unlock()
					log = append(log, accessEntry{Client: e.Client, Method: e.Method, Target: e.Target, Status: e.Status,
						ReqLen: e.ReqLen, Sent: e.Sent, Proto: e.Proto, Host: e.Host, Conn: e.Conn, Port: e.Port, RawConn: e.RawConn})
				})
			}()
		}
	}()
	return port, func(n int) []accessEntry {
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			got := len(log)
			mu.Unlock()
			if got >= n || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		mu.Lock()
		defer mu.Unlock()
		return append([]accessEntry(nil), log...)
	}
}
