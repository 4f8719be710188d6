package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"log"
	"time"

	bolt "go.etcd.io/bbolt"
)

// deleteChunk bounds the blocks deleted by one transaction.
const deleteChunk = 1000

// RetentionStats says what one retention pass removed.
type RetentionStats struct {
	Expired  int   // points older than MaxAge
	Evicted  int   // points of the oldest blocks removed to get under MaxSize
	UsedSize int64 // bytes in use after the pass
}

// UsedSize returns the bytes of the file in use by data: the file's size as
// seen by a transaction minus its free and pending pages.
func (s *Store) UsedSize() (int64, error) {
	var size, free int64
	err := s.view(func(tx *bolt.Tx) error {
		size = tx.Size()
		st := tx.DB().Stats()
		free = int64(st.FreePageN+st.PendingPageN) * int64(tx.DB().Info().PageSize)
		return nil
	})
	if err != nil {
		return 0, err
	}
	return max(size-free, 0), nil
}

// Evicted returns the points removed to stay under MaxSize since Open, and Damaged those lost to a damaged
// file (as far as its index told).
func (s *Store) Evicted() int64 { return s.evicted.Load() }

// Damaged: see Evicted.
func (s *Store) Damaged() int64 { return s.damaged.Load() }

// Retain deletes the points older than MaxAge and the batch ids older than a day,
// then, while the data in use exceeds MaxSize, the oldest blocks until it is under 90% of MaxSize.
func (s *Store) Retain(now time.Time) (RetentionStats, error) {
	var st RetentionStats
	cutoff := now.Add(-s.opts.MaxAge).UnixNano()
	for {
		n, blocks, err := s.expire(cutoff)
		st.Expired += n
		if err != nil {
			return st, fmt.Errorf("expire points: %w", err)
		}
		if blocks < deleteChunk {
			break
		}
	}
	if err := s.forgetBatchIDs(now.Add(-batchIDTTL)); err != nil {
		return st, fmt.Errorf("forget batch ids: %w", err)
	}
	s.writeMu.Lock()
	n, err := s.evict(0, s.opts.MaxSize)
	s.writeMu.Unlock()
	st.Evicted = n
	if err != nil {
		return st, fmt.Errorf("evict points: %w", err)
	}
	st.UsedSize, err = s.UsedSize()
	return st, err
}

// makeRoom evicts the oldest blocks if writing need more bytes would take the data over MaxSize.
func (s *Store) makeRoom(need int64) error {
	_, err := s.evict(need, s.opts.MaxSize-need) // counted in s.evicted, logged by RunRetention
	return err
}

// evict deletes the oldest blocks, in write order, while the data in use plus need exceeds bound, down to
// 90% of MaxSize, and returns the points they held.
func (s *Store) evict(need, bound int64) (int, error) {
	used, err := s.UsedSize()
	if err != nil || used+need <= bound {
		return 0, err
	}
	target := s.opts.MaxSize*9/10 - need
	evicted := 0
	for used > target {
		freed, n, blocks := 0, 0, 0
		err := s.update(func(tx *bolt.Tx) error {
			lb, ib := tx.Bucket(logBucket), tx.Bucket(indexBucket)
			sinks := sinkCursors(tx)
			c := lb.Cursor()
			for k, v := c.First(); k != nil && int64(freed) < used-target && blocks < deleteChunk; k, v = c.First() {
				freed += len(k) + len(v) + 16 + 28 // the block, its index entry and bbolt's element headers
				seq := binary.BigEndian.Uint64(k)
				pts, err := deleteBlock(lb, ib, k, v)
				if err != nil {
					return err
				}
				if err := countSinkLosses(tx, sinks, seq, pts); err != nil {
					return err
				}
				n += pts
				blocks++
			}
			return nil
		})
		evicted += n
		s.evicted.Add(int64(n))
		if err != nil || blocks == 0 {
			return evicted, err
		}
		if used, err = s.UsedSize(); err != nil {
			return evicted, err
		}
	}
	return evicted, nil
}

// deleteBlock deletes the block at log key k, with value v, and its index entry; it returns its points.
func deleteBlock(lb, ib *bolt.Bucket, k, v []byte) (int, error) {
	seq := binary.BigEndian.Uint64(k)
	h, _, perr := parseBlock(v)
	if err := lb.Delete(k); err != nil {
		return 0, err
	}
	if perr != nil {
		return 0, nil // damaged: its index entry, if any, names a block that is gone, which readers skip
	}
	if mb := ib.Bucket([]byte(h.Measurement)); mb != nil {
		if err := mb.Delete(indexKey(h.MinTime, seq)); err != nil {
			return 0, err
		}
	}
	return h.Points, nil
}

