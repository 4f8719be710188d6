package dnsflow

import (
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"dkebpf/collector/flow"
	"dkebpf/collector/plugin/plugintest"
	"dkebpf/collector/point"
)

// FuzzParse feeds arbitrary bytes to the parser and, as UDP datagrams and TCP segments in both directions,
// to a Tracker: nothing may panic, and what parses keeps its invariants.
func FuzzParse(f *testing.F) {
	f.Add(queryMsg(f, 0x1234, "www.example.com", dnsmessage.TypeA))
	f.Add(answerMsg(f, 0x1234, "www.example.com", dnsmessage.TypeA, dnsmessage.RCodeSuccess,
		rr{"www.example.com", dnsmessage.TypeCNAME, 30, "edge.cdn.net"},
		rr{"edge.cdn.net", dnsmessage.TypeA, 20, "192.0.2.1"},
		rr{"edge.cdn.net", dnsmessage.TypeAAAA, 40, "2001:db8::1"}))
	f.Add(answerMsg(f, 9, "nope.example", dnsmessage.TypeAAAA, dnsmessage.RCodeNameError))
	f.Add(manyA(f, 7, "big.example.com", 60)[:MsgLen])
	f.Add(frame(queryMsg(f, 1, "a.example", dnsmessage.TypeA), queryMsg(f, 2, "a.example", dnsmessage.TypeAAAA)))
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := parse(b); err == nil {
			if m.question && (m.qname == "" || m.qtype == "") {
				t.Errorf("parsed %x with an empty name or type: %+v", b, m)
			}
			if !m.response && !m.question {
				t.Errorf("parsed a query without a question: %x", b)
			}
		}
		tr := newTestTracker(Config{MaxInFlight: 4, MaxStreams: 2, MaxNames: 4})
		for _, flags := range []uint8{FlagEgress | FlagOwner, 0} {
			tr.Add(ev(udp4, 1, 10, flags, b))
			half := len(b) / 2
			e := ev(tcp4, 2, 20, flags, b[:half])
			tr.Add(e)
			e = ev(tcp4, 2, 30, flags|FlagTCPFin, b[half:])
			e.Seq = uint32(half)
			tr.Add(e)
		}
		tr.Expire(1 << 40)
		for _, p := range tr.Flush(wall0) {
			if p.Fields["count"].(int64) < 1 {
				t.Errorf("point with count %v", p.Fields["count"])
			}
		}
	})
}

// hdr is a DNS header: id, flags (QR, opcode, AA, TC, RD, RA, rcode) and the four section counts.
func hdr(id, flags, qd, an, ns, ar uint16) []byte {
	var b []byte
	for _, v := range []uint16{id, flags, qd, an, ns, ar} {
		b = binary.BigEndian.AppendUint16(b, v)
	}
	return b
}

// cat joins byte slices and strings.
func cat(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		switch p := p.(type) {
		case []byte:
			b = append(b, p...)
		case string:
			b = append(b, p...)
		}
	}
	return b
}

// Parts of the hand-made messages of dnsSeeds.
const (
	qA       = "\x00\x01\x00\x01" // type A, class IN
	rrA      = "\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x01"
	rrCNAME  = "\x00\x05\x00\x01\x00\x00\x00\x3c"
	exampleC = "\x07example\x03com\x00"
)

