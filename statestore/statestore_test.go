package statestore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// openStore opens a real store in a per-test directory and checks the
// file's integrity when the test ends.
func openStore(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Check(); err != nil {
			t.Errorf("integrity check: %v", err)
		}
		s.Close()
	})
	return s
}

func TestSaveLoadKeepsNewest(t *testing.T) {
	t.Parallel()
	s := openStore(t, filepath.Join(t.TempDir(), "a.db"))
	if _, _, err := s.Load(); !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("empty store: got %v, want ErrNoSnapshot", err)
	}
	for i := 1; i <= 5; i++ {
		gen, err := s.Save([]byte(fmt.Sprintf(`{"ct":%d}`, i)))
		if err != nil || gen != uint64(i) {
			t.Fatalf("Save %d: gen %d err %v", i, gen, err)
		}
	}
	snap, bad, err := s.Load()
	if err != nil || len(bad) != 0 {
		t.Fatalf("Load: %v %v", bad, err)
	}
	if snap.Generation != 5 || string(snap.Payload) != `{"ct":5}` {
		t.Fatalf("Load got gen %d %q", snap.Generation, snap.Payload)
	}
	var n int
	s.db.View(func(tx *bboltTx) error { n = tx.Bucket(snapshotsBucket).Stats().KeyN; return nil })
	if n != DefaultKeep {
		t.Fatalf("kept %d snapshots, want %d", n, DefaultKeep)
	}
}

