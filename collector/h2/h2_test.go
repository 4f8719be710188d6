package h2

import (
	"bytes"
	"encoding/binary"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// peer writes one direction's frames with x/net's framer and encoder, as a real endpoint would.
type peer struct {
	buf bytes.Buffer
	fr  *http2.Framer
	enc *hpack.Encoder
	hb  bytes.Buffer
}

func newPeer() *peer {
	p := &peer{}
	p.fr = http2.NewFramer(&p.buf, nil)
	p.enc = hpack.NewEncoder(&p.hb)
	return p
}

func (p *peer) headers(id uint32, end bool, kv ...string) {
	p.hb.Reset()
	for i := 0; i < len(kv); i += 2 {
		_ = p.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	block := p.hb.Bytes()
	if len(block) > 8 { // split over a CONTINUATION, as a large block would be
		_ = p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block[:8], EndStream: end})
		_ = p.fr.WriteContinuation(id, true, block[8:])
		return
	}
	_ = p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: end, EndHeaders: true})
}

// take returns what the probes would send of the frames written so far: DATA payloads left out, but a padded
// frame's pad length.
func (p *peer) take() []byte {
	b := p.buf.Bytes()
	var out []byte
	for len(b) >= 9 {
		n := int(b[0])<<16 | int(b[1])<<8 | int(b[2])
		out = append(out, b[:9]...)
		switch {
		case b[3] != 0:
			out = append(out, b[9:9+n]...)
		case b[4]&0x8 != 0 && n > 0:
			out = append(out, b[9])
		}
		b = b[9+n:]
	}
	p.buf.Reset()
	return out
}

