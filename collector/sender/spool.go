package sender

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The spool is a directory of segment files, <20-digit unix nanoseconds>.spool, so names sort by the time they
// were written. A segment is a sequence of records, one per batch:
//
//	{"v":1,"id":"<32 hex>","category":"network","input":"ebpf-net/netflow","points":256,"bytes":51234,"crc32":123}\n
//	<body: exactly the bytes posted, the lines joined by \n>\n
//
// A segment is written as <name>.tmp, fsynced once and renamed (one fsync for the whole shutdown: one per
// batch costs ~20 ms each on a VM disk, seconds for a full buffer). The header's length and CRC catch a
// damaged record; a truncated one (a kill -9 mid-write of a .tmp) ends its file.
const (
	spoolVersion   = 1
	spoolExt       = ".spool"
	tmpExt         = ".tmp"
	maxHeaderBytes = 64 << 10
	maxBodyBytes   = 256 << 20 // a length beyond this is damage, not a batch
)

// segmentName matches the files Run reads back (with or without the .tmp of an unfinished write).
var segmentName = regexp.MustCompile(`^([0-9]{20})\.spool(\.tmp)?$`)

// errCorrupt marks a record that cannot be trusted (truncated, damaged or not ours).
var errCorrupt = errors.New("corrupt spool record")

type recordHeader struct {
	V        int    `json:"v"`
	ID       string `json:"id"`
	Category string `json:"category"`
	Input    string `json:"input"`
	Points   int    `json:"points"`
	Bytes    int    `json:"bytes"`
	CRC32    uint32 `json:"crc32"`
}

// segment is a spool file; it is deleted once none of its records is pending.
type segment struct {
	path    string
	stamp   int64
	pending int
}

// record is a batch waiting in a segment: what Run needs to order and count it, and where its body is.
type record struct {
	seg             *segment
	off             int64 // of the body
	size            int64 // header, body and newline: its share of the spool
	id              string
	category, input string
	points, bytes   int
	crc             uint32
	spilled         bool // written by this run while it ran (newer than the batch being posted)
}

// badRecord is a record (or the rest of a file) that was skipped.
type badRecord struct {
	path   string
	input  string // "" when the header could not be read
	points int
	err    error
}

// read returns r's body, checked against its CRC.
func (r *record) read() ([]byte, error) {
	f, err := os.Open(r.seg.path)
	if err != nil {
		return nil, fmt.Errorf("read spooled batch %s: %w", r.id, err)
	}
	defer f.Close()
	body := make([]byte, r.bytes)
	if _, err := f.ReadAt(body, r.off); err != nil {
		return nil, fmt.Errorf("read spooled batch %s from %s: %w", r.id, r.seg.path, err)
	}
	if crc32.ChecksumIEEE(body) != r.crc {
		return nil, fmt.Errorf("spooled batch %s in %s: %w: crc32 mismatch", r.id, r.seg.path, errCorrupt)
	}
	return body, nil
}

// encodeHeader returns the header line of a record (with its newline).
func encodeHeader(id, category, input string, points int, body []byte) []byte {
	h, _ := json.Marshal(recordHeader{V: spoolVersion, ID: id, Category: category, Input: input,
		Points: points, Bytes: len(body), CRC32: crc32.ChecksumIEEE(body)})
	return append(h, '\n')
}

// checkHeader reports what is wrong with a decoded header, or nil.
func checkHeader(h recordHeader) error {
	switch {
	case h.V != spoolVersion:
		return fmt.Errorf("version %d, want %d", h.V, spoolVersion)
	case len(h.ID) != 32 || strings.Trim(h.ID, "0123456789abcdef") != "":
		return fmt.Errorf("batch id %q", h.ID)
	case h.Bytes <= 0 || h.Bytes > maxBodyBytes:
		return fmt.Errorf("body length %d", h.Bytes)
	case h.Points <= 0:
		return fmt.Errorf("%d points", h.Points)
	}
	return nil
}

