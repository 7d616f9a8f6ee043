package transit

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A queue someone else created under our key and then handed to us is
// refused: its creator can still read it.
func TestQueueCreatedByAnotherUserIsRefused(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a process as another user")
	}
	dir := filepath.Join(t.TempDir(), "transit")
	tr, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	key, id, err := tr.create() // find a free key, then free it for the attacker
	if err != nil {
		t.Fatal(err)
	}
	msgrmid(id)
	// The attacker runs this test binary from a place it can read.
	binDir, err := os.MkdirTemp("", "mm-attacker-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(binDir) })
	os.Chmod(binDir, 0o755)
	self, _ := os.ReadFile(os.Args[0])
	bin := filepath.Join(binDir, "peer")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Dir = binDir
	cmd.Env = append(os.Environ(), "MM_TRANSIT_PEER=foreign-queue",
		"MM_TRANSIT_PEER_ARGS="+strconv.Itoa(int(key))+" "+strconv.Itoa(os.Geteuid()))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("attacker process: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if id, err := msgget(key, 0); err == nil {
			msgrmid(id)
		}
	})
	os.WriteFile(filepath.Join(dir, "hijacked"), []byte(strconv.Itoa(int(key))+"\n"), 0o600)
	if _, err := tr.Queue("hijacked"); !errors.Is(err, ErrForeignQueue) || !strings.Contains(err.Error(), "creator 65534") {
		t.Fatalf("got %v, want ErrForeignQueue naming the creator", err)
	}
}

func TestRemovedQueueStaysRemoved(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "transit")
	tr, _ := Open(Options{Dir: dir})
	other, _ := Open(Options{Dir: dir})
	t.Cleanup(func() { tr.RemoveAll() })
	q, err := tr.Queue("gone")
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Remove("gone"); err != nil {
		t.Fatal(err)
	}
	if err := q.Send(map[string]any{}); !errors.Is(err, ErrNoQueue) {
		t.Fatalf("send on a removed queue: %v, want ErrNoQueue", err)
	}
	if _, err := q.Receive(false); !errors.Is(err, ErrNoQueue) {
		t.Fatalf("receive on a removed queue: %v, want ErrNoQueue", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "gone")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the removed queue's name came back")
	}
}

func TestDeadLettersGoToAFileWhenTheQueueIsFull(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "transit")
	tr, _ := Open(Options{Dir: dir, SendTimeout: 10 * time.Millisecond})
	t.Cleanup(func() { tr.RemoveAll() })
	dlq, _ := tr.Queue(DeadLetterQueue)
	for dlq.Send(map[string]any{"pad": strings.Repeat("x", 4000)}) == nil {
	}
	q, _ := tr.Queue("in")
	if err := q.SendRaw([]byte(`{"broken":`)); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	d, err := q.Receive(false)
	if err != nil || d.Dead != 1 {
		t.Fatalf("receive: %+v %v", d, err)
	}
	if el := time.Since(t0); el > time.Second {
		t.Fatalf("a full dead-letter queue stalled the receiver for %v", el)
	}
	b, err := os.ReadFile(filepath.Join(dir, DeadLetterFile))
	if err != nil || !strings.Contains(string(b), `"raw":"{\"broken\":"`) || !strings.Contains(string(b), `"queue":"in"`) {
		t.Fatalf("dead-letter file: %s %v", b, err)
	}
}

func TestKeyFileIsPutBack(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "transit")
	tr, _ := Open(Options{Dir: dir})
	t.Cleanup(func() { tr.RemoveAll() })
	q, _ := tr.Queue("kept")
	want, _ := os.ReadFile(filepath.Join(dir, "kept"))
	os.Remove(filepath.Join(dir, "kept"))
	if err := q.EnsureName(); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "kept"))
	if string(got) != string(want) {
		t.Fatalf("key file %q, want %q", got, want)
	}
}
