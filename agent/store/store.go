// Package store is the agent's embedded local point store: every point the
// API accepts is committed to a bbolt file, queried by measurement, time range
// and tags, and bounded by age and size.
//
// Layout: the points of a write are grouped into blocks (block.go): one
// measurement, category and input each, compressed, with a checksum. Blocks
// are kept in the order they were written (the log bucket, by sequence), and
// indexed per measurement by their first time. Reads check every block's
// checksum; a file bbolt cannot read is set aside and its intact blocks are
// copied into a new one (repair.go).
//
// Size bound: bbolt files never shrink (freed pages are reused), so the size
// bound applies to the data in use, measured as file size minus free pages.
// It is enforced before every write by evicting the oldest blocks, and by the
// retention pass.
package store

import (
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"log"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lp "github.com/influxdata/line-protocol/v2/lineprotocol"
	bolt "go.etcd.io/bbolt"
)

// Defaults for Options.
const (
	DefaultMaxSize = 512 << 20
	DefaultMaxAge  = 168 * time.Hour
)

// Tag is one tag of a point.
type Tag struct{ Key, Value string }

// Field is one field of a point.
type Field struct {
	Key   string
	Value lp.Value
}

// Point is a stored point: what the API received plus where it came from.
type Point struct {
	Category    string // API category, e.g. "network"
	Input       string // the write's input query value, e.g. "ebpf-net/netflow"
	Measurement string
	Tags        []Tag // sorted by key
	Fields      []Field
	Time        time.Time
}

// Tag returns the value of tag key and whether it is set.
func (p *Point) Tag(key string) (string, bool) {
	for _, t := range p.Tags {
		if t.Key == key {
			return t.Value, true
		}
	}
	return "", false
}

// AppendLineProtocol appends p as one line of line protocol with a
// nanosecond timestamp, without a trailing newline.
func (p *Point) AppendLineProtocol(buf []byte) ([]byte, error) {
	var enc lp.Encoder
	enc.SetBuffer(buf)
	tags := append([]Tag(nil), p.Tags...)
	sort.Slice(tags, func(i, j int) bool { return tags[i].Key < tags[j].Key })
	enc.StartLine(p.Measurement)
	for _, t := range tags {
		enc.AddTag(t.Key, t.Value)
	}
	for _, f := range p.Fields {
		enc.AddField(f.Key, f.Value)
	}
	enc.EndLine(p.Time)
	if err := enc.Err(); err != nil {
		return buf, fmt.Errorf("encode point %s: %w", p.Measurement, err)
	}
	out := enc.Bytes()
	return out[:len(out)-1], nil // drop EndLine's '\n'
}

// Options bound the store.
type Options struct {
	MaxSize  int64         // bytes of data in use; default 512 MiB
	MaxAge   time.Duration // default 168h
	ReadOnly bool          // for `datakit query` while no agent runs
	Log      *log.Logger   // damage and eviction reports; default log.Default()
}

// Bucket names. Every block is in log under its sequence number (the order of writes); index has one
// bucket per measurement, keyed by the block's first time and sequence; batch ids remember which writes
// were stored, by id (batchIDs) and by the time they were stored (batchTimes, to forget them); sinks holds
// each sink's cursor in the log (outbox.go).
var (
	logBucket        = []byte("log")
	indexBucket      = []byte("index")
	batchIDsBucket   = []byte("batch_ids")
	batchTimesBucket = []byte("batch_times")
)

// batchIDTTL is how long a batch id is remembered: a client retrying later than this stores its batch again.
const batchIDTTL = 24 * time.Hour

// Store is an open point store. It is safe for concurrent use.
type Store struct {
	path string
	opts Options
	log  *log.Logger

	mu sync.RWMutex // db is replaced when a damaged file is repaired
	db *bolt.DB

	// writeMu makes room and writes in one step: without it concurrent writes would each find room for
	// themselves alone and together pass the bound (bbolt serializes its writers anyway).
	writeMu sync.Mutex

	watchMu  sync.Mutex
	watchers []chan struct{} // Watch

	evicted atomic.Int64 // points removed to keep under MaxSize, since Open
	damaged atomic.Int64 // points lost to damage, since Open (as far as the index tells)
}

