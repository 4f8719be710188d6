package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	lp "github.com/influxdata/line-protocol/v2/lineprotocol"
	"github.com/klauspost/compress/s2"
	bolt "go.etcd.io/bbolt"
)

// ErrStopScan, returned by a Scan callback, ends the scan early without an error.
var ErrStopScan = errors.New("stop scan")

// Scan calls fn with each point matching q (Limit is ignored), one at a time: for aggregations over ranges
// too large to materialise. With keys, the point fn sees holds only the tags and fields of those keys (and
// q.Tags'), which makes a scan several times faster; nil keys: all of them. Blocks are visited newest first
// (by their first time), points of a block in the order they were written, so times are only roughly
// descending. fn must not keep p (it is reused; its strings may be kept) and must not use the store. A
// damaged block is skipped and logged, as by Query. fn's error ends the scan and is returned, except
// ErrStopScan.
func (s *Store) Scan(q Query, keys []string, fn func(p *Point) error) error {
	since, until := int64(math.MinInt64), int64(math.MaxInt64)
	if !q.Since.IsZero() {
		since = q.Since.UnixNano()
	}
	if !q.Until.IsZero() {
		until = q.Until.UnixNano()
	}
	var damaged error
	sc := &scanner{q: q, since: since, until: until, fn: fn, strs: map[string]string{}}
	if keys != nil {
		sc.keys = make([]string, 0, len(keys)+len(q.Tags))
		sc.keys = append(sc.keys, keys...)
		for k := range q.Tags {
			sc.keys = append(sc.keys, k)
		}
	}
	// The walk is cut into read transactions of scanTxBlocks blocks each: a long read transaction would hold
	// bbolt's mmap lock, which a write that grows the file waits for.
	from := indexKey(until, math.MaxUint64) // resume below this key
	var err error
	for more := true; more && err == nil; {
		more = false
		err = s.view(func(tx *bolt.Tx) error {
			mb := tx.Bucket(indexBucket).Bucket([]byte(q.Measurement))
			if mb == nil {
				return nil
			}
			lb := tx.Bucket(logBucket)
			c := mb.Cursor()
			k, v := c.Seek(from)
			if k == nil {
				k, v = c.Last()
			} else {
				k, v = c.Prev()
			}
			var last []byte // the last key walked: the next transaction resumes below it
			for n := 0; k != nil; k, v = c.Prev() {
				minT, seq := parseIndexKey(k)
				if minT+int64(blockMaxSpan) < since {
					return nil // no earlier block can reach since
				}
				if n == scanTxBlocks {
					from, more = slices.Clone(last), true
					return nil
				}
				n, last = n+1, k
				if len(v) < 8 || minT > until || int64(binary.BigEndian.Uint64(v)) < since {
					continue
				}
				bv := lb.Get(seqKey(seq))
				if bv == nil {
					continue
				}
				h, z, err := parseBlock(bv)
				if err == nil && q.Category != "" && h.Category != q.Category {
					continue
				}
				if err == nil {
					err = sc.block(h, z)
				}
				if errors.Is(err, errStop) {
					return nil
				}
				if err != nil {
					s.log.Printf("store: %s: block %d of %s skipped: %v", s.path, seq, q.Measurement, err)
					damaged = fmt.Errorf("%w: block %d: %v", ErrDamaged, seq, err)
				}
			}
			return nil
		})
	}
	if err != nil {
		return fmt.Errorf("scan %s: %w", q.Measurement, err)
	}
	if damaged != nil && !s.opts.ReadOnly {
		s.repair(damaged)
	}
	if sc.stopped != nil && !errors.Is(sc.stopped, ErrStopScan) {
		return sc.stopped
	}
	return nil
}

// scanTxBlocks is the most blocks Scan reads in one read transaction (about 20 ms of netflow here); a
// variable for tests.
var scanTxBlocks = 256

// errStop ends the walk of the index once fn returned an error.
var errStop = errors.New("stopped")

// scanner decodes blocks for Scan into one reused Point.
type scanner struct {
	q            Query
	since, until int64
	keys         []string // nil: every key
	fn           func(p *Point) error
	stopped      error // fn's error

	raw  []byte            // decompressed block, reused
	p    Point             // reused
	strs map[string]string // tag values and strings already seen, so that repeats allocate nothing
}

func (sc *scanner) want(k []byte) bool {
	if sc.keys == nil {
		return true
	}
	for _, w := range sc.keys {
		if w == string(k) {
			return true
		}
	}
	return false
}

// str returns b as a string, shared with earlier equal ones while the table is small.
func (sc *scanner) str(b []byte) string {
	if v, ok := sc.strs[string(b)]; ok {
		return v
	}
	v := string(b)
	if len(sc.strs) < 1<<16 {
		sc.strs[v] = v
	}
	return v
}

// block passes the block's matching points to fn; errStop when fn said to stop.
func (sc *scanner) block(h blockHeader, z []byte) error {
	n, err := s2.DecodedLen(z)
	if err != nil {
		return fmt.Errorf("%w: %v", errBadBlock, err)
	}
	if cap(sc.raw) < n {
		sc.raw = make([]byte, n)
	}
	raw, err := s2.Decode(sc.raw[:cap(sc.raw)], z)
	if err != nil {
		return fmt.Errorf("%w: %v", errBadBlock, err)
	}
	p := &sc.p
	p.Category, p.Input = h.Category, h.Input
	dec := lp.NewDecoderWithBytes(raw)
	for dec.Next() {
		p.Tags, p.Fields = p.Tags[:0], p.Fields[:0]
		m, err := dec.Measurement()
		if err != nil {
			return fmt.Errorf("%w: %v", errBadBlock, err)
		}
		p.Measurement = sc.str(m)
		for {
			k, v, err := dec.NextTag()
			if err != nil {
				return fmt.Errorf("%w: %v", errBadBlock, err)
			}
			if k == nil {
				break
			}
			if sc.want(k) {
				p.Tags = append(p.Tags, Tag{Key: sc.str(k), Value: sc.str(v)})
			}
		}
		for {
			k, kind, v, err := dec.NextFieldBytes()
			if err != nil {
				return fmt.Errorf("%w: %v", errBadBlock, err)
			}
			if k == nil {
				break
			}
			if !sc.want(k) {
				continue
			}
			var val lp.Value
			ok := true
			if kind == lp.String { // copied out of the decoder's buffer, once per distinct string
				val, ok = lp.StringValue(sc.str(v))
				err = nil
				if !ok {
					err = errors.New("string field is not valid UTF-8")
				}
			} else {
				val, err = lp.NewValueFromBytes(kind, v)
			}
			if err != nil {
				return fmt.Errorf("%w: %v", errBadBlock, err)
			}
			p.Fields = append(p.Fields, Field{Key: sc.str(k), Value: val})
		}
		t, err := dec.Time(lp.Nanosecond, time.Time{})
		if err != nil {
			return fmt.Errorf("%w: %v", errBadBlock, err)
		}
		p.Time = t
		if ns := t.UnixNano(); ns < sc.since || ns > sc.until || !p.matches(sc.q) {
			continue
		}
		if err := sc.fn(p); err != nil {
			sc.stopped = err
			return errStop
		}
	}
	if err := dec.Err(); err != nil {
		return fmt.Errorf("%w: %v", errBadBlock, err)
	}
	return nil
}
