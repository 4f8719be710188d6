// Package h2 follows HTTP/2 sessions from the frames httpflow-tls's probes copy out of TLS calls (struct
// hf_h2_rec: each call's frames in order, DATA payloads left out but for their size) and pairs each stream's
// request and response. Header blocks are decoded with HPACK, one dynamic table per direction, as the peers
// keep them, so every header block of a session must be seen: a lost record ends what can be known of it.
//
// What an exchange counts: ReqBytes and RespBytes are the DATA payload bytes of the stream (the message
// bodies, gRPC's 5-byte message prefixes included; padding and frame headers not), so that they equal what
// the programs at both ends wrote as bodies. Latency is the response's first (non-1xx) HEADERS minus the
// request's last frame, or minus its first when the response began before the request ended (streaming).
package h2

import (
	"encoding/binary"
	"strconv"

	"golang.org/x/net/http2/hpack"
)

// Directions of a Chunk (HF_OUT, HF_IN in probes/httpflow.bpf.h).
const (
	Written = 0
	Read    = 1
)

// Frame types and flags (RFC 9113 §6).
const (
	frameData         = 0x0
	frameHeaders      = 0x1
	frameRSTStream    = 0x3
	frameSettings     = 0x4
	framePushPromise  = 0x5
	frameContinuation = 0x9

	flagEndStream  = 0x1
	flagAck        = 0x1
	flagEndHeaders = 0x4
	flagPadded     = 0x8
	flagPriority   = 0x20

	settingsHeaderTableSize = 0x1
)

const (
	frameHeaderLen = 9
	// maxPending bounds the bytes of one direction kept while a frame is incomplete (a header block split
	// over CONTINUATION frames included): far above any real header block.
	maxPending = 1 << 20
	// MaxStreams bounds the open streams followed per session; a stream beyond it is not reported.
	MaxStreams = 1024
	// MaxSessions bounds the sessions followed at once; the one idle longest makes room.
	MaxSessions = 16384
	// IdleNs: a session without a record for this long is forgotten (its close was not seen).
	IdleNs = 10 * 60 * 1e9
)

// Session names one TLS session: its SSL * or *tls.Conn in its process.
type Session struct {
	Pid uint32
	SSL uint64
}

// Chunk is one record of the probes: frames of one call, in order.
type Chunk struct {
	Session Session
	Dir     int    // Written or Read
	Seq     uint32 // the record's number in its session and direction
	Client  bool   // this side sent the connection preface
	Close   bool   // the session ended (no data)
	Lost    bool   // the kernel lost this direction's frame boundaries (after Data)
	TsNs    uint64 // monotonic time of the call
	Data    []byte // frames; a DATA frame's payload is absent, a padded one's pad length present
}

// Exchange is one stream: a request and its response.
type Exchange struct {
	Client                  bool // this side sent the request
	Method, Path, Authority string
	Status                  int
	GRPCStatus              int // -1: no grpc-status header
	ReqBytes, RespBytes     uint64
	LatencyNs               uint64
}

// Stats counts what was not reported, since the Tracker was created.
type Stats struct {
	Desyncs    uint64 // sessions dropped: a lost record, a frame the probes could not follow, bad HPACK
	Resets     uint64 // streams reset (RST_STREAM) before their response ended
	Unanswered uint64 // streams whose session ended or was forgotten before their response ended
	Dropped    uint64 // requests not followed: MaxStreams streams already open in their session
	Evicted    uint64 // sessions forgotten to stay within MaxSessions or idle for IdleNs
}

// Tracker follows every session. It is not safe for concurrent use.
type Tracker struct {
	sessions map[Session]*session
	stats    Stats
	lastTs   uint64
}

// NewTracker returns a Tracker following no session.
func NewTracker() *Tracker { return &Tracker{sessions: map[Session]*session{}} }

// Stats returns the counters.
func (t *Tracker) Stats() Stats { return t.stats }

type session struct {
	client  bool
	dirs    [2]direction
	streams map[uint32]*stream
	lastTs  uint64
	dead    bool // lost: nothing more can be decoded; forgotten at its close
}

type direction struct {
	seq     uint32
	pending []byte
	dec     *hpack.Decoder
	// A header block whose END_HEADERS is still to come: its stream, frame type and END_STREAM flag.
	block       []byte
	blockStream uint32
	blockType   byte
	blockEnd    bool
	inBlock     bool
}

type stream struct {
	method, path, authority string
	status, grpc            int
	reqBytes, respBytes     uint64
	reqStart, reqEnd        uint64
	respFirst               uint64
}

