package transit_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/transit"
)

func open(t *testing.T, dir string, opts ...func(*transit.Options)) *transit.Transit {
	t.Helper()
	o := transit.Options{Dir: dir}
	for _, f := range opts {
		f(&o)
	}
	tr, err := transit.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func receiveAll(t *testing.T, q *transit.Queue) []map[string]any {
	t.Helper()
	var out []map[string]any
	for {
		d, err := q.Receive(false)
		if errors.Is(err, transit.ErrEmpty) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d.Msgs...)
	}
}

func TestSendReceiveInOrderWithMeta(t *testing.T) {
	t.Parallel()
	dir := testenv.TransitDir(t)
	tr := open(t, dir)
	for i := range 20 {
		if err := tr.Send("q1", map[string]any{"i": i}); err != nil {
			t.Fatal(err)
		}
	}
	// Another process (here: another Transit on the dir) finds the queue
	// by name; the messages wait in the kernel meanwhile.
	q, err := open(t, dir).Queue("q1")
	if err != nil {
		t.Fatal(err)
	}
	got := receiveAll(t, q)
	if len(got) != 20 {
		t.Fatalf("received %d of 20", len(got))
	}
	for i, m := range got {
		if m["i"] != float64(i) {
			t.Fatalf("message %d is %v: order broken", i, m)
		}
		ts, _ := m[".ipc_transit_meta"].(map[string]any)["send_ts"].(float64)
		if time.Since(time.UnixMicro(int64(ts*1e6))) > time.Minute {
			t.Fatalf("send_ts %v is not the send time", ts)
		}
	}
}

func TestPermissions(t *testing.T) {
	t.Parallel()
	dir := testenv.TransitDir(t)
	tr := open(t, dir)
	if _, err := tr.Queue("perm"); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(dir)
	kf, _ := os.Stat(filepath.Join(dir, "perm"))
	if st.Mode().Perm() != 0o700 || kf.Mode().Perm() != 0o600 {
		t.Fatalf("dir %o, key file %o; want 0700 and 0600", st.Mode().Perm(), kf.Mode().Perm())
	}
	if mode := queueMode(t, dir, "perm"); mode != 0o600 {
		t.Fatalf("queue mode %o, want 0600", mode)
	}
}

// queueMode reads the queue's mode with ipcs, independently of our code.
func queueMode(t *testing.T, dir, name string) int {
	t.Helper()
	b, _ := os.ReadFile(filepath.Join(dir, name))
	var key int
	fmt.Sscan(string(b), &key)
	out, err := os.ReadFile("/proc/sysvipc/msg")
	if err != nil {
		t.Skip("no /proc/sysvipc/msg")
	}
	for _, line := range strings.Split(string(out), "\n")[1:] {
		var k, id, perms int
		if n, _ := fmt.Sscanf(line, "%d %d %o", &k, &id, &perms); n == 3 && k == key {
			return perms
		}
	}
	t.Fatalf("queue key %d not in /proc/sysvipc/msg", key)
	return 0
}

func TestInsecureDirRefused(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "open")
	os.Mkdir(dir, 0o755)
	os.Chmod(dir, 0o755)
	if _, err := transit.Open(transit.Options{Dir: dir}); !errors.Is(err, transit.ErrInsecureDir) {
		t.Fatalf("got %v, want ErrInsecureDir", err)
	}
	link := filepath.Join(t.TempDir(), "link")
	os.Symlink(t.TempDir(), link)
	if _, err := transit.Open(transit.Options{Dir: link}); !errors.Is(err, transit.ErrInsecureDir) {
		t.Fatalf("symlinked dir: got %v, want ErrInsecureDir", err)
	}
}

func TestBadNames(t *testing.T) {
	t.Parallel()
	tr := open(t, testenv.TransitDir(t))
	for _, n := range []string{"", "../x", "a/b", ".hidden", "-x", strings.Repeat("a", 200)} {
		if err := tr.Send(n, map[string]any{}); !errors.Is(err, transit.ErrBadName) {
			t.Errorf("%q: got %v, want ErrBadName", n, err)
		}
	}
}

