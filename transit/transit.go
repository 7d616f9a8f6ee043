// Package transit moves messages between processes on one box through
// System V message queues.
//
// A queue is known by name. The name maps to a System V key through a small
// file in the transit directory (DIR/NAME holds the key); the first sender
// or receiver creates the queue (0600) and the file. Messages are JSON
// objects; each carries .ipc_transit_meta.send_ts. A message larger than
// the kernel allows in one queue message is spilled to an owner-only file
// under DIR/.spill/NAME/ and a reference is queued instead; a receiver
// accepts only references it can prove are spill files of its own queue.
//
// Nothing is dropped silently: a full queue makes the sender wait up to
// Options.SendTimeout and then returns ErrQueueFull; a message that cannot
// be decoded goes to the dead-letter queue with the reason.
//
// Receivers that watch many queues without a thread each register a
// doorbell: after each send, the sender rings the doorbell queue with the
// name of the queue that has work (see SetDoorbell).
//
// A dir marked with MarkIPCTransit is shared with Perl IPC::Transit: its
// key files, framing and large messages are written there (see
// ipctransit.go); readers accept both formats in every dir.
package transit

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// Errors, grouped by what failed.
var (
	// ErrBadName: a queue name must be a safe file name.
	ErrBadName = errors.New("invalid queue name")
	// ErrInsecureDir: the transit dir is not a directory owned by this
	// user and closed to others.
	ErrInsecureDir = errors.New("transit dir is not private")
	// ErrForeignQueue: the key file names a queue that another user owns or
	// that others may use.
	ErrForeignQueue = errors.New("queue is not private to this user")
	// ErrQueueFull: the queue stayed full for the whole bounded wait.
	ErrQueueFull = errors.New("queue is full")
	// ErrEmpty: a non-blocking receive found nothing.
	ErrEmpty = errors.New("queue is empty")
	// ErrNoPeek means the kernel cannot copy a queued message without
	// taking it (Linux's MSG_COPY needs CONFIG_CHECKPOINT_RESTORE).
	ErrNoPeek = errors.New("this kernel cannot peek at queued messages (no MSG_COPY)")
	// ErrNoQueue: Lookup found no queue of that name.
	ErrNoQueue = errors.New("no such queue")
	// ErrTooLarge: the message exceeds the spill size limit.
	ErrTooLarge = errors.New("message too large")
	// ErrTooManyQueues: a send would create a queue beyond
	// Options.MaxQueues. The queue is not created and the message not sent.
	ErrTooManyQueues = errors.New("too many queues created on demand")
	// ErrExceedsCapacity: the message (or its spill reference) is larger
	// than the queue's capacity (msg_qbytes), so no wait would ever make
	// room for it.
	ErrExceedsCapacity = errors.New("larger than the queue can ever hold")
)

// DefaultMaxQueues is Options.MaxQueues when it is zero: far more queues
// than a real config sends to, far fewer than the kernel's msgmni (32000
// by default), so that a few hostile messages naming thousands of queues
// cannot use them all up.
const DefaultMaxQueues = 1000

// DeadLetterQueue receives every message that could not be decoded, with
// the reason.
const DeadLetterQueue = "MultiModule_dead_letter"

// EnvDir overrides the default transit dir.
const EnvDir = "MULTIMODULE_TRANSIT_DIR"

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// ValidName reports whether name can name a queue.
func ValidName(name string) bool { return nameRE.MatchString(name) }

// DefaultDir is $MULTIMODULE_TRANSIT_DIR, or a per-user directory in /tmp.
func DefaultDir() string {
	if d := os.Getenv(EnvDir); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), "multimodule-transit-"+strconv.Itoa(os.Geteuid()))
}

// Wire format: the mtype, then a text whose first byte says what it is.
const (
	mtypeWake = 1 // sorts before data, so a waiting receiver sees it first
	mtypeData = 2
	// mtypeTransit is what IPC::Transit sends at (its receivers take any
	// type); we send at it in a dir shared with IPC::Transit.
	mtypeTransit = 1

	tagBatch = 0x01 // uvarint length, JSON; repeated
	tagSpill = 0x02 // the spill file's name
	tagRing  = 0x03 // the name of a queue that has messages
	tagWake  = 0x04
)

