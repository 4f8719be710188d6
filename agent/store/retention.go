package store

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"time"

	bolt "go.etcd.io/bbolt"
)

// deleteChunk bounds the deletions of one retention transaction.
const deleteChunk = 10000

// RetentionStats says what one retention pass removed.
type RetentionStats struct {
	Expired  int   // points older than MaxAge
	Evicted  int   // oldest points removed to get under MaxSize
	UsedSize int64 // bytes in use after the pass
}

// UsedSize returns the bytes of the file in use by data: the file's size as
// seen by a transaction minus its free and pending pages.
func (s *Store) UsedSize() (int64, error) {
	var size int64
	err := s.db.View(func(tx *bolt.Tx) error {
		size = tx.Size()
		return nil
	})
	if err != nil {
		return 0, err
	}
	st := s.db.Stats()
	free := int64(st.FreePageN+st.PendingPageN) * int64(s.db.Info().PageSize)
	return max(size-free, 0), nil
}

// Retain deletes points older than MaxAge, then, while the data in use
// exceeds MaxSize, the oldest points across all measurements until it is
// under 90% of MaxSize.
func (s *Store) Retain(now time.Time) (RetentionStats, error) {
	var st RetentionStats
	cutoff := makeKey(now.Add(-s.opts.MaxAge).UnixNano(), 0)
	for {
		n, err := s.deleteOldest(deleteChunk, func(k []byte) bool { return bytes.Compare(k, cutoff) < 0 })
		st.Expired += n
		if err != nil {
			return st, fmt.Errorf("expire points: %w", err)
		}
		if n < deleteChunk {
			break
		}
	}
	used, err := s.UsedSize()
	if err != nil {
		return st, err
	}
	if used > s.opts.MaxSize {
		target := s.opts.MaxSize * 9 / 10
		for used > target {
			// Delete the share of points that should bring the data under
			// target, assuming points of similar size; re-measure and repeat.
			keys, err := s.countPoints()
			if err != nil {
				return st, err
			}
			want := int(float64(keys)*float64(used-target)/float64(used)) + 1
			n, err := s.deleteOldest(min(want, deleteChunk), func([]byte) bool { return true })
			st.Evicted += n
			if err != nil {
				return st, fmt.Errorf("evict points: %w", err)
			}
			if used, err = s.UsedSize(); err != nil {
				return st, err
			}
			if n == 0 {
				break
			}
		}
	}
	st.UsedSize = used
	return st, nil
}

// countPoints returns the number of stored points.
func (s *Store) countPoints() (int, error) {
	n := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(_ []byte, b *bolt.Bucket) error {
			n += b.Stats().KeyN
			return nil
		})
	})
	return n, err
}

// deleteOldest deletes, in one transaction, up to limit of the oldest points
// across measurements whose key satisfies ok.
func (s *Store) deleteOldest(limit int, ok func(k []byte) bool) (int, error) {
	deleted := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		var cursors []*bolt.Cursor
		var heads [][]byte
		err := tx.ForEach(func(_ []byte, b *bolt.Bucket) error {
			c := b.Cursor()
			if k, _ := c.First(); k != nil {
				cursors = append(cursors, c)
				heads = append(heads, k)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for deleted < limit {
			oldest := -1
			for i, k := range heads {
				if k != nil && (oldest < 0 || bytes.Compare(k, heads[oldest]) < 0) {
					oldest = i
				}
			}
			if oldest < 0 || !ok(heads[oldest]) {
				return nil
			}
			c := cursors[oldest]
			if err := c.Delete(); err != nil {
				return err
			}
			deleted++
			// After Delete the cursor may not be positioned on the next key:
			// re-seek to the first remaining one.
			k, _ := c.First()
			heads[oldest] = k
		}
		return nil
	})
	return deleted, err
}

// RunRetention runs Retain now and then every interval until ctx is done,
// logging what each pass removed.
func (s *Store) RunRetention(ctx context.Context, interval time.Duration, logger *log.Logger) {
	pass := func() {
		st, err := s.Retain(time.Now())
		if err != nil {
			logger.Printf("store: retention: %v", err)
			return
		}
		if st.Expired > 0 || st.Evicted > 0 {
			logger.Printf("store: retention removed %d expired and %d oldest points; %d bytes in use",
				st.Expired, st.Evicted, st.UsedSize)
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
