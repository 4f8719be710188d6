// Package store is the agent's embedded local point store: every point the
// API accepts is committed to a bbolt file, queried by measurement, time range
// and tags, and bounded by age and size.
//
// Layout: one bucket per measurement; key = 8-byte big-endian time (ns since
// the epoch) + 8-byte big-endian bucket sequence (unique); value = a small
// header (version byte, category, input) followed by the point as one line of
// line protocol.
//
// Size bound: bbolt files never shrink (freed pages are reused), so the size
// bound applies to the data in use, measured as file size minus free pages,
// not to the file size on disk.
package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
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
}

// Store is an open point store.
type Store struct {
	db   *bolt.DB
	opts Options
}

// ErrLocked is returned by Open when another process holds the store.
var ErrLocked = errors.New("store is locked by another process (is the agent running?)")

// Open opens (creating if needed, unless read-only) the store at path.
func Open(path string, opts Options) (*Store, error) {
	if opts.MaxSize <= 0 {
		opts.MaxSize = DefaultMaxSize
	}
	if opts.MaxAge <= 0 {
		opts.MaxAge = DefaultMaxAge
	}
	if opts.ReadOnly {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
	} else if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create store directory: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: opts.ReadOnly})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("open store %s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return &Store{db: db, opts: opts}, nil
}

// Close closes the store.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// Path returns the store's file path.
func (s *Store) Path() string { return s.db.Path() }

// Write stores points in one transaction, committed (fsync'ed) before it
// returns: either all points are durable or none is.
func (s *Store) Write(points []Point) error {
	if len(points) == 0 {
		return nil
	}
	vals := make([][]byte, len(points))
	for i := range points {
		v, err := encodeValue(&points[i])
		if err != nil {
			return err
		}
		vals[i] = v
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		for i := range points {
			b, err := tx.CreateBucketIfNotExists([]byte(points[i].Measurement))
			if err != nil {
				return fmt.Errorf("bucket %q: %w", points[i].Measurement, err)
			}
			seq, err := b.NextSequence()
			if err != nil {
				return err
			}
			if err := b.Put(makeKey(points[i].Time.UnixNano(), seq), vals[i]); err != nil {
				return fmt.Errorf("put point %s: %w", points[i].Measurement, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("write %d points: %w", len(points), err)
	}
	return nil
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

// Query returns the matching points, oldest first. With a limit, it returns
// the most recent Limit matches (still oldest first).
func (s *Store) Query(q Query) ([]Point, error) {
	var out []Point
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(q.Measurement))
		if b == nil {
			return nil
		}
		since, until := int64(-1<<63), int64(1<<63-1)
		if !q.Since.IsZero() {
			since = q.Since.UnixNano()
		}
		if !q.Until.IsZero() {
			until = q.Until.UnixNano()
		}
		c := b.Cursor()
		match := func(k, v []byte) (bool, error) {
			p, err := decodeValue(q.Measurement, v)
			if err != nil {
				return false, fmt.Errorf("measurement %s key %x: %w", q.Measurement, k, err)
			}
			if !p.matches(q) {
				return false, nil
			}
			out = append(out, p)
			return true, nil
		}
		if q.Limit <= 0 {
			for k, v := c.Seek(makeKey(since, 0)); k != nil && keyTime(k) <= until; k, v = c.Next() {
				if _, err := match(k, v); err != nil {
					return err
				}
			}
			return nil
		}
		// Most recent first, then reverse.
		k, v := c.Seek(makeKey(until, 1<<64-1))
		if k == nil {
			k, v = c.Last()
		}
		for ; k != nil && len(out) < q.Limit; k, v = c.Prev() {
			t := keyTime(k)
			if t > until {
				continue
			}
			if t < since {
				break
			}
			if _, err := match(k, v); err != nil {
				return err
			}
		}
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", q.Measurement, err)
	}
	return out, nil
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
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			names = append(names, string(name))
			return nil
		})
	})
	return names, err
}

func makeKey(ns int64, seq uint64) []byte {
	k := make([]byte, 16)
	// Flip the sign bit so negative times sort before positive ones.
	binary.BigEndian.PutUint64(k, uint64(ns)^(1<<63))
	binary.BigEndian.PutUint64(k[8:], seq)
	return k
}

func keyTime(k []byte) int64 {
	return int64(binary.BigEndian.Uint64(k) ^ (1 << 63))
}

const valueVersion = 1

func encodeValue(p *Point) ([]byte, error) {
	buf := []byte{valueVersion}
	buf = binary.AppendUvarint(buf, uint64(len(p.Category)))
	buf = append(buf, p.Category...)
	buf = binary.AppendUvarint(buf, uint64(len(p.Input)))
	buf = append(buf, p.Input...)
	return p.AppendLineProtocol(buf)
}

func decodeValue(measurement string, v []byte) (Point, error) {
	var p Point
	if len(v) == 0 || v[0] != valueVersion {
		return p, errors.New("unknown value version")
	}
	rest := v[1:]
	readString := func() (string, error) {
		n, w := binary.Uvarint(rest)
		if w <= 0 || uint64(len(rest)-w) < n {
			return "", errors.New("corrupt value header")
		}
		s := string(rest[w : w+int(n)])
		rest = rest[w+int(n):]
		return s, nil
	}
	var err error
	if p.Category, err = readString(); err != nil {
		return p, err
	}
	if p.Input, err = readString(); err != nil {
		return p, err
	}
	dec := lp.NewDecoderWithBytes(rest)
	if !dec.Next() {
		return p, errors.New("empty line protocol")
	}
	line, err := DecodeLine(dec)
	if err != nil {
		return p, err
	}
	p.Measurement, p.Tags, p.Fields = line.Measurement, line.Tags, line.Fields
	if p.Measurement != measurement {
		return p, fmt.Errorf("measurement %q in bucket %q", p.Measurement, measurement)
	}
	if p.Time, err = dec.Time(lp.Nanosecond, time.Time{}); err != nil {
		return p, err
	}
	return p, nil
}

// DecodeLine reads the measurement, tags and fields of the decoder's current line (not its time), copying
// everything out of the decoder's buffer. A tag key given twice is an error.
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
		if _, dup := p.Tag(string(k)); dup {
			return p, fmt.Errorf("duplicate tag %q", k)
		}
		p.Tags = append(p.Tags, Tag{Key: string(k), Value: string(v)})
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