// Options configure a Transit. The zero value uses the defaults.
type Options struct {
	// Dir is the transit dir; DefaultDir() when empty.
	Dir string
	// SendTimeout bounds the wait on a full queue (default 5s).
	SendTimeout time.Duration
	// MaxMessage bounds a spilled message (default 64 MiB).
	MaxMessage int
	// MaxQueues bounds how many queues Send creates on demand (to a name
	// that has no queue yet): kernel queues outlive the process, and a
	// message may name any number of them. Queues opened with Queue (the
	// ones a process serves, replies, the dead-letter queue) do not
	// count. Zero means DefaultMaxQueues; negative, no bound.
	MaxQueues int
	// OnQueueLimit, if set, is called when a send is refused with
	// ErrTooManyQueues for the first time, and again only after the count
	// fell below the limit: an alert, not one per refused message. It is
	// called on the sending goroutine, with no lock held.
	OnQueueLimit func(queue string, limit int)
	// LargeMessageDir is IPC::Transit's large-message dir, the one place
	// besides our spill dir whose f= files a receiver takes
	// (DefaultLargeMessageDir when empty).
	LargeMessageDir string
}

// Transit is one process's access to the queues in a transit dir. It is
// safe for concurrent use.
type Transit struct {
	peek struct {
		once sync.Once
		ok   bool
	}
	dir string
	// layout is how the dir is written: IPC::Transit's formats when it is
	// marked shared with it (see MarkIPCTransit).
	layout struct {
		ipc    bool
		absDir string // f= headers name absolute paths
	}
	opts     Options
	uid      int
	msgmax   int
	bufPool  sync.Pool
	mu       sync.Mutex
	queues   map[string]*Queue
	doorbell map[string]doorbellEntry
	// bells are the queues this process registered as doorbells: rings
	// are taken only from doorbells (see acceptsRings).
	bells map[string]bool
	// demand are the queues Send created on demand (under mu).
	demand onDemand
	// deadFullAt is when the dead-letter queue was last found full (unix
	// ns).
	deadFullAt atomic.Int64
	// deadLetters counts the dead letters kept (queue or file), for metrics.
	deadLetters atomic.Uint64
}

// onDemand are the queues Send created on demand (still existing, as far
// as this process knows; false while being made), bounded by maxQueues;
// limitHit is set while the bound refuses sends, so that OnQueueLimit
// fires once.
type onDemand struct {
	made      map[string]bool
	maxQueues int
	limitHit  bool
	pruned    time.Time
}

type doorbellEntry struct {
	q       *Queue // nil: nobody rings
	checked time.Time
}

// doorbellTTL is how long a sender trusts what it read of a queue's
// doorbell. A receiver that moves away is noticed within it; a missed ring
// is caught by the receiver's periodic sweep.
const doorbellTTL = time.Second

// Open checks (or creates, 0700) the transit dir.
func Open(opts Options) (*Transit, error) {
	if opts.Dir == "" {
		opts.Dir = DefaultDir()
	}
	if opts.SendTimeout <= 0 {
		opts.SendTimeout = 5 * time.Second
	}
	if opts.MaxMessage <= 0 {
		opts.MaxMessage = 64 << 20
	}
	if opts.MaxQueues == 0 {
		opts.MaxQueues = DefaultMaxQueues
	}
	if opts.LargeMessageDir == "" {
		opts.LargeMessageDir = DefaultLargeMessageDir
	}
	t := &Transit{dir: opts.Dir, opts: opts, uid: os.Geteuid(), msgmax: kernelLimit("msgmax", 8192),
		queues: map[string]*Queue{}, doorbell: map[string]doorbellEntry{}, bells: map[string]bool{},
		demand: onDemand{made: map[string]bool{}, maxQueues: opts.MaxQueues}}
	if err := t.privateDir(t.dir); err != nil {
		return nil, err
	}
	ipc, err := readFormat(t.dir)
	if err != nil {
		return nil, err
	}
	t.layout.ipc = ipc
	if t.layout.absDir, err = filepath.Abs(t.dir); err != nil {
		return nil, fmt.Errorf("transit: %w", err)
	}
	t.bufPool.New = func() any { b := make([]byte, typeSize+t.msgmax); return &b }
	return t, nil
}

// privateDir creates dir 0700 or checks that it is ours and private.
func (t *Transit) privateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("transit: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return fmt.Errorf("transit: %s: %w", dir, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || int(st.Uid) != t.uid || st.Mode&0o077 != 0 {
		return fmt.Errorf("%w: %s (mode %o, owner %d; want a 0700 directory owned by %d)",
			ErrInsecureDir, dir, st.Mode&0o7777, st.Uid, t.uid)
	}
	return nil
}

// Dir is the transit dir.
func (t *Transit) Dir() string { return t.dir }

// MaxInline is the largest message text sent without spilling.
func (t *Transit) MaxInline() int { return t.msgmax }

