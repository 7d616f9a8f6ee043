package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/multimodule/multimodule/internal/control"
)

func u64(v uint64) *uint64 { return &v }

func TestTopFrameSortsAndFits(t *testing.T) {
	t.Parallel()
	st := &control.StatusReply{Daemon: control.DaemonStatus{Pid: 42, UptimeS: 75}, Tasks: []control.TaskStatus{
		{Name: "Idle", Where: "internal", Status: "running", Running: true, Metrics: map[string]float64{"cpu": 0.01}},
		{Name: "Busy", Where: "external", Status: "running", Running: true, Pid: 7, Metrics: map[string]float64{"cpu": 0.9},
			HostReport: control.HostReport{MailboxDepth: u64(1)}},
		{Name: "Behind", Where: "internal", Status: "running", Running: true, Metrics: map[string]float64{"cpu": 0.2},
			HostReport: control.HostReport{MailboxDepth: u64(5)}, Queue: &control.QueueStatus{Messages: 40}},
	}}
	now := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	tests := []struct {
		name          string
		st            *control.StatusReply
		err           error
		sortBy        string
		width, height int
		order         []string // task names, in the order they must appear
		want          []string
	}{
		{"by cpu", st, nil, "cpu", 120, 30, []string{"Busy", "Behind", "Idle"},
			[]string{"sort: cpu", "daemon pid 42, up 1m15s, 3 tasks", "NAME", "BACKLOG", "15:04:05"}},
		{"by backlog", st, nil, "backlog", 120, 30, []string{"Behind", "Busy", "Idle"}, []string{"sort: backlog", " 45 "}},
		{"by name", st, nil, "name", 120, 30, []string{"Behind", "Busy", "Idle"}, nil},
		{"short terminal", st, nil, "cpu", 120, 5, []string{"Busy"}, []string{"more lines"}},
		{"no daemon", nil, errors.New("no daemon serves control queue"), "cpu", 120, 30, nil, []string{"no daemon serves", "(retrying)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := topFrame(tt.st, tt.err, tt.sortBy, tt.width, tt.height, now)
			lines := strings.Split(f, "\r\n")
			if len(lines) > tt.height {
				t.Fatalf("%d lines for a %d-line terminal:\n%s", len(lines), tt.height, f)
			}
			for _, l := range lines {
				if len([]rune(l)) > tt.width {
					t.Fatalf("line wider than %d: %q", tt.width, l)
				}
			}
			at := 0
			for _, name := range tt.order {
				i := strings.Index(f[at:], "\n"+name+" ")
				if i < 0 {
					t.Fatalf("%s not after position %d:\n%s", name, at, f)
				}
				at += i + 1
			}
			for _, w := range tt.want {
				if !strings.Contains(f, w) {
					t.Fatalf("frame lacks %q:\n%s", w, f)
				}
			}
		})
	}
}

func TestTopRefusesWhatItCannotDo(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		argv []string
		code int
		want string
	}{
		{[]string{"top", "--sort", "mem"}, 2, `--sort "mem": want cpu, backlog or name`},
		{[]string{"top", "--interval", "0s"}, 2, "--interval must be positive"},
		{[]string{"top"}, 1, "top needs a terminal"}, // the test's stdout is a buffer
	}
	for _, tt := range tests {
		code, _, errs := mmctl(t, dir, "", tt.argv...)
		if code != tt.code || !strings.Contains(errs, tt.want) {
			t.Fatalf("%v: exit %d, stderr %q; want %d, %q", tt.argv, code, errs, tt.code, tt.want)
		}
	}
}
