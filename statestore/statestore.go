// Package statestore keeps a task's persistent state in a bbolt file as a
// short history of checksummed snapshots.
//
// Each stateful task owns one file. bbolt holds an exclusive lock on an open
// file, so owning the file is also the guarantee that no two processes host
// the same stateful task.
//
// A snapshot is stored as a fixed header followed by the payload:
//
//	magic "MMS1" | generation uint64 | unix nanos int64 | length uint32 | CRC32C uint32 | payload
//
// all big-endian. The CRC covers the header fields before it and the payload,
// so a flipped bit anywhere in a snapshot is caught. Load returns the newest
// snapshot that verifies; the ones that do not are moved to a quarantine
// bucket (kept for forensics, never loaded again) and reported to the caller.
// Open and Load write nothing to a file whose newest snapshot verifies.
//
// A snapshot verifies when its header, length and CRC are right and, if the
// store has a check (Options.Check: the caller's own decoder, with its
// limits), the check accepts its payload. Save runs the same check before
// it writes anything, so a state the loader could not read back is refused
// and the newest snapshot stays the last good one; a snapshot written
// before the check existed (or under a laxer one) is quarantined by Load
// like a bad checksum, and the previous one is loaded.
//
// bbolt never gives pages back to the file system: every freed page stays
// in the file for reuse, and large snapshots, which need runs of
// contiguous pages, keep growing it. After a Save, a file larger than
// CompactFactor times what it holds (its snapshots and quarantined ones)
// plus CompactFloor is compacted: copied into a fresh file beside it
// (bbolt.Compact, committed with fsync), renamed over the old one, the
// directory fsync'd. The store keeps the new file open from before the
// rename, so bbolt's lock on the state never lapses, and Open checks that
// the file it locked is still the one at its path (a process that waited
// on the old file retries on the new one).
//
// Sentinel errors (test with errors.Is):
//   - ErrLocked (Open): another process, or another Store in this one, has
//     the file open.
//   - ErrCorruptFile (Open, Load, Save): bbolt cannot read the file; close
//     the store and MoveAside.
//   - ErrNoSnapshot (Load): no snapshot verifies (a new store, or all were
//     quarantined).
//   - ErrBadHeader, ErrLength, ErrChecksum, ErrUnloadable: why a snapshot
//     was quarantined (Quarantined.Err).
//   - ErrUnloadable (Save): the payload fails Options.Check; nothing was
//     written and the newest snapshot is unchanged.
//   - ErrCompact (Save): the snapshot was saved (the generation returned is
//     valid) but compacting the file afterwards failed; the file is as it
//     was, and compaction is tried again once it grows further.
package statestore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/fnv"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Errors returned when opening a store.
var (
	// ErrLocked means another process (or another Store in this one) has the
	// file open. The task's state is owned elsewhere.
	ErrLocked = errors.New("statestore: state file is in use by another process")
	// ErrCorruptFile means the file is not a readable bbolt database
	// (truncated, overwritten, or not a state file at all).
	ErrCorruptFile = errors.New("statestore: state file is corrupt")
)

// Errors returned when loading.
var (
	// ErrNoSnapshot means the store holds no snapshot that verifies: it is
	// new, or every snapshot in it failed its checksum.
	ErrNoSnapshot = errors.New("statestore: no valid snapshot")
)

// Reasons a snapshot fails verification; wrapped in Quarantined.Err.
var (
	ErrBadHeader = errors.New("statestore: bad snapshot header")
	ErrLength    = errors.New("statestore: snapshot length mismatch")
	ErrChecksum  = errors.New("statestore: snapshot checksum mismatch")
	// ErrUnloadable means a payload fails the store's check (Options.Check):
	// the loader could not read it back. Save refuses such a payload; Load
	// quarantines such a snapshot.
	ErrUnloadable = errors.New("statestore: state would not load")
)

// ErrCompact means Save saved its snapshot but could not compact the file
// afterwards (a full disk, say). The state is safe; the file is larger
// than it needs to be.
var ErrCompact = errors.New("statestore: compacting the state file failed")

// The compaction bound: a file larger than CompactFactor times the bytes
// of the snapshots it holds plus CompactFloor is compacted after a Save.
// The floor keeps small states from being compacted over and over for a
// few pages of bbolt overhead; the factor leaves room for the snapshot
// being written beside the kept ones and for bbolt's growth steps.
const (
	CompactFactor = 4
	CompactFloor  = 1 << 20
	// compactTxMax bounds the memory a compaction holds before it commits.
	compactTxMax = 16 << 20
)

