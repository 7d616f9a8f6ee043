package reconcile

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/multimodule/multimodule/schema"
)

// Watcher tells when a config directory's contents have changed.
//
// It watches the directory, not its files (editors replace files; a
// ConfigMap swaps a symlink), so any event just marks the directory
// dirty. After a quiet period (the debounce) it hashes the files the
// loader would read and reports a change only if the hash differs from the
// last one reported. A periodic rescan catches whatever events were missed
// (an overflowed event queue, a network filesystem), and the watch follows
// the directory when the path itself is a symlink that gets replaced.
type Watcher struct {
	dir      string
	debounce time.Duration
	maxWait  time.Duration
	rescan   time.Duration
	onError  func(error)
	changes  chan string

	fw       *fsnotify.Watcher
	resolved string
	lastHash string
}

// WatchOptions tune a Watcher; zero values take the defaults.
type WatchOptions struct {
	// Debounce is how long the directory must be quiet (default 50ms).
	Debounce time.Duration
	// MaxWait bounds the debounce under a steady stream of events
	// (default 1s).
	MaxWait time.Duration
	// Rescan is the safety-net period (default 30s).
	Rescan time.Duration
	// OnError receives watch errors (they never stop the watcher).
	OnError func(error)
}

// NewWatcher starts watching dir. The first hash is taken now: only
// changes after this point are reported.
func NewWatcher(dir string, o WatchOptions) (*Watcher, error) {
	if o.Debounce <= 0 {
		o.Debounce = 50 * time.Millisecond
	}
	if o.MaxWait <= 0 {
		o.MaxWait = time.Second
	}
	if o.Rescan <= 0 {
		o.Rescan = 30 * time.Second
	}
	if o.OnError == nil {
		o.OnError = func(error) {}
	}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	w := &Watcher{dir: filepath.Clean(dir), debounce: o.Debounce, maxWait: o.MaxWait, rescan: o.Rescan,
		onError: o.OnError, changes: make(chan string, 1), fw: fw}
	// The parent sees the directory (or the symlink naming it) replaced.
	if err := fw.Add(filepath.Dir(w.dir)); err != nil {
		fw.Close()
		return nil, err
	}
	if err := w.follow(); err != nil {
		fw.Close()
		return nil, err
	}
	w.lastHash, _ = schema.HashDir(w.dir)
	return w, nil
}

// Close releases a watcher that will not Run (Run closes it when it ends).
func (w *Watcher) Close() error { return w.fw.Close() }

// Changes delivers the new content hash after each change.
func (w *Watcher) Changes() <-chan string { return w.changes }

// follow (re)establishes the watch on what dir names now.
func (w *Watcher) follow() error {
	resolved, err := filepath.EvalSymlinks(w.dir)
	if err != nil {
		return err
	}
	if resolved == w.resolved {
		return nil
	}
	if w.resolved != "" {
		w.fw.Remove(w.dir) // the old target may be gone already
	}
	if err := w.fw.Add(w.dir); err != nil {
		return err
	}
	w.resolved = resolved
	return nil
}

// Run watches until ctx ends, then closes the watcher.
func (w *Watcher) Run(ctx context.Context) {
	defer w.fw.Close()
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	rescan := time.NewTicker(w.rescan)
	defer rescan.Stop()
	var dirtySince time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.fw.Events:
			if !ok {
				return
			}
			if filepath.Dir(ev.Name) == filepath.Dir(w.dir) && ev.Name != w.dir {
				continue // a sibling in the parent directory
			}
			if dirtySince.IsZero() {
				dirtySince = time.Now()
			}
			// Trailing edge, but never later than maxWait after the first
			// event of a burst.
			debounce.Reset(min(w.debounce, time.Until(dirtySince.Add(w.maxWait))))
		case err, ok := <-w.fw.Errors:
			if !ok {
				return
			}
			if !errors.Is(err, fsnotify.ErrEventOverflow) {
				w.onError(err)
			}
			w.check() // overflow means events were lost: look now
		case <-debounce.C:
			dirtySince = time.Time{}
			w.check()
		case <-rescan.C:
			w.check()
		}
	}
}

// check re-follows the directory and reports a changed hash.
func (w *Watcher) check() {
	if err := w.follow(); err != nil && !errors.Is(err, os.ErrNotExist) {
		w.onError(err)
	}
	h, err := schema.HashDir(w.dir)
	if err != nil {
		h = "unreadable: " + err.Error() // report it: the loader will say what is wrong
	}
	if h == w.lastHash {
		return
	}
	w.lastHash = h
	select {
	case w.changes <- h:
	default:
		// The consumer has not taken the previous change yet; it reloads
		// the whole directory anyway. Replace the stale hash.
		select {
		case <-w.changes:
		default:
		}
		w.changes <- h
	}
}
