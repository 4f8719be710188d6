package store

import (
	"encoding/binary"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// The outbox: the log is what sinks forward, and each sink keeps a cursor in it, the sequence of the last
// block it has delivered. A sink reads the blocks after its cursor (Pending), sends them, and only then moves
// its cursor (Advance): a crash in between sends them again (at least once), nothing is skipped.
// Retention by age leaves alone every block a sink has not delivered; the size bound does not wait, and
// counts what it deletes before a sink delivered it as that sink's loss.

// sinksBucket holds one entry per configured sink: its name → cursor (8 bytes) and points lost to the size
// bound before delivery (8 bytes), both big-endian.
var sinksBucket = []byte("sinks")

// Watch returns a channel that receives (without blocking the writer; one pending signal at most) after each
// commit that stored points: a sink waiting for points wakes on it.
func (s *Store) Watch() <-chan struct{} {
	ch := make(chan struct{}, 1)
	s.watchMu.Lock()
	s.watchers = append(s.watchers, ch)
	s.watchMu.Unlock()
	return ch
}

// notify signals the watchers.
func (s *Store) notify() {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	for _, ch := range s.watchers {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// SinkState is what the store knows of one sink.
type SinkState struct {
	Cursor uint64 // sequence of the last block delivered
	Lost   int64  // points evicted by the size bound before the sink delivered them, since it was added
}

func (st SinkState) value() []byte {
	v := binary.BigEndian.AppendUint64(nil, st.Cursor)
	return binary.BigEndian.AppendUint64(v, uint64(st.Lost))
}

func parseSinkState(v []byte) SinkState {
	if len(v) < 16 {
		return SinkState{}
	}
	return SinkState{Cursor: binary.BigEndian.Uint64(v), Lost: int64(binary.BigEndian.Uint64(v[8:]))}
}

// SetSinks makes names the store's sinks: a new one starts at the end of the log (it forwards what is
// stored from now on), a known one keeps its cursor, and one no longer named is forgotten (else it would
// hold back retention for ever). It returns the names added and removed.
func (s *Store) SetSinks(names []string) (added, removed []string, err error) {
	err = s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(sinksBucket)
		head := tx.Bucket(logBucket).Sequence()
		var stale [][]byte
		if err := b.ForEach(func(k, _ []byte) error {
			if !slices.Contains(names, string(k)) {
				stale = append(stale, append([]byte(nil), k...))
			}
			return nil
		}); err != nil {
			return err
		}
		for _, k := range stale {
			if err := b.Delete(k); err != nil {
				return err
			}
			removed = append(removed, string(k))
		}
		for _, n := range names {
			if b.Get([]byte(n)) != nil {
				continue
			}
			if err := b.Put([]byte(n), SinkState{Cursor: head}.value()); err != nil {
				return err
			}
			added = append(added, n)
		}
		return nil
	})
	return added, removed, err
}

// Sink returns the state of sink name (an error if it is not one of SetSinks').
func (s *Store) Sink(name string) (SinkState, error) {
	var st SinkState
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(sinksBucket).Get([]byte(name))
		if v == nil {
			return fmt.Errorf("store: no sink %q", name)
		}
		st = parseSinkState(v)
		return nil
	})
	return st, err
}

// Pending is what a sink has not delivered yet, from the oldest block.
type Pending struct {
	Points  []Point
	Through uint64 // sequence of the last block read: Advance to it once Points are delivered
	Damaged int    // points of blocks skipped because their checksum is wrong (lost for this sink)
}

// Pending returns the points of the blocks after sink name's cursor, oldest block first, whole blocks
// until at least maxPoints points (at least one block); keep, if set, selects blocks by category. Through is
// the cursor when nothing is pending.
func (s *Store) Pending(name string, maxPoints int, keep func(category string) bool) (Pending, error) {
	var p Pending
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(sinksBucket).Get([]byte(name))
		if v == nil {
			return fmt.Errorf("store: no sink %q", name)
		}
		p.Through = parseSinkState(v).Cursor
		c := tx.Bucket(logBucket).Cursor()
		for k, v := c.Seek(seqKey(p.Through + 1)); k != nil && len(p.Points) < maxPoints; k, v = c.Next() {
			p.Through = binary.BigEndian.Uint64(k)
			h, z, err := parseBlock(v)
			if err == nil && keep != nil && !keep(h.Category) {
				continue
			}
			var pts []Point
			if err == nil {
				pts, err = decodePoints(h, z, nil)
			}
			if err != nil {
				p.Damaged += h.Points // 0 when the header itself is unreadable
				continue
			}
			p.Points = append(p.Points, pts...)
		}
		return nil
	})
	return p, err
}

// Advance moves sink name's cursor to through (never back).
func (s *Store) Advance(name string, through uint64) error {
	return s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(sinksBucket)
		v := b.Get([]byte(name))
		if v == nil {
			return fmt.Errorf("store: no sink %q", name)
		}
		st := parseSinkState(v)
		if through <= st.Cursor {
			return nil
		}
		st.Cursor = through
		return b.Put([]byte(name), st.value())
	})
}

// Backlog returns the points stored after sink name's cursor and the time of the oldest of them (zero when
// none), from the blocks' headers (their checksums are not checked: it must not read the whole backlog).
func (s *Store) Backlog(name string) (points int64, oldestNs int64, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(sinksBucket).Get([]byte(name))
		if v == nil {
			return fmt.Errorf("store: no sink %q", name)
		}
		c := tx.Bucket(logBucket).Cursor()
		for k, v := c.Seek(seqKey(parseSinkState(v).Cursor + 1)); k != nil; k, v = c.Next() {
			h, _, err := parseHeader(v)
			if err != nil {
				continue
			}
			points += int64(h.Points)
			if oldestNs == 0 || h.MinTime < oldestNs {
				oldestNs = h.MinTime
			}
		}
		return nil
	})
	return points, oldestNs, err
}

// sinkCursors returns every sink's state, by name, in tx.
func sinkCursors(tx *bolt.Tx) map[string]SinkState {
	out := map[string]SinkState{}
	if b := tx.Bucket(sinksBucket); b != nil {
		_ = b.ForEach(func(k, v []byte) error {
			out[string(k)] = parseSinkState(v)
			return nil
		})
	}
	return out
}

// deliveredEverywhere returns the smallest cursor of the sinks: the blocks through it are delivered everywhere.
func deliveredEverywhere(sinks map[string]SinkState) uint64 {
	least := ^uint64(0)
	for _, st := range sinks {
		least = min(least, st.Cursor)
	}
	return least
}

// countSinkLosses adds points of block seq, deleted by the size bound, to the loss of every sink that had
// not delivered it.
func countSinkLosses(tx *bolt.Tx, sinks map[string]SinkState, seq uint64, points int) error {
	for name, st := range sinks {
		if seq <= st.Cursor {
			continue
		}
		st.Lost += int64(points)
		sinks[name] = st
		if err := tx.Bucket(sinksBucket).Put([]byte(name), st.value()); err != nil {
			return err
		}
	}
	return nil
}
