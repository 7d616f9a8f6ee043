package transit

import (
	"encoding/binary"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// sendTyped queues text with an mtype of the caller's choosing, as a
// foreign program may.
func sendTyped(t *testing.T, q *Queue, mtype uint64, text string) {
	t.Helper()
	buf := make([]byte, typeSize+len(text))
	binary.NativeEndian.PutUint64(buf, mtype)
	copy(buf[typeSize:], text)
	if err := msgsnd(q.qid(), buf, unix.IPC_NOWAIT); err != nil {
		t.Fatal(err)
	}
}

// A message of a type nobody asks for is taken and dead-lettered with the
// reason, by a waiting receive (a doorbell's) and a peek alike, so it
// never sits in the queue and fills it.
func TestUnexpectedMtypesAreDeadLettered(t *testing.T) {
	t.Parallel()
	tr, err := Open(Options{Dir: filepath.Join(t.TempDir(), "transit")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.RemoveAll() })
	q, _ := tr.Queue("bell")
	sendTyped(t, q, 7, `{"junk":1}`)
	if err := q.Send(map[string]any{"ok": true}); err != nil {
		t.Fatal(err)
	}
	// Lowest type first: ours, then the odd one.
	d, err := q.Receive(true)
	if err != nil || len(d.Msgs) != 1 || d.Msgs[0]["ok"] != true {
		t.Fatalf("the message of type 2: %+v %v", d, err)
	}
	if d, err = q.Receive(true); err != nil || d.Dead != 1 || len(d.Msgs) != 0 {
		t.Fatalf("waiting receive of mtype 7: %+v %v", d, err)
	}
	sendTyped(t, q, 1<<40, `x`)
	if d, err = q.Peek(0); err != nil || d.Dead != 1 {
		t.Fatalf("peek of mtype 2^40: %+v %v", d, err)
	}
	dlq, _ := tr.Queue(DeadLetterQueue)
	for _, want := range []string{"unexpected mtype 7", "unexpected mtype 1099511627776"} {
		d, err := dlq.Receive(false)
		if err != nil || len(d.Msgs) != 1 || d.Msgs[0]["reason"] != want || d.Msgs[0]["queue"] != "bell" {
			t.Fatalf("dead letter: %+v %v, want reason %q", d, err, want)
		}
	}
}
