// Package gotls is an HTTPS server and client on Go's crypto/tls for httpflow's tests: built into a
// separate program (testdata/gotls), stripped or not, and run inside the test binary itself.
//
// The server speaks HTTP/1.1 written by hand over crypto/tls, so that it knows each message's bytes
// exactly: it logs every request (Entry) by its own account. Like net/http's server, whose background
// read waits for the next request while a handler runs, it reads each keep-alive request after the first
// one byte alone, then the rest through a buffer. The client is net/http's, HTTP/1.1 (a keep-alive
// sequence, then one request per connection).
package gotls

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Entry is a request as the server saw it: accessEntry in the tests.
type Entry struct {
	Client, Method, Target string
	Status                 int
	ReqLen, Sent           int64
	Proto, Host, Conn      string
	Port                   int
	RawConn                string
}

// ListenAndServe serves HTTPS on 127.0.0.1:port with the certificate and key files until its listener fails,
// logging each request as a JSON line to logPath. It prints "ready" once listening.
func ListenAndServe(port, logPath, cert, key string) error {
	crt, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return err
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:"+port, &tls.Config{Certificates: []tls.Certificate{crt}})
	if err != nil {
		return err
	}
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	p, _ := strconv.Atoi(port)
	var mu sync.Mutex
	fmt.Println("ready")
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			Serve(c, p, func(e Entry) {
				b, _ := json.Marshal(e)
				mu.Lock()
				log.Write(append(b, '\n'))
				mu.Unlock()
			})
		}()
	}
}

// Serve answers the requests of one connection (a *tls.Conn) to port, logging each.
func Serve(c net.Conn, port int, logged func(Entry)) {
	br := bufio.NewReader(c)
	for served := 0; ; served++ {
		var first []byte
		if served > 0 && br.Buffered() == 0 {
			first = make([]byte, 1)
			if _, err := io.ReadFull(c, first); err != nil {
				return
			}
		}
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		line = string(first) + line
		n := int64(len(line))
		method, rest, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
		target, proto, _ := strings.Cut(rest, " ")
		headers := map[string]string{}
		for {
			h, err := br.ReadString('\n')
			if err != nil {
				return
			}
			n += int64(len(h))
			if h == "\r\n" {
				break
			}
			k, v, _ := strings.Cut(h, ":")
			headers[strings.ToLower(k)] = strings.TrimSpace(v)
		}
		if cl, _ := strconv.Atoi(headers["content-length"]); cl > 0 {
			if _, err := io.CopyN(io.Discard, br, int64(cl)); err != nil {
				return
			}
			n += int64(cl)
		}
		path, _, _ := strings.Cut(target, "?")
		status, reason, body := 200, "OK", []byte("from go's crypto/tls\n")
		switch path {
		case "/missing":
			status, reason = 404, "Not Found"
		case "/fail":
			status, reason = 500, "Internal Server Error"
		case "/empty":
			status, reason, body = 204, "No Content", nil
		case "/large", "/large.bin":
			body = bytes.Repeat([]byte("L"), 300000)
		}
		var resp bytes.Buffer
		fmt.Fprintf(&resp, "HTTP/1.1 %d %s\r\n", status, reason)
		if status != 204 {
			fmt.Fprintf(&resp, "Content-Length: %d\r\n", len(body))
		}
		closing := strings.EqualFold(headers["connection"], "close")
		if closing {
			resp.WriteString("Connection: close\r\n")
		}
		resp.WriteString("\r\n")
		if method != "HEAD" {
			resp.Write(body)
		}
		if _, err := c.Write(resp.Bytes()); err != nil {
			return
		}
		client := headers["x-truth-client"]
		if client == "" {
			client = "-"
		}
		logged(Entry{Client: client, Method: method, Target: target, Status: status, ReqLen: n, Sent: int64(resp.Len()),
			Proto: proto, Host: headers["host"], Conn: c.RemoteAddr().String(), Port: port, RawConn: "-"})
		if closing {
			return
		}
	}
}

// Client sends the client's mix to base ("https://127.0.0.1:port") with net/http over HTTP/1.1, each request
// carrying X-Truth-Client: name, and returns [method, target, status] of each.
func Client(base, name string) ([][]any, error) {
	transport := func(keepAlive bool) *http.Transport {
		return &http.Transport{
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
			TLSNextProto:      map[string]func(string, *tls.Conn) http.RoundTripper{}, // HTTP/1.1 only
			DisableKeepAlives: !keepAlive, DisableCompression: true, MaxConnsPerHost: 1,
		}
	}
	var out [][]any
	do := func(c *http.Client, method, target string, body []byte) error {
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequest(method, base+target, rd)
		if err != nil {
			return err
		}
		req.Header.Set("X-Truth-Client", name)
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		out = append(out, []any{method, target, resp.StatusCode})
		return nil
	}
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	keep := &http.Client{Transport: transport(true), Timeout: 30 * time.Second, CheckRedirect: noRedirect}
	for _, r := range []struct {
		method, target string
		body           []byte
	}{
		{"GET", "/small", nil},
		{"GET", "/small?token=abc", nil},
		{"POST", "/created", []byte("a=1&b=2")},
		{"PUT", "/upload", bytes.Repeat([]byte("g"), 200000)},
		{"HEAD", "/small", nil},
		{"GET", "/empty", nil},
		{"GET", "/large", nil},
		{"GET", "/missing", nil},
		{"DELETE", "/upload", nil},
		{"GET", "/fail", nil},
		{"GET", "/small", nil},
	} {
		if err := do(keep, r.method, r.target, r.body); err != nil {
			return nil, err
		}
	}
	keep.CloseIdleConnections()
	fresh := &http.Client{Transport: transport(false), Timeout: 30 * time.Second, CheckRedirect: noRedirect}
	for _, target := range []string{"/small?fresh=1", "/large?fresh=1", "/missing?fresh=1"} {
		if err := do(fresh, "GET", target, nil); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// H2Call is one request of H2Client's mix: a body of Body bytes.
type H2Call struct {
	Method, Target string
	Body           int
}

// H2Calls is H2Client's mix: paths whose identifiers make route templates, bodies larger than HTTP/2's initial
// flow-control window, a 404, a 204.
var H2Calls = []H2Call{
	{"GET", "/users/1", 0}, {"GET", "/users/22", 0}, {"GET", "/users/333?token=secret", 0},
	{"POST", "/orders/3f2b8c1e-9a4d-4c1b-8e7f-0a1b2c3d4e5f", 1000},
	{"POST", "/orders/7d9e0f12-3456-4789-abcd-ef0123456789", 70_000}, // more than the initial window
	{"GET", "/missing", 0}, {"DELETE", "/items/42", 0}, {"GET", "/big", 0}, {"PUT", "/health", 5},
}

// H2Client sends H2Calls to base ("https://127.0.0.1:port") with net/http over HTTP/2 (ALPN), on one
// connection, and returns [method, target, status] of each; a response over another protocol is an error.
func H2Client(base string) ([][]any, error) {
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var out [][]any
	for _, c := range H2Calls {
		req, err := http.NewRequest(c.Method, base+c.Target, bytes.NewReader(bytes.Repeat([]byte("b"), c.Body)))
		if err != nil {
			return nil, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		if resp.ProtoMajor != 2 {
			return nil, fmt.Errorf("%s %s went over %s, want HTTP/2", c.Method, c.Target, resp.Proto)
		}
		out = append(out, []any{c.Method, c.Target, resp.StatusCode})
	}
	return out, nil
}
