package multimodule

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/transit"
)

// badExecConfig has four Exec handlers that misbehave, each its own way,
// and a Scheduler heartbeat to the queue Beats that must not notice. The
// marker in every program's command line lets the test kill what is left.
const badExecConfig = `
_backoff: {initial: 0.05, max: 0.4}
tasks: Garbage: {kind: "Exec", config: {command: "/bin/sh", args: ["-c", "while read -r l; do echo 'this is not JSON'; done", "MARKER"], backoff: _backoff}}
tasks: NoAck: {kind: "Exec", config: {command: "/bin/sh", args: ["-c", "while read -r l; do :; done", "MARKER"], ack_timeout: 0.3, backoff: _backoff}}
tasks: Exits: {kind: "Exec", config: {command: "/bin/sh", args: ["-c", "exit 3", "MARKER"], backoff: _backoff}, restart: {initial: 0.05, max: 0.4}}
tasks: Flood: {kind: "Exec", config: {command: "/bin/sh", args: ["-c", "read -r s; read -r m; head -c 100000000 /dev/zero | tr '\\0' x; sleep 60", "MARKER"], backoff: _backoff}}
tasks: Heartbeat: {kind: "Scheduler", config: schedules: [{name: "beat", every: 0.1, to: "Beats"}]}
`

// TestExecBadInputOtherTasksKeepRunning checks issue 16's bad-input rule
// on the stock daemon: a handler that prints garbage, never acks, exits
// at once or writes 100 MB without a newline gets a clear error on the
// error channel and is started again after a backoff, again and again,
// while the heartbeat of another task in the same daemon keeps coming.
func TestExecBadInputOtherTasksKeepRunning(t *testing.T) {
	t.Parallel()
	marker := "badexec-" + strings.ReplaceAll(t.TempDir(), "/", "_")
	cfg := testenv.WriteFiles(t, map[string]string{"a.cue": strings.ReplaceAll(badExecConfig, "MARKER", marker)})
	tr, err := transit.Open(transit.Options{Dir: testenv.TransitDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	errs, err := tr.Queue("Errors")
	if err != nil {
		t.Fatal(err)
	}
	beats, err := tr.Queue("Beats")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killByStateDir(marker) }) // the handlers, whatever happened
	d := startProc(t, buildCmd(t, "./cmd/multimodule"), "-c", cfg, "-s", t.TempDir(), "-T", tr.Dir(), "-o", "error:Errors")

	var records []map[string]any
	var beatTimes []time.Time
	drain := func() {
		for q, into := range map[*transit.Queue]func(map[string]any){
			errs:  func(m map[string]any) { records = append(records, m) },
			beats: func(map[string]any) { beatTimes = append(beatTimes, time.Now()) },
		} {
			for {
				got, err := q.Receive(false)
				if err != nil || len(got.Msgs) == 0 {
					break
				}
				for _, m := range got.Msgs {
					into(m)
				}
			}
		}
	}
	testenv.WaitFor(t, 20*time.Second, "the first heartbeat", func() bool { drain(); return len(beatTimes) > 0 })
	for _, task := range []string{"Garbage", "NoAck", "Exits", "Flood"} {
		if err := tr.Send(task, map[string]any{"n": 1.0}); err != nil {
			t.Fatal(err)
		}
	}

	// Each handler's failure is named on the error channel, and it is
	// restarted after a backoff more than once (failures_in_a_row grows).
	want := map[string]string{
		"Garbage": "not a protocol message: this is not JSON",
		"NoAck":   "did not acknowledge the message in time",
		"Exits":   "program exited: exit status 3",
		"Flood":   "stdout line longer than max_line",
	}
	seen := func(task string) (clear bool, again bool) {
		for _, r := range records {
			if r["task"] != task {
				continue
			}
			text := fmt.Sprint(r["msg"], " ", r["error"])
			if strings.Contains(text, want[task]) && r["backoff"] != nil {
				clear = true
				if n, _ := r["failures_in_a_row"].(float64); n >= 2 {
					again = true
				}
			}
		}
		return clear, again
	}
	testenv.WaitFor(t, 60*time.Second, "an error with backoff from each bad handler, repeated", func() bool {
		drain()
		for task := range want {
			if clear, again := seen(task); !clear || !again {
				return false
			}
		}
		return true
	})

	// The heartbeat went on all along and still does.
	n := len(beatTimes)
	testenv.WaitFor(t, 20*time.Second, "more heartbeats", func() bool { drain(); return len(beatTimes) >= n+5 })
	for i := 1; i < len(beatTimes); i++ {
		// Generous for a busy machine; a stall of the daemon behind a
		// bad handler would be the handler's whole timeout and backoff.
		if gap := beatTimes[i].Sub(beatTimes[i-1]); gap > 5*time.Second {
			t.Errorf("no heartbeat for %v while the bad handlers failed", gap)
		}
	}
	select {
	case err := <-d.done:
		t.Fatalf("the daemon exited: %v\n%s", err, d.output())
	default:
	}
	if t.Failed() {
		t.Logf("error records: %v", records)
	}
	t.Logf("%d error records, %d heartbeats", len(records), len(beatTimes))
}