// Queue returns the named queue, creating it if needed.
func (t *Transit) Queue(name string) (*Queue, error) { return t.open(name, false) }

// Bell returns the named doorbell queue (see SetDoorbell), creating it if
// needed. Rings are frames of ours that IPC::Transit cannot read: in a
// dir shared with it, a doorbell's key file is kept out of its sight
// (under .bells/), so that no IPC::Transit program ever reads one.
func (t *Transit) Bell(name string) (*Queue, error) { return t.open(name, true) }

// keyPath is where the key file of a queue (or doorbell) is.
func (t *Transit) keyPath(name string, bell bool) string {
	if bell && t.layout.ipc {
		return filepath.Join(t.dir, ".bells", name)
	}
	return filepath.Join(t.dir, name)
}

// cacheKey tells a hidden doorbell from a queue of the same name.
func (t *Transit) cacheKey(name string, bell bool) string {
	if bell && t.layout.ipc {
		return "\x00" + name
	}
	return name
}

func (t *Transit) open(name string, bell bool) (*Queue, error) {
	ck := t.cacheKey(name, bell)
	t.mu.Lock()
	q := t.queues[ck]
	t.mu.Unlock()
	if q != nil {
		return q, nil
	}
	if !ValidName(name) {
		return nil, fmt.Errorf("%w %q: letters, digits, _ . - (not leading . or -), at most 128", ErrBadName, Excerpt(name))
	}
	q = &Queue{t: t, name: name, bell: bell && t.layout.ipc}
	_, id, err := t.resolve(name, q.keyPath())
	if err != nil {
		return nil, err
	}
	q.setID(id)
	t.mu.Lock()
	if old := t.queues[ck]; old != nil {
		q = old
	} else {
		t.queues[ck] = q
	}
	t.mu.Unlock()
	return q, nil
}

// Lookup returns the named queue only if it exists already (replies must
// not recreate a queue its owner has removed).
func (t *Transit) Lookup(name string) (*Queue, error) {
	if !ValidName(name) {
		return nil, fmt.Errorf("%w %q", ErrBadName, Excerpt(name))
	}
	if _, err := os.Stat(filepath.Join(t.dir, name)); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrNoQueue, name)
	}
	return t.Queue(name)
}

// Opened returns the named queue if this process has opened it (nil
// otherwise), without a system call: a sampler that looks at every task
// each second must not stat a file for each.
func (t *Transit) Opened(name string) *Queue {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.queues[name]
}

// Forget drops what this Transit caches about a queue name (a reply
// queue used once, say), so that many such names do not pile up.
func (t *Transit) Forget(name string) {
	t.mu.Lock()
	delete(t.queues, name)
	delete(t.doorbell, name)
	t.mu.Unlock()
}

// EnsureName puts back the key file of an open queue if it has gone (a
// /tmp cleaner, a careless rm), so that senders keep finding this queue
// rather than creating another under a new key.
func (q *Queue) EnsureName() error {
	path := q.keyPath()
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	ds, err := msgstat(q.qid())
	if err != nil {
		return fmt.Errorf("transit: queue %s: %w", q.name, err)
	}
	if err := q.t.publish(q.name, path, int32(ds.Perm.Key)); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return nil
}

// publish writes the key file at path, whole or not at all: link(2) of a
// complete file, which fails (os.ErrExist) if another process published
// first. In a dir shared with IPC::Transit, under its lock.
func (t *Transit) publish(name, path string, key int32) error {
	dir := filepath.Dir(path)
	if t.layout.ipc {
		if dir != t.dir {
			if err := t.privateDir(dir); err != nil {
				return err
			}
		}
		unlock, err := t.lockDir()
		if err != nil {
			return err
		}
		defer unlock()
	}
	tmp := fmt.Sprintf("%s/.new-%s-%d", dir, name, key)
	if err := os.WriteFile(tmp, t.keyFileText(name, key), 0o600); err != nil {
		return fmt.Errorf("transit: %w", err)
	}
	err := os.Link(tmp, path)
	os.Remove(tmp)
	if errors.Is(err, os.ErrExist) {
		return err
	}
	if err != nil {
		return fmt.Errorf("transit: %w", err)
	}
	return nil
}

// forget drops a cached queue whose id went stale (the queue was removed).
func (t *Transit) forget(q *Queue) {
	ck := t.cacheKey(q.name, q.bell)
	t.mu.Lock()
	if t.queues[ck] == q {
		delete(t.queues, ck)
	}
	t.mu.Unlock()
}

