package multimodule

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/multimodule/multimodule/runtime/external"

	"golang.org/x/sys/unix"

	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/runtime"
	"github.com/multimodule/multimodule/schema"
	"github.com/multimodule/multimodule/transit"
)

// The bare baseline's receiving side runs in a second process: this test
// binary started again with MM_BARE_PEER set.
func TestMain(m *testing.M) {
	if os.Getenv("MM_IDLE") != "" { // an idle Go process, for the sampling benchmark
		select {}
	}
	if args := os.Getenv("MM_BARE_PEER"); args != "" {
		if err := bareSink(strings.Fields(args)); err != nil {
			fmt.Fprintln(os.Stderr, "bare peer:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "multimodule-test-bins-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	builds.dir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// The bare loop's system calls retry EINTR, as ours do: Go's runtime
// signals its threads (preemption), which interrupts a blocked msgsnd.
func sysMsgsnd(id int, buf []byte) error {
	for {
		_, _, e := unix.Syscall6(unix.SYS_MSGSND, uintptr(id), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)-8), 0, 0, 0)
		switch e {
		case 0:
			return nil
		case unix.EINTR:
			continue
		}
		return e
	}
}

func sysMsgrcv(id int, buf []byte) (int, error) {
	for {
		n, _, e := unix.Syscall6(unix.SYS_MSGRCV, uintptr(id), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)-8), 0, 0, 0)
		switch e {
		case 0:
			return int(n), nil
		case unix.EINTR:
			continue
		}
		return 0, e
	}
}

// bareSink says it is ready on the ack queue, receives n JSON messages
// with msgrcv and encoding/json, then answers on the ack queue again.
func bareSink(a []string) error {
	in, _ := strconv.Atoi(a[0])
	ack, _ := strconv.Atoi(a[1])
	n, _ := strconv.Atoi(a[2])
	buf := make([]byte, 8+8192)
	binary.NativeEndian.PutUint64(buf, 1)
	if err := sysMsgsnd(ack, append(buf[:8], "{}"...)); err != nil {
		return err
	}
	for range n {
		k, err := sysMsgrcv(in, buf)
		if err != nil {
			return err
		}
		var m map[string]any
		if err := json.Unmarshal(buf[8:8+k], &m); err != nil {
			return err
		}
	}
	binary.NativeEndian.PutUint64(buf, 1)
	return sysMsgsnd(ack, append(buf[:8], "{}"...))
}

// blaster sends n messages to the Absorber, which reports when it has
// counted upto.
type blaster struct{ n, upto int }

func (s blaster) Message(ctx Context, _ Message) error {
	for i := range s.n {
		if err := ctx.Send("Absorber", Message{"ct": float64(i), "outstr": "howdy", "n": float64(s.upto)}); err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkSendToExternalTask: a task in this process sends small messages
// to an external task's process (Send -> transit -> its queue -> its
// task), against a bare msgsnd/msgrcv loop with encoding/json between two
// processes, in the same run. Both receivers are running before the clock
// starts: this is the rate of sending, not of starting a process (the
// external's start is BenchmarkExternalSpawnToFirstMessage). At least
// 100,000 messages, so that a run lasts about half a second a side.
func BenchmarkSendToExternalTask(b *testing.B) {
	n := max(b.N, 100000)
	// Bare.
	var q [2]int
	for i := range q {
		id, _, e := unix.Syscall(unix.SYS_MSGGET, 0, unix.IPC_CREAT|0o600, 0)
		if e != 0 {
			b.Fatal(e)
		}
		q[i] = int(id)
		defer unix.Syscall(unix.SYS_MSGCTL, id, unix.IPC_RMID, 0)
	}
	peer := exec.Command(os.Args[0], "-test.run=^$")
	peer.Env = append(os.Environ(), fmt.Sprintf("MM_BARE_PEER=%d %d %d", q[0], q[1], n))
	peer.Stderr = os.Stderr
	if err := peer.Start(); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 8+8192)
	if _, err := sysMsgrcv(q[1], buf); err != nil { // the peer is ready
		b.Fatal(err)
	}
	t0 := time.Now()
	for i := range n {
		enc, _ := json.Marshal(map[string]any{"ct": float64(i), "outstr": "howdy", "n": float64(n)})
		binary.NativeEndian.PutUint64(buf, 1)
		if err := sysMsgsnd(q[0], append(buf[:8], enc...)); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := sysMsgrcv(q[1], buf); err != nil {
		b.Fatal(err)
	}
	bare := time.Since(t0)
	peer.Wait()

	// Ours.
	bin := buildExtprog(b)
	state := b.TempDir()
	dir := testenv.TransitDir(b)
	tr, _ := transit.Open(transit.Options{Dir: dir, SendTimeout: time.Minute})
	done, _ := tr.Queue("Done")
	os.MkdirAll(external.Dir(state), 0o700)
	raw, _ := json.Marshal(external.Spec{Task: external.Named("Absorber", schema.TaskSpec{Kind: "Absorber", Hash: "h"})})
	os.WriteFile(external.SpecPath(state, "Absorber"), raw, 0o600)
	ext := exec.Command(bin, "-m", "Absorber", "-s", state, "-T", dir, "-p", "acme", "-o", "log:"+filepath.Join(state, "log"))
	if err := ext.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { ext.Process.Kill(); ext.Wait() }()
	host, err := runtime.NewHost(runtime.Options{StateDir: b.TempDir(), OOB: "debug:2", Remote: tr})
	if err != nil {
		b.Fatal(err)
	}
	defer host.Shutdown(b.Context())
	if err := host.Start(runtime.TaskSpec{Name: "Blaster", New: func() Task { return blaster{n, n + 1} }}); err != nil {
		b.Fatal(err)
	}
	// The Absorber is running once it has counted a first message.
	if err := tr.Send("Absorber", Message{"n": float64(1)}); err != nil {
		b.Fatal(err)
	}
	waitReport(b, &reports{q: done})
	t0 = time.Now()
	host.Send("Blaster", Message{})
	waitReport(b, &reports{q: done})
	ours := time.Since(t0)
	rate := func(d time.Duration) float64 { return float64(n) / d.Seconds() }
	b.ReportMetric(rate(bare), "bare-msgs/s")
	b.ReportMetric(rate(ours), "mm-msgs/s")
	b.ReportMetric(rate(ours)/rate(bare), "mm/bare")
	b.ReportMetric(0, "ns/op")
}
