package multimodule

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/transit"
)

// routerTwoRoutes routes to:"nobody" to the queue Unread, which nothing
// reads, and to:"counter" to Counter, which reports to Seen.
const routerTwoRoutes = `
tasks: Counter: {kind: "Counter"}
tasks: Router: config: routes: [
	{match: to: "nobody", forwards: [{qname: "Unread"}]},
	{match: to: "counter", forwards: [{qname: "Counter"}]},
]
`

// TestFullTargetDoesNotStallAnotherRoute: one forward target nobody reads
// costs the Router one bounded wait (5 s), not one per message; the other
// route keeps flowing, and what Unread could not take is alerted and
// dead-lettered.
func TestFullTargetDoesNotStallAnotherRoute(t *testing.T) {
	t.Parallel()
	e := newMonEnv(t, routerTwoRoutes)
	e.oob("log:2")
	e.args = append(e.args, "--metrics-addr", "127.0.0.1:0")
	unread := testenv.FillQueue(t, e.tr, "Unread")
	before, _ := unread.Stats()
	d := e.daemon()
	e.runningPid("Counter")
	const rounds = 8
	start := time.Now()
	for i := range rounds {
		e.sendTo("Router", map[string]any{"to": "nobody", "seq": float64(i)})
		e.sendTo("Router", map[string]any{"to": "counter", "src": "bp", "seq": float64(i)})
		e.collect(i + 1)
	}
	// Before: every round waited out the bound (8 x 5 s).
	if took := time.Since(start); took > 3*5*time.Second {
		t.Errorf("%d rounds took %v: the full target stalled the other route", rounds, took)
	}
	e.waitAlert("the full queue alerted", func(a map[string]any) bool {
		return a["queue"] == "Unread" && strings.Contains(fmt.Sprint(a["msg"], a["message"]), "queue full")
	})
	dlq, err := e.tr.Queue(transit.DeadLetterQueue)
	if err != nil {
		t.Fatal(err)
	}
	var dead int
	testenv.WaitFor(t, 10*time.Second, "every undeliverable message dead-lettered", func() bool {
		for {
			del, err := dlq.Receive(false)
			if err != nil || len(del.Msgs) == 0 {
				break
			}
			for _, m := range del.Msgs {
				if strings.Contains(fmt.Sprint(m), "Unread") {
					dead++
				}
			}
		}
		return dead >= rounds
	})
	if dead != rounds {
		t.Errorf("%d dead letters of Unread, want %d", dead, rounds)
	}
	if after, _ := unread.Stats(); after.Messages != before.Messages {
		t.Errorf("Unread went from %d to %d messages", before.Messages, after.Messages)
	}
	// The dead letters and an unrouted message show on /metrics, and the
	// unrouted one in the log.
	e.sendTo("Router", map[string]any{"to": "nowhere"})
	url := metricsURL(t, d)
	testenv.WaitFor(t, 10*time.Second, "dead letters and unrouted on /metrics", func() bool {
		body := scrape(url)
		return strings.Contains(body, fmt.Sprintf("multimodule_dead_letters_total %d\n", rounds)) &&
			strings.Contains(body, "multimodule_unrouted_total 1\n") &&
			strings.Contains(d.output(), `msg="unrouted messages"`)
	})
	e.exit(d)
}

// metricsURL is the /metrics address the daemon d logged.
func metricsURL(t *testing.T, d *proc) string {
	t.Helper()
	var url string
	testenv.WaitFor(t, 10*time.Second, "the metrics address in the log", func() bool {
		m := regexp.MustCompile(`msg="metrics served".* address=(\S+)`).FindStringSubmatch(d.output())
		if m != nil {
			url = m[1]
		}
		return m != nil
	})
	return url
}

// scrape is the body of url ("" on error).
func scrape(url string) string {
	resp, err := http.Get(url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// A daemon whose Router forwards to a queue nobody reads still stops in
// bounded time, with exit 0: what the queue could not take is kept as
// dead letters, what it holds stays there.
func TestShutdownWithAnUnreadTargetIsBoundedAndClean(t *testing.T) {
	t.Parallel()
	e := newMonEnv(t, routerTwoRoutes)
	e.oob("log:2")
	unread := testenv.FillQueue(t, e.tr, "Unread")
	held, _ := unread.Stats()
	d := e.daemon()
	e.runningPid("Counter")
	for i := range 20 {
		e.sendTo("Router", map[string]any{"to": "nobody", "seq": float64(i)})
	}
	e.sendTo("Router", map[string]any{"to": "counter", "src": "bp", "seq": 1.0})
	e.collect(1)
	start := time.Now()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := d.wait(t); err != nil {
		t.Fatalf("daemon exit: %v\n%s", err, d.output())
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Fatalf("shutdown took %v", took)
	}
	if st, _ := unread.Stats(); st.Messages != held.Messages {
		t.Fatalf("Unread holds %d messages, had %d", st.Messages, held.Messages)
	}
	if !regexp.MustCompile(`msg="stopped cleanly".*dead_letters=2\d`).MatchString(d.output()) {
		t.Fatalf("the last line does not say where the 20 went:\n%s", d.output())
	}
}