func TestTrackerPairsStreamsAcrossSplitRecords(t *testing.T) {
	cli, srv := newPeer(), newPeer()
	_ = cli.fr.WriteSettings(http2.Setting{ID: http2.SettingHeaderTableSize, Val: 8192})
	cli.headers(1, false, ":method", "POST", ":path", "/pkg.Svc/Call", ":authority", "api.example.com", "content-type", "application/grpc")
	_ = cli.fr.WriteData(1, true, make([]byte, 17))
	cli.headers(3, true, ":method", "GET", ":path", "/users/7", ":authority", "api.example.com")
	_ = srv.fr.WriteSettings()
	srv.headers(1, false, ":status", "200", "content-type", "application/grpc")
	_ = srv.fr.WriteDataPadded(1, false, make([]byte, 100), make([]byte, 7))
	srv.headers(3, false, ":status", "404")
	_ = srv.fr.WriteData(3, true, make([]byte, 9))
	srv.headers(1, true, "grpc-status", "5", "grpc-message", "not found")
	_ = srv.fr.WriteRSTStream(5, http2.ErrCodeCancel)

	tr := NewTracker()
	var got []Exchange
	emit := func(x Exchange) { got = append(got, x) }
	s := Session{Pid: 1, SSL: 0xabc}
	req, resp := cli.take(), srv.take()
	// The request direction arrives in three records cut anywhere; the response in one.
	tr.Add(Chunk{Session: s, Dir: Written, Seq: 0, Client: true, TsNs: 100, Data: req[:5]}, emit)
	tr.Add(Chunk{Session: s, Dir: Written, Seq: 1, Client: true, TsNs: 110, Data: req[5:40]}, emit)
	tr.Add(Chunk{Session: s, Dir: Written, Seq: 2, Client: true, TsNs: 120, Data: req[40:]}, emit)
	tr.Add(Chunk{Session: s, Dir: Read, Seq: 0, Client: true, TsNs: 200, Data: resp}, emit)
	if len(got) != 2 {
		t.Fatalf("got %d exchanges, want 2: %+v", len(got), got)
	}
	want := []Exchange{
		{Client: true, Method: "GET", Path: "/users/7", Authority: "api.example.com", Status: 404, GRPCStatus: -1, RespBytes: 9, LatencyNs: 80},
		{Client: true, Method: "POST", Path: "/pkg.Svc/Call", Authority: "api.example.com", Status: 200, GRPCStatus: 5, ReqBytes: 17, RespBytes: 100, LatencyNs: 80},
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("exchange %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
	if st := tr.Stats(); st != (Stats{}) {
		t.Errorf("stats %+v, want zero", st)
	}

	// A gap in a direction's records ends the session; its close forgets it.
	cli.headers(7, true, ":method", "GET", ":path", "/", ":authority", "api.example.com")
	tr.Add(Chunk{Session: s, Dir: Written, Seq: 4, Client: true, TsNs: 300, Data: cli.take()}, emit)
	if st := tr.Stats(); st.Desyncs != 1 || len(tr.sessions) != 1 {
		t.Errorf("after a gap: stats %+v, %d sessions", st, len(tr.sessions))
	}
	tr.Add(Chunk{Session: s, Close: true}, emit)
	if len(tr.sessions) != 0 {
		t.Errorf("%d sessions after the close", len(tr.sessions))
	}
}

func TestTrackerCountsResetsAndUnanswered(t *testing.T) {
	cli, srv := newPeer(), newPeer()
	cli.headers(1, true, ":method", "GET", ":path", "/a", ":authority", "h")
	cli.headers(3, true, ":method", "GET", ":path", "/b", ":authority", "h")
	srv.headers(1, false, ":status", "200")
	_ = srv.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	tr := NewTracker()
	emit := func(x Exchange) { t.Errorf("unexpected exchange %+v", x) }
	s := Session{Pid: 2, SSL: 1}
	tr.Add(Chunk{Session: s, Dir: Read, Seq: 0, TsNs: 1, Data: cli.take()}, emit) // we are the server
	tr.Add(Chunk{Session: s, Dir: Written, Seq: 0, TsNs: 2, Data: srv.take()}, emit)
	tr.Add(Chunk{Session: s, Close: true}, emit)
	if st := tr.Stats(); st.Resets != 1 || st.Unanswered != 1 {
		t.Errorf("stats %+v, want 1 reset and 1 unanswered", st)
	}
}

func TestTrackerDropsAHeaderBlockItCannotDecode(t *testing.T) {
	tr := NewTracker()
	bad := []byte{0, 0, 2, frameHeaders, flagEndHeaders | flagEndStream, 0, 0, 0, 1, 0xbf, 0xff} // index past the tables
	binary.BigEndian.PutUint32(bad[5:], 1)
	tr.Add(Chunk{Session: Session{Pid: 3}, Dir: Written, Client: true, Data: bad}, func(Exchange) {})
	if st := tr.Stats(); st.Desyncs != 1 {
		t.Errorf("stats %+v, want a desync", st)
	}
}

// FuzzTracker: whatever bytes the records carry, in whatever order and sequence, the tracker must not panic,
// and every exchange it reports has a final status.
func FuzzTracker(f *testing.F) {
	cli := newPeer()
	cli.headers(1, true, ":method", "GET", ":path", "/a", ":authority", "h")
	f.Add(cli.take(), []byte{0, 0, 0, frameSettings, 0, 0, 0, 0, 0}, uint8(0))
	f.Fuzz(func(t *testing.T, a, b []byte, order uint8) {
		tr := NewTracker()
		emit := func(x Exchange) {
			if x.Status < 200 {
				t.Fatalf("exchange without a final status: %+v", x)
			}
		}
		s := Session{Pid: 1, SSL: 1}
		tr.Add(Chunk{Session: s, Dir: int(order & 1), Seq: 0, Client: order&2 != 0, Data: a}, emit)
		tr.Add(Chunk{Session: s, Dir: int(order&1) ^ 1, Seq: uint32(order>>2) & 1, Client: order&2 != 0, Data: b}, emit)
		tr.Add(Chunk{Session: s, Dir: int(order & 1), Seq: 1, Lost: order&8 != 0, Data: b}, emit)
		tr.Expire()
		tr.Add(Chunk{Session: s, Close: true}, emit)
	})
}
