package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrDamaged says the store's file is damaged: bbolt refused it, panicked reading it, or a check found a
// block whose checksum, or an order of keys, is wrong.
var ErrDamaged = errors.New("store file is damaged")

// protect runs fn, turning a panic (bbolt panics on pages it cannot make sense of, and a read past the
// mapping faults) into ErrDamaged.
func protect(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrDamaged, r)
		}
	}()
	return fn()
}

// check reads every key and block of the file, as a query or retention would: bbolt's page structure, the
// order of the log's keys and every block's checksum.
func (s *Store) check() error {
	return protect(func() error {
		return s.db.View(func(tx *bolt.Tx) error {
			lb := tx.Bucket(logBucket)
			if lb == nil {
				if s.opts.ReadOnly {
					return nil // created by the first read-write open
				}
				return fmt.Errorf("%w: no log bucket", ErrDamaged)
			}
			var prev uint64
			err := lb.ForEach(func(k, v []byte) error {
				if len(k) != 8 || binary.BigEndian.Uint64(k) <= prev {
					return fmt.Errorf("%w: log key %x out of order", ErrDamaged, k)
				}
				prev = binary.BigEndian.Uint64(k)
				if _, _, err := parseBlock(v); err != nil {
					return fmt.Errorf("%w: block %d: %v", ErrDamaged, prev, err)
				}
				return nil
			})
			if err != nil {
				return err
			}
			// The other buckets' pages are read too (a damaged one panics here, not in a later query).
			nothing := func(k, v []byte) error { return nil }
			ib := tx.Bucket(indexBucket)
			if err := ib.ForEachBucket(func(name []byte) error { return ib.Bucket(name).ForEach(nothing) }); err != nil {
				return err
			}
			if err := tx.Bucket(batchIDsBucket).ForEach(nothing); err != nil {
				return err
			}
			if b := tx.Bucket(sinksBucket); b != nil { // absent in a read-only store made before sinks
				if err := b.ForEach(nothing); err != nil {
					return err
				}
			}
			return tx.Bucket(batchTimesBucket).ForEach(nothing)
		})
	})
}

// repair is repairLocked for a store in use: it waits for the transactions in flight.
func (s *Store) repair(cause error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		return
	}
	if err := s.check(); err == nil {
		s.log.Printf("store: %s: %v, but a full check of the file found no damage; keeping it", s.path, cause)
		return
	}
	if err := s.repairLocked(cause); err != nil {
		s.log.Printf("store: %v", err)
	}
}

// repairLocked sets the damaged file aside as <path>.damaged-<time>, copies every intact block of it into a
// new file at path (keeping their sequence numbers), opens that and says what was recovered and lost.
func (s *Store) repairLocked(cause error) error {
	if s.db != nil {
		s.db.Close()
		s.db = nil
	}
	aside := s.path + ".damaged-" + time.Now().UTC().Format("20060102T150405")
	if err := os.Rename(s.path, aside); err != nil {
		return fmt.Errorf("store %s is damaged (%v) and cannot be set aside: %w", s.path, cause, err)
	}
	db, err := openBolt(s.path, false)
	if err != nil {
		return fmt.Errorf("store %s is damaged (%v), set aside as %s, and a new one cannot be created: %w", s.path, cause, aside, err)
	}
	s.db = db
	r := salvage(aside, db)
	s.damaged.Add(r.lostPoints)
	s.log.Printf("store: %s is damaged (%v): set aside as %s; recovered %d points in %d blocks; lost %s",
		s.path, cause, aside, r.points, r.blocks, r.lost())
	return nil
}

// salvaged says what salvage copied and what it could not.
type salvaged struct {
	blocks, points         int
	lostBlocks, lostPoints int64 // known from the damaged file's index
	unreadable             string
	skipped                int    // ranges of sequence numbers bbolt could not read
	raw                    string // why the file was read page by page
}

func (r salvaged) lost() string {
	switch {
	case r.unreadable != "":
		return "everything else: " + r.unreadable
	case r.raw != "":
		return "what no intact page held (" + r.raw + ")"
	case r.lostBlocks == 0 && r.skipped == 0:
		return "nothing"
	case r.skipped == 0:
		return fmt.Sprintf("%d points in %d damaged blocks", r.lostPoints, r.lostBlocks)
	}
	return fmt.Sprintf("at least %d points in %d blocks (the index names them), in %d unreadable ranges of the file", r.lostPoints, r.lostBlocks, r.skipped)
}

// salvageChunk bounds the blocks copied per transaction of the new file.
const salvageChunk = 4 << 20