// dnsSeeds are DNS messages for the seeds: the unit tests' and hand-made ones a builder refuses to make.
func dnsSeeds(tb testing.TB) [][]byte {
	label63 := "\x3f" + strings.Repeat("a", 63)
	return [][]byte{
		queryMsg(tb, 0x1234, "www.example.com", dnsmessage.TypeA),
		queryMsg(tb, 1, "WWW.Example.COM", dnsmessage.TypeAAAA),
		queryMsg(tb, 2, ".", dnsmessage.TypeALL),
		queryMsg(tb, 3, "x.test", dnsmessage.Type(65280)),
		answerMsg(tb, 0x1234, "www.example.com", dnsmessage.TypeA, dnsmessage.RCodeSuccess,
			rr{"www.example.com", dnsmessage.TypeCNAME, 30, "edge.cdn.net"},
			rr{"edge.cdn.net", dnsmessage.TypeA, 20, "192.0.2.1"},
			rr{"edge.cdn.net", dnsmessage.TypeAAAA, 40, "::ffff:192.0.2.2"}),
		answerMsg(tb, 9, "nope.example", dnsmessage.TypeAAAA, dnsmessage.RCodeNameError),
		manyA(tb, 7, "big.example.com", 60)[:MsgLen],
		// FORMERR without the question
		hdr(5, 0x8101, 0, 0, 0, 0),
		// a query without a question
		hdr(5, 0x0100, 0, 0, 0, 0),
		// a cut header
		hdr(5, 0x0100, 1, 0, 0, 0)[:11],
		// a question name pointing at itself
		cat(hdr(6, 0x0100, 1, 0, 0, 0), "\xc0\x0c", qA),
		// a two-pointer loop
		cat(hdr(6, 0x0100, 1, 0, 0, 0), "\xc0\x12", qA, "\xc0\x0c"),
		// a pointer past the end
		cat(hdr(6, 0x0100, 1, 0, 0, 0), "\xc0\xff", qA),
		// half a pointer
		cat(hdr(6, 0x0100, 1, 0, 0, 0), "\xc0"),
		// a pointer into the header
		cat(hdr(6, 0x0100, 1, 0, 0, 0), "\xc0\x00", qA),
		// a reserved label type
		cat(hdr(6, 0x0100, 1, 0, 0, 0), "\x80\x01a\x00", qA),
		// a dot inside a label
		cat(hdr(6, 0x0100, 1, 0, 0, 0), "\x03a.b\x00", qA),
		// bytes that need escaping
		cat(hdr(6, 0x0100, 1, 0, 0, 0), "\x05A\\\x00\xff \x03COM\x00", qA),
		// 255 bytes
		cat(hdr(6, 0x0100, 1, 0, 0, 0), label63, label63, label63, "\x3d", strings.Repeat("b", 61), "\x00", qA),
		// too long
		cat(hdr(6, 0x0100, 1, 0, 0, 0), label63, label63, label63, label63, "\x00", qA),
		// an answer whose second record's name points at itself
		cat(hdr(7, 0x8180, 1, 2, 0, 0), exampleC, qA, "\xc0\x0c", rrA, "\xc0\x2d", rrA),
		// an answer whose record's name points past the end
		cat(hdr(7, 0x8180, 1, 1, 0, 0), exampleC, qA, "\xc0\xf0", rrA),
		// CNAME cdn.com (a pointer to the next record's name, itself a label and a pointer), its A
		cat(hdr(7, 0x8180, 1, 2, 0, 0), exampleC, qA, "\xc0\x0c", rrCNAME, "\x00\x02\xc0\x2b", "\x03cdn\xc0\x14", rrA),
		// a record of www.example.com: a label and a pointer
		cat(hdr(7, 0x8180, 1, 1, 0, 0), exampleC, qA, "\x03www\xc0\x0c", rrA),
		// more answers counted than sent
		cat(hdr(7, 0x8180, 1, 65535, 0, 0), exampleC, qA, "\xc0\x0c", rrA),
		// a cut address
		cat(hdr(7, 0x8180, 1, 1, 0, 0), exampleC, qA, "\xc0\x0c", rrA[:12]),
		// two DNS-over-TCP queries in one segment
		frame(queryMsg(tb, 1, "a.example", dnsmessage.TypeA), queryMsg(tb, 2, "a.example", dnsmessage.TypeAAAA)),
	}
}

