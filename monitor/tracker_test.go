package monitor

import (
	"fmt"
	"log/slog"
	"math"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/multimodule/multimodule/schema"
)

var t0 = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// ext is a running external task T with the given process figures.
func ext(pid int, fds float64, restarts int) Reading {
	return Reading{Task: "T", Where: External, Pid: pid, Started: t0, Running: true,
		Proc: &ProcSample{FDs: fds}, Restarts: restarts}
}

// with returns r changed by f.
func with(r Reading, f func(*Reading)) Reading { f(&r); return r }

// report is an external's counter report, sent at t0+sec.
func report(sec int, failures uint64) *Counters {
	return &Counters{At: t0.Add(time.Duration(sec) * time.Second), Failures: failures}
}

// show is a judgement as the tests compare it.
func show(j Judgement) string {
	s := fmt.Sprintf("%s %s %v->%v", j.Task, j.Metric, j.From, j.Level)
	if j.Over() {
		s += " over"
	}
	return s
}

func TestTrackerObserve(t *testing.T) {
	taskLimits := func(m map[string]schema.Levels) map[string]schema.Levels { return m }
	fraction := taskLimits(map[string]schema.Levels{Memory: {Warn: &schema.Threshold{Value: 0.1}}})
	big := func(r *Reading) { r.Proc.Memory = 1e12 }
	for _, c := range []struct {
		name  string
		box   float64
		task  map[string]schema.Levels
		steps [][]Reading // one sample each, a second apart
		want  [][]string  // the judgements of each sample
	}{
		{
			name:  "a level rises only after two agreeing samples",
			steps: [][]Reading{{ext(1, 120, 0)}, {ext(1, 120, 0)}, {ext(1, 120, 0)}},
			want:  [][]string{nil, {"T fds ok->warn"}, nil},
		},
		{
			name:  "one spike never alerts",
			steps: [][]Reading{{ext(1, 120, 0)}, {ext(1, 50, 0)}, {ext(1, 250, 0)}, {ext(1, 50, 0)}},
			want:  [][]string{nil, nil, nil, nil},
		},
		{
			name: "a restart ends the previous run's levels with over, but restarts span runs",
			steps: [][]Reading{{ext(1, 120, 3)}, {ext(1, 120, 3)}, {ext(2, 50, 4)}, {ext(2, 50, 4)},
				{with(ext(2, 50, 4), func(r *Reading) { r.Started = t0.Add(time.Hour) })}},
			want: [][]string{nil, {"T fds ok->warn", "T restarts ok->warn"}, {"T fds warn->ok over"}, nil, nil},
		},
		{
			name:  "a task stopped for good ends all its levels",
			steps: [][]Reading{{ext(1, 120, 3)}, {ext(1, 120, 3)}, nil, {ext(1, 120, 3)}},
			want:  [][]string{nil, {"T fds ok->warn", "T restarts ok->warn"}, {"T fds warn->ok over", "T restarts warn->ok over"}, nil},
		},
		{
			name: "a held task keeps its levels until it runs again",
			steps: [][]Reading{{ext(1, 120, 0)}, {ext(1, 120, 0)}, {{Task: "T", Held: "failsafe"}}, {{Task: "T"}},
				{ext(1, 120, 0)}, {ext(1, 50, 0)}, {ext(1, 50, 0)}},
			want: [][]string{nil, {"T fds ok->warn"}, nil, nil, nil, nil, {"T fds warn->ok"}},
		},
		{
			name: "an external without a process sample is not judged",
			steps: [][]Reading{{ext(1, 120, 0)}, {with(ext(1, 0, 0), func(r *Reading) { r.Proc = nil })},
				{ext(1, 120, 0)}},
			want: [][]string{nil, nil, {"T fds ok->warn"}},
		},
		{
			name: "a report not newer than the last is not judged again",
			steps: [][]Reading{
				{with(ext(1, 0, 0), func(r *Reading) { r.Counters = report(0, 0) })},
				{with(ext(1, 0, 0), func(r *Reading) { r.Counters = report(1, 5) })},
				{with(ext(1, 0, 0), func(r *Reading) { r.Counters = report(1, 5) })},
				{with(ext(1, 0, 0), func(r *Reading) { r.Counters = nil })},
				{with(ext(1, 0, 0), func(r *Reading) { r.Counters = report(2, 10) })},
			},
			want: [][]string{nil, nil, nil, nil, {"T failures ok->warn"}},
		},
		{
			name: "a process sample without CPU does not judge CPU",
			steps: [][]Reading{
				{with(ext(1, 0, 0), func(r *Reading) { r.Proc.CPU, r.Proc.HasCPU = 1.5, true })},
				{ext(1, 0, 0)},
				{with(ext(1, 0, 0), func(r *Reading) { r.Proc.CPU, r.Proc.HasCPU = 1.5, true })},
			},
			want: [][]string{nil, nil, {"T cpu ok->warn"}},
		},
		{
			name: "a queue not measured is not judged",
			steps: [][]Reading{
				{with(ext(1, 0, 0), func(r *Reading) { r.QueueFill, r.HasQueue = 0.9, true })},
				{ext(1, 0, 0)},
				{with(ext(1, 0, 0), func(r *Reading) { r.QueueFill, r.HasQueue = 0.9, true })},
			},
			want: [][]string{nil, nil, {"T queue_fill ok->severe"}},
		},
		{
			name:  "memory as a fraction of an unknown box is not judged",
			task:  fraction,
			steps: [][]Reading{{with(ext(1, 0, 0), big)}, {with(ext(1, 0, 0), big)}, {with(ext(1, 0, 0), big)}},
			want:  [][]string{nil, nil, nil},
		},
		{
			name:  "memory as a fraction of a known box is judged",
			box:   1 << 30,
			task:  fraction,
			steps: [][]Reading{{with(ext(1, 0, 0), big)}, {with(ext(1, 0, 0), big)}},
			want:  [][]string{nil, {"T memory ok->failsafe"}},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr := NewTracker(c.box)
			for i, rs := range c.steps {
				for k := range rs {
					rs[k].Limits = tr.Limits(nil, c.task)
					if rs[k].Proc != nil {
						p := *rs[k].Proc // steps share no sample
						rs[k].Proc = &p
					}
				}
				var got []string
				for _, j := range tr.Observe(t0.Add(time.Duration(i)*time.Second), nil, rs) {
					got = append(got, show(j))
				}
				if !slices.Equal(got, c.want[i]) {
					t.Fatalf("sample %d: judgements %q, want %q", i, got, c.want[i])
				}
			}
		})
	}
}