func TestLargeMessageSpillsAndCleansUp(t *testing.T) {
	t.Parallel()
	dir := testenv.TransitDir(t)
	tr := open(t, dir)
	big := strings.Repeat("0123456789abcdef", 300*1024/16)
	msg := map[string]any{"big": big, "n": 1.5}
	if err := tr.Send("big", msg); err != nil {
		t.Fatal(err)
	}
	q, _ := tr.Queue("big")
	got := receiveAll(t, q)
	if len(got) != 1 || got[0]["big"] != big || got[0]["n"] != 1.5 {
		t.Fatalf("large message changed in transit")
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".spill", "big", "*"))
	if len(left) != 0 {
		t.Fatalf("spill files left behind: %v", left)
	}
}

// sendRaw queues text as a data message, as a foreign or hostile program
// could.
func sendRaw(t *testing.T, dir, name string, text []byte) {
	t.Helper()
	tr := open(t, dir)
	q, err := tr.Queue(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.SendRaw(text); err != nil {
		t.Fatal(err)
	}
}

func deadLetters(t *testing.T, tr *transit.Transit) []map[string]any {
	t.Helper()
	q, err := tr.Queue(transit.DeadLetterQueue)
	if err != nil {
		t.Fatal(err)
	}
	return receiveAll(t, q)
}

func TestForgedSpillReferencesAreRefused(t *testing.T) {
	t.Parallel()
	dir := testenv.TransitDir(t)
	tr := open(t, dir)
	spillDir := filepath.Join(dir, ".spill", "victim")
	os.MkdirAll(spillDir, 0o700)
	os.Chmod(filepath.Join(dir, ".spill"), 0o700)

	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte(`{"stolen":true}`), 0o600)
	// A symlink in the spill dir, with a valid-looking name, to the secret.
	linkName := strings.Repeat("a", 32)
	os.Symlink(secret, filepath.Join(spillDir, linkName))
	// A file with a valid name owned by someone else.
	otherName := strings.Repeat("b", 32)
	other := filepath.Join(spillDir, otherName)
	os.WriteFile(other, []byte(`{"other":true}`), 0o600)
	if err := os.Chown(other, 65534, 65534); err != nil {
		t.Skipf("cannot chown as this user: %v", err)
	}
	// A readable-by-others file.
	openName := strings.Repeat("c", 32)
	os.WriteFile(filepath.Join(spillDir, openName), []byte(`{"open":true}`), 0o644)
	os.Chmod(filepath.Join(spillDir, openName), 0o644)

	for _, ref := range []string{secret, "../../victim-elsewhere", linkName, otherName, openName} {
		sendRaw(t, dir, "victim", append([]byte{0x02}, ref...))
	}
	q, _ := tr.Queue("victim")
	if got := receiveAll(t, q); len(got) != 0 {
		t.Fatalf("forged references delivered: %v", got)
	}
	dl := deadLetters(t, tr)
	if len(dl) != 5 {
		t.Fatalf("%d dead letters, want 5: %v", len(dl), dl)
	}
	for _, m := range dl {
		if !strings.HasPrefix(m["reason"].(string), "refused:") || m["queue"] != "victim" {
			t.Fatalf("dead letter %v", m)
		}
	}
	// Nothing was deleted.
	for _, p := range []string{secret, filepath.Join(spillDir, linkName), other, filepath.Join(spillDir, openName)} {
		if _, err := os.Lstat(p); err != nil {
			t.Fatalf("%s was touched: %v", p, err)
		}
	}
	if b, _ := os.ReadFile(secret); string(b) != `{"stolen":true}` {
		t.Fatal("secret changed")
	}
}

func TestUndecodableGoesToDeadLetter(t *testing.T) {
	t.Parallel()
	dir := testenv.TransitDir(t)
	tr := open(t, dir)
	sendRaw(t, dir, "in", []byte(`{"broken":`))
	sendRaw(t, dir, "in", []byte("\x7fgarbage"))
	sendRaw(t, dir, "in", []byte("\x01\x05{}")) // batch with a length past the end
	tr.Send("in", map[string]any{"ok": true})
	q, _ := tr.Queue("in")
	got := receiveAll(t, q)
	if len(got) != 1 || got[0]["ok"] != true {
		t.Fatalf("good message lost or bad ones delivered: %v", got)
	}
	dl := deadLetters(t, tr)
	if len(dl) != 3 || dl[0]["raw"] != `{"broken":` || !strings.Contains(dl[0]["reason"].(string), "invalid JSON") {
		t.Fatalf("dead letters %v", dl)
	}
}