// resolve maps a name to its key and queue id, creating both if needed;
// path is its key file.
func (t *Transit) resolve(name, path string) (int32, int, error) {
	for attempt := 0; attempt < 100; attempt++ {
		if k, err := t.readKey(name, path); err == nil {
			// The queue may have been removed (ipcrm, logind's RemoveIPC):
			// recreate it under the same key.
			id, err := msgget(k, unix.IPC_CREAT|0o600)
			if err != nil {
				return 0, 0, fmt.Errorf("transit: queue %s (key %d): %w", name, k, err)
			}
			if err := t.checkOwner(id, name); err != nil {
				return 0, 0, err
			}
			if t.layout.ipc {
				t.tighten(path)
			}
			return k, id, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return 0, 0, fmt.Errorf("transit: %w", err)
		}
		key, id, err := t.create()
		if err != nil {
			return 0, 0, err
		}
		// Theirs wins if another process published first.
		err = t.publish(name, path, key)
		if err == nil {
			return key, id, nil
		}
		msgrmid(id)
		if !errors.Is(err, os.ErrExist) {
			return 0, 0, err
		}
	}
	return 0, 0, fmt.Errorf("transit: could not create queue %s", name)
}

// tighten makes a key file of ours that IPC::Transit wrote (0644 under
// the usual umask) owner-only, like the rest of the dir. Best effort: it
// holds only a key, which the kernel shows anyone anyway.
func (t *Transit) tighten(path string) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && int(st.Uid) == t.uid && st.Mode&0o077 != 0 {
		unix.Fchmod(fd, 0o600)
	}
}

// create makes a new private queue under an unused random key.
func (t *Transit) create() (int32, int, error) {
	for range 1000 {
		n, err := rand.Int(rand.Reader, big.NewInt(1<<31-2))
		if err != nil {
			return 0, 0, err
		}
		key := int32(n.Int64() + 1) // never IPC_PRIVATE (0)
		if key>>24 == 1 {
			// IPC::Transit's keys are ftok(file, 1): 0x01 in the top
			// byte. Stay out of their range so that a queue it creates
			// never lands on one of ours.
			continue
		}
		id, err := msgget(key, unix.IPC_CREAT|unix.IPC_EXCL|0o600)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return 0, 0, fmt.Errorf("transit: msgget: %w", err)
		}
		return key, id, nil
	}
	return 0, 0, errors.New("transit: no free System V key")
}

func (t *Transit) checkOwner(id int, name string) error {
	ds, err := msgstat(id)
	if err != nil {
		return fmt.Errorf("transit: queue %s: %w", name, err)
	}
	// The creator keeps owner rights whoever the owner is now, so a queue
	// someone else created under our key (after ours was removed) and
	// then gave to us is still theirs to read.
	if t.layout.ipc && int(ds.Perm.Uid) == t.uid && int(ds.Perm.Cuid) == t.uid && ds.Perm.Mode&0o077 != 0 {
		// IPC::Transit creates its queues 0666: one of ours (same uid)
		// in a shared dir is made private on first open.
		if err := msgsetmode(id, ds, 0o600); err != nil {
			return fmt.Errorf("transit: queue %s: making it 0600: %w", name, err)
		}
		ds.Perm.Mode = ds.Perm.Mode&^0o777 | 0o600
	}
	if int(ds.Perm.Uid) != t.uid || int(ds.Perm.Cuid) != t.uid || ds.Perm.Mode&0o077 != 0 {
		return fmt.Errorf("%w: %s (owner %d, creator %d, mode %o)", ErrForeignQueue, name, ds.Perm.Uid, ds.Perm.Cuid, ds.Perm.Mode&0o777)
	}
	return nil
}