// FuzzEventDecode decodes arbitrary records and hands them to a Plugin, then again with the direction
// flipped so that a query meets its answer: a record without its header or with fewer payload bytes than
// its cap says is an error, a decoded one re-encodes to its bytes (padding aside), decoding into a used
// Event shows the same payload, and the points are what dnsflow promises.
func FuzzEventDecode(f *testing.F) {
	for i, msg := range dnsSeeds(f) {
		flags := uint8(FlagOwner | FlagEgress)
		if len(msg) > 2 && msg[2]&0x80 != 0 {
			flags = 0 // answers come in
		}
		tp := []flow.Tuple{udp4, tcp4}[i%2]
		raw := plugintest.Raw(f, ev(tp, uint64(i), 1e9, flags, msg))
		f.Add(raw)
		f.Add(raw[:SizeHeader+min(len(msg), MsgLen)]) // as the kernel sends it
	}
	e := ev(udp4, 1, 1e9, FlagEgress, queryMsg(f, 1, "a.example", dnsmessage.TypeA))
	e.Len, e.Cap = 1<<31, 60000 // lengths beyond the buffer
	f.Add(plugintest.Raw(f, e))
	f.Add(plugintest.Raw(f, e)[:SizeHeader+30])
	f.Add(plugintest.Raw(f, e)[:SizeHeader-1])
	f.Add([]byte("short"))

	log := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var e Event
		err := e.UnmarshalBinary(b)
		if len(b) < SizeHeader || len(b) >= 74 && int(binary.NativeEndian.Uint16(b[72:])) > len(b)-SizeHeader {
			if err == nil {
				t.Fatalf("decoding a %d-byte record with cap %d succeeded", len(b), e.Cap)
			}
			return
		}
		if err != nil {
			t.Fatalf("decoding a %d-byte record: %v", len(b), err)
		}
		var raw bytes.Buffer
		if err := binary.Write(&raw, binary.NativeEndian, &e); err != nil {
			t.Fatal(err)
		}
		n := SizeHeader + min(int(e.Cap), MsgLen)
		want := bytes.Clone(b[:n])
		want[39], want[75] = 0, 0 // the padding of the tuple and after Flags
		if !bytes.Equal(raw.Bytes()[:n], want) {
			t.Errorf("decoded %+v re-encodes to\n%x\nwant\n%x", e, raw.Bytes()[:n], want)
		}
		pl := e.payload()
		if len(pl) > int(e.Cap) || len(pl) > int(e.Len) || !bytes.Equal(pl, b[SizeHeader:SizeHeader+len(pl)]) {
			t.Errorf("payload %x of a record with len %d, cap %d", pl, e.Len, e.Cap)
		}
		dirty := Event{Pid: 7, Cap: MsgLen, Len: MsgLen}
		for i := range dirty.Msg {
			dirty.Msg[i] = 0xa5
		}
		if err := dirty.UnmarshalBinary(b); err != nil || !bytes.Equal(dirty.payload(), pl) || dirty.T != e.T ||
			dirty.Cookie != e.Cookie || dirty.Seq != e.Seq || dirty.Flags != e.Flags || dirty.Comm != e.Comm {
			t.Errorf("decoding into a used Event gave %+v, %v; want %+v", dirty, err, e)
		}

		flipped := bytes.Clone(b)
		flipped[74] ^= FlagEgress
		binary.NativeEndian.PutUint64(flipped[48:], e.TsNs+1000)
		k := &fakeKernel{events: plugintest.Ring{b, flipped}}
		p := NewPlugin(k, Config{MaxInFlight: 4, MaxStreams: 2, MaxNames: 4}, log)
		p.tr.now = func() time.Time { return wall0 }
		p.now = func() uint64 { return e.TsNs + uint64(DefaultTimeout) + 2000 }
		p.Drain()
		for _, pt := range p.Flush(wall0) {
			checkPoint(t, pt)
		}
		c := p.Counters()
		if c.Events != 2 || c.DecodeErrors != 0 || e.TsNs < 1<<62 && c.Extra["in_flight"] != 0 {
			t.Errorf("counters %+v", c)
		}
	})
}

// checkPoint checks what dnsflow itself puts into a point, and that line protocol can carry it.
func checkPoint(t *testing.T, pt point.Point) {
	t.Helper()
	if c := pt.Fields["count"].(int64); c < 1 {
		t.Errorf("point with count %d", c)
	}
	rc := pt.Fields["rcode"].(int64)
	if rc < -1 || rc > 15 || pt.Tags["rcode_name"] != rcodeName(int(rc)) {
		t.Errorf("point with rcode %d, rcode_name %q", rc, pt.Tags["rcode_name"])
	}
	if rc == -1 && (pt.Fields["latency"] != int64(0) || pt.Fields["latency_max"] != int64(0)) {
		t.Errorf("unanswered point with latency %v, max %v", pt.Fields["latency"], pt.Fields["latency_max"])
	}
	if l, m := pt.Fields["latency"].(int64), pt.Fields["latency_max"].(int64); l < 0 || l > m {
		t.Errorf("point with latency %d, max %d", l, m)
	}
	checkName(t, pt.Tags["qname"])
	// The process name is the kernel's comm, which dnsflow does not clean: encode what dnsflow makes.
	own := point.Point{Name: pt.Name, Fields: pt.Fields, Time: pt.Time, Tags: map[string]string{}}
	for _, k := range []string{"qname", "qtype", "rcode_name", "src_port", "dst_port", "transport"} {
		own.Tags[k] = pt.Tags[k]
	}
	if _, err := point.NewEncoder(nil).Encode(own); err != nil {
		t.Errorf("point %+v: %v", own, err)
	}
}