func TestFullQueueWaitsThenFails(t *testing.T) {
	t.Parallel()
	const wait = 300 * time.Millisecond
	tr := open(t, testenv.TransitDir(t), func(o *transit.Options) { o.SendTimeout = wait })
	q, _ := tr.Queue("full")
	filler := map[string]any{"pad": strings.Repeat("x", 1000)}
	var err error
	sent := 0
	for sent = 0; sent < 1000; sent++ {
		t0 := time.Now()
		if err = q.Send(filler); err != nil {
			if el := time.Since(t0); el < wait {
				t.Fatalf("gave up after %v, before the bounded wait of %v", el, wait)
			}
			break
		}
	}
	if !errors.Is(err, transit.ErrQueueFull) || !strings.Contains(err.Error(), "full") {
		t.Fatalf("after %d sends: %v, want ErrQueueFull", sent, err)
	}
	st, _ := q.Stats()
	if st.Messages != uint64(sent) || st.Fill < 0.9 {
		t.Fatalf("stats %+v after %d sends", st, sent)
	}
	// The wait is backpressure: room made during it lets the send through.
	go func() {
		time.Sleep(wait / 3)
		q.Receive(false)
	}()
	if err := q.Send(filler); err != nil {
		t.Fatalf("send while room is made: %v", err)
	}
}

func TestBatchIsOrderedAndPacked(t *testing.T) {
	t.Parallel()
	tr := open(t, testenv.TransitDir(t), func(o *transit.Options) { o.SendTimeout = 10 * time.Second })
	q, _ := tr.Queue("batch")
	msgs := make([]map[string]any, 60)
	for i := range msgs {
		msgs[i] = map[string]any{"i": i}
	}
	msgs[30] = map[string]any{"i": 30, "big": strings.Repeat("y", 20000)} // spills alone
	done := make(chan []map[string]any)
	go func() { // drain concurrently: 60 messages exceed the queue's bytes
		var got []map[string]any
		for len(got) < 60 {
			d, err := q.Receive(true)
			if err != nil {
				break
			}
			got = append(got, d.Msgs...)
		}
		done <- got
	}()
	if err := q.SendBatch(msgs); err != nil {
		t.Fatal(err)
	}
	got := <-done
	for i, m := range got {
		if m["i"] != float64(i) {
			t.Fatalf("batch order broken at %d: %v", i, m["i"])
		}
	}
	if len(got) != 60 || len(got[30]["big"].(string)) != 20000 {
		t.Fatalf("got %d messages", len(got))
	}
}

func TestDoorbellAndWake(t *testing.T) {
	t.Parallel()
	dir := testenv.TransitDir(t)
	rx := open(t, dir)
	if err := rx.SetDoorbell("work", "bell"); err != nil {
		t.Fatal(err)
	}
	bell, _ := rx.Queue("bell")
	got := make(chan transit.Delivery, 2)
	go func() {
		for range 2 {
			d, _ := bell.Receive(true)
			got <- d
		}
	}()
	if err := open(t, dir).Send("work", map[string]any{"x": 1}); err != nil {
		t.Fatal(err)
	}
	if d := <-got; d.Ring != "work" {
		t.Fatalf("doorbell got %+v, want a ring for work", d)
	}
	bell.Wake()
	if d := <-got; !d.Wake {
		t.Fatalf("got %+v, want a wake", d)
	}
	rx.ClearDoorbell("work")
}

