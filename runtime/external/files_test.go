package external

import (
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// The daemon and a process it starts both write the process's pid file,
// at the same moment when the process starts fast: both writes succeed,
// and the file is always one of them, whole.
func TestConcurrentWritesOfAPidFileAreWhole(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "T.pid")
	short := Process{Identity: Identity{Pid: 1, Start: 2}, Hash: "x1", Kind: "K"}
	long := Process{Identity: Identity{Pid: 1, Start: 2}, Hash: strings.Repeat("y", 4000), Kind: "K"}
	for i := range 100 {
		var wg sync.WaitGroup
		errs := make(chan error, 2)
		for _, p := range []Process{short, long} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- writeJSONFile(path, p)
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("write %d: %v", i, err)
			}
		}
		if p, err := readProcess(path); err != nil || p.Hash != short.Hash && p.Hash != long.Hash {
			t.Fatalf("after write %d the pid file reads %+v, %v", i, p, err)
		}
	}
}