// expire deletes up to deleteChunk blocks whose newest point is before cutoff, and rewrites those with only
// some points before it without them; it returns the points removed and the blocks deleted or rewritten.
// A block some sink has not delivered yet is left as it is (the size bound still applies to it).
func (s *Store) expire(cutoff int64) (points, blocks int, err error) {
	err = s.update(func(tx *bolt.Tx) error {
		lb, ib := tx.Bucket(logBucket), tx.Bucket(indexBucket)
		delivered := deliveredEverywhere(sinkCursors(tx))
		var names [][]byte
		if err := ib.ForEachBucket(func(name []byte) error {
			names = append(names, name)
			return nil
		}); err != nil {
			return err
		}
		for _, name := range names {
			mb := ib.Bucket(name)
			c := mb.Cursor()
			for k, v := c.First(); k != nil && blocks < deleteChunk; {
				minT, seq := parseIndexKey(k)
				if minT >= cutoff {
					break
				}
				if len(v) < 12 || seq > delivered {
					k, v = c.Next()
					continue
				}
				var kept *blockBuilder // what is left of a block that is only partly expired
				if int64(binary.BigEndian.Uint64(v)) >= cutoff {
					h, pts, err := decodeBlock(lb.Get(seqKey(seq)), nil)
					if err != nil {
						k, v = c.Next() // damaged: left to the readers, who skip it
						continue
					}
					kept = newBlockBuilder(h.Category, h.Input, h.Measurement)
					for i := range pts {
						if pts[i].Time.UnixNano() >= cutoff {
							if err := kept.add(&pts[i]); err != nil {
								return err
							}
						} else {
							points++
						}
					}
				} else {
					points += int(binary.BigEndian.Uint32(v[8:]))
				}
				blocks++
				k = append([]byte(nil), k...)
				if err := c.Delete(); err != nil {
					return err
				}
				if kept == nil {
					if err := lb.Delete(seqKey(seq)); err != nil {
						return err
					}
				} else {
					if err := lb.Put(seqKey(seq), kept.value()); err != nil {
						return err
					}
					if err := putIndex(ib, seq, &kept.h); err != nil {
						return err
					}
				}
				k, v = c.Seek(k) // Delete leaves the cursor anywhere: the next key is the first one after k
			}
			if n, _ := mb.Cursor().First(); n == nil {
				if err := ib.DeleteBucket(name); err != nil {
					return err
				}
			}
		}
		return nil
	})
	return points, blocks, err
}

// forgetBatchIDs deletes the batch ids stored before cutoff.
func (s *Store) forgetBatchIDs(cutoff time.Time) error {
	limit := binary.BigEndian.AppendUint64(nil, uint64(cutoff.UnixNano()))
	return s.update(func(tx *bolt.Tx) error {
		times, ids := tx.Bucket(batchTimesBucket), tx.Bucket(batchIDsBucket)
		c := times.Cursor()
		for k, _ := c.First(); k != nil && string(k[:min(8, len(k))]) < string(limit); k, _ = c.First() {
			if len(k) > 8 {
				if err := ids.Delete(k[8:]); err != nil {
					return err
				}
			}
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return nil
	})
}

// RunRetention runs Retain now and then every interval until ctx is done,
// logging what each pass removed.
func (s *Store) RunRetention(ctx context.Context, interval time.Duration, logger *log.Logger) {
	var evicted int64 // s.Evicted() at the last pass
	pass := func() {
		st, err := s.Retain(time.Now())
		if err != nil {
			logger.Printf("store: retention: %v", err)
			return
		}
		onWrite := s.Evicted() - evicted - int64(st.Evicted)
		evicted = s.Evicted()
		if st.Expired > 0 || st.Evicted > 0 || onWrite > 0 {
			logger.Printf("store: removed %d expired points and, to stay under %d MiB, the %d oldest (%d of them on writes); %d bytes in use",
				st.Expired, s.opts.MaxSize>>20, int64(st.Evicted)+onWrite, onWrite, st.UsedSize)
		}
	}
	pass()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			pass()
		}
	}
}