// Names lists the queues known in the transit dir, sorted.
func (t *Transit) Names() ([]string, error) {
	entries, err := os.ReadDir(t.dir)
	if err != nil {
		return nil, fmt.Errorf("transit: %w", err)
	}
	var names []string
	for _, e := range entries {
		if e.Type().IsRegular() && ValidName(e.Name()) {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// Remove deletes the named queue (and any messages in it), its key file,
// its doorbell registration and its spill files; in a dir shared with
// IPC::Transit, a hidden doorbell of that name too.
func (t *Transit) Remove(name string) error {
	if !ValidName(name) {
		return fmt.Errorf("%w %q", ErrBadName, Excerpt(name))
	}
	paths := []string{filepath.Join(t.dir, name)}
	if t.layout.ipc {
		paths = append(paths, t.keyPath(name, true))
	}
	var errs []error
	found := false
	for _, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("transit: %w", err))
			}
			continue
		}
		found = true
		// The name goes first: a receiver that finds its kernel queue
		// gone then stays away instead of reopening it under the old name.
		errs = append(errs, os.Remove(path))
		if k, perr := parseKeyFile(name, b); perr == nil {
			if id, err := msgget(k, 0); err == nil {
				if err := msgrmid(id); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	if !found && len(errs) == 0 {
		return fmt.Errorf("transit: %w: %s", os.ErrNotExist, name)
	}
	t.mu.Lock()
	delete(t.queues, name)
	delete(t.queues, t.cacheKey(name, true))
	delete(t.doorbell, name)
	t.unmake(name)
	t.mu.Unlock()
	os.Remove(t.doorbellPath(name))
	os.RemoveAll(t.spillDir(name))
	return errors.Join(errs...)
}

// RemoveAll removes every queue of the transit dir (tests, and operators
// retiring a dir), hidden doorbells included.
func (t *Transit) RemoveAll() error {
	names, err := t.Names()
	if err != nil {
		return err
	}
	if t.layout.ipc {
		entries, _ := os.ReadDir(filepath.Join(t.dir, ".bells"))
		for _, e := range entries {
			if ValidName(e.Name()) && !slices.Contains(names, e.Name()) {
				names = append(names, e.Name())
			}
		}
	}
	var errs []error
	for _, n := range names {
		errs = append(errs, t.Remove(n))
	}
	return errors.Join(errs...)
}

// Send queues msg on the named queue, creating it if needed, within
// Options.MaxQueues (ErrTooManyQueues beyond it).
func (t *Transit) Send(name string, msg map[string]any) error {
	q, err := t.SendQueue(name)
	if err != nil {
		return err
	}
	return q.Send(msg)
}

// SendQueue is Queue for a sender: a queue it has to create counts
// against Options.MaxQueues, and beyond the bound it returns
// ErrTooManyQueues (naming the queue and the bound) without creating
// anything. Sending to queues that exist is never refused.
func (t *Transit) SendQueue(name string) (*Queue, error) {
	t.mu.Lock()
	q := t.queues[name]
	t.mu.Unlock()
	if q != nil {
		return q, nil
	}
	if !ValidName(name) {
		return nil, fmt.Errorf("%w %q: letters, digits, _ . - (not leading . or -), at most 128", ErrBadName, Excerpt(name))
	}
	if _, err := os.Lstat(filepath.Join(t.dir, name)); err == nil {
		return t.Queue(name) // it exists: nothing is created
	}
	t.mu.Lock()
	limit := t.demand.maxQueues
	_, counted := t.demand.made[name]
	if limit >= 0 && len(t.demand.made) >= limit && !counted {
		t.pruneMade()
	}
	if limit >= 0 && len(t.demand.made) >= limit && !counted {
		first := !t.demand.limitHit
		t.demand.limitHit = true
		t.mu.Unlock()
		if first && t.opts.OnQueueLimit != nil {
			t.opts.OnQueueLimit(name, limit)
		}
		return nil, fmt.Errorf("%w: sending to %s would create a queue beyond this process's limit of %d (max_queues)",
			ErrTooManyQueues, name, limit)
	}
	// Counted before it is made (as pending), so that concurrent senders
	// cannot pass the bound together; given back if making it fails.
	if !counted {
		t.demand.made[name] = false
	}
	t.mu.Unlock()
	q, err := t.Queue(name)
	t.mu.Lock()
	if err != nil && !counted {
		t.unmake(name)
	} else if err == nil {
		t.demand.made[name] = true
	}
	t.mu.Unlock()
	return q, err
}

// pruneMade forgets, at most once a second, the queues made on demand
// whose names have gone (removed by mmctl or another process), so that
// the bound counts queues that exist. Called with t.mu held.
func (t *Transit) pruneMade() {
	if time.Since(t.demand.pruned) < time.Second {
		return
	}
	t.demand.pruned = time.Now()
	for name, made := range t.demand.made {
		if !made {
			continue // being made: its name is not published yet
		}
		if _, err := os.Lstat(filepath.Join(t.dir, name)); errors.Is(err, os.ErrNotExist) {
			t.unmake(name)
		}
	}
}

// unmake uncounts a queue made on demand. Called with t.mu held.
func (t *Transit) unmake(name string) {
	delete(t.demand.made, name)
	if t.demand.maxQueues < 0 || len(t.demand.made) < t.demand.maxQueues {
		t.demand.limitHit = false
	}
}

// QueuesMade is how many queues Send created on demand that still exist
// as far as this process knows; it never exceeds MaxQueues.
func (t *Transit) QueuesMade() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.demand.made)
}