const (
	// maxBad bad snapshots beyond Keep mean the file, not a snapshot, is
	// damaged.
	maxBad     = 8
	magic      = "MMS1"
	headerSize = 4 + 8 + 8 + 4 + 4
	// DefaultKeep is how many snapshots a store keeps when Options.Keep is 0.
	DefaultKeep = 3
)

var (
	snapshotsBucket  = []byte("snapshots")
	quarantineBucket = []byte("quarantine")
	castagnoli       = crc32.MakeTable(crc32.Castagnoli)
)

// Options tune a Store. The zero value is usable.
type Options struct {
	// Keep is how many snapshots are retained; older ones are pruned on Save.
	Keep int
	// LockTimeout is how long Open waits for the file lock before returning
	// ErrLocked. Zero means a short default (100ms): a held lock is an answer,
	// not a reason to hang.
	LockTimeout time.Duration
	// Now stamps snapshots; defaults to time.Now.
	Now func() time.Time
	// Check, if set, is how the caller will decode a payload, with its
	// limits: Save refuses a payload it rejects (ErrUnloadable) and Load
	// treats a snapshot it rejects as failing verification. It must be
	// safe for concurrent use.
	Check func(payload []byte) error
}

// Store is an open state file. Its methods are safe for concurrent use.
type Store struct {
	// mu guards db: a compaction replaces it (write lock); everything
	// else uses it under the read lock, and bbolt orders the transactions.
	mu    sync.RWMutex
	db    *bolt.DB
	path  string
	keep  int
	now   func() time.Time
	check func([]byte) error
	lock  time.Duration
	// compactFailedAt is the file's size when a compaction last failed
	// (under mu's write lock): it is not tried again until the file is
	// larger, so a full disk does not cost a copy of the file per save.
	compactFailedAt int64
}

// Snapshot is one verified saved state.
type Snapshot struct {
	Generation uint64
	Time       time.Time
	Payload    []byte
}

// Quarantined describes a snapshot that failed verification during Load and
// was moved out of the way.
type Quarantined struct {
	Generation uint64
	Err        error
}

// Open opens or creates the state file at path (its directory is created
// 0700, the file 0600).
func Open(path string, opts Options) (s *Store, err error) {
	if opts.Keep <= 0 {
		opts.Keep = DefaultKeep
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 100 * time.Millisecond
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("statestore: %w", err)
	}
	// bbolt trusts its file: a damaged one can make it panic, or fault on
	// a page past the end of a truncated file. A state file must never take
	// the daemon down: check the file's own size claims first, and turn
	// faults into panics we recover from.
	if err := preflight(path); err != nil {
		return nil, err
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("%w: %s: %v", ErrCorruptFile, path, r)
		}
	}()
	db, err := openBolt(path, opts.LockTimeout)
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("%w: %s", ErrLocked, path)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum),
		errors.Is(err, berrors.ErrVersionMismatch):
		return nil, fmt.Errorf("%w: %s: %v", ErrCorruptFile, path, err)
	case err != nil:
		// bbolt reports short files and unreadable pages with ad hoc errors.
		if fi, serr := os.Stat(path); serr == nil && fi.Mode().IsRegular() {
			return nil, fmt.Errorf("%w: %s: %v", ErrCorruptFile, path, err)
		}
		return nil, fmt.Errorf("statestore: open %s: %w", path, err)
	}
	s = &Store{db: db, path: path, keep: opts.Keep, now: opts.Now, check: opts.Check, lock: opts.LockTimeout}
	// The buckets are made once: a write transaction commits (and
	// fsyncs) even when it changes nothing, which every start of a task
	// paid.
	made := false
	if err := s.view(func(tx *bolt.Tx) error {
		made = tx.Bucket(snapshotsBucket) != nil && tx.Bucket(quarantineBucket) != nil
		return nil
	}); err != nil {
		db.Close()
		return nil, err
	}
	if !made {
		if err := s.update(func(tx *bolt.Tx) error {
			if _, err := tx.CreateBucketIfNotExists(snapshotsBucket); err != nil {
				return err
			}
			_, err := tx.CreateBucketIfNotExists(quarantineBucket)
			return err
		}); err != nil {
			db.Close()
			return nil, err
		}
	}
	// A file left oversized by an older version (or a failed compaction)
	// is brought within the bound now; failing that, it is used as it is.
	s.maybeCompact()
	return s, nil
}

