package transit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Queue is one named System V queue.
type Queue struct {
	t    *Transit
	name string
	bell bool         // a doorbell whose key file is hidden (see Transit.Bell)
	id   atomic.Int64 // changes if the queue is removed and recreated
	// capacity is the kernel queue's msg_qbytes as last read (0: unknown):
	// a text larger than it is spilled even under msgmax, since the
	// kernel would never take it (msgmax may be set above msgmnb).
	capacity atomic.Int64
}

func (q *Queue) qid() int { return int(q.id.Load()) }

func (q *Queue) keyPath() string { return q.t.keyPath(q.name, q.bell) }

// setID records the kernel queue's id and reads its capacity.
func (q *Queue) setID(id int) {
	q.id.Store(int64(id))
	if ds, err := msgstat(id); err == nil {
		q.capacity.Store(int64(ds.Qbytes))
	}
}

// maxInline is the largest text sent as it is: msgmax, or the queue's
// capacity when that is smaller.
func (q *Queue) maxInline() int {
	if c := int(q.capacity.Load()); c > 0 && c < q.t.msgmax {
		return c
	}
	return q.t.msgmax
}

// reopen finds the queue again after its kernel queue was removed: under
// the same key while the key file exists (the name still stands for it),
// never by creating a new name: a queue that was Removed stays removed.
func (q *Queue) reopen() error {
	if _, err := os.Stat(q.keyPath()); err != nil {
		q.t.forget(q)
		return fmt.Errorf("%w: %s was removed", ErrNoQueue, q.name)
	}
	_, id, err := q.t.resolve(q.name, q.keyPath())
	if err != nil {
		return err
	}
	q.setID(id)
	return nil
}

// Name is the queue's name.
func (q *Queue) Name() string { return q.name }

// Stats describe a queue's contents.
type Stats struct {
	Name     string  `json:"name"`
	Messages uint64  `json:"messages"`
	Bytes    uint64  `json:"bytes"`
	Capacity uint64  `json:"capacity"`
	Fill     float64 `json:"fill"` // Bytes / Capacity
}

// Stats reads the queue's counters from the kernel.
func (q *Queue) Stats() (Stats, error) {
	ds, err := msgstat(q.qid())
	if err != nil {
		return Stats{}, fmt.Errorf("transit: queue %s: %w", q.name, err)
	}
	s := Stats{Name: q.name, Messages: ds.Qnum, Bytes: ds.Cbytes, Capacity: ds.Qbytes}
	if ds.Qbytes > 0 {
		s.Fill = float64(ds.Cbytes) / float64(ds.Qbytes)
	}
	return s, nil
}

// stamp records the send time under .ipc_transit_meta (the message belongs
// to the transport once sent, so it is changed in place).
func stamp(msg map[string]any, now time.Time) {
	ts := float64(now.UnixMicro()) / 1e6
	if meta, ok := msg[".ipc_transit_meta"].(map[string]any); ok {
		meta["send_ts"] = ts
		return
	}
	msg[".ipc_transit_meta"] = map[string]any{"send_ts": ts}
}

func (q *Queue) getBuf() *[]byte { return q.t.bufPool.Get().(*[]byte) }

func (q *Queue) putBuf(bp *[]byte, b []byte) {
	if cap(b) <= 2*(typeSize+q.t.msgmax) {
		*bp = b[:0]
		q.t.bufPool.Put(bp)
	}
}

func header(buf []byte) []byte {
	buf = append(buf[:0], 0, 0, 0, 0, 0, 0, 0, 0)
	binary.NativeEndian.PutUint64(buf, mtypeData)
	return buf
}

// Send queues one message. On a full queue it waits up to the transit's
// SendTimeout, then returns ErrQueueFull; the message is not queued then.
func (q *Queue) Send(msg map[string]any) error {
	stamp(msg, time.Now())
	bp := q.getBuf()
	buf, err := AppendJSON(header(*bp), msg)
	if err != nil {
		q.putBuf(bp, buf)
		return fmt.Errorf("transit: send to %s: %w", q.name, err)
	}
	err = q.sendText(buf)
	q.putBuf(bp, buf)
	return err
}

// SendWithin is Send with its own bound on the wait for room (a reply
// must not hold up its sender as long as a task's message may).
func (q *Queue) SendWithin(msg map[string]any, wait time.Duration) error {
	stamp(msg, time.Now())
	buf, err := AppendJSON(header(nil), msg)
	if err != nil {
		return fmt.Errorf("transit: send to %s: %w", q.name, err)
	}
	return q.sendTextWithin(buf, wait)
}

