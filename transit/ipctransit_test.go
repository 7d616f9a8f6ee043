package transit_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/transit"
)

// markedDir is a transit dir shared with IPC::Transit for one test.
func markedDir(t *testing.T) string {
	t.Helper()
	dir := testenv.TransitDir(t)
	if err := transit.MarkIPCTransit(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// receiveWithin receives one delivery, waiting up to d.
func receiveWithin(t *testing.T, q *transit.Queue, d time.Duration) transit.Delivery {
	t.Helper()
	var got transit.Delivery
	testenv.WaitFor(t, d, "a message on "+q.Name(), func() bool {
		var err error
		got, err = q.Receive(false)
		if err != nil && !errors.Is(err, transit.ErrEmpty) {
			t.Fatal(err)
		}
		return err == nil
	})
	return got
}

// checkPrivate checks that dir is 0700 and every file we made in it
// (recursively) 0600, and no non-dot file other than key files is there.
func checkPrivate(t *testing.T, dir string) {
	t.Helper()
	tr := open(t, dir)
	names, err := tr.Names()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if q, err := tr.Lookup(n); err != nil {
			t.Error(err)
		} else if m := transit.QueueModeForTest(q); m != 0o600 {
			t.Errorf("queue %s: mode %o, want 0600", n, m)
		}
	}
	filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			t.Error(err)
			return nil
		}
		switch {
		case fi.IsDir() && fi.Mode().Perm() != 0o700:
			t.Errorf("%s: mode %o, want 0700", path, fi.Mode().Perm())
		case !fi.IsDir() && fi.Mode().Perm() != 0o600 && filepath.Base(path) != ".lock":
			t.Errorf("%s: mode %o, want 0600", path, fi.Mode().Perm())
		}
		if filepath.Dir(path) == dir && !fi.IsDir() && !strings.HasPrefix(fi.Name(), ".") {
			b, _ := os.ReadFile(path)
			if !strings.HasPrefix(string(b), "qid=") || !strings.Contains(string(b), "\nqname="+fi.Name()+"\n") {
				t.Errorf("%s is not an IPC::Transit key file: %q", path, b)
			}
		}
		return nil
	})
}

func TestIPCTransitPerlToUs(t *testing.T) {
	t.Parallel()
	perl := testenv.IPCTransit(t, "..")
	for _, first := range []string{"perl", "us"} {
		t.Run(first+" first", func(t *testing.T) {
			t.Parallel()
			dir := markedDir(t)
			tr := open(t, dir)
			var q *transit.Queue
			if first == "us" {
				q = mustQueue(t, tr, "Example1")
			}
			perl.Strans(t, dir, `{"new_ct":999}`, "Example1")
			if q == nil {
				q = mustQueue(t, tr, "Example1") // tightens its 0666 queue
			}
			d := receiveWithin(t, q, 10*time.Second)
			if len(d.Msgs) != 1 || d.Msgs[0]["new_ct"] != float64(999) {
				t.Fatalf("got %+v", d)
			}
			if _, ok := d.Msgs[0][".ipc_transit_meta"].(map[string]any)["send_ts"]; !ok {
				t.Errorf("no send_ts in %v", d.Msgs[0])
			}
			checkPrivate(t, dir)
		})
	}
}

func TestIPCTransitUsToPerl(t *testing.T) {
	t.Parallel()
	perl := testenv.IPCTransit(t, "..")
	for _, first := range []string{"perl", "us"} {
		t.Run(first+" first", func(t *testing.T) {
			t.Parallel()
			dir := markedDir(t)
			tr := open(t, dir)
			if first == "perl" {
				// Perl creates the queue (0666) and its key file.
				if _, stderr, err := perl.Eval(t, 30*time.Second, dir, `IPC::Transit::stat(qname => "out") or die`); err != nil {
					t.Fatal(err, stderr)
				}
			}
			if err := tr.Send("out", map[string]any{"a": "b"}); err != nil {
				t.Fatal(err)
			}
			// A batch is one IPC::Transit message each.
			q := mustQueue(t, tr, "out")
			if err := q.SendBatch([]map[string]any{{"n": 1.0}, {"n": 2.0}}); err != nil {
				t.Fatal(err)
			}
			got := perl.Rtrans(t, 30*time.Second, dir, "out", 3)
			if got[0]["a"] != "b" || got[1]["n"] != 1.0 || got[2]["n"] != 2.0 {
				t.Fatalf("rtrans got %v", got)
			}
			checkPrivate(t, dir)
		})
	}
}