// ErrLocked is returned by Open when another process holds the store.
var ErrLocked = errors.New("store is locked by another process (is the agent running?)")

// ErrTooLarge is returned by Commit for a batch larger than the store's size bound.
var ErrTooLarge = errors.New("batch larger than the store's size bound")

// Open opens (creating if needed, unless read-only) the store at path. A damaged file is set aside and
// what is intact in it copied into a new one (read-only: an error saying so); see repair.
func Open(path string, opts Options) (*Store, error) {
	if opts.MaxSize <= 0 {
		opts.MaxSize = DefaultMaxSize
	}
	if opts.MaxAge <= 0 {
		opts.MaxAge = DefaultMaxAge
	}
	s := &Store{path: path, opts: opts, log: opts.Log}
	if s.log == nil {
		s.log = log.Default()
	}
	if opts.ReadOnly {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
	} else if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create store directory: %w", err)
	}
	db, err := openBolt(path, opts.ReadOnly)
	if err == nil {
		s.db = db
		err = s.check()
	}
	if err == nil {
		return s, nil
	}
	if errors.Is(err, errOldFormat) {
		// Stores of the first format (one bucket of points per measurement) are kept, not converted.
		old := path + ".format1"
		if err := os.Rename(path, old); err != nil {
			return nil, fmt.Errorf("open store %s: %v, and cannot set it aside: %w", path, errOldFormat, err)
		}
		s.log.Printf("store: %s has the first store format; set aside as %s (an older datakit reads it), starting a new store", path, old)
		if db, err = openBolt(path, false); err == nil {
			s.db = db
			return s, nil
		}
	}
	if !errors.Is(err, ErrDamaged) {
		if db != nil {
			db.Close()
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if opts.ReadOnly {
		if db != nil {
			db.Close()
		}
		return nil, fmt.Errorf("open store %s: %w (start the agent: it sets the file aside and recovers what is intact)", path, err)
	}
	if err := s.repairLocked(err); err != nil {
		return nil, err
	}
	return s, nil
}

func openBolt(path string, readOnly bool) (db *bolt.DB, err error) {
	err = protect(func() error {
		db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: readOnly})
		return err
	})
	switch {
	case errors.Is(err, bolt.ErrTimeout):
		return nil, ErrLocked
	case errors.Is(err, bolt.ErrInvalid), errors.Is(err, bolt.ErrVersionMismatch), errors.Is(err, bolt.ErrChecksum):
		return nil, fmt.Errorf("%w: %v", ErrDamaged, err)
	}
	if err == nil && !readOnly {
		// bbolt extends its file 16 MiB at a time by default; in small steps the file stays near the bound.
		db.AllocSize = 1 << 20
		err = protect(func() error {
			return db.Update(func(tx *bolt.Tx) error {
				if err := tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
					if !slices.ContainsFunc([][]byte{logBucket, indexBucket, batchIDsBucket, batchTimesBucket, sinksBucket},
						func(b []byte) bool { return string(b) == string(name) }) {
						return errOldFormat
					}
					return nil
				}); err != nil {
					return err
				}
				for _, name := range [][]byte{logBucket, indexBucket, batchIDsBucket, batchTimesBucket, sinksBucket} {
					if _, err := tx.CreateBucketIfNotExists(name); err != nil {
						return err
					}
				}
				return nil
			})
		})
		if err != nil {
			db.Close()
			return nil, err
		}
	}
	return db, err
}

// Close closes the store.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		return nil
	}
	err := s.db.Close()
	s.db = nil
	if err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// Path returns the store's file path.
func (s *Store) Path() string { return s.path }

// view and update run fn in a transaction; a panic from reading a damaged page becomes ErrDamaged, and the
// file is then checked and, if damaged, repaired before they return.
func (s *Store) view(fn func(tx *bolt.Tx) error) error { return s.tx(false, fn) }

func (s *Store) update(fn func(tx *bolt.Tx) error) error { return s.tx(true, fn) }

func (s *Store) tx(write bool, fn func(tx *bolt.Tx) error) error {
	s.mu.RLock()
	err := errClosed
	if s.db != nil {
		err = protect(func() error {
			if write {
				return s.db.Update(fn)
			}
			return s.db.View(fn)
		})
	}
	s.mu.RUnlock()
	if errors.Is(err, ErrDamaged) && !s.opts.ReadOnly {
		s.repair(err)
	}
	return err
}