// SendBatch queues msgs in order, packing several into each queue message:
// one system call and one ring for many messages. On error, the messages
// before the failing one are queued.
func (q *Queue) SendBatch(msgs []map[string]any) error {
	if q.t.layout.ipc {
		// IPC::Transit has no batches: one queue message each.
		for _, m := range msgs {
			if err := q.Send(m); err != nil {
				return err
			}
		}
		return nil
	}
	now := time.Now()
	bp := q.getBuf()
	defer func() { q.putBuf(bp, *bp) }()
	batch := append(header(*bp), tagBatch)
	n := 0
	var enc []byte
	flush := func() error {
		if n == 0 {
			return nil
		}
		err := q.sendText(batch)
		batch, n = batch[:typeSize+1], 0
		return err
	}
	for _, m := range msgs {
		stamp(m, now)
		var err error
		if enc, err = AppendJSON(enc[:0], m); err != nil {
			return errors.Join(flush(), fmt.Errorf("transit: send to %s: %w", q.name, err))
		}
		if binary.MaxVarintLen64+len(enc) > q.t.msgmax-1 { // alone it must spill
			if err := flush(); err != nil {
				return err
			}
			if err := q.sendText(append(header(nil), enc...)); err != nil {
				return err
			}
			continue
		}
		if len(batch)-typeSize+binary.MaxVarintLen64+len(enc) > q.t.msgmax {
			if err := flush(); err != nil {
				return err
			}
		}
		batch = binary.AppendUvarint(batch, uint64(len(enc)))
		batch = append(batch, enc...)
		n++
	}
	err := flush()
	*bp = batch
	return err
}

// SendRaw queues text exactly as given, as a program that encodes its own
// JSON would. The receiver dead-letters it if it is not a JSON object.
func (q *Queue) SendRaw(text []byte) error {
	if len(text) == 0 {
		return fmt.Errorf("transit: send to %s: empty message", q.name)
	}
	return q.sendText(append(header(nil), text...))
}

// sendText sends buf (header and text), spilling a text too large for one
// queue message, then rings the queue's doorbell.
func (q *Queue) sendText(buf []byte) error { return q.sendTextWithin(buf, q.t.opts.SendTimeout) }

func (q *Queue) sendTextWithin(buf []byte, wait time.Duration) error {
	if q.t.layout.ipc {
		return q.sendFramed(buf[typeSize:], wait)
	}
	var spilled string
	if len(buf)-typeSize > q.maxInline() {
		if len(buf)-typeSize > q.t.opts.MaxMessage {
			return fmt.Errorf("%w: %d bytes to %s (limit %d)", ErrTooLarge, len(buf)-typeSize, q.name, q.t.opts.MaxMessage)
		}
		name, err := q.t.spill(q.name, buf[typeSize:])
		if err != nil {
			return err
		}
		spilled = name
		buf = append(append(header(nil), tagSpill), name...)
	}
	waited, err := q.sendWait(buf, wait)
	if err != nil {
		if spilled != "" {
			os.Remove(filepath.Join(q.t.spillDir(q.name), spilled))
		}
		return err
	}
	q.t.ring(q, waited)
	return nil
}

// sendFramed sends payload in IPC::Transit's framing (s=json), as its
// large-message file when it does not fit, then rings the doorbell.
func (q *Queue) sendFramed(payload []byte, wait time.Duration) error {
	buf := appendWireHeader(ipcHeader(nil), len(payload), "")
	buf = append(buf, payload...)
	var file string
	if len(buf)-typeSize > q.maxInline() {
		if len(buf)-typeSize > q.t.opts.MaxMessage {
			return fmt.Errorf("%w: %d bytes to %s (limit %d)", ErrTooLarge, len(buf)-typeSize, q.name, q.t.opts.MaxMessage)
		}
		var err error
		if buf, file, err = q.t.frameLarge(q.name, payload); err != nil {
			return err
		}
	}
	waited, err := q.sendWait(buf, wait)
	if err != nil {
		if file != "" {
			os.Remove(file)
		}
		return err
	}
	q.t.ring(q, waited)
	return nil
}

