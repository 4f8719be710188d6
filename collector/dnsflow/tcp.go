package dnsflow

// DNS over TCP (RFC 1035 §4.2.2, RFC 7766): each message is preceded by its length in two bytes, big
// endian. The kernel hands over segments as they pass the socket: a length prefix and its message may come
// apart, one segment may hold several messages (pipelined A and AAAA queries) and a message may span
// segments. Only a message's first MsgLen bytes are kept (header and question); later bytes only advance.

// conn is one TCP connection being reassembled: its two directions and the first owner seen.
type conn struct {
	dir      [2]stream // [0] received (answers), [1] sent (queries)
	owner    owner
	hasOwner bool
	last     uint64 // CLOCK_MONOTONIC of the latest record, for idle expiry and eviction
}

type streamState uint8

const (
	streamNew     streamState = iota // no segment yet: the first one starts a message
	streamRunning                    // next is the sequence number of the next byte
	streamDone                       // ended (FIN/RST) or desynchronized: later segments are ignored
)

// stream reassembles one direction of a connection.
type stream struct {
	state   streamState
	next    uint32 // sequence number of the next expected byte
	nPrefix int    // bytes of the length prefix read (0 or 1 between messages)
	prefix0 byte   // the prefix's first byte when it came alone
	inMsg   bool
	msgLen  int    // the current message's length
	msgGot  int    // bytes of it consumed
	msgTs   uint64 // timestamp of the segment it started in
	buf     []byte // its first bytes, while contiguous from its start (up to MsgLen)
}

// segment takes one TCP segment record.
func (t *Tracker) segment(e *Event, r rec) {
	c := t.conn(e.Cookie)
	if r.hasOwner && !c.hasOwner {
		c.owner, c.hasOwner = r.owner, true
	}
	c.last = max(c.last, r.ts)
	// Queries take the connection's owner: the segment that completes one may be sent from softirq.
	r.owner, r.hasOwner = c.owner, c.hasOwner
	d := 0
	if r.egress {
		d = 1
	}
	s := &c.dir[d]
	if s.state != streamDone {
		t.feed(s, r, e.Seq, int(e.Len), e.payload())
	}
	if e.Flags&FlagTCPFin != 0 {
		s.state, s.buf = streamDone, nil
		if c.dir[1-d].state == streamDone {
			delete(t.conns, e.Cookie)
		}
	}
}

// feed consumes a segment of n payload bytes starting at seq, of which capture holds the first ones.
func (t *Tracker) feed(s *stream, r rec, seq uint32, n int, capture []byte) {
	if s.state == streamNew {
		s.state, s.next = streamRunning, seq
	}
	off := int32(seq - s.next) // serial arithmetic: the sequence space wraps
	if off > 0 {               // bytes were missed: the boundaries are lost
		t.desync(s)
		return
	}
	p := int(-int64(off)) // skip what was already consumed (a retransmit)
	if p >= n {
		return
	}
	for p < n {
		if !s.inMsg {
			if p >= len(capture) { // a length prefix in bytes beyond the capture
				t.desync(s)
				return
			}
			b := capture[p]
			p++
			if s.nPrefix == 0 {
				s.prefix0, s.nPrefix, s.msgTs = b, 1, r.ts
				continue
			}
			s.nPrefix = 0
			s.msgLen, s.msgGot, s.buf = int(s.prefix0)<<8|int(b), 0, s.buf[:0]
			if s.msgLen == 0 {
				t.stats.Malformed++ // an empty message: nothing to parse
				continue
			}
			s.inMsg = true
			continue
		}
		k := min(s.msgLen-s.msgGot, n-p)
		if len(s.buf) == s.msgGot && p < len(capture) { // still contiguous from the message's start
			s.buf = append(s.buf, capture[p:p+min(k, len(capture)-p, MsgLen-len(s.buf))]...)
		}
		s.msgGot += k
		p += k
		if s.msgGot == s.msgLen {
			s.inMsg = false
			mr := r
			mr.ts = s.msgTs
			t.message(mr, s.buf) // a message whose start was not captured fails to parse: Malformed
		}
	}
	s.next = seq + uint32(n)
}

// desync abandons a stream whose message boundaries are lost; a new connection starts afresh.
func (t *Tracker) desync(s *stream) {
	t.stats.TCPDesyncs++
	*s = stream{state: streamDone}
}

// conn returns the reassembly state of a connection, making room for a new one if needed.
func (t *Tracker) conn(cookie uint64) *conn {
	if c := t.conns[cookie]; c != nil {
		return c
	}
	if len(t.conns) >= t.cfg.MaxStreams {
		var oldest uint64
		var oldestC *conn
		for k, c := range t.conns { // O(MaxStreams), only while that many connections are open
			if oldestC == nil || c.last < oldestC.last {
				oldest, oldestC = k, c
			}
		}
		delete(t.conns, oldest)
		t.stats.StreamsEvicted++
	}
	c := &conn{}
	t.conns[cookie] = c
	return c
}

// expireConns forgets connections idle for the query timeout: whatever they were in the middle of
// has timed out, and their next segment (a new query) starts a message.
func (t *Tracker) expireConns(nowMono uint64) {
	for k, c := range t.conns {
		if nowMono >= c.last && nowMono-c.last >= t.timeoutNs {
			delete(t.conns, k)
		}
	}
}