// openBolt opens path with bbolt, making sure that the file it locked is
// still the one at path: a compaction by the previous owner renames a new
// file over the one this process may have been waiting to lock, and
// holding the lock of a file no longer at path would let two stores own
// one state.
func openBolt(path string, timeout time.Duration) (*bolt.DB, error) {
	deadline := time.Now().Add(timeout)
	for {
		var f *os.File
		db, err := bolt.Open(path, 0o600, &bolt.Options{
			Timeout: max(time.Until(deadline), time.Millisecond),
			OpenFile: func(name string, flag int, mode os.FileMode) (*os.File, error) {
				fh, err := os.OpenFile(name, flag, mode)
				f = fh
				return fh, err
			},
		})
		if err != nil {
			return nil, err
		}
		held, herr := f.Stat()
		now, nerr := os.Stat(path)
		if herr == nil && nerr == nil && os.SameFile(held, now) {
			return db, nil
		}
		db.Close()
		if time.Now().After(deadline) {
			return nil, berrors.ErrTimeout
		}
	}
}

// Path is the file the store uses.
func (s *Store) Path() string { return s.path }

// Close releases the file and its lock.
func (s *Store) Close() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db.Close()
}

// Save writes payload as a new snapshot (generation one past the newest
// stored) and prunes all but the newest Keep, in one fsync'd transaction.
// A payload that fails Options.Check is refused (ErrUnloadable) before
// anything is written. Afterwards the file is compacted if it outgrew the
// bound (see the package doc); an error wrapping ErrCompact comes with a
// valid generation: the snapshot was saved.
func (s *Store) Save(payload []byte) (gen uint64, err error) {
	if s.check != nil {
		if cerr := s.check(payload); cerr != nil {
			return 0, fmt.Errorf("%w: %w", ErrUnloadable, cerr)
		}
	}
	err = s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(snapshotsBucket)
		// Generations only grow, even past quarantined ones, so no two
		// snapshots ever share one.
		gen = b.Sequence()
		if k, _ := b.Cursor().Last(); k != nil {
			gen = max(gen, binary.BigEndian.Uint64(k))
		}
		gen++
		if err := b.SetSequence(gen); err != nil {
			return err
		}
		if err := b.Put(genKey(gen), encode(gen, s.now(), payload)); err != nil {
			return err
		}
		// Keys are big-endian generations: everything at or below
		// gen-keep is older than the newest keep snapshots.
		if gen <= uint64(s.keep) {
			return nil
		}
		oldest := gen - uint64(s.keep)
		c := b.Cursor()
		for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) <= oldest; k, _ = c.First() {
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return gen, s.maybeCompact()
}

// Load returns the newest snapshot that verifies. Snapshots newer than it
// that fail verification are moved to quarantine and returned in bad, so the
// caller can alert; they are never offered again. With no valid snapshot the
// error is ErrNoSnapshot (bad may still list what was quarantined). A file
// too damaged to read gives ErrCorruptFile: close it and MoveAside.
func (s *Store) Load() (snap Snapshot, bad []Quarantined, err error) {
	// Mostly the newest snapshot is good: it is read without a write
	// transaction, whose commit fsyncs even when it changes nothing (every
	// start of a task paid it). Only a bad one takes the write that
	// quarantines it.
	found := false
	err = s.view(func(tx *bolt.Tx) error {
		k, v := tx.Bucket(snapshotsBucket).Cursor().Last()
		if k == nil {
			return ErrNoSnapshot
		}
		got, derr := s.verify(k, v)
		snap, found = got, derr == nil
		return nil
	})
	if found || err != nil {
		return snap, nil, err
	}
	err = s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(snapshotsBucket)
		q := tx.Bucket(quarantineBucket)
		c := b.Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Last() {
			if len(bad) > s.keep+maxBad {
				// More bad snapshots than were ever kept: this is not a
				// flipped bit but a damaged file. Change nothing in it.
				return fmt.Errorf("%w: %s: more than %d snapshots fail verification", ErrCorruptFile, s.path, s.keep+maxBad)
			}
			got, derr := s.verify(k, v)
			if derr == nil {
				snap = got
				return nil
			}
			gen := binary.BigEndian.Uint64(k)
			bad = append(bad, Quarantined{Generation: gen, Err: derr})
			// Quarantine under a fresh key: the same generation number may be
			// reused by a later Save and fail again.
			qk, _ := q.NextSequence()
			if err := q.Put(genKey(qk), append([]byte(nil), v...)); err != nil {
				return err
			}
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return ErrNoSnapshot
	})
	return snap, bad, err
}