// MaxQueues is the bound on queues created on demand (negative: none).
func (t *Transit) MaxQueues() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.demand.maxQueues
}

// SetMaxQueues changes the bound (a reloaded config): zero means
// DefaultMaxQueues, negative no bound. Queues made already stay; a lower
// bound only refuses new ones.
func (t *Transit) SetMaxQueues(n int) {
	if n == 0 {
		n = DefaultMaxQueues
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.demand.maxQueues = n
	if n < 0 || len(t.demand.made) < n {
		t.demand.limitHit = false
	}
}

// --- doorbells ---

func (t *Transit) doorbellPath(name string) string { return filepath.Join(t.dir, ".doorbell", name) }

// SetDoorbell registers doorbell as the queue to ring after every send to
// queue name. Senders notice within a second.
func (t *Transit) SetDoorbell(name, doorbell string) error {
	if !ValidName(name) && name != defaultDoorbellFile || !ValidName(doorbell) {
		return fmt.Errorf("%w: %q or %q", ErrBadName, Excerpt(name), Excerpt(doorbell))
	}
	dir := filepath.Join(t.dir, ".doorbell")
	if err := t.privateDir(dir); err != nil {
		return err
	}
	t.mu.Lock()
	t.bells[doorbell] = true
	t.mu.Unlock()
	tmp, err := os.CreateTemp(dir, ".tmp-")
	if err != nil {
		return fmt.Errorf("transit: %w", err)
	}
	_, werr := tmp.WriteString(doorbell + "\n")
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr, os.Rename(tmp.Name(), t.doorbellPath(name))); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("transit: %w", err)
	}
	return nil
}

// defaultDoorbellFile, under .doorbell/, names the doorbell to ring for a
// queue that has no doorbell file of its own (not a valid queue name, so
// it never is one).
const defaultDoorbellFile = ".default"

// SetDefaultDoorbell registers doorbell as the one to ring for every queue
// that has no doorbell of its own: a daemon serves its tasks' queues
// through it without a file per queue, and learns of a queue made by a
// sender from the sender's ring.
func (t *Transit) SetDefaultDoorbell(doorbell string) error {
	if err := t.SetDoorbell(defaultDoorbellFile, doorbell); err != nil {
		return err
	}
	return nil
}

// ClearDefaultDoorbell removes the default doorbell if it is still
// doorbell (a later daemon may have registered its own).
func (t *Transit) ClearDefaultDoorbell(doorbell string) {
	path := t.doorbellPath(defaultDoorbellFile)
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == doorbell {
		os.Remove(path)
	}
}

// Exists reports whether queue name has been made (its key file is
// there), without making it.
func (t *Transit) Exists(name string) bool {
	_, err := os.Lstat(t.keyPath(name, false))
	return err == nil
}

// Served reports whether a receiver has registered a doorbell for queue
// name: a daemon serves it (or served it and crashed).
func (t *Transit) Served(name string) bool {
	_, err := os.Stat(t.doorbellPath(name))
	return err == nil
}

// acceptsRings reports whether a ring on queue name is a ring: name is a
// doorbell this process registered, or at least not a queue someone
// serves (a served queue has a doorbell of its own; a doorbell never
// has). Elsewhere a text that looks like a ring is a stranger's, and is
// dead-lettered rather than taken as a hint and dropped.
func (t *Transit) acceptsRings(name string) bool {
	t.mu.Lock()
	bell := t.bells[name]
	t.mu.Unlock()
	return bell || !t.Served(name)
}

