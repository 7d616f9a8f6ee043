// Package followtail is the built-in FollowTail task: it follows files
// (globs), survives their rotation and truncation, and emits one message
// per line, {"line": "...", "file": PATH} (or, with json, the line's own
// object plus "file").
//
// Where it is in each file (device, inode, offset) is in the task's state,
// so a restart goes on after the last line read: none is read twice, none
// skipped. A file renamed away (rotated) is read to its end before the new
// file at its path is read from the start, also when the rotation
// happened while the daemon was down (the old file is found by its inode
// in the same directory). A file that got shorter (truncated) is read
// again from its start. Only complete lines are read: a line still being
// written waits for its newline.
package followtail

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/multimodule/multimodule/runtime"
	"github.com/multimodule/multimodule/tasks/internal/taskconf"
)

// Kind is the task's registered kind.
const Kind = "builtin.FollowTail"

// Description is the one line --list-kinds shows.
const Description = "follows files (globs) through rotation and truncation, one message per line; offsets in state"

// ConfigSchema is the CUE definition #Config of the task's config.
//
//go:embed followtail.cue
var ConfigSchema string

// PollTimer is the timer that looks at the files.
const PollTimer = "follow"

// maxLinesPerPoll bounds what one poll emits from one file, so a huge
// backlog is read over several polls and the task keeps answering.
const maxLinesPerPoll = 10000

type config struct {
	paths     []string
	fromStart bool
	json      bool
	poll      time.Duration
	maxLine   int
}

// FollowTail is the task.
type FollowTail struct {
	cfg *config
	// open files by path, each with its identity (task goroutine only).
	open map[string]*follow
	// scanned: the first poll since the task started has run (files seen
	// then start at start_at, later ones at their beginning).
	scanned bool
}

// follow is one open file at a path.
type follow struct {
	f        *os.File
	dev, ino uint64
	offset   int64
}

// New makes a FollowTail task.
func New() runtime.Task { return &FollowTail{open: map[string]*follow{}} }

// Stateful marks the offsets as persisted.
func (*FollowTail) Stateful() {}

// CheckConfig validates a config as SetConfig would.
func CheckConfig(c map[string]any) error {
	_, err := parseConfig(c)
	return err
}