// verify decodes the snapshot v stored under k and checks it: its
// checksums, its key, and (Options.Check) that its payload can be loaded.
func (s *Store) verify(k, v []byte) (Snapshot, error) {
	got, err := decode(v)
	if err == nil && got.Generation != binary.BigEndian.Uint64(k) {
		err = fmt.Errorf("%w: key says generation %d, snapshot says %d",
			ErrBadHeader, binary.BigEndian.Uint64(k), got.Generation)
	}
	if err == nil && s.check != nil {
		if cerr := s.check(got.Payload); cerr != nil {
			err = fmt.Errorf("%w: %w", ErrUnloadable, cerr)
		}
	}
	return got, err
}

// QuarantineCount reports how many bad snapshots the file holds aside.
func (s *Store) QuarantineCount() (n int, err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	err = s.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(quarantineBucket).Stats().KeyN
		return nil
	})
	return n, err
}

// Check runs bbolt's consistency check over the whole file.
func (s *Store) Check() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db.View(func(tx *bolt.Tx) error {
		var first error
		for err := range tx.Check() { // drain: the checker goroutine sends them all
			if first == nil {
				first = err
			}
		}
		return first
	})
}

// update runs fn in a managed read-write transaction, and view in a
// read-only one, turning a panic from a damaged file into ErrCorruptFile.
func (s *Store) update(fn func(*bolt.Tx) error) error { return s.txn(true, fn) }

func (s *Store) view(fn func(*bolt.Tx) error) error { return s.txn(false, fn) }

func (s *Store) txn(write bool, fn func(*bolt.Tx) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %s: %v", ErrCorruptFile, s.path, r)
		}
	}()
	s.mu.RLock()
	defer s.mu.RUnlock()
	if write {
		return s.db.Update(fn)
	}
	return s.db.View(fn)
}

// maybeCompact compacts the file if it is larger than the bound (see the
// package doc). Small files (the common case) cost one stat.
func (s *Store) maybeCompact() error {
	fi, err := os.Stat(s.path)
	if err != nil || fi.Size() <= CompactFloor {
		return nil // a file we cannot stat is for the next open to judge
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if fi.Size() <= s.compactFailedAt {
		return nil
	}
	var held int64
	err = s.db.View(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{snapshotsBucket, quarantineBucket} {
			if b := tx.Bucket(name); b != nil {
				b.ForEach(func(k, v []byte) error { held += int64(len(k) + len(v)); return nil })
			}
		}
		return nil
	})
	if err != nil || fi.Size() <= CompactFactor*held+CompactFloor {
		return nil
	}
	if err := s.compact(); err != nil {
		s.compactFailedAt = fi.Size()
		return fmt.Errorf("%w: %s: %w", ErrCompact, s.path, err)
	}
	s.compactFailedAt = 0
	return nil
}

// compact copies the database into a fresh file beside it and renames that
// over the old one; the caller holds mu's write lock. The new file is open
// (and locked) before the rename, so the lock on the state never lapses.
// On failure the old file stays in use, untouched.
func (s *Store) compact() (err error) {
	tmp := s.path + ".compact"
	// A leftover of a compaction cut short: never renamed, so never the
	// state; bbolt would open it as a database and the copy would collide.
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: s.lock})
	if err != nil {
		return err
	}
	renamed := false
	defer func() {
		if !renamed {
			dst.Close()
			os.Remove(tmp)
		}
	}()
	if err := compactInto(dst, s.db); err != nil {
		return err
	}
	// Each of Compact's transactions committed with fsync: the copy is on
	// disk before it takes the state's name.
	if err := os.Rename(tmp, s.path); err != nil {
		return err
	}
	renamed = true
	old := s.db
	s.db = dst
	// The old file is unlinked; closing it drops its lock, which no one
	// can use (openBolt checks the file it locked is still at path).
	old.Close()
	return syncDir(filepath.Dir(s.path))
}

// compactInto runs bbolt.Compact, turning a fault on a damaged source page
// into an error, as update does.
func compactInto(dst, src *bolt.DB) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrCorruptFile, r)
		}
	}()
	return bolt.Compact(dst, src, compactTxMax)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// MoveAside renames a corrupt state file out of the way (keeping it for
