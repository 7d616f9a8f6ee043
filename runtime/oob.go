package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The out-of-band channels every task and the daemon report on.
const (
	ChanLog   = "log"
	ChanDebug = "debug"
	ChanAlert = "alert"
	ChanError = "error"
)

// DefaultOOB is the channel wiring when -o does not say otherwise.
const DefaultOOB = "log:1,error:2,alert:2,debug:./debug.out"

// RouterTarget as a channel target emits the records to the Router.
const RouterTarget = "router"

// Channels are the out-of-band loggers. Records carry a "task" attribute when
// a task wrote them.
type Channels struct {
	Log, Debug, Alert, Error *slog.Logger
	closers                  []io.Closer
}

// ChannelOptions say where "1" and "2" write, how queue targets are
// reached, and the least level the log and debug channels pass.
type ChannelOptions struct {
	Level          slog.Level
	Stdout, Stderr io.Writer
	// Send delivers a record to a queue (or to the Router, as "Router").
	// Without it, queue targets are an error.
	Send func(qname string, msg Message) error
	// Forward, if set, takes every channel's records instead of the -o
	// targets (an external process hands them to its daemon); a record
	// it fails to take is written to Stderr.
	Forward func(msg Message) error
}

// ParseOOB reads an -o spec ("log:1,alert:myq,error:/var/log/mm.err,
// debug:router") over the defaults: 1 is stdout, 2 stderr, a target with a
// "/" a file (appended, created 0600 on first write), "router" the Router,
// anything else a queue name.
func ParseOOB(spec string) (map[string]string, error) {
	targets := map[string]string{}
	for _, kv := range strings.Split(DefaultOOB+","+spec, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		ch, target, ok := strings.Cut(kv, ":")
		if !ok || target == "" {
			return nil, fmt.Errorf("out-of-band spec %q: want channel:target", kv)
		}
		switch ch {
		case ChanLog, ChanDebug, ChanAlert, ChanError:
			targets[ch] = target
		default:
			return nil, fmt.Errorf("out-of-band spec %q: unknown channel %q (want log, debug, alert or error)", kv, ch)
		}
	}
	return targets, nil
}

// OpenChannels builds the four channels from an -o spec.
func OpenChannels(spec string, opts ChannelOptions) (*Channels, error) {
	targets, err := ParseOOB(spec)
	if err != nil {
		return nil, err
	}
	if opts.Stdout == nil {
		opts.Stdout = os.Stdout
	}
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	c := &Channels{}
	files := map[string]*lazyFile{} // one writer per path, shared by channels
	mk := func(ch string, min slog.Level) (*slog.Logger, error) {
		target := targets[ch]
		var h slog.Handler
		hopts := &slog.HandlerOptions{Level: min, ReplaceAttr: severityKey}
		switch {
		case opts.Forward != nil:
			h = &sendHandler{channel: ch, qname: "the daemon", min: min, send: func(_ string, m Message) error { return opts.Forward(m) },
				fallback: slog.NewTextHandler(opts.Stderr, hopts)}
		case target == "1":
			h = slog.NewTextHandler(opts.Stdout, hopts)
		case target == "2":
			h = slog.NewTextHandler(opts.Stderr, hopts)
		case strings.Contains(target, "/"):
			f := files[target]
			if f == nil {
				// Checked now, not only on first write, so that a planted
				// link stops the daemon at start with a clear error.
				if err := checkLogFile(target); err != nil {
					return nil, fmt.Errorf("out-of-band channel %s: %w", ch, err)
				}
				f = &lazyFile{path: target}
				files[target] = f
				c.closers = append(c.closers, f)
			}
			h = slog.NewTextHandler(f, hopts)
		default:
			if opts.Send == nil {
				return nil, fmt.Errorf("out-of-band channel %s: queue target %q needs a transport", ch, target)
			}
			qname := target
			if target == RouterTarget {
				qname = "Router"
			}
			h = &sendHandler{channel: ch, qname: qname, min: min, send: opts.Send,
				fallback: slog.NewTextHandler(opts.Stderr, hopts)}
		}
		return slog.New(h).With("channel", ch), nil
	}
	debugMin := slog.LevelDebug
	if opts.Level > slog.LevelDebug {
		debugMin = slog.Level(100) // off unless -d debug: debug is for asking
	}
	for _, x := range []struct {
		ch  string
		min slog.Level
		dst **slog.Logger
	}{
		{ChanLog, opts.Level, &c.Log},
		{ChanDebug, debugMin, &c.Debug},
		{ChanAlert, slog.LevelDebug, &c.Alert},
		{ChanError, slog.LevelDebug, &c.Error},
	} {
		l, err := mk(x.ch, x.min)
		if err != nil {
			return nil, err
		}
		*x.dst = l
	}
	return c, nil
}