func parseConfig(c map[string]any) (*config, error) {
	r := taskconf.New(c)
	r.Only("paths", "start_at", "json", "poll", "max_line")
	cfg := &config{
		paths:   r.Strings("paths"),
		json:    r.Bool("json", false),
		poll:    r.Seconds("poll", 250*time.Millisecond, time.Hour),
		maxLine: r.Int("max_line", 1<<20, 64, 16<<20),
	}
	switch start := r.String("start_at", "end"); start {
	case "end":
	case "beginning":
		cfg.fromStart = true
	default:
		r.Fail("start_at", `want "end" or "beginning", got %q`, start)
	}
	if len(cfg.paths) == 0 {
		r.Fail("paths", "required: at least one path or glob")
	}
	for i, p := range cfg.paths {
		if _, err := filepath.Match(p, ""); err != nil || p == "" {
			r.Fail("paths", "entry %d: bad glob %q", i, p)
		}
	}
	if err := r.Err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// SetConfig sets the files to follow and the poll timer.
func (t *FollowTail) SetConfig(ctx runtime.Context, c map[string]any) error {
	cfg, err := parseConfig(c)
	if err != nil {
		return err
	}
	t.cfg = cfg
	ctx.Recur(PollTimer, cfg.poll, t.poll)
	if !t.scanned {
		// The first look fixes where start_at "end" starts: at the end
		// as of the task's start, not of its first tick.
		t.poll(ctx)
	}
	return nil
}

// Message: {"poll": true} looks at the files now; anything else is an
// error.
func (t *FollowTail) Message(ctx runtime.Context, msg runtime.Message) error {
	if msg["poll"] == true {
		t.poll(ctx)
		return nil
	}
	return errors.New(`followtail: the only message it takes is {"poll": true}`)
}

// Stop closes the open files (the offsets are in the state already).
func (t *FollowTail) Stop(runtime.Context) {
	for p, fl := range t.open {
		fl.f.Close()
		delete(t.open, p)
	}
}

// saved is a file's entry in the state: state["files"][path].
type saved struct {
	Dev    uint64 `json:"dev"`
	Ino    uint64 `json:"ino"`
	Offset int64  `json:"offset"`
}

func (t *FollowTail) savedFiles(ctx runtime.Context) map[string]saved {
	out := map[string]saved{}
	raw, _ := ctx.State()["files"].(map[string]any)
	for p, v := range raw {
		m, _ := v.(map[string]any)
		dev, _ := m["dev"].(float64)
		ino, _ := m["ino"].(float64)
		off, _ := m["offset"].(float64)
		out[p] = saved{uint64(dev), uint64(ino), int64(off)}
	}
	return out
}

func (t *FollowTail) save(ctx runtime.Context) {
	files := map[string]any{}
	for p, fl := range t.open {
		files[p] = map[string]any{"dev": float64(fl.dev), "ino": float64(fl.ino), "offset": float64(fl.offset)}
	}
	ctx.State()["files"] = files
}

// poll reads what was added to every followed file.
func (t *FollowTail) poll(ctx runtime.Context) {
	first := !t.scanned
	t.scanned = true
	var matches []string
	for _, pat := range t.cfg.paths {
		m, _ := filepath.Glob(pat) // patterns were checked in SetConfig
		matches = append(matches, m...)
	}
	slices.Sort(matches)
	matches = slices.Compact(matches)
	prev := t.savedFiles(ctx)
	// Files no longer matched: read what was left, then let go.
	for p, fl := range t.open {
		if !slices.Contains(matches, p) {
			t.read(ctx, p, fl, -1)
			fl.f.Close()
			delete(t.open, p)
		}
	}
	for _, p := range matches {
		t.follow(ctx, p, prev, first)
	}
	t.save(ctx)
}

// follow opens, reopens or reads the file at path p.
func (t *FollowTail) follow(ctx runtime.Context, p string, prev map[string]saved, first bool) {
	st, err := os.Stat(p)
	if err != nil || !st.Mode().IsRegular() {
		return
	}
	dev, ino := identity(st)
	fl := t.open[p]
	rotated := fl != nil && (fl.dev != dev || fl.ino != ino)
	if rotated {
		// Rotated: the open file is the old one; read its rest first.
		t.read(ctx, p, fl, -1)
		fl.f.Close()
		delete(t.open, p)
		ctx.Log("followtail: file rotated, following the new one", "file", p)
		fl = nil
	}
	if fl == nil {
		var start int64
		if s, ok := prev[p]; ok {
			if s.Dev == dev && s.Ino == ino {
				start = s.Offset
			} else if !rotated {
				// Rotated while we were not looking: finish the old file
				// if it is still in the directory.
				t.finishRotated(ctx, p, s)
			}
		} else if first && !t.cfg.fromStart {
			start = st.Size()
		}
		f, err := os.Open(p)
		if err != nil {
			ctx.Error("followtail: cannot open", "file", p, "error", err)
			return
		}
		fl = &follow{f: f, dev: dev, ino: ino, offset: start}
		t.open[p] = fl
	}
	if st.Size() < fl.offset {
		ctx.Log("followtail: file truncated, reading it from the start", "file", p, "size", st.Size(), "offset", fl.offset)
		fl.offset = 0
	}
	t.read(ctx, p, fl, maxLinesPerPoll)
}

// finishRotated reads the rest of a file that was at path p (per its
// saved identity) and has since been renamed within its directory.
func (t *FollowTail) finishRotated(ctx runtime.Context, p string, s saved) {
	entries, err := os.ReadDir(filepath.Dir(p))
	if err != nil {
		return
	}
	for _, e := range entries {
		q := filepath.Join(filepath.Dir(p), e.Name())
		st, err := os.Stat(q)
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		if dev, ino := identity(st); dev == s.Dev && ino == s.Ino {
			f, err := os.Open(q)
			if err != nil {
				return
			}
			ctx.Log("followtail: file rotated while stopped, reading the rest of the old one", "file", p, "old", q)
			t.read(ctx, p, &follow{f: f, dev: dev, ino: ino, offset: s.Offset}, -1)
			f.Close()
			return
		}
	}
}

// read emits the complete lines of fl from its offset, at most max (all
// if max < 0), and advances the offset past them.
func (t *FollowTail) read(ctx runtime.Context, p string, fl *follow, max int) {
	if _, err := fl.f.Seek(fl.offset, io.SeekStart); err != nil {
		ctx.Error("followtail: seek", "file", p, "error", err)
		return
	}
	buf := make([]byte, 0, 64<<10)
	chunk := make([]byte, 64<<10)
	n := 0
	for max < 0 || n < max {
		k, err := fl.f.Read(chunk)
		buf = append(buf, chunk[:k]...)
		for {
			i := bytes.IndexByte(buf, '\n')
			if i >= t.cfg.maxLine || (i < 0 && len(buf) >= t.cfg.maxLine) {
				// A line past max_line: emit it cut, read on.
				t.emit(ctx, p, buf[:t.cfg.maxLine], true)
				fl.offset += int64(t.cfg.maxLine)
				buf = buf[t.cfg.maxLine:]
				n++
				continue
			}
			if i < 0 {
				break
			}
			t.emit(ctx, p, bytes.TrimSuffix(buf[:i], []byte("\r")), false)
			fl.offset += int64(i + 1)
			buf = buf[i+1:]
			if n++; max >= 0 && n >= max {
				return
			}
		}
		if err != nil || k == 0 {
			return
		}
	}
}

func (t *FollowTail) emit(ctx runtime.Context, p string, line []byte, cut bool) {
	var msg runtime.Message
	if t.cfg.json && !cut {
		if err := json.Unmarshal(line, &msg); err != nil || msg == nil {
			msg = runtime.Message{"line": string(line), "json_error": fmt.Sprint("not a JSON object: ", err)}
		}
	} else {
		msg = runtime.Message{"line": string(line)}
	}
	msg["file"] = p
	if cut {
		msg["truncated"] = true
	}
	ctx.Emit(msg)
}

// identity is a file's device and inode: what tells a rotated file from
// the one that replaced it.
func identity(st os.FileInfo) (dev, ino uint64) {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return uint64(s.Dev), s.Ino
	}
	return 0, 0
}