// scanSegment reads every record of seg. It stops at the first record whose framing cannot be trusted (the
// rest of the file is one bad record); a record whose body fails its checks is skipped and scanning goes on.
func scanSegment(seg *segment) (recs []*record, bad []badRecord, err error) {
	f, err := os.Open(seg.path)
	if err != nil {
		return nil, nil, fmt.Errorf("open spool segment: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, maxHeaderBytes)
	fail := func(h recordHeader, format string, a ...any) {
		bad = append(bad, badRecord{path: seg.path, input: h.Input, points: max(h.Points, 0),
			err: fmt.Errorf("%s: %w: %s", seg.path, errCorrupt, fmt.Sprintf(format, a...))})
	}
	var off int64
	for {
		line, err := br.ReadSlice('\n')
		if err == io.EOF && len(line) == 0 {
			return recs, bad, nil
		}
		if err != nil {
			fail(recordHeader{}, "header at offset %d: %v", off, err)
			return recs, bad, nil
		}
		var h recordHeader
		if err := json.Unmarshal(line, &h); err != nil {
			fail(recordHeader{}, "header at offset %d: %v", off, err)
			return recs, bad, nil
		}
		if err := checkHeader(h); err != nil {
			fail(h, "header at offset %d: %v", off, err)
			return recs, bad, nil
		}
		hl := int64(len(line))
		body := make([]byte, h.Bytes+1)
		if _, err := io.ReadFull(br, body); err != nil {
			fail(h, "batch %s at offset %d: truncated body", h.ID, off)
			return recs, bad, nil
		}
		if body[h.Bytes] != '\n' {
			fail(h, "batch %s at offset %d: no newline after the body", h.ID, off)
			return recs, bad, nil
		}
		body = body[:h.Bytes]
		size := hl + int64(h.Bytes) + 1
		switch lines := countLines(body); {
		case crc32.ChecksumIEEE(body) != h.CRC32:
			fail(h, "batch %s at offset %d: crc32 mismatch", h.ID, off)
		case lines != h.Points:
			fail(h, "batch %s at offset %d: %d lines, header says %d points", h.ID, off, lines, h.Points)
		default:
			recs = append(recs, &record{seg: seg, off: off + hl, size: size, id: h.ID, category: h.Category,
				input: h.Input, points: h.Points, bytes: h.Bytes, crc: h.CRC32})
		}
		off += size
	}
}

func countLines(body []byte) int {
	n := 1
	for _, c := range body {
		if c == '\n' {
			n++
		}
	}
	return n
}

// scanned is what scanSpool found.
type scanned struct {
	segments []*segment // every segment file, oldest first
	records  []*record  // the valid records, oldest first, each id once
	bad      []badRecord
}

// scanSpool reads every segment of dir (a missing dir is an empty spool). A record whose id an older record
// already has (a crash between writing a new segment and deleting the old ones) is left out: it is the
// same batch.
func scanSpool(dir string) (scanned, error) {
	var out scanned
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return out, fmt.Errorf("read spool directory: %w", err)
	}
	for _, e := range entries {
		m := segmentName.FindStringSubmatch(e.Name())
		if m == nil || !e.Type().IsRegular() {
			continue
		}
		stamp, _ := strconv.ParseInt(m[1], 10, 64)
		out.segments = append(out.segments, &segment{path: filepath.Join(dir, e.Name()), stamp: stamp})
	}
	// Oldest first; a finished segment before an unfinished one of the same stamp.
	slices.SortFunc(out.segments, func(a, b *segment) int { return strings.Compare(a.path, b.path) })
	seen := map[string]bool{}
	for _, seg := range out.segments {
		recs, bad, err := scanSegment(seg)
		if err != nil {
			out.bad = append(out.bad, badRecord{path: seg.path, err: err})
			continue
		}
		out.bad = append(out.bad, bad...)
		for _, r := range recs {
			if seen[r.id] {
				continue
			}
			seen[r.id] = true
			seg.pending++
			out.records = append(out.records, r)
		}
	}
	return out, nil
}

// spoolItem is a batch to write into a new segment: from memory, or a record of an older segment.
type spoolItem struct {
	b    *batch
	rec  *record
	size int64
}

func (it spoolItem) input() string {
	if it.rec != nil {
		return it.rec.input
	}
	return it.b.input
}

func (it spoolItem) points() int {
	if it.rec != nil {
		return it.rec.points
	}
	return it.b.points
}

func memItem(b *batch) spoolItem {
	return spoolItem{b: b, size: int64(len(encodeHeader(b.id, b.category, b.input, b.points, b.body)) + len(b.body) + 1)}
}

// writeSegment writes items to a new segment of dir stamped stamp: a temporary file, one fsync, a rename
// and an fsync of dir. A record that cannot be read back is left out and returned in unreadable.
func writeSegment(dir string, stamp int64, items []spoolItem) (path string, unreadable []badRecord, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", nil, fmt.Errorf("create spool directory: %w", err)
	}
	path = filepath.Join(dir, fmt.Sprintf("%020d%s", stamp, spoolExt))
	tmp := path + tmpExt
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return "", nil, fmt.Errorf("create spool segment: %w", err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for _, it := range items {
		b := it.b
		if it.rec != nil {
			body, rerr := it.rec.read()
			if rerr != nil {
				unreadable = append(unreadable, badRecord{path: it.rec.seg.path, input: it.rec.input, points: it.rec.points, err: rerr})
				continue
			}
			b = &batch{id: it.rec.id, category: it.rec.category, input: it.rec.input, points: it.rec.points, body: body}
		}
		_, _ = w.Write(encodeHeader(b.id, b.category, b.input, b.points, b.body))
		_, _ = w.Write(b.body)
		_ = w.WriteByte('\n')
	}
	err = w.Flush()
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return "", nil, fmt.Errorf("write spool segment %s: %w", path, err)
	}
	_ = syncDir(dir) // the segment is written; at worst a power cut forgets its name
	return path, unreadable, nil
}

// syncDir makes the renames in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// nextStamp returns a stamp for a new segment: now, but always after last, so names keep the spool's order.
func nextStamp(last int64) int64 {
	return max(time.Now().UnixNano(), last+1)
}