// Add takes one chunk and calls emit for each exchange it completes.
func (t *Tracker) Add(c Chunk, emit func(Exchange)) {
	if c.TsNs > t.lastTs {
		t.lastTs = c.TsNs
	}
	s := t.sessions[c.Session]
	if c.Close {
		if s != nil {
			t.forget(c.Session, s, false)
		}
		return
	}
	if s == nil {
		if c.Seq != 0 { // its start was not seen (or lost): HPACK cannot be followed
			t.stats.Desyncs++
			s = &session{dead: true}
		} else {
			s = newSession(c.Client)
		}
		if len(t.sessions) >= MaxSessions {
			t.evictOldest()
		}
		t.sessions[c.Session] = s
	}
	s.lastTs = c.TsNs
	if s.dead {
		return
	}
	d := &s.dirs[c.Dir&1]
	if c.Seq != d.seq {
		t.lose(s)
		return
	}
	d.seq++
	d.pending = append(d.pending, c.Data...)
	if !s.frames(c.Dir&1, c.TsNs, emit, &t.stats) || c.Lost || len(d.pending) > maxPending {
		t.lose(s)
	}
}

// Expire forgets the sessions idle for IdleNs, measured on the records' clock.
func (t *Tracker) Expire() {
	for k, s := range t.sessions {
		if t.lastTs-s.lastTs > IdleNs {
			t.forget(k, s, true)
		}
	}
}

func newSession(client bool) *session {
	s := &session{client: client, streams: map[uint32]*stream{}}
	for i := range s.dirs {
		s.dirs[i].dec = hpack.NewDecoder(4096, nil)
		s.dirs[i].dec.SetMaxStringLength(64 << 10)
	}
	return s
}

func (t *Tracker) lose(s *session) {
	t.stats.Desyncs++
	t.stats.Unanswered += uint64(len(s.streams))
	*s = session{dead: true, lastTs: s.lastTs}
}

func (t *Tracker) forget(k Session, s *session, evicted bool) {
	t.stats.Unanswered += uint64(len(s.streams))
	if evicted {
		t.stats.Evicted++
	}
	delete(t.sessions, k)
}

func (t *Tracker) evictOldest() {
	var oldest Session
	var old *session
	for k, s := range t.sessions {
		if old == nil || s.lastTs < old.lastTs {
			oldest, old = k, s
		}
	}
	if old != nil {
		t.forget(oldest, old, true)
	}
}

// reqDir is the direction that carries requests.
func (s *session) reqDir() int {
	if s.client {
		return Written
	}
	return Read
}

// frames consumes the whole frames pending in direction dir. It returns false when the session cannot be
// followed further.
func (s *session) frames(dir int, ts uint64, emit func(Exchange), st *Stats) bool {
	d := &s.dirs[dir]
	b := d.pending
	for len(b) >= frameHeaderLen {
		flen := int(b[0])<<16 | int(b[1])<<8 | int(b[2])
		typ, flags := b[3], b[4]
		id := binary.BigEndian.Uint32(b[5:9]) & 0x7fffffff
		have := flen // what the probes copied of the payload
		if typ == frameData {
			have = 0
			if flags&flagPadded != 0 && flen > 0 {
				have = 1
			}
		}
		if len(b) < frameHeaderLen+have {
			break
		}
		payload := b[frameHeaderLen : frameHeaderLen+have]
		b = b[frameHeaderLen+have:]
		if d.inBlock && typ != frameContinuation {
			return false // a header block must continue at once (RFC 9113 §6.10)
		}
		var ok bool
		switch typ {
		case frameData:
			ok = s.data(dir, id, flen, flags, payload, ts, emit)
		case frameHeaders, framePushPromise, frameContinuation:
			ok = s.headerFrame(dir, id, typ, flags, payload, ts, emit, st)
		case frameRSTStream:
			if _, open := s.streams[id]; open {
				delete(s.streams, id)
				st.Resets++
			}
			ok = true
		case frameSettings:
			if flags&flagAck == 0 {
				s.settings(dir, payload)
			}
			ok = true
		default: // PRIORITY, PING, GOAWAY, WINDOW_UPDATE, unknown types: nothing to report
			ok = true
		}
		if !ok {
			return false
		}
	}
	// Keep the incomplete frame, in a buffer of its own so that pending does not pin every record.
	d.pending = append(d.pending[:0], b...)
	return true
}

