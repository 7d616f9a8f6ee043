package runtime

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/multimodule/multimodule/internal/testenv"
)

func TestParseOOB(t *testing.T) {
	for _, c := range []struct {
		spec string
		want map[string]string
		err  string
	}{
		{"", map[string]string{"log": "1", "error": "2", "alert": "2", "debug": "./debug.out"}, ""},
		{"alert:myq,debug:router", map[string]string{"log": "1", "error": "2", "alert": "myq", "debug": "router"}, ""},
		{"log:/var/log/mm.log", map[string]string{"log": "/var/log/mm.log", "error": "2", "alert": "2", "debug": "./debug.out"}, ""},
		{"alert", nil, "want channel:target"},
		{"alerts:2", nil, `unknown channel "alerts"`},
	} {
		got, err := ParseOOB(c.spec)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseOOB(%q) error %v, want %q", c.spec, err, c.err)
			}
			continue
		}
		if err != nil || len(got) != len(c.want) {
			t.Errorf("ParseOOB(%q) = %v, %v", c.spec, got, err)
			continue
		}
		for k, v := range c.want {
			if got[k] != v {
				t.Errorf("ParseOOB(%q)[%s] = %q, want %q", c.spec, k, got[k], v)
			}
		}
	}
}

func TestChannelsReachTheirTargets(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var mu sync.Mutex
	sent := map[string][]Message{}
	var stdout, stderr testenv.Buffer
	ch, err := OpenChannels("log:1,error:"+filepath.Join(dir, "err.log")+",alert:myq,debug:router", ChannelOptions{
		Level: -4, Stdout: &stdout, Stderr: &stderr,
		Send: func(q string, m Message) error {
			mu.Lock()
			defer mu.Unlock()
			sent[q] = append(sent[q], m)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ch.Log.Info("hello", "task", "A")
	ch.Error.Error("broke", "task", "A", "error", errors.New("boom"))
	ch.Alert.Warn("level changed", "task", "A", "metric", "cpu", "value", 1.5)
	ch.Debug.Debug("detail")
	if err := ch.Close(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), "msg=hello") || !strings.Contains(stdout.String(), "task=A") {
		t.Fatalf("stdout %q", stdout.String())
	}
	b, _ := os.ReadFile(filepath.Join(dir, "err.log"))
	if !strings.Contains(string(b), "error=boom") {
		t.Fatalf("error file %q", b)
	}
	a := sent["myq"]
	if len(a) != 1 || a[0]["metric"] != "cpu" || a[0]["value"] != 1.5 || a[0]["channel"] != "alert" || a[0][OOBMarker] != true {
		t.Fatalf("alert queue got %v", a)
	}
	if d := sent["Router"]; len(d) != 1 || d[0]["msg"] != "detail" {
		t.Fatalf("router got %v", d)
	}
}

func TestForwardTakesEveryChannelAndFallsBack(t *testing.T) {
	t.Parallel()
	var got []Message
	fail := false
	var stderr testenv.Buffer
	ch, err := OpenChannels("alert:myq", ChannelOptions{Stderr: &stderr, Forward: func(m Message) error {
		if fail {
			return errors.New("queue full")
		}
		got = append(got, m)
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	ch.Log.Info("one", "task", "A")
	ch.Alert.Warn("two", "at", time.Unix(0, 0).UTC())
	ch.Error.Error("three")
	if len(got) != 3 || got[0]["channel"] != "log" || got[0]["task"] != "A" || got[1]["channel"] != "alert" || got[2]["severity"] != "ERROR" {
		t.Fatalf("forwarded %v", got)
	}
	fail = true
	ch.Alert.Warn("four")
	if s := stderr.String(); !strings.Contains(s, "msg=four") || !strings.Contains(s, "queue full") {
		t.Fatalf("a record the daemon did not take went nowhere: %q", s)
	}
}

func TestBusyCountsTheHandlerWhileItRuns(t *testing.T) {
	t.Parallel()
	th := newTestHost(t, "")
	release := make(chan struct{})
	rec := &recorder{fail: func(Message) error { <-release; return nil }}
	th.start(t, "Slow", rec, nil, nil)
	if err := th.Send("Slow", Message{"x": 1.0}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "busy time while the handler runs", func() bool {
		return th.Status()[0].Busy > 50*time.Millisecond
	})
	close(release)
}
