package multimodule

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/multimodule/multimodule/internal/testenv"
)

// atomicSave writes content to path through a temp file and a rename.
func atomicSave(b *testing.B, path, content string) {
	tmp := filepath.Join(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		b.Fatal(err)
	}
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(p*float64(len(s)-1))]
}

// BenchmarkConfigEditToApplied measures, over 50 atomic saves, the time
// from the rename to the task's SetConfig seeing the new config (debounce
// included), next to the time a bare fsnotify watcher takes to see the
// same kind of rename, in the same run.
func BenchmarkConfigEditToApplied(b *testing.B) {
	const edits = 50
	for range b.N {
		// Raw baseline: rename to fsnotify event.
		raw := b.TempDir()
		fw, err := fsnotify.NewWatcher()
		if err != nil {
			b.Fatal(err)
		}
		fw.Add(raw)
		var bare []time.Duration
		for i := range edits {
			t0 := time.Now()
			atomicSave(b, filepath.Join(raw, "p.cue"), fmt.Sprint(i))
			for ev := range fw.Events {
				if ev.Has(fsnotify.Rename) || ev.Has(fsnotify.Create) {
					if filepath.Base(ev.Name) == "p.cue" {
						break
					}
				}
			}
			bare = append(bare, time.Since(t0))
			for len(fw.Events) > 0 {
				<-fw.Events
			}
		}
		fw.Close()

		cfg := testenv.WriteFiles(b, map[string]string{"p.cue": probeFile("Bench", "v0")})
		d := startDaemon(b, "-c", cfg, "-s", b.TempDir(), "-T", testenv.TransitDir(b), "-p", "itest")
		testenv.WaitFor(b, 10*time.Second, "the first config", func() bool { return lastConfig("Bench") == "v0" })
		var ours []time.Duration
		for i := 1; i <= edits; i++ {
			v := fmt.Sprintf("v%d", i)
			t0 := time.Now()
			atomicSave(b, filepath.Join(cfg, "p.cue"), probeFile("Bench", v))
			for lastConfig("Bench") != v {
				time.Sleep(200 * time.Microsecond)
				if time.Since(t0) > 10*time.Second {
					b.Fatalf("edit %d not applied in 10s", i)
				}
			}
			ours = append(ours, time.Since(t0))
		}
		d.sig <- syscall.SIGTERM
		d.exitCode(b)
		b.ReportMetric(float64(percentile(bare, 0.5).Microseconds())/1000, "bare-fsnotify-p50-ms")
		b.ReportMetric(float64(percentile(ours, 0.5).Microseconds())/1000, "edit-applied-p50-ms")
		b.ReportMetric(float64(percentile(ours, 0.95).Microseconds())/1000, "edit-applied-p95-ms")
	}
}