// ClearDoorbell stops senders from ringing for queue name.
func (t *Transit) ClearDoorbell(name string) error {
	err := os.Remove(t.doorbellPath(name))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// ring tells the doorbell of queue name, if any, that it has a message. It
// never blocks and never fails the send: a receiver sweeps its queues
// periodically, so a lost ring only delays. waited says the send found the
// queue full first.
func (t *Transit) ring(sent *Queue, waited bool) {
	name := sent.name
	now := time.Now()
	t.mu.Lock()
	e, ok := t.doorbell[name]
	t.mu.Unlock()
	if !ok || now.Sub(e.checked) > doorbellTTL {
		e = doorbellEntry{checked: now}
		b, err := os.ReadFile(t.doorbellPath(name))
		if errors.Is(err, os.ErrNotExist) {
			b, err = os.ReadFile(t.doorbellPath(defaultDoorbellFile))
		}
		if err == nil {
			if db := strings.TrimSpace(string(b)); db != name && ValidName(db) {
				e.q, _ = t.Bell(db)
			}
		}
		t.mu.Lock()
		t.doorbell[name] = e
		t.mu.Unlock()
	}
	if e.q == nil {
		return
	}
	// A receiver sleeps only once it found nothing more to take, and peeks
	// and drains until it does: while the queue holds more than the
	// message just sent, its receiver either was rung for an earlier one
	// or holds one it has yet to settle (which wakes it), and will come to
	// this one too. So only the message that makes the queue non-empty
	// rings, and one that had to wait for room: the receiver made that room
	// by taking off what it had handled and may have looked for more before
	// this one was in; unrung, it would find it only when it settles the
	// next, and its task would sit idle in between.
	if !waited {
		if ds, err := msgstat(sent.qid()); err == nil && ds.Qnum > 1 {
			return
		}
	}
	buf := make([]byte, typeSize+1+len(name))
	binary.NativeEndian.PutUint64(buf, mtypeData)
	buf[typeSize] = tagRing
	copy(buf[typeSize+1:], name)
	if err := msgsnd(e.q.qid(), buf, unix.IPC_NOWAIT); err != nil && isGone(err) {
		t.forget(e.q)
		t.mu.Lock()
		delete(t.doorbell, name)
		t.mu.Unlock()
	}
}

// --- spill files ---

func (t *Transit) spillDir(name string) string { return filepath.Join(t.dir, ".spill", name) }

var spillNameRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

// spill writes text to a new owner-only file and returns its name.
func (t *Transit) spill(queue string, text []byte) (string, error) {
	name, err := t.spillName(queue)
	if err != nil {
		return "", err
	}
	f, err := os.OpenFile(filepath.Join(t.spillDir(queue), name), os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return "", fmt.Errorf("transit: spill: %w", err)
	}
	_, werr := f.Write(text)
	if err := errors.Join(werr, f.Close()); err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("transit: spill: %w", err)
	}
	return name, nil
}

// spillName makes sure the queue's spill dir exists, private, and returns
// a new random file name for it.
func (t *Transit) spillName(queue string) (string, error) {
	if err := t.privateDir(filepath.Join(t.dir, ".spill")); err != nil {
		return "", err
	}
	if err := t.privateDir(t.spillDir(queue)); err != nil {
		return "", err
	}
	var r [16]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(r[:]), nil
}

