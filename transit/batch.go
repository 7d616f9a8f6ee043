package transit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Batch gathers messages for one queue and queues them packed into as few
// queue messages as the kernel allows (msgmax each): one msgsnd, one peek
// and one drop for many messages. A sender that holds a Batch must Flush
// it before the messages can be counted as queued; until then they live
// only in its memory. In a dir shared with IPC::Transit, which has no
// batches, Add queues each message at once as its own frame.
//
// A Batch is not safe for concurrent use.
type Batch struct {
	q     *Queue
	frame []byte // header, tagBatch, then length-prefixed JSON texts
	n     int    // messages in frame
	enc   []byte
	// flushed counts the messages that left the batch (queued, or kept as
	// dead letters when that failed); failed, those kept as dead letters.
	flushed, failed uint64
	// wait bounds Flush's wait for room when waitSet (else SendTimeout).
	wait    time.Duration
	waitSet bool
}

// SetWait bounds how long Flush (and an Add that must flush) waits for
// room in a full queue, instead of the transit's SendTimeout: a sender
// that already found the queue full and must not stall others (the
// Router) tries without waiting and keeps what does not fit as dead
// letters. A negative d restores SendTimeout.
func (b *Batch) SetWait(d time.Duration) { b.wait, b.waitSet = d, d >= 0 }

// NewBatch returns an empty batch for q.
func (q *Queue) NewBatch() *Batch { return &Batch{q: q} }

// Queue is the queue the batch is for.
func (b *Batch) Queue() *Queue { return b.q }

// Flushed counts the messages that have left the batch so far, queued or
// kept as dead letters: a holder learns from it that an Add sent what the
// batch held before.
func (b *Batch) Flushed() uint64 { return b.flushed }

// Failed counts the messages that left the batch as dead letters, their
// flush having failed.
func (b *Batch) Failed() uint64 { return b.failed }

// Len is how many messages wait in the batch for Flush.
func (b *Batch) Len() int { return b.n }

// Add encodes msg (stamping its send_ts) into the batch. When the batch has
// no room left for it, what it holds is queued first, and an error doing
// so (the queue stayed full for the whole wait, or is gone) is returned
// here: msg is then not in the batch, and what the batch held is kept as
// dead letters (see Flush).
func (b *Batch) Add(msg map[string]any) error {
	q := b.q
	if q.t.layout.ipc {
		stamp(msg, time.Now())
		// Every message its own IPC::Transit frame (ipctransit.go).
		buf, err := AppendJSON(header(nil), msg)
		if err != nil {
			return fmt.Errorf("transit: send to %s: %w", q.name, err)
		}
		return q.sendTextWithin(buf, b.flushWait())
	}
	var err error
	if b.enc, err = appendStamped(b.enc[:0], msg, time.Now()); err != nil {
		return fmt.Errorf("transit: send to %s: %w", q.name, err)
	}
	if binary.MaxVarintLen64+len(b.enc) > q.maxInline()-1 {
		// Alone it is spilled: what came before it goes first.
		if err := b.Flush(); err != nil {
			return err
		}
		return q.sendTextWithin(append(header(nil), b.enc...), b.flushWait())
	}
	if b.n > 0 && len(b.frame)-typeSize+binary.MaxVarintLen64+len(b.enc) > q.maxInline() {
		if err := b.Flush(); err != nil {
			return err
		}
	}
	if b.n == 0 {
		b.frame = append(header(b.frame), tagBatch)
	}
	b.frame = binary.AppendUvarint(b.frame, uint64(len(b.enc)))
	b.frame = append(b.frame, b.enc...)
	b.n++
	return nil
}

// Flush queues what the batch holds as one queue message, waiting for
// room up to the transit's SendTimeout. If that fails, nothing of it is
// dropped: each message goes to the dead-letter queue with the reason,
// and the error says so. The batch is empty afterwards either way.
func (b *Batch) Flush() error {
	if b.n == 0 {
		return nil
	}
	frame, n := b.frame, b.n
	b.flushed += uint64(n)
	b.frame, b.n = b.frame[:0], 0
	err := b.q.sendTextWithin(frame, b.flushWait())
	if err == nil {
		return nil
	}
	b.failed += uint64(n)
	dead := b.q.t.deadLetterFrame(b.q.name, "not sent: "+err.Error(), frame[typeSize+1:])
	return errors.Join(err, dead)
}

// flushWait is how long a flush waits for room in a full queue.
func (b *Batch) flushWait() time.Duration {
	if b.waitSet {
		return b.wait
	}
	return b.q.t.opts.SendTimeout
}

// deadLetterFrame keeps each message of a batch frame (the part after its
// tag) as a dead letter of queue with the reason.
func (t *Transit) deadLetterFrame(queue, reason string, p []byte) error {
	var errs []error
	for len(p) > 0 {
		n, k := binary.Uvarint(p)
		if k <= 0 || n > uint64(len(p)-k) {
			return errors.Join(append(errs, t.deadLetter(queue, reason, p))...)
		}
		errs = append(errs, t.deadLetter(queue, reason, p[k:k+int(n)]))
		p = p[k+int(n):]
	}
	return errors.Join(errs...)
}

// appendStamped appends msg's JSON with .ipc_transit_meta.send_ts set to
// now, as stamp and AppendJSON would, but without adding a map to msg
// when it has no metadata yet (most messages a task makes): one
// allocation less per message on the batched path. The key is written
// last; readers take keys in any order.
func appendStamped(buf []byte, msg map[string]any, now time.Time) ([]byte, error) {
	if _, ok := msg[".ipc_transit_meta"]; ok {
		stamp(msg, now)
		return AppendJSON(buf, msg)
	}
	start := len(buf)
	buf, err := AppendJSON(buf, msg)
	if err != nil {
		return buf, err
	}
	buf = buf[:len(buf)-1] // the closing brace
	if len(buf)-start > 1 {
		buf = append(buf, ',')
	}
	buf = append(buf, `".ipc_transit_meta":{"send_ts":`...)
	buf, err = appendFloat(buf, float64(now.UnixMicro())/1e6, 64)
	return append(buf, "}}"...), err
}