// flipByteOf flips one byte inside the on-disk copy of marker, which must
// occur exactly once in the file.
func flipByteOf(t *testing.T, path, marker string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if c := bytes.Count(b, []byte(marker)); c != 1 {
		t.Fatalf("marker %q occurs %d times in %s", marker, c, path)
	}
	i := bytes.Index(b, []byte(marker))
	b[i+len(marker)-1] ^= 0x01
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestFlippedByteFallsBackAndQuarantines(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "a.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{`{"ct":"first-000"}`, `{"ct":"second-000"}`, `{"ct":"third-000"}`} {
		if _, err := s.Save([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	flipByteOf(t, path, "third-000")

	s = openStore(t, path)
	snap, bad, err := s.Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if string(snap.Payload) != `{"ct":"second-000"}` || snap.Generation != 2 {
		t.Fatalf("loaded gen %d %q, want the previous snapshot", snap.Generation, snap.Payload)
	}
	if len(bad) != 1 || bad[0].Generation != 3 || !errors.Is(bad[0].Err, ErrChecksum) {
		t.Fatalf("quarantined %+v, want generation 3 with a checksum error", bad)
	}
	if n, _ := s.QuarantineCount(); n != 1 {
		t.Fatalf("quarantine holds %d, want 1", n)
	}
	// The bad snapshot is gone from the history: a second load is clean,
	// and generations keep growing past the quarantined one.
	if _, bad, _ := s.Load(); len(bad) != 0 {
		t.Fatalf("second load quarantined again: %+v", bad)
	}
	if gen, err := s.Save([]byte(`{}`)); err != nil || gen != 4 {
		t.Fatalf("save after quarantine: gen %d err %v", gen, err)
	}
}

func TestCorruptFiles(t *testing.T) {
	t.Parallel()
	valid := func(t *testing.T, path string) {
		s, err := Open(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		s.Save([]byte(`{"ct":1}`))
		s.Close()
	}
	tests := []struct {
		name    string
		corrupt func(t *testing.T, path string)
	}{
		{"garbage", func(t *testing.T, path string) {
			os.WriteFile(path, bytes.Repeat([]byte("not a database "), 2000), 0o600)
		}},
		{"truncated", func(t *testing.T, path string) {
			valid(t, path)
			os.Truncate(path, 100)
		}},
		{"zero length", func(t *testing.T, path string) {
			valid(t, path)
			os.Truncate(path, 0)
		}},
		{"meta pages zeroed", func(t *testing.T, path string) {
			valid(t, path)
			b, _ := os.ReadFile(path)
			for i := 0; i < 2*4096 && i < len(b); i++ {
				b[i] = 0
			}
			os.WriteFile(path, b, 0o600)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "a.db")
			tt.corrupt(t, path)
			s, err := Open(path, Options{})
			if tt.name == "zero length" {
				// An empty file is a valid new database for bbolt; it must
				// then behave as one.
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				if _, _, lerr := s.Load(); !errors.Is(lerr, ErrNoSnapshot) {
					t.Fatalf("opened a %s file and Load gave %v", tt.name, lerr)
				}
				return
			}
			if !errors.Is(err, ErrCorruptFile) {
				t.Fatalf("Open: %v, want ErrCorruptFile", err)
			}
			moved, err := MoveAside(path, s0time)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(moved); err != nil {
				t.Fatalf("corrupt file not kept: %v", err)
			}
			fresh := openStore(t, path)
			if _, err := fresh.Save([]byte(`{}`)); err != nil {
				t.Fatalf("fresh store after MoveAside: %v", err)
			}
		})
	}
}

func TestSecondOpenIsLocked(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "a.db")
	openStore(t, path)
	if _, err := Open(path, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
}

// Opening a store that exists writes nothing: a start of a stateful task
// costs no commit (and no fsync).
func TestOpeningAnExistingStoreWritesNothing(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "a.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Save([]byte(`{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s = openStore(t, path)
	if snap, _, err := s.Load(); err != nil || string(snap.Payload) != `{"n":1}` {
		t.Fatalf("Load after reopening: %q, %v", snap.Payload, err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("reopening the store changed its file")
	}
}

func TestFilePermissions(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "state")
	path := filepath.Join(dir, "a.db")
	openStore(t, path)
	for p, want := range map[string]os.FileMode{dir: 0o700, path: 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %o, want %o", p, got, want)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(encode(1, s0time, []byte(`{"ct":1}`)))
	f.Add([]byte("MMS1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		snap, err := decode(b)
		if err == nil && !bytes.Equal(encode(snap.Generation, snap.Time, snap.Payload), b) {
			t.Fatalf("decode accepted bytes that do not round-trip")
		}
	})
}

func TestLockDir(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "state")
	l, err := LockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = LockDir(dir)
	if !errors.Is(err, ErrDirLocked) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("second lock: %v, want ErrDirLocked naming our pid", err)
	}
	l.Unlock()
	l2, err := LockDir(dir)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	l2.Unlock()
}

// openAndLoad is what the daemon does with a state file: it must end in a
// snapshot, ErrNoSnapshot or ErrCorruptFile, never a crash or a hang.
func openAndLoad(t *testing.T, path string) error {
	t.Helper()
	s, err := Open(path, Options{})
	if err != nil {
		return err
	}
	defer s.Close()
	_, _, err = s.Load()
	return err
}

func TestDamagedFilesNeverCrash(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	orig := filepath.Join(dir, "orig.db")
	s, err := Open(orig, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		s.Save(bytes.Repeat([]byte{byte('a' + i)}, 10000))
	}
	s.Close()
	good, _ := os.ReadFile(orig)
	ok := func(err error) bool {
		return err == nil || errors.Is(err, ErrNoSnapshot) || errors.Is(err, ErrCorruptFile)
	}
	var cases int
	// Truncated at every page boundary and a little past it.
	for size := 0; size < len(good); size += 2048 {
		p := filepath.Join(dir, fmt.Sprintf("trunc-%d.db", size))
		os.WriteFile(p, good[:size], 0o600)
		if err := openAndLoad(t, p); !ok(err) {
			t.Fatalf("truncated to %d: %v", size, err)
		}
		cases++
	}
	// Each page overwritten with garbage.
	for off := 0; off < len(good); off += 4096 {
		b := append([]byte(nil), good...)
		for i := off; i < off+4096 && i < len(b); i++ {
			b[i] = byte(i*7 + 13)
		}
		p := filepath.Join(dir, fmt.Sprintf("page-%d.db", off))
		os.WriteFile(p, b, 0o600)
		if err := openAndLoad(t, p); !ok(err) {
			t.Fatalf("page at %d garbled: %v", off, err)
		}
		cases++
	}
	t.Logf("%d damaged files handled", cases)
}

// jsonCheck is a loader's check as the runtime passes one: the payload
// must be JSON that encoding/json accepts (which includes its nesting
// limit of 10,000).
func jsonCheck(b []byte) error {
	if !json.Valid(b) {
		var v any
		return fmt.Errorf("not loadable JSON: %w", json.Unmarshal(b, &v))
	}
	return nil
}

// deepJSON nests n objects.
func deepJSON(n int) []byte {
	return []byte(strings.Repeat(`{"a":`, n) + "1" + strings.Repeat("}", n))
}

func TestSnapshotThatDoesNotDecodeFallsBackAndQuarantines(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "a.db")
	// Written without a check, as an older version did: both checksum.
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range [][]byte{[]byte(`{"ct":"good"}`), deepJSON(10001)} {
		if _, err := s.Save(p); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()

	s, err = Open(path, Options{Check: jsonCheck})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	snap, bad, err := s.Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if snap.Generation != 1 || string(snap.Payload) != `{"ct":"good"}` {
		t.Fatalf("loaded gen %d %.40q, want the previous snapshot", snap.Generation, snap.Payload)
	}
	if len(bad) != 1 || bad[0].Generation != 2 || !errors.Is(bad[0].Err, ErrUnloadable) {
		t.Fatalf("quarantined %+v, want generation 2 as unloadable", bad)
	}
	if n, _ := s.QuarantineCount(); n != 1 {
		t.Fatalf("quarantine holds %d, want 1", n)
	}
	if gen, err := s.Save([]byte(`{}`)); err != nil || gen != 3 {
		t.Fatalf("save after quarantine: gen %d err %v", gen, err)
	}
}

func TestSaveRefusesStateTheLoaderCannotRead(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "a.db")
	s, err := Open(path, Options{Check: jsonCheck})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Save(deepJSON(10000)); err != nil {
		t.Fatalf("a state at the limit: %v", err)
	}
	gen, err := s.Save(deepJSON(10001))
	if !errors.Is(err, ErrUnloadable) || gen != 0 {
		t.Fatalf("Save of a state past the limit: gen %d err %v, want ErrUnloadable", gen, err)
	}
	s.Close()
	s = openStore(t, path)
	snap, bad, err := s.Load()
	if err != nil || len(bad) != 0 || snap.Generation != 1 || !bytes.Equal(snap.Payload, deepJSON(10000)) {
		t.Fatalf("after a refused save: gen %d bad %v err %v, want generation 1 unchanged", snap.Generation, bad, err)
	}
}

func TestCompactionBoundsTheFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "a.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	const size = 2 << 20
	payload := func(i int) []byte {
		// Sizes vary, as a real state's do: bbolt then cannot reuse a
		// freed run of pages for a larger snapshot and grows the file.
		b := bytes.Repeat([]byte{byte('a' + i%26)}, size-(i%5)*(size/8))
		copy(b, fmt.Sprintf("save-%03d", i))
		return b
	}
	var largest int64
	for i := range 50 {
		if _, err := s.Save(payload(i)); err != nil {
			t.Fatalf("save %d: %v", i, err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		largest = max(largest, fi.Size())
		var held int64
		s.db.View(func(tx *bboltTx) error {
			tx.Bucket(snapshotsBucket).ForEach(func(k, v []byte) error { held += int64(len(k) + len(v)); return nil })
			return nil
		})
		if bound := CompactFactor*held + CompactFloor; fi.Size() > bound {
			t.Fatalf("after save %d the file is %d bytes, over %d (%dx its %d bytes of snapshots + %d)",
				i, fi.Size(), bound, CompactFactor, held, CompactFloor)
		}
	}
	t.Logf("largest file: %.1f MiB for %d snapshots of up to %.1f MiB", float64(largest)/(1<<20), DefaultKeep, float64(size)/(1<<20))
	// The store still holds the state file's lock after compactions.
	if _, err := Open(path, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open while the store is open: %v, want ErrLocked", err)
	}
	if matches, _ := filepath.Glob(path + ".*"); len(matches) != 0 {
		t.Fatalf("left behind: %v", matches)
	}
	s.Close()
	s = openStore(t, path)
	snap, bad, err := s.Load()
	if err != nil || len(bad) != 0 || snap.Generation != 50 || !bytes.Equal(snap.Payload, payload(49)) {
		t.Fatalf("after reopen: gen %d bad %v err %v, want generation 50 intact", snap.Generation, bad, err)
	}
}

func TestFailedCompactionKeepsTheSnapshotAndTheFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "a.db")
	s := openStore(t, path)
	// A directory where the copy would go (with something in it, so it is
	// not removed) makes every compaction fail.
	if err := os.MkdirAll(filepath.Join(path+".compact", "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("b"), 1<<20)
	var compactErrs int
	for i := range 12 {
		gen, err := s.Save(append([]byte(fmt.Sprintf("%03d", i)), big[:len(big)-i*(1<<16)]...))
		switch {
		case errors.Is(err, ErrCompact):
			compactErrs++
		case err != nil:
			t.Fatalf("save %d: %v", i, err)
		}
		if gen != uint64(i+1) {
			t.Fatalf("save %d: generation %d, want %d even when compaction fails", i, gen, i+1)
		}
	}
	if compactErrs == 0 {
		t.Fatal("no compaction was attempted: the test does not grow the file enough")
	}
	snap, _, err := s.Load()
	if err != nil || snap.Generation != 12 {
		t.Fatalf("Load after failed compactions: gen %d, %v", snap.Generation, err)
	}
}
