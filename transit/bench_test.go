package transit

import (
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

	"golang.org/x/sys/unix"
)

// The cross-process benchmarks run their receiving side in a second
// process: this test binary, started again with MM_TRANSIT_PEER set.

func TestMain(m *testing.M) {
	if mode := os.Getenv("MM_TRANSIT_PEER"); mode != "" {
		if err := runPeer(mode, strings.Fields(os.Getenv("MM_TRANSIT_PEER_ARGS"))); err != nil {
			fmt.Fprintln(os.Stderr, "peer:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// benchMessage is the small message every path carries.
func benchMessage(i int) map[string]any {
	return map[string]any{"ct": float64(i), "outstr": "howdy", "source": "Example1"}
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

func runPeer(mode string, a []string) error {
	switch mode {
	case "bare-sink", "bare-echo": // args: in-qid out-qid n
		in, out, n := atoi(a[0]), atoi(a[1]), atoi(a[2])
		buf := make([]byte, typeSize+8192)
		for i := 0; i < n; i++ {
			k, err := msgrcv(in, buf, 0, 0)
			if err != nil {
				return err
			}
			var m map[string]any
			if err := json.Unmarshal(buf[typeSize:typeSize+k], &m); err != nil {
				return err
			}
			if mode == "bare-echo" {
				b, _ := json.Marshal(m)
				if err := msgsnd(out, append(header(nil), b...), 0); err != nil {
					return err
				}
			}
		}
		if mode == "bare-sink" {
			return msgsnd(out, append(header(nil), "{}"...), 0)
		}
		return nil
	case "foreign-queue": // args: key owner: create a queue, give it to owner
		id, err := msgget(int32(atoi(a[0])), unix.IPC_CREAT|unix.IPC_EXCL|0o600)
		if err != nil {
			return err
		}
		ds, err := msgstat(id)
		if err != nil {
			return err
		}
		ds.Perm.Uid = uint32(atoi(a[1]))
		_, _, e := unix.Syscall(unix.SYS_MSGCTL, uintptr(id), uintptr(unix.IPC_SET), uintptr(unsafe.Pointer(&ds)))
		if e != 0 {
			return e
		}
		return nil
	case "mm-sink", "mm-echo": // args: dir in out n
		tr, err := Open(Options{Dir: a[0]})
		if err != nil {
			return err
		}
		in, err := tr.Queue(a[1])
		if err != nil {
			return err
		}
		out, err := tr.Queue(a[2])
		if err != nil {
			return err
		}
		for got, n := 0, atoi(a[3]); got < n; {
			d, err := in.Receive(true)
			if err != nil {
				return err
			}
			got += len(d.Msgs)
			if mode == "mm-echo" {
				for _, m := range d.Msgs {
					if err := out.Send(m); err != nil {
						return err
					}
				}
			}
		}
		if mode == "mm-sink" {
			return out.Send(map[string]any{"done": true})
		}
		return nil
	}
	return fmt.Errorf("unknown peer mode %q", mode)
}

func startPeer(b *testing.B, mode string, args ...any) *exec.Cmd {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "MM_TRANSIT_PEER="+mode, "MM_TRANSIT_PEER_ARGS="+strings.TrimSpace(fmt.Sprintln(args...)))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// privateQueues makes n IPC_PRIVATE queues for the bare loop, removed at
// the end.
func privateQueues(b *testing.B, n int) []int {
	ids := make([]int, n)
	for i := range ids {
		id, err := msgget(0, unix.IPC_CREAT|0o600)
		if err != nil {
			b.Fatal(err)
		}
		ids[i] = id
		b.Cleanup(func() { msgrmid(id) })
	}
	return ids
}

// benchTransit is a transit dir whose queues are removed after the run.
func benchTransit(b *testing.B) (string, *Transit) {
	dir := filepath.Join(b.TempDir(), "transit")
	tr, err := Open(Options{Dir: dir, SendTimeout: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tr.RemoveAll() })
	return dir, tr
}

// bareThroughput: encoding/json and blocking msgsnd in this process,
// msgrcv and encoding/json in the peer.
func bareThroughput(b *testing.B, n int) time.Duration {
	q := privateQueues(b, 2)
	peer := startPeer(b, "bare-sink", q[0], q[1], n)
	buf := make([]byte, typeSize+8192)
	t0 := time.Now()
	for i := range n {
		enc, _ := json.Marshal(benchMessage(i))
		if err := msgsnd(q[0], append(header(buf[:0]), enc...), 0); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := msgrcv(q[1], buf, 0, 0); err != nil {
		b.Fatal(err)
	}
	el := time.Since(t0)
	peer.Wait()
	return el
}

func ourThroughput(b *testing.B, n, batch int) time.Duration {
	dir, tr := benchTransit(b)
	in, _ := tr.Queue("in")
	ack, _ := tr.Queue("ack")
	peer := startPeer(b, "mm-sink", dir, "in", "ack", n)
	msgs := make([]map[string]any, 0, batch)
	t0 := time.Now()
	for i := range n {
		if batch <= 1 {
			if err := in.Send(benchMessage(i)); err != nil {
				b.Fatal(err)
			}
			continue
		}
		msgs = append(msgs, benchMessage(i))
		if len(msgs) == batch || i == n-1 {
			if err := in.SendBatch(msgs); err != nil {
				b.Fatal(err)
			}
			msgs = msgs[:0]
		}
	}
	if _, err := ack.Receive(true); err != nil {
		b.Fatal(err)
	}
	el := time.Since(t0)
	peer.Wait()
	return el
}

// BenchmarkCrossProcess sends b.N small JSON messages to another process:
// a bare msgsnd/msgrcv loop with encoding/json, then transit one by one,
// then transit in batches of 64, all in the same run.
func BenchmarkCrossProcess(b *testing.B) {
	n := max(b.N, 1000)
	bare := bareThroughput(b, n)
	ours := ourThroughput(b, n, 1)
	batched := ourThroughput(b, n, 64)
	rate := func(d time.Duration) float64 { return float64(n) / d.Seconds() }
	b.ReportMetric(float64(ours.Nanoseconds())/float64(n), "ns/op")
	b.ReportMetric(rate(bare), "bare-msgs/s")
	b.ReportMetric(rate(ours), "mm-msgs/s")
	b.ReportMetric(rate(batched), "mm-batch64-msgs/s")
	b.ReportMetric(rate(ours)/rate(bare), "mm/bare")
	b.ReportMetric(rate(batched)/rate(bare), "batch/bare")
}

// BenchmarkRoundTrip bounces one message to another process and back:
// bare loop and transit, same run. Reported in microseconds per round trip.
func BenchmarkRoundTrip(b *testing.B) {
	n := max(b.N, 1000)
	// bare
	q := privateQueues(b, 2)
	peer := startPeer(b, "bare-echo", q[0], q[1], n)
	buf := make([]byte, typeSize+8192)
	t0 := time.Now()
	for i := range n {
		enc, _ := json.Marshal(benchMessage(i))
		if err := msgsnd(q[0], append(header(buf[:0]), enc...), 0); err != nil {
			b.Fatal(err)
		}
		k, err := msgrcv(q[1], buf, 0, 0)
		if err != nil {
			b.Fatal(err)
		}
		var m map[string]any
		json.Unmarshal(buf[typeSize:typeSize+k], &m)
	}
	bare := time.Since(t0)
	peer.Wait()

	dir, tr := benchTransit(b)
	ping, _ := tr.Queue("ping")
	pong, _ := tr.Queue("pong")
	peer = startPeer(b, "mm-echo", dir, "ping", "pong", n)
	t0 = time.Now()
	for i := range n {
		if err := ping.Send(benchMessage(i)); err != nil {
			b.Fatal(err)
		}
		if _, err := pong.Receive(true); err != nil {
			b.Fatal(err)
		}
	}
	ours := time.Since(t0)
	peer.Wait()
	us := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) }
	b.ReportMetric(float64(ours.Nanoseconds())/float64(n), "ns/op")
	b.ReportMetric(us(bare), "bare-rtt-us")
	b.ReportMetric(us(ours), "mm-rtt-us")
}
