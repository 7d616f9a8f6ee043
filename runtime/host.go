package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Errors from the host's operations.
var (
	ErrNoSuchQueue   = errors.New("no task or queue by that name")
	ErrTaskExists    = errors.New("task is already running")
	ErrShuttingDown  = errors.New("host is shutting down")
	ErrBadTaskName   = errors.New("invalid task name")
	ErrDrainTimedOut = errors.New("messages still in flight when the shutdown timeout expired")
)

// TaskNameRE is what a task name may look like: it names a queue and a
// state file, so it is kept to a safe alphabet.
var TaskNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]{0,127}$`)

// TaskSpec is what the host needs to run one task.
type TaskSpec struct {
	Name string
	// Kind is the resolved, fully qualified kind (shown in status).
	Kind string
	New  Factory
	// Config is passed to SetConfig; the task owns it from then on.
	Config map[string]any
	// Intervals override Recur periods by timer name; "save_state" sets how
	// often a Stateful task's changed state is saved (default 1s).
	Intervals map[string]time.Duration
}

// Options configure a Host.
type Options struct {
	// StateDir holds one state file per stateful task (StateDir/tasks/NAME.db).
	StateDir string
	// OOB is the -o spec for the out-of-band channels (see ParseOOB).
	OOB   string
	Level slog.Level
	// Stdout and Stderr back the "1" and "2" channel targets.
	Stdout, Stderr io.Writer
}

// Host runs internal tasks. Its methods are safe for concurrent use.
type Host struct {
	opts Options
	ch   *Channels

	mu      sync.Mutex // serialises Start, Stop and Shutdown
	closing bool
	// tasks is replaced, never mutated, so that the message path reads it
	// without a lock.
	tasks atomic.Pointer[map[string]*runner]
}

// NewHost makes a host with no tasks.
func NewHost(opts Options) (*Host, error) {
	h := &Host{opts: opts}
	h.tasks.Store(&map[string]*runner{})
	ch, err := OpenChannels(opts.OOB, ChannelOptions{
		Level: opts.Level, Stdout: opts.Stdout, Stderr: opts.Stderr, Send: h.Send,
	})
	if err != nil {
		return nil, err
	}
	h.ch = ch
	return h, nil
}

// Channels are the host's out-of-band loggers.
func (h *Host) Channels() *Channels { return h.ch }

// Start creates the task, restores its state, runs SetConfig and starts
// its goroutine. A task whose SetConfig fails is not started.
func (h *Host) Start(spec TaskSpec) error {
	if !TaskNameRE.MatchString(spec.Name) {
		return fmt.Errorf("%w %q: use letters, digits, _ and -", ErrBadTaskName, spec.Name)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return ErrShuttingDown
	}
	if _, ok := (*h.tasks.Load())[spec.Name]; ok {
		return fmt.Errorf("task %s: %w", spec.Name, ErrTaskExists)
	}
	r, err := newRunner(h, spec)
	if err != nil {
		return fmt.Errorf("task %s: %w", spec.Name, err)
	}
	h.publish(func(m map[string]*runner) { m[spec.Name] = r })
	go r.loop()
	return nil
}

// Reconfigure hands a new config to a running task (SetConfig on its own
// goroutine, in order with its messages) and waits for the result. The
// task's state is kept.
func (h *Host) Reconfigure(name string, config map[string]any, intervals map[string]time.Duration) error {
	r := (*h.tasks.Load())[name]
	if r == nil {
		return fmt.Errorf("%w: %q", ErrNoSuchQueue, name)
	}
	done := make(chan error, 1)
	if err := r.mbox.push(item{ctl: &control{kind: ctlConfig, config: &configChange{config, intervals, done}}}); err != nil {
		return fmt.Errorf("task %s: %w", name, err)
	}
	return <-done
}

// Stop stops one task: no new messages, its queue drained, state saved.
func (h *Host) Stop(ctx context.Context, name string) error {
	h.mu.Lock()
	r := (*h.tasks.Load())[name]
	if r != nil {
		h.publish(func(m map[string]*runner) { delete(m, name) })
	}
	h.mu.Unlock()
	if r == nil {
		return fmt.Errorf("%w: %q", ErrNoSuchQueue, name)
	}
	r.stopTimers()
	r.mbox.close()
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("task %s did not stop: %w", name, ctx.Err())
	}
}

// Send delivers msg to the named task from outside any task.
func (h *Host) Send(qname string, msg Message) error {
	r := (*h.tasks.Load())[qname]
	if r == nil {
		return fmt.Errorf("%w: %q", ErrNoSuchQueue, qname)
	}
	return r.mbox.push(item{msg: msg})
}

// Shutdown stops every task in order: timers first (nothing new is
// started), then it waits until no message is queued or being handled
// anywhere, then each task saves its state and stops. ctx bounds the wait;
// on expiry the remaining work is still drained and saved, and the error
// says how much was in flight.
func (h *Host) Shutdown(ctx context.Context) error {
	h.mu.Lock()
	h.closing = true
	rs := h.runners()
	h.mu.Unlock()

	for _, r := range rs {
		r.stopTimers()
	}
	drainErr := h.waitQuiescent(ctx, rs)
	for _, r := range rs {
		r.mbox.close()
	}
	var stuck []string
	for _, r := range rs {
		select {
		case <-r.done:
		case <-ctx.Done():
			stuck = append(stuck, r.name)
		}
	}
	h.publish(func(m map[string]*runner) { clear(m) })
	if len(stuck) > 0 {
		return errors.Join(drainErr, fmt.Errorf("tasks still handling a message at the shutdown timeout (state not saved): %v", stuck))
	}
	return drainErr
}

// Close releases the host's channels. Call after Shutdown.
func (h *Host) Close() error { return h.ch.Close() }

// waitQuiescent returns once every mailbox is empty and idle and no
// message moved between two scans: with timers stopped only a handler
// can send, and a running handler keeps its own mailbox non-empty.
func (h *Host) waitQuiescent(ctx context.Context, rs []*runner) error {
	var last uint64 = 1<<64 - 1
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		var pushed, busy uint64
		for _, r := range rs {
			d := r.mbox.depth()
			busy += d
			pushed += r.mbox.pushed.Load()
		}
		if busy == 0 && pushed == last {
			return nil
		}
		last = pushed
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %d items", ErrDrainTimedOut, busy)
		case <-tick.C:
		}
	}
}

func (h *Host) runners() []*runner {
	m := *h.tasks.Load()
	rs := make([]*runner, 0, len(m))
	for _, r := range m {
		rs = append(rs, r)
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].name < rs[j].name })
	return rs
}

// publish replaces the task map with an edited copy. Callers hold h.mu.
func (h *Host) publish(edit func(map[string]*runner)) {
	old := *h.tasks.Load()
	m := make(map[string]*runner, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	edit(m)
	h.tasks.Store(&m)
}

// TaskStatus is a snapshot of one task's counters.
type TaskStatus struct {
	Name            string
	Kind            string
	Stateful        bool
	Started         time.Time
	MessagesIn      uint64
	MessagesOut     uint64
	Failures        uint64
	Depth           uint64
	Busy            time.Duration
	StateGeneration uint64
	Timers          map[string]time.Duration
}

// Status reports every running task, sorted by name.
func (h *Host) Status() []TaskStatus {
	rs := h.runners()
	out := make([]TaskStatus, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.status())
	}
	return out
}
