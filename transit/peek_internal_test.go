package transit

import (
	"errors"
	"path/filepath"
	"testing"
)

// A queue removed and created again under the same name has none of the
// messages peeked before: their Drops do nothing, and nothing new is
// skipped or dropped in their place.
func TestPeekAcrossARecreatedQueue(t *testing.T) {
	t.Parallel()
	tr, err := Open(Options{Dir: filepath.Join(t.TempDir(), "transit")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.RemoveAll() })
	q, err := tr.Queue("R")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []float64{1, 2} {
		if err := q.Send(map[string]any{"n": n}); err != nil {
			t.Fatal(err)
		}
	}
	old0, err0 := q.Peek(0)
	_, err1 := q.Peek(1)
	if err0 != nil || err1 != nil {
		t.Fatal(err0, err1)
	}
	if err := msgrmid(q.qid()); err != nil { // as ipcrm or RemoveIPC would
		t.Fatal(err)
	}
	if _, err := q.Peek(2); !errors.Is(err, ErrEmpty) {
		t.Fatalf("peek past two messages of the old queue: %v", err)
	}
	if err := q.Send(map[string]any{"n": 3.0}); err != nil {
		t.Fatal(err)
	}
	if err := q.Drop(old0); err != nil {
		t.Fatal(err)
	}
	d, err := q.Peek(0)
	if err != nil || len(d.Msgs) != 1 || d.Msgs[0]["n"] != 3.0 {
		t.Fatalf("the new queue's message: %v, %v", d.Msgs, err)
	}
	if err := q.Drop(d); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Peek(0); !errors.Is(err, ErrEmpty) {
		t.Fatalf("after the drop: %v", err)
	}
}