func TestTrackerInternalTaskCPUIsHandlerBusyTime(t *testing.T) {
	tr := NewTracker(0)
	var got []string
	for i := range 4 {
		now := t0.Add(time.Duration(i) * time.Second)
		r := Reading{Task: "I", Where: Internal, Pid: 1, Started: t0, Running: true, Limits: tr.Limits(nil, nil),
			Counters: &Counters{At: now, Busy: time.Duration(i) * 1500 * time.Millisecond, In: uint64(3 * i), Depth: 7}}
		for _, j := range tr.Observe(now, nil, []Reading{r}) {
			got = append(got, fmt.Sprintf("%d: %s", i, show(j)))
		}
	}
	if want := []string{"2: I cpu ok->warn"}; !slices.Equal(got, want) {
		t.Fatalf("judgements %q, want %q", got, want)
	}
	metrics, levels := tr.Status("I")
	if metrics[CPU] != 1.5 || metrics[MessagesIn] != 3 || metrics[Mailbox] != 7 || levels[CPU] != "warn" || len(levels) != 1 {
		t.Fatalf("status %v %v", metrics, levels)
	}
	if c, ok := tr.Totals("I"); !ok || c.In != 9 {
		t.Fatalf("totals %+v %v", c, ok)
	}
}

func TestTrackerMeasuresTheDaemonWithoutJudgingIt(t *testing.T) {
	tr := NewTracker(0)
	for i := range 3 {
		if js := tr.Observe(t0.Add(time.Duration(i)*time.Second), &ProcSample{FDs: 1000, Threads: 1000}, nil); len(js) != 0 {
			t.Fatalf("the daemon judged: %v", js)
		}
	}
	if v := tr.DaemonValues(); v[FDs] != 1000 {
		t.Fatalf("daemon values %v", v)
	}
	if s := tr.Snapshot(); s.Daemon[FDs] != 1000 || len(s.Tasks) != 0 {
		t.Fatalf("snapshot %+v", s)
	}
}

func TestTrackerSnapshotListsRunningAndHeldTasks(t *testing.T) {
	tr := NewTracker(0)
	lim := tr.Limits(nil, nil)
	run := Reading{Task: "B", Where: External, Pid: 1, Running: true, Proc: &ProcSample{FDs: 3}, Limits: lim}
	tr.Observe(t0, nil, []Reading{run, {Task: "A", Held: "retries"}, {Task: "C"}})
	s := tr.Snapshot()
	if !s.At.Equal(t0) || len(s.Tasks) != 2 {
		t.Fatalf("snapshot %+v", s)
	}
	if a := s.Tasks[0]; a.Task != "A" || a.Running || a.Held != "retries" {
		t.Fatalf("held task %+v", a)
	}
	if b := s.Tasks[1]; b.Task != "B" || !b.Running || b.Where != External || b.Values[FDs] != 3 || b.Levels[FDs] != OK {
		t.Fatalf("running task %+v", b)
	}
	if tr.Tracked("A") || tr.Tracked("C") || !tr.Tracked("B") {
		t.Fatal("tracked what never ran, or not what runs")
	}
}