// settings: a SETTINGS_HEADER_TABLE_SIZE this side's peer announces bounds the table the other direction's
// encoder may use.
func (s *session) settings(dir int, p []byte) {
	for ; len(p) >= 6; p = p[6:] {
		if binary.BigEndian.Uint16(p) == settingsHeaderTableSize {
			s.dirs[1-dir].dec.SetAllowedMaxDynamicTableSize(binary.BigEndian.Uint32(p[2:]))
		}
	}
}

func (s *session) data(dir int, id uint32, flen int, flags byte, payload []byte, ts uint64, emit func(Exchange)) bool {
	n := flen
	if flags&flagPadded != 0 {
		if len(payload) < 1 || int(payload[0])+1 > flen {
			return false
		}
		n -= 1 + int(payload[0])
	}
	x := s.streams[id]
	if x == nil {
		return true // a stream not followed
	}
	if dir == s.reqDir() {
		x.reqBytes += uint64(n)
		if flags&flagEndStream != 0 {
			x.reqEnd = ts
		}
		return true
	}
	x.respBytes += uint64(n)
	if flags&flagEndStream != 0 {
		s.complete(id, x, emit)
	}
	return true
}

// headerFrame gathers a header block (HEADERS or PUSH_PROMISE, then CONTINUATIONs) and decodes it whole.
func (s *session) headerFrame(dir int, id uint32, typ, flags byte, p []byte, ts uint64, emit func(Exchange), st *Stats) bool {
	d := &s.dirs[dir]
	if typ == frameContinuation {
		if !d.inBlock || id != d.blockStream {
			return false
		}
		d.block = append(d.block, p...)
	} else {
		if flags&flagPadded != 0 {
			if len(p) < 1 || int(p[0])+1 > len(p) {
				return false
			}
			p = p[1 : len(p)-int(p[0])]
		}
		skip := 0
		if typ == frameHeaders && flags&flagPriority != 0 {
			skip = 5
		}
		if typ == framePushPromise {
			skip = 4 // the promised stream
		}
		if len(p) < skip {
			return false
		}
		d.block = append(d.block[:0], p[skip:]...)
		d.blockStream, d.blockType, d.blockEnd, d.inBlock = id, typ, flags&flagEndStream != 0, true
	}
	if flags&flagEndHeaders == 0 {
		return len(d.block) <= maxPending
	}
	d.inBlock = false
	fields, err := d.dec.DecodeFull(d.block)
	if err != nil {
		return false
	}
	if d.blockType == framePushPromise {
		return true // decoded for the table's sake; pushed responses are not reported
	}
	s.headers(dir, d.blockStream, fields, d.blockEnd, ts, emit, st)
	return true
}

// headers applies one decoded header block of stream id.
func (s *session) headers(dir int, id uint32, fields []hpack.HeaderField, end bool, ts uint64, emit func(Exchange), st *Stats) {
	x := s.streams[id]
	if dir == s.reqDir() {
		if x == nil { // a request (else its trailers)
			if len(s.streams) >= MaxStreams {
				st.Dropped++
				return
			}
			x = &stream{grpc: -1, reqStart: ts}
			for _, f := range fields {
				switch f.Name {
				case ":method":
					x.method = f.Value
				case ":path":
					x.path = f.Value
				case ":authority":
					x.authority = f.Value
				case "host":
					if x.authority == "" {
						x.authority = f.Value
					}
				}
			}
			s.streams[id] = x
		}
		if end {
			x.reqEnd = ts
		}
		return
	}
	if x == nil {
		return
	}
	for _, f := range fields {
		switch f.Name {
		case ":status":
			code, err := strconv.Atoi(f.Value)
			if err == nil && code >= 200 && x.status == 0 {
				x.status, x.respFirst = code, ts
			}
		case "grpc-status":
			if code, err := strconv.Atoi(f.Value); err == nil {
				x.grpc = code
			}
		}
	}
	if end {
		s.complete(id, x, emit)
	}
}

func (s *session) complete(id uint32, x *stream, emit func(Exchange)) {
	delete(s.streams, id)
	if x.status == 0 {
		return // ended without a final status: a malformed response
	}
	var lat uint64
	switch {
	case x.reqEnd != 0 && x.respFirst >= x.reqEnd:
		lat = x.respFirst - x.reqEnd
	case x.respFirst >= x.reqStart:
		lat = x.respFirst - x.reqStart
	}
	emit(Exchange{Client: s.client, Method: x.method, Path: x.path, Authority: x.authority, Status: x.status,
		GRPCStatus: x.grpc, ReqBytes: x.reqBytes, RespBytes: x.respBytes, LatencyNs: lat})
}