// salvage copies every block of the file at from that reads back with a good checksum into dst. Where bbolt
// cannot read a range of the log (a panic), it goes on from the first sequence number past it it can reach.
func salvage(from string, dst *bolt.DB) salvaged {
	var r salvaged
	src, err := openBolt(from, true)
	if err != nil {
		return rawSalvage(from, dst, err)
	}
	defer src.Close()

	recovered := map[uint64]bool{}
	var pending []sealedBlock
	var pendingSeq []uint64
	var maxSeq uint64
	size := 0
	flush := func() {
		if len(pending) == 0 {
			return
		}
		err := dst.Update(func(tx *bolt.Tx) error {
			lb, ib := tx.Bucket(logBucket), tx.Bucket(indexBucket)
			for i, b := range pending {
				if err := lb.Put(seqKey(pendingSeq[i]), b.v); err != nil {
					return err
				}
				if err := putIndex(ib, pendingSeq[i], &b.h); err != nil {
					return err
				}
			}
			return lb.SetSequence(max(lb.Sequence(), maxSeq))
		})
		if err != nil {
			r.unreadable = "writing the new file: " + err.Error()
		}
		pending, pendingSeq, size = nil, nil, 0
	}

	// readFrom copies the log from seq pos on; it returns false where bbolt could not read on, with next the
	// first sequence not read.
	next := uint64(0)
	readFrom := func(pos uint64) bool {
		next = pos
		err := protect(func() error {
			return src.View(func(tx *bolt.Tx) error {
				lb := tx.Bucket(logBucket)
				if lb == nil {
					return nil
				}
				c := lb.Cursor()
				for k, v := c.Seek(seqKey(pos)); k != nil; k, v = c.Next() {
					if len(k) != 8 || binary.BigEndian.Uint64(k) < next {
						return fmt.Errorf("%w: log key %x out of order", ErrDamaged, k)
					}
					seq := binary.BigEndian.Uint64(k)
					next = seq + 1
					h, _, err := parseBlock(v)
					if err != nil {
						continue
					}
					pending = append(pending, sealedBlock{h: h, v: append([]byte(nil), v...)})
					pendingSeq = append(pendingSeq, seq)
					recovered[seq] = true
					maxSeq = max(maxSeq, seq)
					r.blocks++
					r.points += h.Points
					if size += len(v); size >= salvageChunk {
						flush()
					}
				}
				return nil
			})
		})
		return err == nil
	}
	// readable says whether bbolt can find its way to seq (the pages on the way to it are sound).
	readable := func(seq uint64) bool {
		return protect(func() error {
			return src.View(func(tx *bolt.Tx) error {
				tx.Bucket(logBucket).Cursor().Seek(seqKey(seq))
				return nil
			})
		}) == nil
	}
	for pos := uint64(0); r.unreadable == "" && !readFrom(pos); {
		// Past the unreadable pages: the first readable sequence after next, found by doubling the step, then
		// halving the interval.
		r.skipped++
		lo, hi, step := next, uint64(0), uint64(1)
		for ; step != 0 && lo <= math64-step; step *= 2 {
			if readable(lo + step) {
				hi = lo + step
				break
			}
		}
		if hi == 0 {
			break
		}
		for lo = hi - step; hi-lo > 1; {
			if mid := lo + (hi-lo)/2; readable(mid) {
				hi = mid
			} else {
				lo = mid
			}
		}
		pos = hi
	}
	flush()
	copyBatchIDs(src, dst)
	copySinks(src, dst)

	// The index names the blocks that were live: those not recovered through bbolt's tree are looked for
	// page by page (a damaged branch page hides every leaf under it), and the rest are lost.
	missing := map[uint64]int64{} // seq → points
	_ = protect(func() error {
		return src.View(func(tx *bolt.Tx) error {
			ib := tx.Bucket(indexBucket)
			if ib == nil {
				return nil
			}
			return ib.ForEachBucket(func(name []byte) error {
				return ib.Bucket(name).ForEach(func(k, v []byte) error {
					if _, seq := parseIndexKey(k); !recovered[seq] && len(v) >= 12 {
						missing[seq] = int64(binary.BigEndian.Uint32(v[8:]))
					}
					return nil
				})
			})
		})
	})
	if len(missing) > 0 {
		if file, err := os.ReadFile(from); err == nil {
			for seq, b := range scanPages(file) {
				if _, ok := missing[seq]; ok {
					pending = append(pending, b)
					pendingSeq = append(pendingSeq, seq)
					maxSeq = max(maxSeq, seq)
					delete(missing, seq)
					r.blocks++
					r.points += b.h.Points
				}
			}
			flush()
		}
	}
	for _, n := range missing {
		r.lostBlocks++
		r.lostPoints += n
	}
	return r
}

const math64 = ^uint64(0)