// checkName checks a name as nameString writes it: bounded, printable ASCII, lower case, escapes whole.
func checkName(t *testing.T, s string) {
	t.Helper()
	if s == "" || len(s) > 4*255 {
		t.Errorf("name %q of %d bytes", s, len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || 'A' <= c && c <= 'Z' {
			t.Errorf("name %q: byte %#x", s, c)
		}
		if c == '\\' && (i+3 >= len(s) || !isDigits(s[i+1:i+4])) {
			t.Errorf("name %q: backslash not followed by three digits", s)
		}
	}
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// unescape undoes nameString's \DDD escapes.
func unescape(s string) []byte {
	var b []byte
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isDigits(s[i+1:i+4]) {
			d, _ := strconv.Atoi(s[i+1 : i+4])
			b = append(b, byte(d))
			i += 3
			continue
		}
		b = append(b, s[i])
	}
	return b
}

func asciiLower(b []byte) []byte {
	out := bytes.Clone(b)
	for i, c := range out {
		if 'A' <= c && c <= 'Z' {
			out[i] = c + 'a' - 'A'
		}
	}
	return out
}

// FuzzParseMessage checks parse on arbitrary messages against the header's bytes and dnsmessage's own
// reading of the question: names are bounded, escaped and lower-cased without losing a byte, compression
// loops and pointers past the end are errors (not hangs), and the answer yields at most one record per
// record's minimum size.
func FuzzParseMessage(f *testing.F) {
	for _, b := range dnsSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > MsgLen {
			return // the tracker parses at most MsgLen bytes; longer inputs only slow the fuzzer's minimization
		}
		m, err := parse(b)
		var p dnsmessage.Parser
		_, herr := p.Start(b)
		q, qerr := p.Question()
		if err != nil {
			if herr == nil && qerr == nil {
				t.Errorf("parse(%x): %v; dnsmessage reads the question %v", b, err, q)
			}
			return
		}
		if len(b) < 12 {
			t.Fatalf("parse of %d bytes succeeded", len(b))
		}
		if m.id != binary.BigEndian.Uint16(b) || m.response != (b[2]&0x80 != 0) || m.rcode != int(b[3]&0x0f) {
			t.Errorf("parse(%x) header %+v", b[:12], m)
		}
		if !m.question {
			if !m.response || qerr == nil {
				t.Errorf("parse(%x) without a question: %+v", b, m)
			}
		} else {
			if qerr != nil {
				t.Fatalf("parse(%x) has a question, dnsmessage: %v", b, qerr)
			}
			checkName(t, m.qname)
			want := asciiLower(bytes.TrimSuffix(q.Name.Data[:q.Name.Length], []byte(".")))
			if got := unescape(m.qname); !bytes.Equal(got, want) && !(m.qname == "." && len(want) == 0) {
				t.Errorf("parse(%x) qname %q is %q unescaped, want %q", b, m.qname, got, want)
			}
			if m.qtype == "" || strings.ContainsAny(m.qtype, " \t\n") {
				t.Errorf("parse(%x) qtype %q", b, m.qtype)
			}
		}
		if (!m.response || m.rcode != 0) && (len(m.addrs) > 0 || len(m.cnames) > 0) {
			t.Errorf("parse(%x): records of a query or a failed answer: %+v", b, m)
		}
		// The smallest record is a root name (1 byte), 10 bytes of header and one of data.
		if n := len(m.addrs) + len(m.cnames); n > (len(b)-12)/12 {
			t.Errorf("parse of %d bytes found %d records", len(b), n)
		}
		for _, a := range m.addrs {
			checkName(t, a.owner)
			if !a.addr.IsValid() || a.addr.Is4In6() {
				t.Errorf("parse(%x) address %v", b, a.addr)
			}
		}
		for _, c := range m.cnames {
			checkName(t, c)
		}
	})
}