// Only the send that makes a queue non-empty rings its doorbell, and one
// that had to wait for room: its receiver made the room and may have
// looked for more before the message was in.
func TestASendThatWaitedForRoomRings(t *testing.T) {
	t.Parallel()
	dir := testenv.TransitDir(t)
	rx := open(t, dir)
	if err := rx.SetDoorbell("work", "bell"); err != nil {
		t.Fatal(err)
	}
	defer rx.ClearDoorbell("work")
	bell, _ := rx.Queue("bell")
	work, _ := rx.Queue("work")
	q, _ := open(t, dir, func(o *transit.Options) { o.SendTimeout = 10 * time.Second }).Queue("work")
	filler := fillUp(t, q)
	if d, err := bell.Receive(false); err != nil || d.Ring != "work" {
		t.Fatalf("first send: doorbell got %+v (%v), want a ring", d, err)
	}
	if d, err := bell.Receive(false); !errors.Is(err, transit.ErrEmpty) {
		t.Fatalf("sends into a non-empty queue rang: %+v (%v)", d, err)
	}
	sent := make(chan error, 1)
	go func() { sent <- q.Send(filler) }()
	testenv.WaitFor(t, 10*time.Second, "the sender waiting inside msgsnd", func() bool {
		return inMsgsnd(t, transit.KernelIDForTest(q))
	})
	if _, err := work.Receive(false); err != nil {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if d, err := bell.Receive(false); err != nil || d.Ring != "work" {
		t.Fatalf("a send that waited for room: doorbell got %+v (%v), want a ring", d, err)
	}
}

func TestWakeJumpsTheQueue(t *testing.T) {
	t.Parallel()
	tr := open(t, testenv.TransitDir(t))
	q, _ := tr.Queue("w")
	q.Send(map[string]any{"a": 1})
	q.Wake()
	if d, _ := q.Receive(true); !d.Wake {
		t.Fatalf("first waiting receive %+v, want the wake ahead of data", d)
	}
	if d, _ := q.Receive(false); len(d.Msgs) != 1 {
		t.Fatalf("data after the wake: %+v", d)
	}
}

func TestRemovedQueueIsRecreated(t *testing.T) {
	t.Parallel()
	dir := testenv.TransitDir(t)
	tr := open(t, dir)
	q, _ := tr.Queue("gone")
	removeKernelQueue(t, dir, "gone")
	if err := q.Send(map[string]any{"after": true}); err != nil {
		t.Fatalf("send after the kernel queue vanished: %v", err)
	}
	if got := receiveAll(t, q); len(got) != 1 {
		t.Fatalf("got %v", got)
	}
}

func removeKernelQueue(t *testing.T, dir, name string) {
	t.Helper()
	tr := open(t, dir)
	q, _ := tr.Queue(name)
	if err := transit.RemoveKernelQueueForTest(q); err != nil {
		t.Fatal(err)
	}
}

func TestQueueStatsAndNames(t *testing.T) {
	t.Parallel()
	tr := open(t, testenv.TransitDir(t))
	tr.Send("b", map[string]any{"x": 1})
	tr.Send("a", map[string]any{})
	names, _ := tr.Names()
	if !reflect.DeepEqual(names, []string{"a", "b"}) {
		t.Fatalf("names %v", names)
	}
	q, _ := tr.Queue("b")
	st, err := q.Stats()
	if err != nil || st.Messages != 1 || st.Bytes == 0 || st.Capacity == 0 || st.Fill <= 0 {
		t.Fatalf("stats %+v %v", st, err)
	}
}

func TestPeekLeavesMessagesUntilDropped(t *testing.T) {
	t.Parallel()
	dir := testenv.TransitDir(t)
	tr := open(t, dir)
	q, err := tr.Queue("P")
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", 20000) // spilled
	for _, m := range []map[string]any{{"n": 1.0}, {"n": 2.0, "big": big}, {"n": 3.0}} {
		if err := tr.Send("P", m); err != nil {
			t.Fatal(err)
		}
	}
	var peeked []transit.Delivery
	for i := 0; ; i++ {
		d, err := q.Peek(i)
		if errors.Is(err, transit.ErrEmpty) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(d.Msgs) != 1 || d.Msgs[0]["n"] != float64(i+1) {
			t.Fatalf("peek %d: %v", i, d.Msgs)
		}
		peeked = append(peeked, d)
	}
	if len(peeked) != 3 || peeked[1].Msgs[0]["big"] != big {
		t.Fatalf("peeked %d", len(peeked))
	}
	// Peeking again (a receiver that died and came back) sees the same.
	if d, err := q.Peek(0); err != nil || d.Msgs[0]["n"] != 1.0 {
		t.Fatalf("peek again: %v %v", d.Msgs, err)
	}
	if len(testenv.SpillFiles(t, dir)) != 1 {
		t.Fatal("the spill file of a peeked message is gone")
	}
	for _, d := range peeked[:2] {
		if err := q.Drop(d); err != nil {
			t.Fatal(err)
		}
	}
	if files := testenv.SpillFiles(t, dir); len(files) != 0 {
		t.Fatalf("spill files left after the drop: %v", files)
	}
	if got := receiveAll(t, q); len(got) != 1 || got[0]["n"] != 3.0 {
		t.Fatalf("left in the queue: %v", got)
	}
}

// fillUp sends q messages of about 1 KB until the next would not fit,
// and returns that message.
func fillUp(t *testing.T, q *transit.Queue) map[string]any {
	t.Helper()
	filler := map[string]any{"pad": strings.Repeat("x", 1000)}
	for {
		st, _ := q.Stats()
		if st.Capacity-st.Bytes < 1100 {
			return filler
		}
		if err := q.Send(filler); err != nil {
			t.Fatal(err)
		}
	}
}

// A sender waiting for room is woken by the kernel when room is made, not
// at its next poll, and a Batch packs many messages into one queue
// message.
func TestFullQueueWakesItsSender(t *testing.T) {
	t.Parallel()
	tr := open(t, testenv.TransitDir(t), func(o *transit.Options) { o.SendTimeout = 10 * time.Second })
	q, _ := tr.Queue("wake")
	filler := fillUp(t, q)
	sent := make(chan time.Time, 1)
	go func() {
		if err := q.Send(filler); err != nil {
			t.Error(err)
		}
		sent <- time.Now()
	}()
	// The sender waits in the kernel, inside msgsnd on this queue, not in
	// a sleep between tries. Only the kernel wakes it before its deadline
	// (10 s): how soon it then goes on is the scheduler's business, which
	// on a loaded machine may take a good part of a second.
	testenv.WaitFor(t, 10*time.Second, "the sender waiting inside msgsnd", func() bool {
		return inMsgsnd(t, transit.KernelIDForTest(q))
	})
	made := time.Now()
	if _, err := q.Receive(false); err != nil {
		t.Fatal(err)
	}
	select {
	case at := <-sent:
		if took := at.Sub(made); took > 3*time.Second {
			t.Fatalf("the sender went on %v after room was made", took)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the sender did not go on within 5s of room being made")
	}

	b, _ := tr.Queue("batched")
	batch := b.NewBatch()
	for i := range 100 {
		if err := batch.Add(map[string]any{"i": float64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if st, _ := b.Stats(); st.Messages != 0 || batch.Len() != 100 {
		t.Fatalf("before Flush: %d queued, %d in the batch", st.Messages, batch.Len())
	}
	if err := batch.Flush(); err != nil {
		t.Fatal(err)
	}
	d, err := b.Receive(false)
	if err != nil || len(d.Msgs) != 100 || d.Msgs[99]["i"] != 99.0 || batch.Flushed() != 100 {
		t.Fatalf("%d messages in the first queue message (%v), want all 100 in order", len(d.Msgs), err)
	}
}

// A batched message carries its send_ts whether or not it had metadata.
func TestBatchStampsSendTs(t *testing.T) {
	t.Parallel()
	tr := open(t, testenv.TransitDir(t))
	q, _ := tr.Queue("stamped")
	b := q.NewBatch()
	for _, m := range []map[string]any{{}, {"a": "x"}, {"a": 1.0, ".ipc_transit_meta": map[string]any{"hops": 2.0}}} {
		if err := b.Add(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	d, err := q.Receive(false)
	if err != nil || len(d.Msgs) != 3 {
		t.Fatalf("%v %v", d.Msgs, err)
	}
	for i, m := range d.Msgs {
		meta, _ := m[".ipc_transit_meta"].(map[string]any)
		if ts, _ := meta["send_ts"].(float64); ts < float64(time.Now().Add(-time.Minute).Unix()) || len(m) != []int{1, 2, 2}[i] {
			t.Fatalf("message %d: %v", i, m)
		}
	}
	if d.Msgs[2][".ipc_transit_meta"].(map[string]any)["hops"] != 2.0 {
		t.Fatalf("metadata lost: %v", d.Msgs[2])
	}
}

// inMsgsnd reports whether a thread of this process is blocked in msgsnd
// on the kernel queue id (Linux: /proc/self/task/TID/syscall names the
// system call a blocked thread is in, then its arguments).
func inMsgsnd(t *testing.T, id int) bool {
	t.Helper()
	files, err := filepath.Glob("/proc/self/task/*/syscall")
	if err != nil || len(files) == 0 {
		t.Fatalf("no /proc/self/task/*/syscall: %v", err)
	}
	want := fmt.Sprintf("%d %#x ", unix.SYS_MSGSND, id)
	for _, f := range files {
		b, _ := os.ReadFile(f) // a thread may have ended meanwhile
		if strings.HasPrefix(string(b), want) {
			return true
		}
	}
	return false
}