// sendWait sends buf, waiting up to wait for room in a full queue. The
// wait is a blocking msgsnd, which the kernel wakes the moment a receiver
// makes room (no polling, no sleep past it); it parks one OS thread while
// the queue is full, and is interrupted at the deadline (see
// msgsndUntil). waited says it found the queue full first.
func (q *Queue) sendWait(buf []byte, wait time.Duration) (waited bool, err error) {
	deadline := time.Now().Add(wait)
	recreated := false
	for {
		err := msgsnd(q.qid(), buf, unix.IPC_NOWAIT)
		if errors.Is(err, unix.EAGAIN) {
			if !waited {
				waited = true
				if err := q.fits(len(buf) - typeSize); err != nil {
					return waited, err // no wait would make room
				}
			}
			err = msgsndUntil(q.qid(), buf, deadline)
		}
		switch {
		case err == nil:
			return waited, nil
		case errors.Is(err, unix.EAGAIN):
			st, _ := q.Stats()
			return waited, fmt.Errorf("%w: %s (%d of %d bytes in %d messages) after waiting %v",
				ErrQueueFull, q.name, st.Bytes, st.Capacity, st.Messages, wait)
		case isGone(err) && !recreated:
			// The kernel queue was removed under us: reopen it by its
			// name, once (not if the name itself was removed).
			recreated = true
			if rerr := q.reopen(); rerr != nil {
				return waited, rerr
			}
		default:
			return waited, fmt.Errorf("transit: send to %s: %w", q.name, err)
		}
	}
}

// fits checks that a text of n bytes can ever be queued: the kernel
// keeps a message that is larger than the queue's capacity waiting
// forever (EAGAIN), as if the queue were full.
func (q *Queue) fits(n int) error {
	ds, err := msgstat(q.qid())
	if err != nil {
		return nil // the send itself tells what is wrong
	}
	q.capacity.Store(int64(ds.Qbytes))
	if uint64(n) > ds.Qbytes {
		return fmt.Errorf("transit: send to %s: %w (%d > capacity %d)", q.name, ErrExceedsCapacity, n, ds.Qbytes)
	}
	return nil
}

// msgNoError truncates an oversized message instead of failing (Linux).
const msgNoError = 0o10000

// Delivery is what one receive produced.
type Delivery struct {
	// Msgs are the decoded messages, in order (a batch holds several).
	Msgs []map[string]any
	// Ring names a queue that has messages, when this is a doorbell.
	Ring string
	// Wake is set for a Wake call's message.
	Wake bool
	// Dead counts messages that went to the dead-letter queue.
	Dead int

	// spill is the path of the spill or large-message file a Peek read
	// and left for Drop to remove.
	spill string
	// qid is the kernel queue a Peek read it from: one removed and
	// created again has new messages only.
	qid int
}

// Wake unblocks a receiver waiting on this queue: it sees Delivery.Wake
// before any queued message.
func (q *Queue) Wake() error {
	buf := []byte{0, 0, 0, 0, 0, 0, 0, 0, tagWake}
	binary.NativeEndian.PutUint64(buf, mtypeWake)
	err := msgsnd(q.qid(), buf, unix.IPC_NOWAIT)
	if isGone(err) {
		// Removed and perhaps reopened by the receiver: follow it.
		if rerr := q.reopen(); rerr != nil {
			return rerr
		}
		err = msgsnd(q.qid(), buf, unix.IPC_NOWAIT)
	}
	if errors.Is(err, unix.EAGAIN) {
		return nil // full: a waiting receiver has data to wake for anyway
	}
	return err
}

// Receive takes the next queue message. With wait it blocks (parking one
// OS thread) until one arrives; without, it returns ErrEmpty at once.
// Undecodable content goes to the dead-letter queue; an error is returned
// only when that too fails, or when the queue itself fails.
func (q *Queue) Receive(wait bool) (Delivery, error) {
	bp := q.getBuf()
	buf := (*bp)[:cap(*bp)]
	defer func() { q.putBuf(bp, buf) }()
	// Waiting, ask for any type, lowest first, so that a wake-up jumps the
	// queue; not waiting, take whatever is first. Either way a foreign
	// program's odd mtype is taken (and dead-lettered by decode), never
	// left to fill the queue: a doorbell full of them would stall every
	// ring and even the wake-up that stops its waiter.
	flags, msgtyp := 0, int64(-math.MaxInt64)
	if !wait {
		flags, msgtyp = unix.IPC_NOWAIT, 0
	}
	for {
		n, err := msgrcv(q.qid(), buf, msgtyp, flags)
		switch {
		case err == nil:
			return q.decode(binary.NativeEndian.Uint64(buf), buf[typeSize:typeSize+n])
		case errors.Is(err, unix.ENOMSG):
			return Delivery{}, ErrEmpty
		case errors.Is(err, unix.E2BIG):
			// Larger than msgmax was when we started: the limit was
			// raised. Grow and try again; the message stays queued. If it
			// still does not fit, take it truncated and dead-letter it
			// rather than leave it blocking the queue forever.
			if limit := kernelLimit("msgmax", 0); limit > len(buf)-typeSize {
				buf = make([]byte, typeSize+limit)
				continue
			}
			n, err := msgrcv(q.qid(), buf, msgtyp, flags|msgNoError)
			if err != nil {
				return Delivery{}, fmt.Errorf("transit: receive on %s: %w", q.name, err)
			}
			return Delivery{Dead: 1}, q.t.deadLetter(q.name, "message larger than msgmax: truncated", buf[typeSize:typeSize+n])
		case isGone(err):
			if rerr := q.reopen(); rerr != nil {
				return Delivery{}, rerr
			}
		default:
			return Delivery{}, fmt.Errorf("transit: receive on %s: %w", q.name, err)
		}
	}
}

