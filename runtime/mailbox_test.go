package runtime

import (
	"errors"
	"testing"
)

// A delivery's messages go into a mailbox together: in order across
// segments, with one wake-up for a sleeping task, and none of them once it
// is closed.
func TestMailboxPushAll(t *testing.T) {
	t.Parallel()
	m := newMailbox()
	items := make([]item, 2*segSize+10)
	for i := range items {
		items[i] = item{msg: Message{"i": float64(i)}}
	}
	m.sleeping.Store(true)
	if err := m.pushAll(items); err != nil {
		t.Fatal(err)
	}
	if len(m.wake) != 1 || m.sleeping.Load() {
		t.Fatalf("after one push of %d items: %d wake-ups pending, sleeping %v", len(items), len(m.wake), m.sleeping.Load())
	}
	head, _ := m.takeAll()
	n := 0
	for s := head; s != nil; s = s.next {
		for _, it := range s.items[:s.n] {
			if it.msg["i"] != float64(n) {
				t.Fatalf("item %d is %v", n, it.msg)
			}
			n++
		}
	}
	if n != len(items) || m.depth() != uint64(len(items)) {
		t.Fatalf("took %d items in one batch, depth %d; want %d", n, m.depth(), len(items))
	}
	m.close()
	if err := m.pushAll(items[:3]); !errors.Is(err, ErrMailboxClosed) || m.pushed.Load() != uint64(len(items)) {
		t.Fatalf("push to a closed mailbox: %v, %d pushed in all", err, m.pushed.Load())
	}
}