var (
	errClosed    = errors.New("store is closed")
	errOldFormat = errors.New("store has the first format")
)

// Batch is the points of one write, encoded into blocks as they are added, so that a large write holds
// little more than its compressed points. Commit stores it in one transaction.
type Batch struct {
	ID     string // the client's id for this write; a second Commit of the same id stores nothing
	open   map[blockKey]*blockBuilder
	sealed []sealedBlock
	points int
	bytes  int
}

type blockKey struct{ category, input, measurement string }

type sealedBlock struct {
	h blockHeader
	v []byte
}

// NewBatch returns an empty batch with the client's id ("" for none).
func NewBatch(id string) *Batch { return &Batch{ID: id, open: map[blockKey]*blockBuilder{}} }

// Add encodes p into the batch.
func (b *Batch) Add(p *Point) error {
	if p.Measurement == "" || p.Measurement[0] == '#' {
		return fmt.Errorf("measurement %q: empty, or read back as a comment", p.Measurement)
	}
	if !slices.IsSortedFunc(p.Tags, compareTags) {
		slices.SortFunc(p.Tags, compareTags)
	}
	k := blockKey{p.Category, p.Input, p.Measurement}
	bb := b.open[k]
	if bb != nil && !bb.fits(p.Time.UnixNano()) {
		b.seal(k, bb)
		bb = nil
	}
	if bb == nil {
		bb = newBlockBuilder(p.Category, p.Input, p.Measurement)
		b.open[k] = bb
	}
	if err := bb.add(p); err != nil {
		return err
	}
	b.points++
	return nil
}

// Len returns the number of points added.
func (b *Batch) Len() int { return b.points }

func (b *Batch) seal(k blockKey, bb *blockBuilder) {
	v := bb.value()
	b.sealed = append(b.sealed, sealedBlock{h: bb.h, v: v})
	b.bytes += len(v)
	delete(b.open, k)
}

func (b *Batch) sealAll() {
	keys := make([]blockKey, 0, len(b.open))
	for k := range b.open {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(x, y blockKey) int { return strings.Compare(x.measurement, y.measurement) })
	for _, k := range keys {
		b.seal(k, b.open[k])
	}
}

// Write stores points in one transaction (see Commit).
func (s *Store) Write(points []Point) error {
	b := NewBatch("")
	for i := range points {
		if err := b.Add(&points[i]); err != nil {
			return err
		}
	}
	_, err := s.Commit(b)
	return err
}

