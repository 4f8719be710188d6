// Command gotlsserver is W6's server for the bench: Go's net/http serving HTTP/1.1 keep-alive over
// crypto/tls, the Go counterpart of nginx's HTTPS server in W3 (same route, same answer), keeping its own
// ground truth of every exchange it completed.
//
//	gotlsserver -addr 127.0.0.1:18444 -cert cert.pem -key key.pem
//
// It prints "ready" once listening, then answers one line on stdout to each command on stdin:
//
//	status  {"Accepted":N,"Active":N}: connections accepted since start, and open now
//	drain   the exchanges completed since the last drain, as the bench's accessLog (JSON)
//
// The truth is exact plaintext: each accepted connection is a *tls.Conn wrapped in a counter of what its
// Read and Write calls returned (the calls httpflow-tls probes), so the server knows the bytes of each request
// (read when its handler starts: clients here send the next request only after the answer) and of each
// response (flushed by the handler, one Write). net/http is handed the wrapper, so it serves HTTP/1.1 only (no ALPN
// h2), and the handshake runs in the first Read rather than in an explicit Handshake call: the calls of
// crypto/tls per request are the ones net/http's own TLS path makes.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
)

// body is nginx's answer to /api in W3.
var body = []byte(`{"ok":true,"service":"bench"}`)

// accessLog mirrors the bench's accessLog (bench/servers.go): the exchanges completed since the last drain.
type accessLog struct {
	Requests      int64
	Connections   int64 // distinct connections that carried a request
	RequestBytes  int64 // plaintext read by the server for the requests
	ResponseBytes int64 // plaintext written by the server for the responses
	Non2xx        int64
	Uniform       bool // every request had the same size, and every response
}

// conn counts the plaintext of one connection: what crypto/tls's Read and Write returned.
type conn struct {
	net.Conn // *tls.Conn
	id       int64
	read     atomic.Int64
	written  atomic.Int64
	// marks: read and written at the end of the previous exchange (its handler only: exchanges of one
	// connection are sequential).
	readMark, writtenMark int64
}

func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

func (c *conn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}

// CloseWrite is the *tls.Conn's, which net/http uses when it closes a connection.
func (c *conn) CloseWrite() error { return c.Conn.(*tls.Conn).CloseWrite() }

// listener accepts TCP connections and hands net/http a counted *tls.Conn for each.
type listener struct {
	net.Listener
	cfg      *tls.Config
	accepted atomic.Int64
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &conn{Conn: tls.Server(c, l.cfg), id: l.accepted.Add(1)}, nil
}

type connKey struct{}

// server keeps the truth.
type server struct {
	active atomic.Int64

	mu         sync.Mutex
	log        accessLog
	conns      map[int64]bool
	req0, rsp0 int64 // the first exchange's sizes, for Uniform
}

func (s *server) reset() {
	s.log, s.conns = accessLog{Uniform: true}, map[int64]bool{}
}

// api answers as nginx does, flushes the answer in one Write and logs the exchange if that Write succeeded.
func (s *server) api(w http.ResponseWriter, r *http.Request) {
	c := r.Context().Value(connKey{}).(*conn)
	// The request is read whole (no body), and the next one not yet sent: the client waits for this answer.
	// Once it has it, the next request may arrive at once, to net/http's background read of one byte.
	read := c.read.Load()
	status, b := http.StatusOK, body
	if r.URL.Path != "/api" {
		status, b = http.StatusNotFound, []byte("not found\n")
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
	if err := http.NewResponseController(w).Flush(); err != nil {
		return // the client has gone: no exchange
	}
	written := c.written.Load()
	req, rsp := read-c.readMark, written-c.writtenMark
	c.readMark, c.writtenMark = read, written

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.log.Requests == 0 {
		s.req0, s.rsp0 = req, rsp
	}
	s.log.Requests++
	s.log.RequestBytes += req
	s.log.ResponseBytes += rsp
	s.log.Uniform = s.log.Uniform && req == s.req0 && rsp == s.rsp0
	if status/100 != 2 {
		s.log.Non2xx++
	}
	s.conns[c.id] = true
}

func main() {
	addr := flag.String("addr", "127.0.0.1:18444", "address to serve HTTPS on")
	certFile := flag.String("cert", "cert.pem", "certificate (PEM)")
	keyFile := flag.String("key", "key.pem", "private key (PEM)")
	flag.Parse()
	crt, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		fatal(err)
	}
	tcp, err := net.Listen("tcp", *addr)
	if err != nil {
		fatal(err)
	}
	ln := &listener{Listener: tcp, cfg: &tls.Config{Certificates: []tls.Certificate{crt}, NextProtos: []string{"http/1.1"}}}
	s := &server{}
	s.reset()
	srv := &http.Server{
		Handler:      http.HandlerFunc(s.api),
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}, // HTTP/1.1 only
		ConnContext:  func(ctx context.Context, c net.Conn) context.Context { return context.WithValue(ctx, connKey{}, c) },
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				s.active.Add(1)
			case http.StateClosed, http.StateHijacked:
				s.active.Add(-1)
			}
		},
	}
	go func() { fatal(srv.Serve(ln)) }()
	fmt.Println("ready")

	out := json.NewEncoder(os.Stdout)
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		switch sc.Text() {
		case "status":
			out.Encode(map[string]int64{"Accepted": ln.accepted.Load(), "Active": s.active.Load()})
		case "drain":
			s.mu.Lock()
			s.log.Connections = int64(len(s.conns))
			out.Encode(s.log)
			s.reset()
			s.mu.Unlock()
		default:
			out.Encode(map[string]string{"error": "unknown command " + strconv.Quote(sc.Text())})
		}
	}
	// stdin closed: the bench is done (or gone).
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "gotlsserver:", err)
	os.Exit(1)
}
