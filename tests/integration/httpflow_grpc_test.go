package integration

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// rawCodec carries messages as the bytes they are: no protobuf to generate, the sizes on the wire known.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(b []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), b...)
	return nil
}
func (rawCodec) Name() string { return "raw" }

// grpcAccount is what the test's gRPC server saw of each call: its method, its status and the bytes of its
// DATA frames each way (every message is a 5-byte prefix and its bytes, uncompressed).
type grpcAccount struct {
	mu    sync.Mutex
	calls []grpcCall
}

type grpcCall struct {
	method            string
	code              codes.Code
	reqBody, respBody int64
}

func (g *grpcAccount) add(c grpcCall) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls = append(g.calls, c)
}

// msgBytes is what a message of n bytes takes in DATA frames.
func msgBytes(n int) int64 { return 5 + int64(n) }

// grpcEcho: /test.Echo/Unary answers a message with one of twice its size, or fails with NotFound when the
// message is "missing"; /test.Echo/Stream echoes each message back until the client ends its side.
func grpcEcho(acct *grpcAccount) *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: "test.Echo",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Unary", Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var in []byte
			if err := dec(&in); err != nil {
				return nil, err
			}
			if string(in) == "missing" {
				acct.add(grpcCall{"/test.Echo/Unary", codes.NotFound, msgBytes(len(in)), 0})
				return nil, status.Error(codes.NotFound, "no such thing")
			}
			out := append(append([]byte(nil), in...), in...)
			acct.add(grpcCall{"/test.Echo/Unary", codes.OK, msgBytes(len(in)), msgBytes(len(out))})
			return &out, nil
		}}},
		Streams: []grpc.StreamDesc{{StreamName: "Stream", ServerStreams: true, ClientStreams: true, Handler: func(_ any, s grpc.ServerStream) error {
			c := grpcCall{method: "/test.Echo/Stream"}
			for {
				var m []byte
				err := s.RecvMsg(&m)
				if errors.Is(err, io.EOF) {
					acct.add(c)
					return nil
				}
				if err != nil {
					return err
				}
				c.reqBody += msgBytes(len(m))
				if err := s.SendMsg(&m); err != nil {
					return err
				}
				c.respBody += msgBytes(len(m))
			}
		}}},
	}
}

// TestHTTPFlowGRPCUnaryAndStreaming: grpc-go's server and client in this process, over TLS (crypto/tls),
// unary calls (one failing with NotFound, in a trailers-only response), and bidirectional streams of several
// messages. Each call is one httpflow exchange on both sides, with its grpc_status, bodies exact.
func TestHTTPFlowGRPCUnaryAndStreaming(t *testing.T) {
	a := startAgentProbingSelf(t)

	acct := &grpcAccount{}
	port := freePort(t)
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	must(t, err)
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{goSelfSignedCert(t)}})),
		grpc.ForceServerCodec(rawCodec{}))
	srv.RegisterService(grpcEcho(acct), nil)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)

	conn, err := grpc.NewClient("127.0.0.1:"+strconv.Itoa(port),
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	must(t, err)
	t.Cleanup(func() { conn.Close() })
	ctx := context.Background()

	var client []grpcCall // the client's own account
	for i, msg := range []string{"hello", "missing", "a somewhat longer message", "missing", "x"} {
		in, out := []byte(msg), []byte(nil)
		err := conn.Invoke(ctx, "/test.Echo/Unary", &in, &out)
		c := grpcCall{"/test.Echo/Unary", status.Code(err), msgBytes(len(in)), 0}
		if err == nil {
			c.respBody = msgBytes(len(out))
		}
		if want := map[bool]codes.Code{true: codes.NotFound, false: codes.OK}[msg == "missing"]; c.code != want {
			t.Fatalf("harness: unary call %d (%q): %v, want %v", i, msg, err, want)
		}
		client = append(client, c)
	}
	desc := &grpc.StreamDesc{StreamName: "Stream", ServerStreams: true, ClientStreams: true}
	for i, sizes := range [][]int{{3, 50_000, 7}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}} {
		s, err := conn.NewStream(ctx, desc, "/test.Echo/Stream")
		must(t, err)
		c := grpcCall{method: "/test.Echo/Stream"}
		for _, n := range sizes {
			m := make([]byte, n)
			must(t, s.SendMsg(&m))
			var back []byte
			must(t, s.RecvMsg(&back))
			c.reqBody += msgBytes(n)
			c.respBody += msgBytes(len(back))
		}
		must(t, s.CloseSend())
		var tail []byte
		if err := s.RecvMsg(&tail); !errors.Is(err, io.EOF) {
			t.Fatalf("harness: stream %d ended with %v, want io.EOF", i, err)
		}
		client = append(client, c)
	}

	acct.mu.Lock()
	served := append([]grpcCall(nil), acct.calls...)
	acct.mu.Unlock()
	if fmt.Sprint(served) != fmt.Sprint(client) {
		t.Fatalf("harness: the server's account %v differs from the client's %v", served, client)
	}
	want := h2Truth{}
	for _, c := range served {
		want.add("POST", c.method, 200, int(c.code), c.reqBody, c.respBody)
	}
	settleH2Flows(t, a, "gRPC over Go crypto/tls", port, bothSides(selfComm(t)), want)
}
