package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	goruntime "runtime"
	"sort"
	"strings"
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
	// CatchUp makes the task's senders in this process keep using its
	// queue (Options.Remote) until the Inbound has drained that queue once:
	// what they sent there while the task ran elsewhere or not at all is
	// then delivered before what they send next.
	CatchUp bool
	// NoTimers: the task's Recur registers its timer (it shows in Status
	// and StopRecur forgets it) but the timer never fires in this host.
	// An external process runs every stateless task to handle the messages
	// its own tasks send them, but their timers belong to the daemon's
	// copy: a stateless producer with a Recur would otherwise emit once
	// per process.
	NoTimers bool
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
	// Remote reaches queues that no task of this host serves. Without it,
	// sending to an unknown name is an error.
	Remote Remote
	// OOBForward, if set, takes the records of every out-of-band channel
	// instead of the OOB targets (see ChannelOptions.Forward).
	OOBForward func(msg Message) error
	// DeadLetter, if set, keeps a message that went past a budget (see
	// HopBudget, CopyBudget) with the reason: the dead-letter queue.
	DeadLetter func(queue, reason string, msg Message) error
}

// Remote is a transport to queues outside this process (System V today;
// other backends later). Tasks and the Router never see it.
type Remote interface {
	Send(qname string, msg Message) error
}

// Host runs internal tasks. Its methods are safe for concurrent use.
type Host struct {
	opts Options
	ch   *Channels

	mu      sync.Mutex // serialises Start, Stop and Shutdown
	closing bool
	indexMu sync.Mutex // the saved-state index file
	// tasks is replaced, never mutated, so that the message path reads it
	// without a lock.
	tasks atomic.Pointer[map[string]*runner]
	// sending counts, per name, sends on their way to the queue of a task
	// that was not here when they started.
	sending sync.Map
	// dlLog paces the log lines of dead letters: a runaway makes many.
	dlLog pacer
	// active lists the tasks whose counters may have moved since the last
	// Active; only once Active has been called (read), so that a host
	// whose list nobody reads (an external process) keeps no runner.
	active struct {
		read atomic.Bool
		mu   sync.Mutex
		list []*runner
	}
}

// pacer allows a log line a second and counts what it held back.
type pacer struct {
	mu     sync.Mutex
	last   time.Time
	missed int
}

// allow reports whether to log now, with how many were not logged since
// the last line.
func (p *pacer) allow(now time.Time) (int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if now.Sub(p.last) < time.Second {
		p.missed++
		return 0, false
	}
	n := p.missed
	p.last, p.missed = now, 0
	return n, true
}