func TestJudgementAlertAndReason(t *testing.T) {
	nan := math.NaN()
	for _, c := range []struct {
		j      Judgement
		lvl    slog.Level
		msg    string
		args   []any
		reason string
	}{
		{Judgement{"T", Memory, 320 << 20, 200 << 20, Failsafe, Warn}, slog.LevelError, "T memory is failsafe",
			[]any{"task", "T", "metric", Memory, "value", float64(320 << 20), "level", "failsafe", "previous", "warn", "threshold", float64(200 << 20)},
			"failsafe: memory 320.0MiB reached 200.0MiB"},
		{Judgement{"T", CPU, 1.5, 1.4, Warn, OK}, slog.LevelWarn, "T cpu is warn",
			[]any{"task", "T", "metric", CPU, "value", 1.5, "level", "warn", "previous", "ok", "threshold", 1.4},
			"failsafe: cpu 1.5 reached 1.4"},
		{Judgement{"T", FDs, 20, 100, OK, Warn}, slog.LevelInfo, "T fds is back to ok",
			[]any{"task", "T", "metric", FDs, "value", 20.0, "level", "ok", "previous", "warn", "threshold", 100.0}, ""},
		{Judgement{"T", FDs, 120, nan, OK, Severe}, slog.LevelInfo, "T fds is over: the task stopped",
			[]any{"task", "T", "metric", FDs, "value", 120.0, "level", "ok", "previous", "severe"}, ""},
	} {
		lvl, msg, args := c.j.Alert()
		if lvl != c.lvl || msg != c.msg || !reflect.DeepEqual(args, c.args) {
			t.Errorf("%+v: alert %v %q %v, want %v %q %v", c.j, lvl, msg, args, c.lvl, c.msg, c.args)
		}
		if c.reason != "" && c.j.Reason() != c.reason {
			t.Errorf("%+v: reason %q, want %q", c.j, c.j.Reason(), c.reason)
		}
	}
}

func TestParseReport(t *testing.T) {
	c, ok := ParseReport(map[string]any{"at": 1700000000.5, "busy_s": 0.25, "messages_in": 3.0,
		"messages_out": 2.0, "failures": 1.0, "depth": -4.0})
	want := Counters{At: time.Unix(1700000000, 5e8), Busy: 250 * time.Millisecond, In: 3, Out: 2, Failures: 1}
	if !ok || !c.At.Equal(want.At) || c.Busy != want.Busy || c.In != 3 || c.Out != 2 || c.Failures != 1 || c.Depth != 0 {
		t.Fatalf("ParseReport = %+v %v, want %+v", c, ok, want)
	}
	for _, r := range []map[string]any{{}, {"at": 0.0}, {"at": "soon"}} {
		if _, ok := ParseReport(r); ok {
			t.Errorf("ParseReport(%v) accepted a report without a time", r)
		}
	}
}

func TestMergeLimits(t *testing.T) {
	th := func(v float64) *schema.Threshold { return &schema.Threshold{Value: v} }
	daemon := map[string]schema.Levels{CPU: {Warn: th(1), Severe: th(2)}, FDs: {Failsafe: th(50)}}
	task := map[string]schema.Levels{CPU: {Warn: th(0.5)}, Memory: {Warn: &schema.Threshold{Value: 1 << 20, Size: "1MiB"}, Severe: th(0.5)}}
	l := MergeLimits(Defaults(1000), 1000, daemon, task)
	for metric, want := range map[string]Thresholds{
		CPU:    {0.5, 2, 1.9},       // task over daemon over defaults, level by level
		Memory: {1 << 20, 500, 300}, // a size as is, a fraction of the box
		FDs:    {100, 150, 50},
	} {
		if got := l.Of(metric); got != want {
			t.Errorf("%s limits %v, want %v", metric, got, want)
		}
	}
	var got []string
	for _, e := range l.Check() {
		got = append(got, e.Metric)
	}
	if want := []string{CPU, Memory, FDs}; !slices.Equal(got, want) {
		t.Errorf("out of order: %v, want %v", got, want)
	}
	if errs := MergeLimits(Defaults(1000), 1000, nil, nil).Check(); len(errs) != 0 {
		t.Errorf("the defaults are out of order: %v", errs)
	}
	if m := MergeLimits(Defaults(0), 0, nil, task).Of(Memory); !math.IsNaN(m[1]) || m[0] != 1<<20 {
		t.Errorf("memory limits of an unknown box %v: a fraction must be unset, a size kept", m)
	}
}

