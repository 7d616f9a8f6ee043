package main

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/multimodule/multimodule/internal/control"
)

func TestUnifiedDiff(t *testing.T) {
	t.Parallel()
	a := strings.Split("{\n  \"config\": {\n    \"every_ms\": 1000\n  },\n  \"disabled\": false,\n  \"external\": false,\n  \"kind\": \"Beacon\"\n}", "\n")
	b := strings.Split("{\n  \"config\": {\n    \"every_ms\": 2000\n  },\n  \"disabled\": false,\n  \"external\": false,\n  \"kind\": \"Beacon\"\n}", "\n")
	got := unifiedDiff("running/B", "config/B", a, b, 1)
	want := "--- running/B\n+++ config/B\n@@ -2,3 +2,3 @@\n   \"config\": {\n-    \"every_ms\": 1000\n+    \"every_ms\": 2000\n   },\n"
	if got != want {
		t.Fatalf("diff:\n%s\nwant:\n%s", got, want)
	}
	if d := unifiedDiff("a", "b", a, a, 3); d != "" {
		t.Fatalf("equal texts differ: %q", d)
	}
	if d := unifiedDiff("a", "b", nil, []string{"x"}, 3); d != "--- a\n+++ b\n@@ -0,0 +1,1 @@\n+x\n" {
		t.Fatalf("from nothing: %q", d)
	}
}

// The default table fits 100 columns however long the names and reasons,
// and a held task that still runs shows what it does.
func TestStatusTableFitsAndShowsAHeldTaskRunning(t *testing.T) {
	t.Parallel()
	n, pid := uint64(123456), 4242
	st := &control.StatusReply{Tasks: []control.TaskStatus{
		{Name: "AVeryLongTaskNameThatGoesOnAndOnForever", Where: "external", Status: "held", Running: true, Pid: pid, UptimeS: 7300,
			ReconcileState: control.ReconcileState{HeldReason: control.HeldRetriesExhausted,
				HoldMessage: "~ reconfigure X: the config was refused by the task because of reasons that take a whole line to say"},
			HostReport: control.HostReport{MessagesIn: &n, MessagesOut: &n},
			Metrics:    map[string]float64{"cpu": 0.25, "memory": 300 << 20},
			Levels:     map[string]string{"mailbox": "severe", "cpu": "warn"},
			Conditions: []control.Condition{{Type: "Ready", Status: "False"}}},
		{Name: "Off", Where: "internal", Status: "disabled"},
	}}
	var out bytes.Buffer
	o := &statusOptions{output: "table", width: 100}
	problems, err := o.render(&out, st, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if utf8.RuneCountInString(l) > 100 {
			t.Errorf("line of %d columns: %s", utf8.RuneCountInString(l), l)
		}
	}
	row := strings.Split(out.String(), "\n")[3]
	for _, want := range []string{"AVeryLong", "external", "4242", "Held: retries", "2h1m", "0.25", "300Mi", "123k/123k", "severe:"} {
		if !strings.Contains(row, want) {
			t.Errorf("held row lacks %q: %s", want, row)
		}
	}
	if len(problems) != 1 || !strings.Contains(problems[0], "held: AVeryLong") {
		t.Errorf("problems %q", problems)
	}
	if !strings.Contains(out.String(), "AVeryLongTaskNameThatGoesOnAndOnForever: held, still running its last applied spec: retries exhaust") {
		t.Errorf("no note of why it is held:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "Disabled") {
		t.Errorf("no Disabled row:\n%s", out.String())
	}
}