// NewHost makes a host with no tasks.
func NewHost(opts Options) (*Host, error) {
	h := &Host{opts: opts}
	h.tasks.Store(&map[string]*runner{})
	ch, err := OpenChannels(opts.OOB, ChannelOptions{
		Level: opts.Level, Stdout: opts.Stdout, Stderr: opts.Stderr, Send: h.Send, Forward: opts.OOBForward,
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
	return h.StartAll([]TaskSpec{spec})[0]
}

// StartAll starts several tasks together: every one of them can receive
// before any runs SetConfig, so a message a task sends while starting
// (say, an emit to the Router) is never lost to start order. It returns
// one error (or nil) per spec.
func (h *Host) StartAll(specs []TaskSpec) []error {
	errs := make([]error, len(specs))
	h.mu.Lock()
	defer h.mu.Unlock()
	rs := make([]*runner, len(specs))
	starting := make(map[string]bool, len(specs))
	for i, spec := range specs {
		if errs[i] = h.checkStart(spec, starting); errs[i] != nil {
			continue
		}
		r, err := newRunner(h, spec)
		if err != nil {
			errs[i] = fmt.Errorf("task %s: %w", spec.Name, err)
			continue
		}
		r.catch.bounded = spec.CatchUp && h.opts.Remote != nil
		r.catch.on.Store(r.catch.bounded)
		rs[i] = r
		starting[spec.Name] = true
	}
	h.publish(func(m map[string]*runner) {
		for _, r := range rs {
			if r != nil {
				m[r.name] = r
			}
		}
	})
	for i, r := range rs {
		if r == nil {
			continue
		}
		err := r.applyConfig(&configChange{config: specs[i].Config, intervals: specs[i].Intervals})
		r.flush() // what SetConfig sent out of the process
		if err != nil {
			h.publish(func(m map[string]*runner) { delete(m, r.name) })
			r.abandon()
			errs[i] = fmt.Errorf("task %s: %w", r.name, err)
			rs[i] = nil
		}
	}
	for _, r := range rs {
		if r != nil {
			go r.loop()
		}
	}
	return errs
}

// checkStart checks one spec of a StartAll against the running tasks and
// those started before it in the same call (starting): one map lookup
// each, so starting n tasks together costs O(n).
func (h *Host) checkStart(spec TaskSpec, starting map[string]bool) error {
	if !TaskNameRE.MatchString(spec.Name) {
		return fmt.Errorf("%w %q: use letters, digits, _ and -", ErrBadTaskName, spec.Name)
	}
	if h.closing {
		return ErrShuttingDown
	}
	if _, ok := (*h.tasks.Load())[spec.Name]; ok {
		return fmt.Errorf("task %s: %w", spec.Name, ErrTaskExists)
	}
	if starting[spec.Name] {
		return fmt.Errorf("task %s: %w", spec.Name, ErrTaskExists)
	}
	return nil
}

// Reconfigure hands a new config to a running task (SetConfig on its own
// goroutine, in order with its messages) and waits for the result, or for
// ctx. The task's state is kept; if SetConfig fails, the task keeps its
// previous config. Never call it from a task's own goroutine.
func (h *Host) Reconfigure(ctx context.Context, name string, config map[string]any, intervals map[string]time.Duration) error {
	r := (*h.tasks.Load())[name]
	if r == nil {
		return fmt.Errorf("%w: %q", ErrNoSuchQueue, name)
	}
	done := make(chan error, 1)
	if err := r.mbox.push(item{ctl: &control{kind: ctlConfig, config: &configChange{config, intervals, done}}}); err != nil {
		return fmt.Errorf("task %s: %w", name, err)
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("task %s: config change still queued: %w", name, ctx.Err())
	}
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
		return r.finalErr()
	case <-ctx.Done():
		return fmt.Errorf("task %s did not stop: %w", name, ctx.Err())
	}
}

// Send delivers msg to the named task in this process or, failing that,
// through the remote transport to a queue of that name. It is a message
// from outside any task: it belongs to no lineage.
func (h *Host) Send(qname string, msg Message) error { return h.send(qname, msg, nil) }

// send is Send of a message the task sender sends (nil from outside any
// task), as a member of the lineage of the message it
// handles, if any. A member of a lineage is never dropped: past a budget
// it is dead-lettered, and one that reaches no queue is kept as a dead
// letter too (the task still gets the error). A task's sends to queues
// outside the process are gathered in its outbox (see outbox.go).
func (h *Host) send(qname string, msg Message, sender *runner) error {
	var out *outbound
	var from *origin
	var lin *lineage
	handsOn := false
	if sender != nil {
		out = &sender.out
		from, lin, handsOn = &out.from, out.from.lin, out.handsOn(msg)
	}
	if h.opts.Remote == nil {
		if r := (*h.tasks.Load())[qname]; r != nil {
			return h.push(r, msg, lin, handsOn)
		}
		return fmt.Errorf("%w: %q", ErrNoSuchQueue, qname)
	}
	// Count sends to the queue of a task that is not here (yet): the end
	// of its catch-up waits for them (see finishCatchUp).
	c := h.sendingTo(qname)
	c.Add(1)
	r := (*h.tasks.Load())[qname]
	if r == nil {
		if qs, ok := h.opts.Remote.(queueSender); ok && out != nil {
			return h.gatherSend(qs, qname, msg, sender, handsOn, c)
		}
		err := h.toQueue(qname, msg, from, handsOn)
		c.Add(-1)
		return err
	}
	c.Add(-1)
	if r.catch.bounded && !r.catch.on.Load() && r.mbox.depth() >= MailboxBound {
		// Past the bound the task's queue takes what is sent to it, and
		// pushes back on its senders when full; the inbound moves it on
		// as the task catches up, in order, as after a start.
		r.catch.on.Store(true)
	}
	if r.catch.on.Load() {
		r.catch.mu.RLock()
		defer r.catch.mu.RUnlock()
		if r.catch.on.Load() {
			if qs, ok := h.opts.Remote.(queueSender); ok && out != nil && out.forwards {
				// A Forwarder gathers, as for a queue of another process:
				// a target whose queue stays full then costs it one bounded
				// wait, not one per message (outbox.full), while the count
				// of sends on their way holds the catch-up open until they
				// are on the queue. What it gathered for the queue before
				// is in the same batch, ahead of this.
				c.Add(1)
				return h.gatherSend(qs, qname, msg, sender, handsOn, c)
			}
			if out != nil {
				sender.flushTo(qname)
			}
			return h.toQueue(qname, msg, from, handsOn)
		}
	}
	if out != nil {
		sender.reached(qname)
	}
	err := h.push(r, msg, lin, handsOn)
	if errors.Is(err, ErrMailboxClosed) {
		return h.toQueue(qname, msg, from, handsOn) // it is stopping: its queue takes it
	}
	return err
}

// MailboxBound is how many items a task's mailbox holds before what tasks
// in this process send it goes by way of its queue (for a task whose
// queue the daemon serves: see TaskSpec.CatchUp). The kernel queue is
// bounded and pushes back; a mailbox would only grow.
const MailboxBound = 16 * HighWater

// push queues msg in a local task's mailbox as a member of lin (a copy
// handed on if copied).
func (h *Host) push(r *runner, msg Message, lin *lineage, copied bool) error {
	if lin != nil {
		if err := lin.add(copied); err != nil {
			return h.refuse(r.name, msg, lin, err)
		}
	}
	if err := r.mbox.push(item{msg: msg, lin: lin}); err != nil {
		if lin != nil {
			lin.done() // never queued
		}
		return err
	}
	return nil
}

// gatherSend hands msg on and gathers it in sender's outbox for the
// queue qname. c, qname's count of sends on their way, is taken by the
// caller and stays taken while msg is gathered.
func (h *Host) gatherSend(qs queueSender, qname string, msg Message, sender *runner, handsOn bool, c *atomic.Int64) error {
	msg, err := h.handOn(qname, msg, &sender.out.from, handsOn)
	if err != nil {
		c.Add(-1)
		return err
	}
	if err := sender.gather(qs, qname, msg, c); err != nil {
		h.notSent(qname, msg, sender.out.from.lin, err)
		return err
	}
	return nil
}

// toQueue sends msg to the queue qname outside this process, which
// survives the process: it leaves no debt in a lineage. One that reaches
// no queue is kept as a dead letter when it belongs to a lineage, so that
// the message it came from may still leave its queue.
func (h *Host) toQueue(qname string, msg Message, from *origin, handsOn bool) error {
	msg, err := h.handOn(qname, msg, from, handsOn)
	if err != nil {
		return err
	}
	err = h.opts.Remote.Send(qname, msg)
	if err != nil && from != nil {
		h.notSent(qname, msg, from.lin, err)
	}
	return err
}

// handOn is msg as it leaves the process: a message handed on counts one
// more hop, in a copy of its metadata (the map may still be read by
// whoever handed it on); past HopBudget it is refused (dead-lettered).
func (h *Host) handOn(qname string, msg Message, from *origin, handsOn bool) (Message, error) {
	if from == nil || !handsOn {
		return msg, nil
	}
	hops := hopsOf(from.msg) + 1
	if hops > HopBudget {
		return nil, h.refuse(qname, msg, from.lin, fmt.Errorf("%w: %d hops (budget %d)", ErrHopBudget, hops, HopBudget))
	}
	return withHops(msg, hops), nil
}

// notSent keeps msg of lin, which reached no queue, as a dead letter.
func (h *Host) notSent(qname string, msg Message, lin *lineage, err error) {
	if lin != nil {
		h.deadLetter(qname, fmt.Sprintf("not sent: %v", err), msg)
	}
}

// withHops is msg with hops recorded in a copy of its metadata.
func withHops(msg Message, hops uint32) Message {
	out := make(Message, len(msg)+1)
	for k, v := range msg {
		out[k] = v
	}
	meta := map[string]any{}
	if old, ok := msg[MetaKey].(map[string]any); ok {
		for k, v := range old {
			meta[k] = v
		}
	}
	meta[hopsKey] = float64(hops)
	out[MetaKey] = meta
	return out
}

// MetaKey holds a message's transport metadata (IPC::Transit's name).
const MetaKey = ".ipc_transit_meta"

// hopsKey, under MetaKey, is how many hops a message has taken.
const hopsKey = "hops"

// hopsOf is how many hops a message being handled has taken: at least
// the one that brought it here, more if its metadata says so (from this
// process or another).
func hopsOf(msg Message) uint32 {
	meta, _ := msg[MetaKey].(map[string]any)
	if f, ok := meta[hopsKey].(float64); ok && f > 1 {
		return uint32(min(f, HopBudget+1))
	}
	return 1
}

// refuse dead-letters msg (meant for qname) with why, and returns why. Of
// a lineage that went past a budget only the first is dead-lettered: the
// rest would be as many as the runaway made.
func (h *Host) refuse(qname string, msg Message, lin *lineage, why error) error {
	if lin != nil && lin.exceeded.Swap(true) {
		return why
	}
	h.deadLetter(qname, why.Error(), msg)
	return why
}

// deadLetter keeps msg, meant for qname, with the reason.
func (h *Host) deadLetter(qname, reason string, msg Message) {
	if n, ok := h.dlLog.allow(time.Now()); ok {
		h.ch.Error.Error("message dead-lettered", "queue", qname, "reason", reason, "since_last_line", n)
	}
	if h.opts.DeadLetter != nil {
		if err := h.opts.DeadLetter(qname, reason, msg); err != nil {
			h.ch.Error.Error("writing a dead letter", "queue", qname, "error", err)
		}
	}
}

func (h *Host) sendingTo(name string) *atomic.Int64 {
	if v, ok := h.sending.Load(name); ok {
		return v.(*atomic.Int64)
	}
	v, _ := h.sending.LoadOrStore(name, new(atomic.Int64))
	return v.(*atomic.Int64)
}

// catchingUp reports whether a task's senders still go through its queue.
func (h *Host) catchingUp(name string) bool {
	r := (*h.tasks.Load())[name]
	return r != nil && r.catch.on.Load()
}

// finishCatchUp ends a task's catch-up: with its senders held, drain
// moves what is left in its queue to the mailbox, then senders go direct.
// When it cannot end it now it reports false, the catch-up goes on
// (senders keep using the queue, in order) and the caller tries again
// later:
//   - a sender holds its hold, perhaps waiting for room in the full
//     queue. Room comes only as the task handles what it was handed, and
//     the task may itself be waiting for room in a queue the caller also
//     drains: waiting here for the hold would stall the caller and close
//     that circle for good.
//   - sends are still on their way to the queue after a brief wait: a
//     task's gathered sends (outbox.go) go out only when its batch ends,
//     which may take a while.
//
// settle takes off the queue what the task has handled (room for a
// waiting sender); drain also moves what is left to the mailbox.
func (h *Host) finishCatchUp(name string, settle, drain func()) bool {
	r := (*h.tasks.Load())[name]
	if r == nil || !r.catch.on.Load() {
		return true
	}
	// A sender that holds the hold is most often about to let go (or to
	// find room that settling makes): a moment's tries, never a wait, or
	// steady senders would keep the catch-up on long after it caught up.
	for tries := time.Now().Add(200 * time.Microsecond); !r.catch.mu.TryLock(); {
		if time.Now().After(tries) {
			return false
		}
		settle()
		goruntime.Gosched()
	}
	defer r.catch.mu.Unlock()
	// Senders that found the task absent may still be queuing.
	deadline := time.Now().Add(2 * time.Millisecond)
	for c := h.sendingTo(name); c.Load() > 0; {
		if time.Now().After(deadline) {
			return false
		}
		drain()
		goruntime.Gosched()
	}
	drain()
	r.catch.on.Store(false)
	return true
}

// deliverAll hands msgs, one delivery taken from a queue, to a local task
// as members of lin (their hops, from before, are in their metadata), in
// one push: the task wakes once for them. An error means not all of them
// reached the task.
func (h *Host) deliverAll(name string, msgs []Message, lin *lineage) error {
	r := (*h.tasks.Load())[name]
	if r == nil {
		return fmt.Errorf("%w: %q", ErrNoSuchQueue, name)
	}
	items := make([]item, 0, len(msgs))
	var refused error
	for _, m := range msgs {
		if lin != nil {
			if err := lin.add(false); err != nil {
				refused = h.refuse(name, m, lin, err)
				continue
			}
		}
		items = append(items, item{msg: m, lin: lin})
	}
	if err := r.mbox.pushAll(items); err != nil {
		if lin != nil {
			lin.release(int64(len(items))) // never queued
		}
		return err
	}
	return refused
}

// Depth is a local task's mailbox depth (ok false if it is not here).
func (h *Host) Depth(name string) (uint64, bool) {
	r := (*h.tasks.Load())[name]
	if r == nil {
		return 0, false
	}
	return r.mbox.depth(), true
}

// SaveGrace is how long Shutdown waits for tasks to finish and save after
// its context has expired: a drain that timed out must not also cost the
// state.
const SaveGrace = 5 * time.Second

// Shutdown stops every task in order: timers first (nothing new starts),
// then it waits, bounded by ctx, until no message is queued or being
// handled anywhere; then every mailbox is closed, each task finishes what
// it still holds and saves its state (given SaveGrace more if ctx has
// expired). The error names what was in flight at the timeout, tasks that
// did not finish, and state that could not be saved.
func (h *Host) Shutdown(ctx context.Context) error {
	h.mu.Lock()
	h.closing = true
	rs := h.runners()
	h.mu.Unlock()

	for _, r := range rs {
		r.stopTimers()
	}
	errs := []error{h.waitQuiescent(ctx, rs)}
	for _, r := range rs {
		r.mbox.close()
	}
	grace := time.NewTimer(SaveGrace)
	defer grace.Stop()
	var stuck []string
	for _, r := range rs {
		select {
		case <-r.done:
		default:
			select {
			case <-r.done:
			case <-ctx.Done():
				select {
				case <-r.done:
				case <-grace.C:
					stuck = append(stuck, r.name)
					continue
				}
			}
		}
		errs = append(errs, r.finalErr())
	}
	h.publish(func(m map[string]*runner) { clear(m) })
	if len(stuck) > 0 {
		errs = append(errs, fmt.Errorf("tasks still handling a message after the grace period (state not saved): %v", stuck))
	}
	return errors.Join(errs...)
}

// Close releases the host's channels. Call after Shutdown.
func (h *Host) Close() error { return h.ch.Close() }

// waitQuiescent returns once nothing is queued or being handled anywhere.
// It reads every task's handled count first, then every accepted count:
// counts only grow and handled never passes accepted, so equal sums mean
// that at the moment between the two passes every accepted item had been
// handled. With timers stopped only a handler can send, so nothing can
// start again after that moment.
func (h *Host) waitQuiescent(ctx context.Context, rs []*runner) error {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		var done, pushed uint64
		for _, r := range rs {
			done += r.mbox.done.Load()
		}
		for _, r := range rs {
			pushed += r.mbox.pushed.Load()
		}
		if done == pushed {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %d items", ErrDrainTimedOut, pushed-done)
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

func (h *Host) statePath(name string) string {
	return filepath.Join(h.opts.StateDir, "tasks", name+".db")
}

// savedIndex lists the tasks whose state was ever saved in this state
// dir, so that a state file that disappears is noticed and alerted.
func (h *Host) savedIndex() string { return filepath.Join(h.opts.StateDir, "tasks", "saved.index") }

func (h *Host) everSaved(name string) bool {
	h.indexMu.Lock()
	defer h.indexMu.Unlock()
	b, err := os.ReadFile(h.savedIndex())
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if line == name {
			return true
		}
	}
	return false
}

func (h *Host) markSaved(name string) {
	if h.everSaved(name) {
		return
	}
	h.indexMu.Lock()
	defer h.indexMu.Unlock()
	f, err := os.OpenFile(h.savedIndex(), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err == nil {
		_, err = f.WriteString(name + "\n")
		err = errors.Join(err, f.Close())
	}
	if err != nil {
		h.ch.Error.Error("recording a saved state in the index", "task", name, "error", err)
	}
}

// TaskStatus is a snapshot of one task's counters.
type TaskStatus struct {
	Name            string
	Kind            string
	Stateful        bool
	Started         time.Time
	MessagesIn      uint64
	MessagesOut     uint64
	Failures        uint64 // handler errors and panics
	SendFailures    uint64 // sends and emits that were not delivered
	Depth           uint64
	Busy            time.Duration
	StateGeneration uint64
	Timers          map[string]time.Duration
}

// Counters reports one running task's counters as Status does, without
// its timers (Timers is nil) and without listing the others; ok is false
// if it does not run here.
func (h *Host) Counters(name string) (s TaskStatus, ok bool) {
	r := (*h.tasks.Load())[name]
	if r == nil {
		return TaskStatus{}, false
	}
	return r.counters(), true
}

// Active calls f with the name of each task that handled anything since
// the last call, or was still busy or had items waiting then (a name may
// come twice if its task was started again meanwhile): monitoring reads
// the counters of these, not of every idle task, each sample.
func (h *Host) Active(f func(name string)) {
	h.active.read.Store(true)
	h.active.mu.Lock()
	list := h.active.list
	h.active.list = nil
	h.active.mu.Unlock()
	for _, r := range list {
		r.stats.listed.Store(false)
		select {
		case <-r.done: // stopped: it has nothing more to count
		default:
			if r.stats.busySince.Load() != 0 || r.mbox.depth() > 0 {
				r.listActive() // read again next time
			}
		}
		f(r.name)
	}
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
