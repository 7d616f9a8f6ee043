package reconcile

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/multimodule/multimodule/schema"
)

func startWatcher(t *testing.T, dir string) *Watcher {
	t.Helper()
	w, err := NewWatcher(dir, WatchOptions{Debounce: 20 * time.Millisecond, OnError: func(err error) { t.Errorf("watch: %v", err) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

// expectChange waits for the watcher to report dir's current hash.
func expectChange(t *testing.T, w *Watcher, dir, what string) {
	t.Helper()
	want, err := schema.HashDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-w.Changes():
		if got != want {
			t.Fatalf("%s: reported hash %.12s, the dir now hashes to %.12s (a stale or spurious report)", what, got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no change reported within 5s", what)
	}
}

// expectSettle is expectChange for a save that is not atomic (a file
// truncated, then written): under load the watcher may report the state
// in between first, then the one it settles in.
func expectSettle(t *testing.T, w *Watcher, dir, what string) {
	t.Helper()
	want, err := schema.HashDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case got := <-w.Changes():
			if got == want {
				return
			}
		case <-deadline:
			t.Fatalf("%s: the dir's hash %.12s not reported within 5s", what, want)
		}
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// writeAtomic writes path as editors' atomic saves do: a temp file renamed
// over it, so that no watcher sees it half written.
func writeAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	write(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestWatcherSeesEveryKindOfSave(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a := filepath.Join(dir, "a.cue")
	write(t, a, "tasks: A: {}\n")
	w := startWatcher(t, dir)

	// Atomic save: write a temp file, rename it over the original.
	writeAtomic(t, a, "tasks: A: config: v: 1\n")
	expectChange(t, w, dir, "atomic save")

	// Vim-style: move the original to a backup, write anew, drop the backup
	// (with a swap file around).
	write(t, filepath.Join(dir, ".a.cue.swp"), "swap")
	os.Rename(a, a+"~")
	write(t, a, "tasks: A: config: v: 2\n")
	os.Remove(a + "~")
	expectSettle(t, w, dir, "vim-style save")

	// In place.
	f, _ := os.OpenFile(a, os.O_WRONLY|os.O_TRUNC, 0)
	f.WriteString("tasks: A: config: v: 3\n")
	f.Close()
	expectSettle(t, w, dir, "in-place write")

	// Noise that changes nothing the loader reads: editor lock and backup
	// files, a same-content rewrite. Then a real change: the first report
	// must be that change (atomic saves: nothing half written to report).
	write(t, filepath.Join(dir, ".#a.cue"), "lock")
	write(t, filepath.Join(dir, "b.cue~"), "backup")
	write(t, filepath.Join(dir, "_draft.cue"), "draft")
	writeAtomic(t, a, "tasks: A: config: v: 3\n")
	writeAtomic(t, filepath.Join(dir, "b.cue"), "tasks: B: {}\n")
	expectChange(t, w, dir, "new file after noise")

	os.Remove(filepath.Join(dir, "b.cue"))
	expectChange(t, w, dir, "removed file")
}

func TestWatcherFollowsASwappedSymlink(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	for _, rel := range []string{"v1", "v2"} {
		os.Mkdir(filepath.Join(root, rel), 0o700)
		write(t, filepath.Join(root, rel, "a.cue"), "tasks: A: config: rel: \""+rel+"\"\n")
	}
	link := filepath.Join(root, "config")
	os.Symlink("v1", link)
	w := startWatcher(t, link)

	// Replace the symlink atomically, as deploy tools do.
	os.Symlink("v2", filepath.Join(root, "config.new"))
	os.Rename(filepath.Join(root, "config.new"), link)
	expectChange(t, w, link, "symlink swap")

	// The watch moved to v2: an edit there is seen.
	write(t, filepath.Join(root, "v2", "b.cue"), "tasks: B: {}\n")
	expectChange(t, w, link, "edit in the new target")
}

func TestWatcherConfigMapStyleSwap(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, v := range []string{"..v1", "..v2"} {
		os.Mkdir(filepath.Join(dir, v), 0o700)
		write(t, filepath.Join(dir, v, "a.cue"), "tasks: A: config: v: \""+v+"\"\n")
	}
	os.Symlink("..v1", filepath.Join(dir, "..data"))
	os.Symlink("..data/a.cue", filepath.Join(dir, "a.cue"))
	w := startWatcher(t, dir)

	os.Symlink("..v2", filepath.Join(dir, "..data_tmp"))
	os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data"))
	expectChange(t, w, dir, "..data swap")
}
