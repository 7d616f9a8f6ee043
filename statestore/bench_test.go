package statestore_test

import (
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/multimodule/multimodule/statestore"
)

// BenchmarkStateSave times one save of a small task state as the runtime
// does it (JSON, a checksummed snapshot, pruning, one fsync'd bbolt
// transaction) against a bare bbolt Update putting the same JSON under one
// key, fsync'd too, in the same run.
func BenchmarkStateSave(b *testing.B) {
	state := map[string]any{"count": 12345.0, "last": "howdy", "seen": []any{1.0, 2.0, 3.0}}
	dir := b.TempDir()
	s, err := statestore.Open(filepath.Join(dir, "task.db"), statestore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	db, err := bolt.Open(filepath.Join(dir, "bare.db"), 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	n := max(b.N, 1)
	b.ResetTimer()
	t0 := time.Now()
	for range n {
		payload, _ := json.Marshal(state)
		if err := db.Update(func(tx *bolt.Tx) error {
			bk, err := tx.CreateBucketIfNotExists([]byte("state"))
			if err != nil {
				return err
			}
			return bk.Put([]byte("state"), payload)
		}); err != nil {
			b.Fatal(err)
		}
	}
	bare := time.Since(t0)
	t0 = time.Now()
	for range n {
		payload, _ := json.Marshal(state)
		if _, err := s.Save(payload); err != nil {
			b.Fatal(err)
		}
	}
	ours := time.Since(t0)
	b.StopTimer()
	b.ReportMetric(float64(ours.Nanoseconds())/float64(n), "ns/op")
	b.ReportMetric(float64(bare.Microseconds())/float64(n), "bare-bbolt-us")
	b.ReportMetric(float64(ours.Microseconds())/float64(n), "save-us")
}