// unspill reads (and, with remove, removes) a spill file named by a
// reference, after proving it is one of ours: a bare name of the right
// form, in this queue's spill dir, a regular file (not a link), owned by
// us, private, with one link. Anything else is refused without reading or
// deleting.
func (t *Transit) unspill(queue, ref string, remove bool) ([]byte, error) {
	if !spillNameRE.MatchString(ref) {
		return nil, fmt.Errorf("spill reference %q is not a spill file name", excerpt([]byte(ref), 80))
	}
	path := filepath.Join(t.spillDir(queue), ref)
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("spill reference %s: %w", ref, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("spill reference %s: %w", ref, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return nil, fmt.Errorf("spill reference %s is not a regular file", ref)
	case int(st.Uid) != t.uid:
		return nil, fmt.Errorf("spill reference %s is owned by uid %d, not %d", ref, st.Uid, t.uid)
	case st.Mode&0o077 != 0:
		return nil, fmt.Errorf("spill reference %s has mode %o, not private", ref, st.Mode&0o777)
	case st.Nlink != 1:
		return nil, fmt.Errorf("spill reference %s has %d links", ref, st.Nlink)
	case st.Size > int64(t.opts.MaxMessage):
		return nil, fmt.Errorf("spill reference %s is %d bytes, over the limit", ref, st.Size)
	}
	text, err := io.ReadAll(io.LimitReader(f, int64(t.opts.MaxMessage)+1))
	if err != nil {
		return nil, fmt.Errorf("spill reference %s: %w", ref, err)
	}
	if remove {
		os.Remove(path)
	}
	return text, nil
}

// DeadLetters is how many dead letters this Transit has kept.
func (t *Transit) DeadLetters() uint64 { return t.deadLetters.Load() }

// DeadLetterFile is where dead letters go when the dead-letter queue is
// full (nobody reads it): appended JSON lines in the transit dir. In a
// dir shared with IPC::Transit it is a dot-file (DeadLetterPath), since
// IPC::Transit takes every other file there for a key file.
const DeadLetterFile = "dead_letters.jsonl"

// DeadLetterPath is where this transit's dead-letter file is.
func (t *Transit) DeadLetterPath() string {
	if t.layout.ipc {
		return filepath.Join(t.dir, "."+DeadLetterFile)
	}
	return filepath.Join(t.dir, DeadLetterFile)
}

// DeadLetter keeps msg, which has no place on queue (a message sent to a
// doorbell, one past a hop or copy budget), with the reason, as the
// receivers do with what they cannot decode.
func (t *Transit) DeadLetter(queue, reason string, msg map[string]any) error {
	raw, err := AppendJSON(nil, msg)
	if err != nil {
		raw = []byte(fmt.Sprint(msg))
	}
	return t.deadLetter(queue, reason, raw)
}

// deadLetter keeps what could not be delivered, with the reason: on the
// dead-letter queue (the raw text whole; a large one is spilled like any
// message), or, when that queue is full, in DeadLetterFile. It waits
// only briefly: a receiver must not stall on its dead letters.
func (t *Transit) deadLetter(queue, reason string, raw []byte) error {
	t.deadLetters.Add(1)
	m := map[string]any{
		"reason": reason,
		"queue":  queue,
		"time":   time.Now().UTC().Format(time.RFC3339Nano),
	}
	if utf8.Valid(raw) {
		m["raw"] = string(raw)
	} else {
		m["raw_base64"] = base64.StdEncoding.EncodeToString(raw)
	}
	var err error
	// After the queue was found full, the file takes dead letters for a
	// second without waiting: a burst of them must not stall its receiver.
	if queue != DeadLetterQueue && time.Since(time.Unix(0, t.deadFullAt.Load())) > time.Second {
		var q *Queue
		if q, err = t.Queue(DeadLetterQueue); err == nil {
			if err = q.SendWithin(m, 50*time.Millisecond); err == nil {
				return nil
			}
			t.deadFullAt.Store(time.Now().UnixNano())
		}
	}
	line, jerr := AppendJSON(nil, m)
	if jerr != nil {
		return errors.Join(err, jerr)
	}
	f, ferr := os.OpenFile(t.DeadLetterPath(), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if ferr == nil {
		_, ferr = f.Write(append(line, '\n'))
		ferr = errors.Join(ferr, f.Close())
	}
	if ferr != nil {
		return fmt.Errorf("transit: dead letter from %s lost (%s): %w", queue, reason, errors.Join(err, ferr))
	}
	return nil
}

// MaxLogged bounds how much of a message a log record or an error
// carries: enough to recognise it, never megabytes of a stranger's text.
const MaxLogged = 512

// Excerpt renders a message (a map, as JSON), or raw text ([]byte or
// string), for a log record or an error: at most MaxLogged bytes of it,
// and, when cut, its total length. Invalid UTF-8 is replaced, so that a
// log line stays text.
func Excerpt(v any) string {
	var b []byte
	switch v := v.(type) {
	case []byte:
		b = v
	case string:
		b = []byte(v)
	case map[string]any:
		var err error
		if b, err = AppendJSON(nil, v); err != nil {
			return fmt.Sprintf("(unencodable message: %v)", err)
		}
	default:
		b = fmt.Append(nil, v)
	}
	return excerpt(b, MaxLogged)
}

func excerpt(b []byte, n int) string {
	if len(b) <= n {
		return strings.ToValidUTF8(string(b), "\ufffd")
	}
	cut := n
	for cut > 0 && cut > n-utf8.UTFMax && !utf8.RuneStart(b[cut]) {
		cut-- // do not split a character
	}
	return fmt.Sprintf("%s… (%d bytes in all)", strings.ToValidUTF8(string(b[:cut]), "\ufffd"), len(b))
}

// canPeek reports whether this kernel copies a queued message at an index
// and leaves it queued (MSG_COPY). Kernels without CONFIG_CHECKPOINT_RESTORE
// refuse the flag; kernels before 3.8 ignore it and take the message,
// which would lose one message in two: a probe queue tells, once.
func (t *Transit) canPeek() bool {
	t.peek.once.Do(func() { t.peek.ok = probePeek() })
	return t.peek.ok
}

func probePeek() bool {
	id, err := msgget(0, unix.IPC_CREAT|0o600) // IPC_PRIVATE
	if err != nil {
		return false
	}
	defer msgrmid(id)
	for _, c := range []byte{'a', 'b'} {
		buf := make([]byte, typeSize+1)
		binary.NativeEndian.PutUint64(buf, mtypeData)
		buf[typeSize] = c
		if msgsnd(id, buf, unix.IPC_NOWAIT) != nil {
			return false
		}
	}
	buf := make([]byte, typeSize+8)
	n, err := msgrcv(id, buf, 1, unix.IPC_NOWAIT|msgCopy)
	if err != nil || n != 1 || buf[typeSize] != 'b' {
		return false
	}
	st, err := msgstat(id)
	return err == nil && st.Qnum == 2
}