// msgCopy is Linux's MSG_COPY: msgrcv copies the message at an index of
// the queue and leaves it there.
const msgCopy = 0o40000

// Peek decodes the message at position i of the queue (0 is the oldest)
// and leaves it queued: a receiver that handles what it peeked and then
// Drops it loses nothing if it dies in between (the message is peeked
// again by whoever serves the queue next). It returns ErrEmpty when there
// is no message at i, and ErrNoPeek when the kernel cannot copy messages
// (MSG_COPY needs CONFIG_CHECKPOINT_RESTORE). Only one receiver may peek
// and drop a queue.
func (q *Queue) Peek(i int) (Delivery, error) {
	if !q.t.canPeek() {
		return Delivery{}, ErrNoPeek
	}
	bp := q.getBuf()
	buf := (*bp)[:cap(*bp)]
	defer func() { q.putBuf(bp, buf) }()
	dead := 0
	for {
		id := q.qid()
		n, err := msgrcv(id, buf, int64(i), unix.IPC_NOWAIT|msgCopy)
		switch {
		case err == nil:
			d, err := q.decodeAs(binary.NativeEndian.Uint64(buf), buf[typeSize:typeSize+n], true)
			d.qid, d.Dead = id, d.Dead+dead
			return d, err
		case errors.Is(err, unix.ENOMSG):
			return Delivery{Dead: dead}, ErrEmpty
		case errors.Is(err, unix.E2BIG):
			if limit := kernelLimit("msgmax", 0); limit > len(buf)-typeSize {
				buf = make([]byte, typeSize+limit)
				continue
			}
			// Larger than any buffer the kernel will copy into. It can
			// only be taken off (truncated) and dead-lettered, once it is
			// the oldest: until the messages before it are dropped, there
			// is nothing more to peek.
			if i > 0 {
				return Delivery{Dead: dead}, ErrEmpty
			}
			n, err := msgrcv(id, buf, 0, unix.IPC_NOWAIT|msgNoError)
			if err != nil {
				return Delivery{Dead: dead}, fmt.Errorf("transit: peek on %s: %w", q.name, err)
			}
			dead++
			if err := q.t.deadLetter(q.name, "message larger than msgmax: truncated", buf[typeSize:typeSize+n]); err != nil {
				return Delivery{Dead: dead}, err
			}
		case isGone(err):
			if rerr := q.reopen(); rerr != nil {
				return Delivery{Dead: dead}, rerr
			}
			// A new kernel queue: what was peeked went with the old one,
			// and its Drops do nothing; index i means nothing here yet.
			if i > 0 {
				return Delivery{Dead: dead}, ErrEmpty
			}
		default:
			return Delivery{Dead: dead}, fmt.Errorf("transit: peek on %s: %w", q.name, err)
		}
	}
}

// Drop takes the oldest message off the queue, which the caller peeked
// as d and has handled, and removes the spill file d was read from.
func (q *Queue) Drop(d Delivery) error {
	if d.qid != q.qid() {
		// Its kernel queue was removed, and the message with it.
		if d.spill != "" {
			os.Remove(d.spill)
		}
		return nil
	}
	var buf [typeSize + 1]byte
	if _, err := msgrcv(d.qid, buf[:], 0, unix.IPC_NOWAIT|msgNoError); err != nil && !isGone(err) {
		return fmt.Errorf("transit: drop on %s: %w", q.name, err)
	}
	if d.spill != "" {
		os.Remove(d.spill)
	}
	return nil
}