func TestIPCTransitLargeBothWays(t *testing.T) {
	t.Parallel()
	perl := testenv.IPCTransit(t, "..")
	dir := markedDir(t)
	tr := open(t, dir)
	big := strings.Repeat("0123456789", 10_000) // 100 KB
	before, _ := filepath.Glob(filepath.Join(transit.DefaultLargeMessageDir, "*"))

	// Perl to us, through Peek and Drop (what the daemon does).
	q := mustQueue(t, tr, "big")
	if _, stderr, err := perl.Eval(t, 30*time.Second, dir,
		`IPC::Transit::send(qname => "big", message => {big => "`+big+`"}) or die "send failed"`); err != nil {
		t.Fatal(err, stderr)
	}
	var d transit.Delivery
	testenv.WaitFor(t, 10*time.Second, "the large message", func() bool {
		var err error
		d, err = q.Peek(0)
		if errors.Is(err, transit.ErrNoPeek) {
			t.Skip("no MSG_COPY")
		}
		return err == nil
	})
	if len(d.Msgs) != 1 || d.Msgs[0]["big"] != big {
		t.Fatalf("large message from Perl changed (dead %d)", d.Dead)
	}
	if err := q.Drop(d); err != nil {
		t.Fatal(err)
	}
	after, _ := filepath.Glob(filepath.Join(transit.DefaultLargeMessageDir, "*"))
	if len(after) > len(before) {
		t.Errorf("files left in %s: %v (before: %v)", transit.DefaultLargeMessageDir, after, before)
	}

	// Us to Perl.
	if err := tr.Send("big2", map[string]any{"big": big}); err != nil {
		t.Fatal(err)
	}
	got := perl.Rtrans(t, 30*time.Second, dir, "big2", 1)
	if got[0]["big"] != big {
		t.Fatal("large message to Perl changed")
	}
	if left := testenv.SpillFiles(t, dir); len(left) > 0 {
		t.Errorf("spill files left: %v", left)
	}
	checkPrivate(t, dir)
}

