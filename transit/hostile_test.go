package transit_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/transit"
)

// A message naming thousands of queues must not make thousands of
// kernel queues (they outlive the process; msgmni is 32000): sends
// beyond MaxQueues fail with ErrTooManyQueues, the limit alerts once,
// and queues that exist already are never refused.
func TestMaxQueuesBoundsASpray(t *testing.T) {
	t.Parallel()
	const limit = 100
	dir := testenv.TransitDir(t)
	var mu sync.Mutex
	var alerts []string
	tr := open(t, dir, func(o *transit.Options) {
		o.MaxQueues = limit
		o.OnQueueLimit = func(q string, n int) {
			mu.Lock()
			defer mu.Unlock()
			alerts = append(alerts, fmt.Sprintf("%s %d", q, n))
		}
	})
	// A queue someone else made (a served task's) does not count.
	if _, err := open(t, dir).Queue("Served"); err != nil {
		t.Fatal(err)
	}
	sent, refused := 0, 0
	for i := range 2000 {
		err := tr.Send(fmt.Sprintf("spray%04d", i), map[string]any{"i": i})
		switch {
		case err == nil:
			sent++
		case errors.Is(err, transit.ErrTooManyQueues):
			refused++
			if i == limit && !strings.Contains(err.Error(), "spray0100") || !strings.Contains(err.Error(), "100") {
				t.Fatalf("error %q should name the queue and the limit", err)
			}
		default:
			t.Fatal(err)
		}
	}
	if sent != limit || refused != 2000-limit || tr.QueuesMade() != limit {
		t.Fatalf("sent %d, refused %d, made %d: want %d, %d, %d", sent, refused, tr.QueuesMade(), limit, 2000-limit, limit)
	}
	names, err := tr.Names()
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != limit+1 {
		t.Fatalf("%d queues in the dir, want %d", len(names), limit+1)
	}
	mu.Lock()
	if len(alerts) != 1 || alerts[0] != "spray0100 100" {
		t.Fatalf("alerts %v, want one for spray0100", alerts)
	}
	mu.Unlock()
	// Existing queues still take messages, made ones and others' alike.
	for _, name := range []string{"Served", "spray0000"} {
		if err := tr.Send(name, map[string]any{}); err != nil {
			t.Fatalf("send to existing %s: %v", name, err)
		}
	}
	// Removing one makes room for one; the alert fires again only when
	// the limit is hit again.
	if err := tr.Remove("spray0000"); err != nil {
		t.Fatal(err)
	}
	if err := tr.Send("fresh", map[string]any{}); err != nil || tr.QueuesMade() != limit {
		t.Fatalf("after a removal: %v, made %d", err, tr.QueuesMade())
	}
	if err := tr.Send("fresh2", map[string]any{}); !errors.Is(err, transit.ErrTooManyQueues) {
		t.Fatalf("over the limit again: %v", err)
	}
	mu.Lock()
	if len(alerts) != 2 {
		t.Fatalf("alerts %v, want a second one", alerts)
	}
	mu.Unlock()
	// Queue (for what a process serves) is not bounded; a higher bound
	// lets sends through again.
	if _, err := tr.Queue("MyOwn"); err != nil {
		t.Fatal(err)
	}
	tr.SetMaxQueues(limit + 1)
	if err := tr.Send("fresh2", map[string]any{}); err != nil {
		t.Fatal(err)
	}
}