// An idle internal task is not judged again once quiet, yet its levels,
// rates and snapshot stay what judging every sample would give: rates
// fall to 0 (and their level back to ok) one sample after it goes idle,
// and the first busy sample after a long idle spell has a true rate.
func TestTrackerIdleInternal(t *testing.T) {
	tr := NewTracker(0)
	lim := tr.Limits(map[string]schema.Levels{MessagesIn: {Warn: &schema.Threshold{Value: 10}}}, nil)
	in := uint64(0)
	at := func(sec int) Reading {
		return Reading{Task: "I", Where: Internal, Pid: 1, Started: t0, Running: true, Limits: lim,
			Counters: &Counters{At: t0.Add(time.Duration(sec) * time.Second), In: in}}
	}
	var got []string
	step := func(sec int) {
		for _, j := range tr.Observe(t0.Add(time.Duration(sec)*time.Second), nil, []Reading{at(sec)}) {
			got = append(got, fmt.Sprintf("%d:%s", sec, show(j)))
		}
	}
	step(0)
	for sec := 1; sec <= 3; sec++ { // 20/s
		in += 20
		step(sec)
	}
	for sec := 4; sec <= 60; sec++ { // idle
		step(sec)
		if sec >= 7 && tr.tasks["I"].quiet != true {
			t.Fatalf("not quiet at %d", sec)
		}
	}
	if tr.Snapshot().Tasks[0].Values[MessagesIn] != 0 {
		t.Fatalf("idle rate %v", tr.Snapshot().Tasks[0].Values)
	}
	in += 5 // 5 in one second after a minute idle
	step(61)
	if v := tr.Snapshot().Tasks[0].Values[MessagesIn]; v != 5 {
		t.Fatalf("rate after idle %v, want 5", v)
	}
	want := []string{"2:I messages_in ok->warn", "5:I messages_in warn->ok"}
	if !slices.Equal(got, want) {
		t.Fatalf("judgements %q, want %q", got, want)
	}
	if s := tr.Snapshot(); len(s.Tasks) != 1 || !s.At.Equal(t0.Add(61*time.Second)) {
		t.Fatalf("snapshot %+v", s)
	}
}

// Samples that read only the tasks that may have changed (ObservePart)
// leave the others as they are: listed, levels standing, never ended; a
// task read again after a long unread idle spell gets its rate over one
// interval, not over the spell; only a full sample ends a task.
func TestTrackerPartialSamples(t *testing.T) {
	tr := NewTracker(0)
	lim := tr.Limits(map[string]schema.Levels{MessagesIn: {Warn: &schema.Threshold{Value: 10}}}, nil)
	in := map[string]uint64{}
	at := func(task string, sec int) Reading {
		return Reading{Task: task, Where: Internal, Pid: 1, Started: t0, Running: true, Limits: lim,
			Counters: &Counters{At: t0.Add(time.Duration(sec) * time.Second), In: in[task]}}
	}
	var got []string
	step := func(sec int, all bool, tasks ...string) {
		var rs []Reading
		for _, task := range tasks {
			rs = append(rs, at(task, sec))
		}
		now := t0.Add(time.Duration(sec) * time.Second)
		observe := tr.ObservePart
		if all {
			observe = tr.Observe
		}
		for _, j := range observe(now, nil, rs) {
			got = append(got, fmt.Sprintf("%d:%s", sec, show(j)))
		}
	}
	for sec := range 5 {
		step(sec, true, "A", "B")
	}
	if !tr.Quiet("A") || !tr.Quiet("B") {
		t.Fatal("idle tasks not quiet")
	}
	for sec := 5; sec < 60; sec++ {
		step(sec, false)
	}
	if s := tr.Snapshot(); len(s.Tasks) != 2 || !s.At.Equal(t0.Add(59*time.Second)) {
		t.Fatalf("snapshot after unread samples %+v", s)
	}
	in["A"] += 20 // 20 in the last second
	step(60, false, "A")
	s := tr.Snapshot()
	if v := s.Tasks[0].Values[MessagesIn]; s.Tasks[0].Task != "A" || v != 20 {
		t.Fatalf("A's rate %v, want 20, in %+v", v, s.Tasks[0])
	}
	in["A"] += 20
	step(61, false, "A")
	s = tr.Snapshot()
	if want := []string{"61:A messages_in ok->warn"}; !slices.Equal(got, want) {
		t.Fatalf("judgements %q, want %q (a rate over the unread spell would not warn)", got, want)
	}
	if len(s.Tasks) != 2 || s.Tasks[1].Task != "B" || s.Tasks[1].Values[MessagesIn] != 0 {
		t.Fatalf("B not shown as it was: %+v", s.Tasks)
	}
	step(62, true, "A")
	if s := tr.Snapshot(); len(s.Tasks) != 1 || tr.Tracked("B") {
		t.Fatalf("B not ended by a full sample without it: %+v", s.Tasks)
	}
}