func TestIPCTransitUnsupportedDeadLettered(t *testing.T) {
	t.Parallel()
	perl := testenv.IPCTransit(t, "..")
	dir := markedDir(t)
	tr := open(t, dir)
	dead := mustQueue(t, tr, transit.DeadLetterQueue)
	q := mustQueue(t, tr, "in")
	other := mustQueue(t, tr, "other")
	if err := other.Send(map[string]any{"keep": "me"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, code, reason string }{
		{"sereal", `IPC::Transit::send(qname => "in", message => {a => 1}, serializer => "sereal") or die`, "Sereal (s=sereal)"},
		{"sereal by default", `$ENV{IPC_TRANSIT_DEFAULT_SERIALIZER} = "storable"; IPC::Transit::send(qname => "in", message => {a => 1}) or die`, "Storable (s=storable)"},
		// The stub Crypt::Sodium cannot encrypt: the header IPC::Transit
		// would send is made with its own serialize_wire_meta.
		{"encrypted", `my $p = "\x01\x02"; my $h = IPC::Transit::serialize_wire_meta({nonce => "bm9uY2U=", source => "perlhost", message_length => length $p}); ` +
			`IPC::Transit::Internal::_initialize_queue(qname => "in")->snd(1, "$h$p", 0) or die`, "encrypted (n="},
	} {
		if _, stderr, err := perl.Eval(t, 30*time.Second, dir, c.code); err != nil {
			t.Fatalf("%s: %v %s", c.name, err, stderr)
		}
		d := receiveWithin(t, q, 10*time.Second)
		if d.Dead != 1 || len(d.Msgs) != 0 {
			t.Fatalf("%s: got %+v, want it dead-lettered", c.name, d)
		}
		dl := receiveWithin(t, dead, 5*time.Second)
		if r, _ := dl.Msgs[0]["reason"].(string); !strings.Contains(r, c.reason) {
			t.Errorf("%s: reason %q does not name %q", c.name, r, c.reason)
		}
	}
	if st, _ := other.Stats(); st.Messages != 1 {
		t.Errorf("the other queue has %d messages, want 1", st.Messages)
	}
	names, err := tr.Names()
	if err != nil || strings.Join(names, ",") != transit.DeadLetterQueue+",in,other" {
		t.Errorf("names %v %v", names, err)
	}
	checkPrivate(t, dir)
}

func TestIPCTransitQueuesListedBothWays(t *testing.T) {
	t.Parallel()
	perl := testenv.IPCTransit(t, "..")
	dir := markedDir(t)
	tr := open(t, dir)
	mustQueue(t, tr, "ours")
	if _, err := tr.Bell("ours.doorbell"); err != nil { // hidden from Perl
		t.Fatal(err)
	}
	perl.Strans(t, dir, `{"x":1}`, "theirs")
	out, stderr, err := perl.Tool(t, 30*time.Second, "qtrans", dir, "-a")
	if err != nil || !strings.Contains(out, "ours ") || !strings.Contains(out, "theirs ") || strings.Contains(out, "doorbell") {
		t.Fatalf("qtrans: %v\n%s%s", err, out, stderr)
	}
	names, err := tr.Names()
	if err != nil || strings.Join(names, ",") != "ours,theirs" {
		t.Fatalf("names %v %v", names, err)
	}
	checkPrivate(t, dir)
}

// Readers accept IPC::Transit's key files and framing in any dir; an
// unmarked dir is written as before.
func TestIPCTransitReadEverywhere(t *testing.T) {
	t.Parallel()
	dir := testenv.TransitDir(t)
	tr := open(t, dir)
	q := mustQueue(t, tr, "plain")
	for text, want := range map[string]string{
		`10:s=json,l=7{"a":1}`: `{"a":1}`,
		`3:l=7{"a":1}`:         `{"a":1}`,
		`0:{"a":1}`:            `{"a":1}`,
		`{"a":1}`:              `{"a":1}`,
	} {
		if err := q.SendRaw([]byte(text)); err != nil {
			t.Fatal(err)
		}
		d, err := q.Receive(false)
		if err != nil || len(d.Msgs) != 1 || d.Msgs[0]["a"] != 1.0 {
			t.Errorf("%s: got %+v %v, want %s", text, d, err, want)
		}
	}
	for _, text := range []string{`9:s=json,l=7{"a":1}`, `999999:x`, `5:f=/x{"a":1}`, `11:f=/etc/x.transit`} {
		if err := q.SendRaw([]byte(text)); err != nil {
			t.Fatal(err)
		}
		d, err := q.Receive(false)
		if err != nil || d.Dead != 1 {
			t.Errorf("%s: got %+v %v, want it dead-lettered", text, d, err)
		}
	}
	// An IPC::Transit key file names a queue here too.
	if err := os.WriteFile(filepath.Join(dir, "theirs"), []byte("qid=16909060\nqname=theirs\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := tr.Send("theirs", map[string]any{"b": 2}); err != nil {
		t.Fatal(err)
	}
	d := receiveWithin(t, mustQueue(t, tr, "theirs"), time.Second)
	if len(d.Msgs) != 1 {
		t.Fatalf("got %+v", d)
	}
	// Ours stay in our format.
	if b, _ := os.ReadFile(filepath.Join(dir, "plain")); strings.HasPrefix(string(b), "qid=") {
		t.Errorf("unmarked dir got an IPC::Transit key file: %q", b)
	}
	// A damaged one is reported.
	os.WriteFile(filepath.Join(dir, "junk"), []byte("qid=\n"), 0o600)
	if _, err := tr.Queue("junk"); !errors.Is(err, transit.ErrDamagedKeyFile) {
		t.Errorf("damaged key file: %v", err)
	}
	os.Remove(filepath.Join(dir, "junk"))
}

func TestIPCTransitUnknownFormatRefused(t *testing.T) {
	t.Parallel()
	dir := testenv.TransitDir(t)
	open(t, dir)
	os.WriteFile(filepath.Join(dir, transit.FormatFile), []byte("something-else\n"), 0o600)
	if _, err := transit.Open(transit.Options{Dir: dir}); !errors.Is(err, transit.ErrUnknownFormat) {
		t.Fatalf("got %v", err)
	}
	os.Remove(filepath.Join(dir, transit.FormatFile))
}

func mustQueue(t *testing.T, tr *transit.Transit, name string) *transit.Queue {
	t.Helper()
	q, err := tr.Queue(name)
	if err != nil {
		t.Fatal(err)
	}
	return q
}