// Concurrent senders together never pass the bound.
func TestMaxQueuesConcurrent(t *testing.T) {
	t.Parallel()
	const limit = 20
	tr := open(t, testenv.TransitDir(t), func(o *transit.Options) { o.MaxQueues = limit })
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 50 {
				err := tr.Send(fmt.Sprintf("c%d_%d", g, i), map[string]any{})
				if err != nil && !errors.Is(err, transit.ErrTooManyQueues) {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	names, _ := tr.Names()
	if tr.QueuesMade() != limit || len(names) != limit {
		t.Fatalf("made %d, %d in the dir (%v); want %d", tr.QueuesMade(), len(names), names, limit)
	}
}

// A text that starts with a ring's tag, on a queue that is not a
// doorbell, or naming no queue, is dead-lettered, as is any text that
// starts with a byte no framing of ours knows.
func TestStrangeFramingIsDeadLettered(t *testing.T) {
	t.Parallel()
	dir := testenv.TransitDir(t)
	tr := open(t, dir)
	if err := tr.SetDoorbell("task", "task.doorbell"); err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{"\x03hello", "\x03task", "\x00{}", "\x05{}", "\x04", "\x1f{}"} {
		sendRaw(t, dir, "task", []byte(text))
	}
	q, _ := tr.Queue("task")
	for {
		d, err := q.Receive(false)
		if errors.Is(err, transit.ErrEmpty) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if d.Ring != "" || len(d.Msgs) > 0 || d.Wake || d.Dead != 1 {
			t.Fatalf("delivery %+v, want one dead letter", d)
		}
	}
	dl := deadLetters(t, tr)
	if len(dl) != 6 || dl[0]["raw"] != "\x03hello" || dl[0]["queue"] != "task" ||
		!strings.Contains(dl[0]["reason"].(string), "not a doorbell") ||
		!strings.Contains(dl[2]["reason"].(string), "byte 0x00") || !strings.Contains(dl[3]["reason"].(string), "byte 0x05") {
		t.Fatalf("dead letters %v", dl)
	}

	// On the doorbell a ring is a ring; one naming no queue is not.
	sendRaw(t, dir, "task.doorbell", []byte("\x03task"))
	sendRaw(t, dir, "task.doorbell", []byte("\x03../etc"))
	bell, _ := tr.Queue("task.doorbell")
	rings, dead := 0, 0
	for {
		d, err := bell.Receive(false)
		if errors.Is(err, transit.ErrEmpty) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if d.Ring == "task" {
			rings++
		}
		dead += d.Dead
	}
	// Of the six sends above only the first rang: the others found the
	// queue holding a message its receiver had been rung for.
	if rings != 2 || dead != 1 {
		t.Fatalf("%d rings and %d dead letters on the doorbell, want 2 and 1", rings, dead)
	}
	// A process that has not registered the doorbell yet (a restarted
	// daemon finding rings sent while it was down) takes a ring on a
	// queue that has no doorbell of its own: a sender's real ring is
	// never dead-lettered.
	if err := tr.Send("task", map[string]any{"x": 1.0}); err != nil {
		t.Fatal(err)
	}
	bell2, err := open(t, dir).Queue("task.doorbell")
	if err != nil {
		t.Fatal(err)
	}
	if d, err := bell2.Receive(false); err != nil || d.Ring != "task" {
		t.Fatalf("ring seen by another process: %+v, %v", d, err)
	}
}

// A message the queue can never hold is refused at once, not after the
// full-queue wait; one larger than its capacity but spillable is
// spilled and delivered.
func TestOversizeRefusedAtOnce(t *testing.T) {
	t.Parallel()
	dir := testenv.TransitDir(t)
	tr := open(t, dir, func(o *transit.Options) { o.SendTimeout = 5 * time.Second })
	q, err := tr.Queue("small")
	if err != nil {
		t.Fatal(err)
	}
	if err := transit.SetCapacityForTest(q, 1000); err != nil {
		t.Skipf("cannot lower the queue's capacity: %v", err)
	}
	// A reopened handle reads the lowered capacity and spills what is
	// over it (the kernel's msgmax may be larger than a queue's room).
	q2, err := open(t, dir).Queue("small")
	if err != nil {
		t.Fatal(err)
	}
	big := map[string]any{"pad": strings.Repeat("y", 3000)}
	if err := q2.Send(big); err != nil {
		t.Fatalf("a message over the capacity should be spilled: %v", err)
	}
	got := receiveAll(t, q)
	if len(got) != 1 || got[0]["pad"] != big["pad"] {
		t.Fatalf("got %d messages", len(got))
	}
	// The stale handle still thinks it has 16 KiB: the kernel refuses,
	// and the send fails at once rather than wait 5s.
	t0 := time.Now()
	err = q.SendRaw([]byte(`{"pad":"` + strings.Repeat("z", 2000) + `"}`))
	if err == nil {
		// Spilled after all (msgmax below 2 KB?): nothing to show.
		t.Skip("message was spilled")
	}
	if !errors.Is(err, transit.ErrExceedsCapacity) || !strings.Contains(err.Error(), "larger than the queue can ever hold (2010 > capacity 1000)") {
		t.Fatalf("oversize: %v", err)
	}
	if d := time.Since(t0); d > time.Second {
		t.Fatalf("refused after %v, want at once", d)
	}
	// Even a spill reference does not fit a 16-byte queue.
	if err := transit.SetCapacityForTest(q, 16); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	err = q.Send(map[string]any{"a": 1.0})
	if !errors.Is(err, transit.ErrExceedsCapacity) || errors.Is(err, transit.ErrQueueFull) || time.Since(t0) > time.Second {
		t.Fatalf("tiny queue: %v after %v", err, time.Since(t0))
	}
	if files := testenv.SpillFiles(t, dir); len(files) != 0 {
		t.Fatalf("spill files left: %v", files)
	}
}

func TestExcerptIsBounded(t *testing.T) {
	t.Parallel()
	junk := strings.Repeat("é", 3<<20) // 6 MB, two bytes a character
	for _, v := range []any{junk, []byte(junk), map[string]any{"junk": junk}} {
		s := transit.Excerpt(v)
		if len(s) > transit.MaxLogged+64 || !strings.Contains(s, "bytes in all)") {
			t.Fatalf("excerpt of %T: %d bytes: %.80q", v, len(s), s)
		}
		if !strings.HasPrefix(s, "é") && !strings.HasPrefix(s, `{"junk":"é`) {
			t.Fatalf("excerpt of %T starts %.20q", v, s)
		}
	}
	if s := transit.Excerpt("\xffshort"); s != "\ufffdshort" {
		t.Fatalf("invalid UTF-8: %q", s)
	}
}