// severityKey writes a record's slog level as "severity", as record
// messages do: "level" is left to attributes (an alert's level).
func severityKey(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.LevelKey {
		a.Key = "severity"
	}
	return a
}

// Close closes the files the channels opened.
func (c *Channels) Close() error {
	var errs []error
	for _, cl := range c.closers {
		errs = append(errs, cl.Close())
	}
	return errors.Join(errs...)
}

// ParseLevel reads -d: debug, info, warn or error.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// OOBMarker is set on messages that carry out-of-band records, so that the
// Router never reports on them (which would loop through debug:router).
// Such a message holds the record's attributes and its msg, time,
// severity (the slog level) and source.
const OOBMarker = ".multimodule_oob"

// sendHandler turns records into messages for a queue or the Router.
type sendHandler struct {
	channel  string
	qname    string
	min      slog.Level
	send     func(string, Message) error
	attrs    []slog.Attr
	fallback slog.Handler
}

func (h *sendHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.min }

func (h *sendHandler) Handle(ctx context.Context, r slog.Record) error {
	msg := Message{}
	add := func(a slog.Attr) bool {
		v := a.Value.Resolve().Any()
		if e, ok := v.(error); ok {
			v = e.Error()
		}
		msg[a.Key] = v
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	// The record's own fields win over attributes of the same name. Its
	// slog level is "severity": "level" is left to attributes (an alert's
	// level is ok, warn, severe or failsafe).
	msg[OOBMarker] = true
	msg["source"] = "MultiModule"
	msg["time"] = r.Time.Format(time.RFC3339Nano)
	msg["severity"] = r.Level.String()
	msg["msg"] = r.Message
	if err := h.send(h.qname, msg); err != nil {
		// Never lose an operator's record: say it where a human looks.
		r.AddAttrs(slog.String("undeliverable_to", h.qname), slog.String("reason", err.Error()))
		return h.fallback.Handle(ctx, r)
	}
	return nil
}

func (h *sendHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	n.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	n.fallback = h.fallback.WithAttrs(as)
	return &n
}

func (h *sendHandler) WithGroup(name string) slog.Handler {
	// Records are flat messages; a group only prefixes later keys, which
	// nothing in the project uses. Keep the handler usable regardless.
	n := *h
	n.fallback = h.fallback.WithGroup(name)
	return &n
}

// lazyFile opens its path on first write, so an unused channel leaves no
// file behind.
type lazyFile struct {
	path string
	mu   sync.Mutex
	f    *os.File
	err  error
}

func (l *lazyFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil && l.err == nil {
		l.f, l.err = openLogFile(l.path)
	}
	if l.err != nil {
		return 0, l.err
	}
	return l.f.Write(p)
}

// ErrUnsafeLogFile: an out-of-band file target is a symbolic link, not a
// regular file, not owned by this user or has other links. A daemon run
// as root would otherwise append to whatever another user's link (in
// /tmp, in a shared working directory) points at.
var ErrUnsafeLogFile = errors.New("refusing to write an out-of-band file")

// checkLogFile refuses an existing path that openLogFile would refuse; a
// path that does not exist yet is fine (openLogFile creates it).
func checkLogFile(path string) error {
	var st unix.Stat_t
	err := unix.Lstat(path, &st)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return checkLogStat(path, &st)
}

func checkLogStat(path string, st *unix.Stat_t) error {
	switch {
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return fmt.Errorf("%w %s: it is a symbolic link", ErrUnsafeLogFile, path)
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return fmt.Errorf("%w %s: not a regular file", ErrUnsafeLogFile, path)
	case int(st.Uid) != os.Geteuid():
		return fmt.Errorf("%w %s: owned by uid %d, not %d", ErrUnsafeLogFile, path, st.Uid, os.Geteuid())
	case st.Nlink > 1:
		return fmt.Errorf("%w %s: it has %d links", ErrUnsafeLogFile, path, st.Nlink)
	}
	return nil
}

// openLogFile opens path to append, creating it 0600, without following
// a symbolic link (O_NOFOLLOW) and, after opening (fstat: what was
// opened, not what the name pointed at a moment before), only if it is a
// regular file of this user's with no other links. O_NONBLOCK keeps a
// planted FIFO from hanging the open.
func openLogFile(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o600)
	switch {
	case errors.Is(err, unix.ELOOP):
		return nil, fmt.Errorf("%w %s: it is a symbolic link", ErrUnsafeLogFile, path)
	case errors.Is(err, unix.ENXIO): // a FIFO nobody reads, a socket
		return nil, fmt.Errorf("%w %s: not a regular file", ErrUnsafeLogFile, path)
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	if err := checkLogStat(path, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), path), nil
}

func (l *lazyFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	return l.f.Close()
}
