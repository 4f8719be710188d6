package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	lp "github.com/influxdata/line-protocol/v2/lineprotocol"
	"github.com/klauspost/compress/s2"
)

// A block is the unit of storage: up to blockMaxPoints points of one measurement, category and input, from
// one write, whose times span at most blockMaxSpan. Its value in the log bucket is
//
//	version (1 byte) | CRC-32C of the rest (4) | header | s2-compressed line protocol, one point per line
//
// and the header is category, input, measurement (each a uvarint length and bytes), the minimum and maximum
// time (varint ns) and the number of points (uvarint). The checksum finds a damaged block on any read.
const (
	blockVersion   = 2
	blockMaxPoints = 4096
	blockMaxRaw    = 16 << 10 // bytes of line protocol before compression
	blockMaxSpan   = time.Hour
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errBadBlock marks a block whose checksum or encoding is wrong.
var errBadBlock = errors.New("damaged block")

// blockHeader is what a block says about its points without decompressing them.
type blockHeader struct {
	Category, Input, Measurement string
	MinTime, MaxTime             int64 // ns
	Points                       int
}

// blockBuilder accumulates the points of one block.
type blockBuilder struct {
	h   blockHeader
	enc lp.Encoder
}

func newBlockBuilder(category, input, measurement string) *blockBuilder {
	return &blockBuilder{h: blockHeader{Category: category, Input: input, Measurement: measurement}}
}

// fits says whether a point at ns may join the block.
func (b *blockBuilder) fits(ns int64) bool {
	if b.h.Points == 0 {
		return true
	}
	lo, hi := min(b.h.MinTime, ns), max(b.h.MaxTime, ns)
	return b.h.Points < blockMaxPoints && len(b.enc.Bytes()) < blockMaxRaw && hi-lo <= int64(blockMaxSpan)
}

// add appends p, whose tags are sorted, as one line.
func (b *blockBuilder) add(p *Point) error {
	ns := p.Time.UnixNano()
	b.enc.StartLine(p.Measurement)
	for _, t := range p.Tags {
		b.enc.AddTag(t.Key, t.Value)
	}
	for _, f := range p.Fields {
		b.enc.AddField(f.Key, f.Value)
	}
	b.enc.EndLine(p.Time)
	if err := b.enc.Err(); err != nil {
		return fmt.Errorf("encode point %s: %w", p.Measurement, err)
	}
	if b.h.Points == 0 || ns < b.h.MinTime {
		b.h.MinTime = ns
	}
	if b.h.Points == 0 || ns > b.h.MaxTime {
		b.h.MaxTime = ns
	}
	b.h.Points++
	return nil
}

// value returns the block's stored form.
func (b *blockBuilder) value() []byte {
	h := &b.h
	v := make([]byte, 5, 5+len(h.Category)+len(h.Input)+len(h.Measurement)+40+s2.MaxEncodedLen(len(b.enc.Bytes())))
	v[0] = blockVersion
	for _, s := range []string{h.Category, h.Input, h.Measurement} {
		v = binary.AppendUvarint(v, uint64(len(s)))
		v = append(v, s...)
	}
	v = binary.AppendVarint(v, h.MinTime)
	v = binary.AppendVarint(v, h.MaxTime)
	v = binary.AppendUvarint(v, uint64(h.Points))
	v = append(v, s2.Encode(v[len(v):cap(v)], b.enc.Bytes())...)
	binary.BigEndian.PutUint32(v[1:5], crc32.Checksum(v[5:], castagnoli))
	return v
}

// parseBlock checks v's checksum and returns its header and compressed points.
func parseBlock(v []byte) (blockHeader, []byte, error) {
	if len(v) < 5 || v[0] != blockVersion {
		return blockHeader{}, nil, fmt.Errorf("%w: unknown version", errBadBlock)
	}
	if crc32.Checksum(v[5:], castagnoli) != binary.BigEndian.Uint32(v[1:5]) {
		return blockHeader{}, nil, fmt.Errorf("%w: checksum mismatch", errBadBlock)
	}
	return parseHeader(v)
}

// parseHeader returns v's header and compressed points without checking the checksum (for counts that
// must not read every byte of the store).
func parseHeader(v []byte) (blockHeader, []byte, error) {
	var h blockHeader
	if len(v) < 5 || v[0] != blockVersion {
		return h, nil, fmt.Errorf("%w: unknown version", errBadBlock)
	}
	rest := v[5:]
	str := func() string {
		n, w := binary.Uvarint(rest)
		if w <= 0 || uint64(len(rest)-w) < n {
			rest = nil
			return ""
		}
		s := string(rest[w : w+int(n)])
		rest = rest[w+int(n):]
		return s
	}
	num := func() int64 {
		n, w := binary.Varint(rest)
		if w <= 0 {
			rest = nil
			return 0
		}
		rest = rest[w:]
		return n
	}
	h.Category, h.Input, h.Measurement = str(), str(), str()
	h.MinTime, h.MaxTime = num(), num()
	n, w := binary.Uvarint(rest)
	if rest == nil || w <= 0 || n > blockMaxPoints {
		return h, nil, fmt.Errorf("%w: bad header", errBadBlock)
	}
	h.Points = int(n)
	return h, rest[w:], nil
}

// decodeBlock returns the points of a block: all of them, or those for which keep says true.
func decodeBlock(v []byte, keep func(*Point) bool) (blockHeader, []Point, error) {
	h, z, err := parseBlock(v)
	if err != nil {
		return h, nil, err
	}
	pts, err := decodePoints(h, z, keep)
	return h, pts, err
}

// decodePoints decompresses the points parseBlock returned, keeping those for which keep says true.
func decodePoints(h blockHeader, z []byte, keep func(*Point) bool) ([]Point, error) {
	raw, err := s2.Decode(nil, z)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadBlock, err)
	}
	var out []Point
	dec := lp.NewDecoderWithBytes(raw)
	for dec.Next() {
		p, err := DecodeLine(dec)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errBadBlock, err)
		}
		if p.Time, err = dec.Time(lp.Nanosecond, time.Time{}); err != nil {
			return nil, fmt.Errorf("%w: %v", errBadBlock, err)
		}
		p.Category, p.Input = h.Category, h.Input
		if keep == nil || keep(&p) {
			out = append(out, p)
		}
	}
	if err := dec.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadBlock, err)
	}
	return out, nil
}