func (q *Queue) decode(mtype uint64, text []byte) (Delivery, error) {
	return q.decodeAs(mtype, text, false)
}

// decodeAs decodes one queue message; peeked, a spill file is read and
// left in place (Drop removes it).
func (q *Queue) decodeAs(mtype uint64, text []byte, peeked bool) (Delivery, error) {
	var d Delivery
	dead := func(reason string, raw []byte) error {
		d.Dead++
		return q.t.deadLetter(q.name, reason, raw)
	}
	if len(text) == 0 {
		return d, dead("empty message", nil)
	}
	if mtype == mtypeWake && len(text) == 1 && text[0] == tagWake {
		d.Wake = true
		return d, nil
	}
	// Ours are 2 (1 for a wake); IPC::Transit sends 1. Anything else is
	// not a message for us.
	if mtype != mtypeData && mtype != mtypeWake {
		return d, dead("unexpected mtype "+strconv.FormatUint(mtype, 10), text)
	}
	switch text[0] {
	case tagRing:
		name := string(text[1:])
		if !ValidName(name) {
			return d, dead("a doorbell ring that names no valid queue", text)
		}
		if !q.t.acceptsRings(q.name) {
			return d, dead("a doorbell ring on a queue that is not a doorbell", text)
		}
		d.Ring = name
		return d, nil
	case tagSpill:
		ref := string(text[1:])
		body, err := q.t.unspill(q.name, ref, !peeked)
		if err != nil {
			return d, dead("refused: "+err.Error(), text)
		}
		if peeked {
			d.spill = filepath.Join(q.t.spillDir(q.name), ref)
		}
		if len(body) > 0 && body[0] == tagBatch {
			return q.decodeBatch(d, body[1:])
		}
		text = body
	case tagBatch:
		return q.decodeBatch(d, text[1:])
	case '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		// No JSON object starts with a digit: IPC::Transit's framing.
		return q.decodeTransit(d, text, peeked)
	}
	if c := text[0]; c < 0x20 && c != ' ' && c != '\t' && c != '\n' && c != '\r' {
		// A control byte no framing of ours starts with (a wake-up with
		// the wrong type included): say so rather than blame the JSON.
		return d, dead(fmt.Sprintf("unknown framing: the text starts with byte 0x%02x", c), text)
	}
	m, err := DecodeJSON(text)
	if err != nil {
		return d, dead(err.Error(), text)
	}
	d.Msgs = append(d.Msgs, m)
	return d, nil
}

func (q *Queue) decodeBatch(d Delivery, p []byte) (Delivery, error) {
	var errs []error
	keys := keyCache{}
	for len(p) > 0 {
		n, k := binary.Uvarint(p)
		if k <= 0 || n > uint64(len(p)-k) {
			d.Dead++
			errs = append(errs, q.t.deadLetter(q.name, "malformed batch: bad length at "+strconv.Itoa(len(p))+" bytes from the end", p))
			break
		}
		part := p[k : k+int(n)]
		p = p[k+int(n):]
		m, err := decodeJSON(part, keys)
		if err != nil {
			d.Dead++
			errs = append(errs, q.t.deadLetter(q.name, err.Error(), part))
			continue
		}
		d.Msgs = append(d.Msgs, m)
	}
	return d, errors.Join(errs...)
}

// decodeTransit decodes a message in IPC::Transit's framing: JSON (s=json
// or no s=), inline or in a large-message file (f=), which a Peek leaves
// for Drop to remove. Anything else it could carry is dead-lettered with
// a reason naming it.
func (q *Queue) decodeTransit(d Delivery, text []byte, peeked bool) (Delivery, error) {
	h, payload, err := parseWireHeader(text)
	if err != nil {
		d.Dead++
		return d, q.t.deadLetter(q.name, err.Error(), text)
	}
	raw := text
	if _, ok := h.fields["f"]; ok {
		body, path, err := q.t.unlarge(q.name, h, !peeked)
		if err != nil {
			d.Dead++
			return d, q.t.deadLetter(q.name, "refused: "+err.Error(), text)
		}
		if peeked {
			d.spill = path
		}
		raw, payload = body, body[len(h.raw):]
	}
	if reason := h.unsupported(payload); reason != "" {
		d.Dead++
		return d, q.t.deadLetter(q.name, reason, raw)
	}
	m, err := DecodeJSON(payload)
	if err != nil {
		d.Dead++
		return d, q.t.deadLetter(q.name, err.Error(), raw)
	}
	d.Msgs = append(d.Msgs, m)
	return d, nil
}