// Commit stores the batch in one transaction, committed (fsync'ed) before it returns: either all its points
// are durable or none is. If a batch with the same non-empty id was stored in the last 24 hours it stores
// nothing and returns duplicate. Before writing it evicts the oldest blocks as needed to stay under MaxSize.
func (s *Store) Commit(b *Batch) (duplicate bool, err error) {
	b.sealAll()
	if len(b.sealed) == 0 {
		return false, nil
	}
	need := int64(b.bytes + len(b.sealed)*64)
	if need > s.opts.MaxSize*9/10 {
		return false, fmt.Errorf("%w: %d bytes stored against %d MiB", ErrTooLarge, need, s.opts.MaxSize>>20)
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if err := s.makeRoom(need); err != nil {
		return false, err
	}
	err = s.update(func(tx *bolt.Tx) error {
		if b.ID != "" {
			ids := tx.Bucket(batchIDsBucket)
			if ids.Get([]byte(b.ID)) != nil {
				duplicate = true
				return nil
			}
			now := binary.BigEndian.AppendUint64(nil, uint64(time.Now().UnixNano()))
			if err := ids.Put([]byte(b.ID), now); err != nil {
				return err
			}
			if err := tx.Bucket(batchTimesBucket).Put(append(now, b.ID...), nil); err != nil {
				return err
			}
		}
		lb, ib := tx.Bucket(logBucket), tx.Bucket(indexBucket)
		for _, blk := range b.sealed {
			seq, err := lb.NextSequence()
			if err != nil {
				return err
			}
			if err := lb.Put(seqKey(seq), blk.v); err != nil {
				return fmt.Errorf("put block of %s: %w", blk.h.Measurement, err)
			}
			if err := putIndex(ib, seq, &blk.h); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("write %d points: %w", b.points, err)
	}
	if !duplicate {
		s.notify()
	}
	return duplicate, nil
}

func putIndex(ib *bolt.Bucket, seq uint64, h *blockHeader) error {
	mb, err := ib.CreateBucketIfNotExists([]byte(h.Measurement))
	if err != nil {
		return fmt.Errorf("index %q: %w", h.Measurement, err)
	}
	return mb.Put(indexKey(h.MinTime, seq), indexValue(h))
}

// Query selects points.
type Query struct {
	Measurement string
	Since       time.Time         // inclusive; zero = from the beginning
	Until       time.Time         // inclusive; zero = no end
	Tags        map[string]string // all must match
	Category    string            // "" = any
	Limit       int               // > 0: only the most recent Limit matches
}

// found is a matching point and its place in the store, which orders points of equal time.
type found struct {
	p      Point
	seq    uint64
	offset int
}

func (a *found) before(b *found) bool {
	at, bt := a.p.Time.UnixNano(), b.p.Time.UnixNano()
	if at != bt {
		return at < bt
	}
	if a.seq != b.seq {
		return a.seq < b.seq
	}
	return a.offset < b.offset
}

// Query returns the matching points, oldest first. With a limit, it returns the most recent Limit matches
// (still oldest first). A damaged block is skipped and logged.
func (s *Store) Query(q Query) ([]Point, error) {
	since, until := int64(math.MinInt64), int64(math.MaxInt64)
	if !q.Since.IsZero() {
		since = q.Since.UnixNano()
	}
	if !q.Until.IsZero() {
		until = q.Until.UnixNano()
	}
	var all []found
	var damaged error // a block whose checksum is wrong: the file is checked and repaired after the query
	newest := &newestHeap{limit: q.Limit}
	err := s.view(func(tx *bolt.Tx) error {
		mb := tx.Bucket(indexBucket).Bucket([]byte(q.Measurement))
		if mb == nil {
			return nil
		}
		lb := tx.Bucket(logBucket)
		scan := func(k, v []byte) error {
			minT, seq := parseIndexKey(k)
			if len(v) < 8 {
				return nil
			}
			maxT := int64(binary.BigEndian.Uint64(v))
			if minT > until || maxT < since {
				return nil
			}
			bv := lb.Get(seqKey(seq))
			if bv == nil {
				return nil // evicted since the index was read
			}
			h, z, err := parseBlock(bv) // the checksum, once
			if err == nil && q.Category != "" && h.Category != q.Category {
				return nil // not decompressed
			}
			var pts []Point
			if err == nil {
				pts, err = decodePoints(h, z, func(p *Point) bool {
					ns := p.Time.UnixNano()
					return ns >= since && ns <= until && p.matches(q)
				})
			}
			if err != nil {
				s.log.Printf("store: %s: block %d of %s skipped: %v", s.path, seq, q.Measurement, err)
				damaged = fmt.Errorf("%w: block %d: %v", ErrDamaged, seq, err)
				return nil
			}
			for i, p := range pts {
				f := found{p: p, seq: seq, offset: i}
				if q.Limit > 0 {
					newest.add(f)
				} else {
					all = append(all, f)
				}
			}
			return nil
		}
		c := mb.Cursor()
		if q.Limit <= 0 {
			from := since
			if from > math.MinInt64+int64(blockMaxSpan) {
				from -= int64(blockMaxSpan)
			}
			for k, v := c.Seek(indexKey(from, 0)); k != nil; k, v = c.Next() {
				if minT, _ := parseIndexKey(k); minT > until {
					break
				}
				if err := scan(k, v); err != nil {
					return err
				}
			}
			return nil
		}
		// Newest blocks first; stop once no earlier block can hold a point newer than the Limit-th newest.
		k, v := c.Seek(indexKey(until, math.MaxUint64))
		if k == nil {
			k, v = c.Last()
		} else {
			k, v = c.Prev()
		}
		for ; k != nil; k, v = c.Prev() {
			minT, _ := parseIndexKey(k)
			if newest.full() && minT+int64(blockMaxSpan) < newest.oldest() {
				break
			}
			if err := scan(k, v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", q.Measurement, err)
	}
	if damaged != nil && !s.opts.ReadOnly {
		s.repair(damaged)
	}
	if q.Limit > 0 {
		all = newest.items
	}
	slices.SortFunc(all, func(a, b found) int {
		if a.before(&b) {
			return -1
		}
		return 1
	})
	out := make([]Point, len(all))
	for i := range all {
		out[i] = all[i].p
	}
	return out, nil
}

// newestHeap keeps the limit newest points seen: a min-heap on (time, seq, offset).
type newestHeap struct {
	limit int
	items []found
}

func (h *newestHeap) Len() int           { return len(h.items) }
func (h *newestHeap) Less(i, j int) bool { return h.items[i].before(&h.items[j]) }
func (h *newestHeap) Swap(i, j int)      { h.items[i], h.items[j] = h.items[j], h.items[i] }
func (h *newestHeap) Push(x any)         { h.items = append(h.items, x.(found)) }
func (h *newestHeap) Pop() any {
	x := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	return x
}
func (h *newestHeap) full() bool    { return len(h.items) >= h.limit }
func (h *newestHeap) oldest() int64 { return h.items[0].p.Time.UnixNano() }

func (h *newestHeap) add(f found) {
	if !h.full() {
		heap.Push(h, f)
		return
	}
	if h.items[0].before(&f) {
		h.items[0] = f
		heap.Fix(h, 0)
	}
}

func (p *Point) matches(q Query) bool {
	if q.Category != "" && p.Category != q.Category {
		return false
	}
	for k, want := range q.Tags {
		if got, ok := p.Tag(k); !ok || got != want {
			return false
		}
	}
	return true
}

// Measurements returns the names of the stored measurements.
func (s *Store) Measurements() ([]string, error) {
	var names []string
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(indexBucket).ForEach(func(name, _ []byte) error {
			names = append(names, string(name))
			return nil
		})
	})
	return names, err
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// indexKey is a block's first time (sign bit flipped so negative times sort first) and its sequence.
func indexKey(ns int64, seq uint64) []byte {
	k := binary.BigEndian.AppendUint64(make([]byte, 0, 16), uint64(ns)^(1<<63))
	return binary.BigEndian.AppendUint64(k, seq)
}

func parseIndexKey(k []byte) (ns int64, seq uint64) {
	if len(k) != 16 {
		return 0, 0
	}
	return int64(binary.BigEndian.Uint64(k) ^ (1 << 63)), binary.BigEndian.Uint64(k[8:])
}

// indexValue is a block's last time and its number of points.
func indexValue(h *blockHeader) []byte {
	v := binary.BigEndian.AppendUint64(make([]byte, 0, 12), uint64(h.MaxTime))
	return binary.BigEndian.AppendUint32(v, uint32(h.Points))
}

// DecodeLine reads the measurement, tags (sorted by key) and fields of the decoder's current line (not its
// time), copying everything out of the decoder's buffer. A tag key given twice is an error.
func DecodeLine(dec *lp.Decoder) (Point, error) {
	var p Point
	m, err := dec.Measurement()
	if err != nil {
		return p, err
	}
	p.Measurement = string(m)
	for {
		k, v, err := dec.NextTag()
		if err != nil {
			return p, err
		}
		if k == nil {
			break
		}
		p.Tags = append(p.Tags, Tag{Key: string(k), Value: string(v)})
	}
	// Sorted, a tag key given twice is next to itself: O(n log n), where a search per tag was quadratic.
	if !slices.IsSortedFunc(p.Tags, compareTags) {
		slices.SortStableFunc(p.Tags, compareTags)
	}
	for i := 1; i < len(p.Tags); i++ {
		if p.Tags[i].Key == p.Tags[i-1].Key {
			return p, fmt.Errorf("duplicate tag %q", p.Tags[i].Key)
		}
	}
	for {
		k, v, err := dec.NextField()
		if err != nil {
			return p, err
		}
		if k == nil {
			break
		}
		if v.Kind() == lp.String { // strings point into the decoder's buffer
			v, _ = lp.StringValue(v.StringV())
		}
		p.Fields = append(p.Fields, Field{Key: string(k), Value: v})
	}
	return p, nil
}

func compareTags(a, b Tag) int { return strings.Compare(a.Key, b.Key) }