// copyBatchIDs copies the batch ids it can read, so a client retrying a batch stored before the damage does
// not store it twice.
func copyBatchIDs(src, dst *bolt.DB) {
	var ids [][]byte // batch_times keys: time (8 bytes) + id
	_ = protect(func() error {
		return src.View(func(tx *bolt.Tx) error {
			if b := tx.Bucket(batchTimesBucket); b != nil {
				return b.ForEach(func(k, _ []byte) error {
					if len(k) > 8 {
						ids = append(ids, append([]byte(nil), k...))
					}
					return nil
				})
			}
			return nil
		})
	})
	_ = dst.Update(func(tx *bolt.Tx) error {
		for _, k := range ids {
			if err := tx.Bucket(batchTimesBucket).Put(k, nil); err != nil {
				return err
			}
			if err := tx.Bucket(batchIDsBucket).Put(k[8:], k[:8]); err != nil {
				return err
			}
		}
		return nil
	})
}

// copySinks copies the sinks' cursors it can read, and makes the log's next sequence follow every cursor, so
// that a block written after the repair is never behind one. A sink whose cursor is unreadable starts again
// at the end of the log (what it had not delivered is not sent).
func copySinks(src, dst *bolt.DB) {
	var sinks map[string]SinkState
	_ = protect(func() error {
		return src.View(func(tx *bolt.Tx) error {
			sinks = sinkCursors(tx)
			return nil
		})
	})
	_ = dst.Update(func(tx *bolt.Tx) error {
		b, lb := tx.Bucket(sinksBucket), tx.Bucket(logBucket)
		for name, st := range sinks {
			if err := b.Put([]byte(name), st.value()); err != nil {
				return err
			}
			if st.Cursor > lb.Sequence() {
				if err := lb.SetSequence(st.Cursor); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// rawSalvage copies the blocks of every leaf page of the file at from into dst, reading the file page by
// page as bbolt lays it out, for a file bbolt cannot open (both meta pages damaged). Without the meta pages
// it cannot tell live pages from freed ones, so blocks deleted by retention may come back (the next
// retention pass deletes them again); of several copies of a block, the last in the file is kept.
func rawSalvage(from string, dst *bolt.DB, cause error) salvaged {
	r := salvaged{raw: "read page by page: " + cause.Error() + "; blocks deleted before may be back"}
	file, err := os.ReadFile(from)
	if err != nil {
		r.unreadable = err.Error()
		return r
	}
	blocks := scanPages(file)
	err = dst.Update(func(tx *bolt.Tx) error {
		lb, ib := tx.Bucket(logBucket), tx.Bucket(indexBucket)
		var maxSeq uint64
		for seq, b := range blocks {
			if err := lb.Put(seqKey(seq), b.v); err != nil {
				return err
			}
			if err := putIndex(ib, seq, &b.h); err != nil {
				return err
			}
			maxSeq = max(maxSeq, seq)
			r.blocks++
			r.points += b.h.Points
		}
		return lb.SetSequence(maxSeq)
	})
	if err != nil {
		r.unreadable = "writing the new file: " + err.Error()
	}
	return r
}

// scanPages returns the intact blocks of every leaf page of a bbolt file, read as bbolt lays pages out, by
// sequence number (of several copies, the last in the file).
func scanPages(file []byte) map[uint64]sealedBlock {
	const pageSize, header, elem = 4096, 16, 16 // bbolt's page size (the OS's), page header and leaf element
	blocks := map[uint64]sealedBlock{}
	for off := 0; off+pageSize <= len(file); off += pageSize {
		page := file[off:]
		flags, count := binary.LittleEndian.Uint16(page[8:]), int(binary.LittleEndian.Uint16(page[10:]))
		span := (int(binary.LittleEndian.Uint32(page[12:])) + 1) * pageSize
		if flags != 0x02 || span <= 0 || span > len(page) || header+count*elem > span {
			continue
		}
		page = page[:span]
		for i := 0; i < count; i++ {
			e := header + i*elem
			pos, ksize, vsize := int(binary.LittleEndian.Uint32(page[e+4:])), int(binary.LittleEndian.Uint32(page[e+8:])), int(binary.LittleEndian.Uint32(page[e+12:]))
			k := e + pos
			if binary.LittleEndian.Uint32(page[e:]) != 0 || ksize != 8 || pos < 0 || k+ksize+vsize > span || vsize < 0 {
				continue
			}
			v := page[k+ksize : k+ksize+vsize]
			if h, _, err := parseBlock(v); err == nil {
				blocks[binary.BigEndian.Uint64(page[k:])] = sealedBlock{h: h, v: v}
			}
		}
	}
	return blocks
}