// forensics) so that a fresh one can be created at path. It returns the new
// name.
func MoveAside(path string, now time.Time) (string, error) {
	dst := fmt.Sprintf("%s.corrupt-%s", path, now.UTC().Format("20060102T150405.000000000"))
	if err := os.Rename(path, dst); err != nil {
		return "", fmt.Errorf("statestore: move corrupt file aside: %w", err)
	}
	return dst, nil
}

func genKey(gen uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], gen)
	return k[:]
}

func encode(gen uint64, t time.Time, payload []byte) []byte {
	buf := make([]byte, headerSize+len(payload))
	copy(buf, magic)
	binary.BigEndian.PutUint64(buf[4:], gen)
	binary.BigEndian.PutUint64(buf[12:], uint64(t.UnixNano()))
	binary.BigEndian.PutUint32(buf[20:], uint32(len(payload)))
	copy(buf[headerSize:], payload)
	crc := crc32.Update(crc32.Checksum(buf[:24], castagnoli), castagnoli, payload)
	binary.BigEndian.PutUint32(buf[24:], crc)
	return buf
}

func decode(v []byte) (Snapshot, error) {
	if len(v) < headerSize || !bytes.Equal(v[:4], []byte(magic)) {
		return Snapshot{}, ErrBadHeader
	}
	n := binary.BigEndian.Uint32(v[20:])
	if int(n) != len(v)-headerSize {
		return Snapshot{}, fmt.Errorf("%w: header says %d bytes, found %d", ErrLength, n, len(v)-headerSize)
	}
	payload := v[headerSize:]
	want := binary.BigEndian.Uint32(v[24:])
	if got := crc32.Update(crc32.Checksum(v[:24], castagnoli), castagnoli, payload); got != want {
		return Snapshot{}, fmt.Errorf("%w: stored %08x, computed %08x", ErrChecksum, want, got)
	}
	return Snapshot{
		Generation: binary.BigEndian.Uint64(v[4:]),
		Time:       time.Unix(0, int64(binary.BigEndian.Uint64(v[12:]))),
		// bbolt's memory is only valid inside the transaction.
		Payload: append([]byte(nil), payload...),
	}, nil
}

// preflight checks what a bbolt file says about itself against its size
// before bbolt maps it: a file shorter than its newest valid meta page's
// high-water mark would fault when read.
func preflight(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("statestore: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("statestore: %w", err)
	}
	if fi.Size() == 0 {
		return nil // bbolt initialises an empty file
	}
	m0, ok0 := readMeta(f, 0)
	ps := int64(os.Getpagesize())
	if ok0 {
		ps = int64(m0.pageSize)
	}
	m1, ok1 := readMeta(f, ps)
	best, ok := m0, ok0
	if ok1 && (!ok0 || m1.txid > m0.txid) {
		best, ok = m1, true
	}
	switch {
	case !ok:
		return fmt.Errorf("%w: %s: no valid meta page", ErrCorruptFile, path)
	case best.pgid > uint64(fi.Size())/uint64(best.pageSize):
		return fmt.Errorf("%w: %s: truncated: %d bytes, its meta page says %d pages of %d",
			ErrCorruptFile, path, fi.Size(), best.pgid, best.pageSize)
	}
	return nil
}

type metaPage struct {
	pageSize uint32
	pgid     uint64
	txid     uint64
}

// readMeta reads and verifies the bbolt meta page at off (layout of bbolt
// v1: a 16-byte page header, then magic, version, page size, flags, root
// bucket, freelist, high-water page id, txid, FNV-64a checksum).
func readMeta(f *os.File, off int64) (metaPage, bool) {
	var b [16 + 64]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		return metaPage{}, false
	}
	m := b[16:]
	le := binary.LittleEndian
	h := fnv.New64a()
	h.Write(m[:56])
	if le.Uint32(m[0:]) != 0xED0CDAED || le.Uint32(m[4:]) != 2 || h.Sum64() != le.Uint64(m[56:]) {
		return metaPage{}, false
	}
	mp := metaPage{pageSize: le.Uint32(m[8:]), pgid: le.Uint64(m[40:]), txid: le.Uint64(m[48:])}
	if mp.pageSize < 512 || mp.pageSize > 1<<20 {
		return metaPage{}, false
	}
	return mp, true
}
