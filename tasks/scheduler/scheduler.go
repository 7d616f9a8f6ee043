// Package scheduler is the built-in Scheduler task: it emits configured
// messages on an interval, a cron expression or at set times, and takes
// {"schedule": {...}} messages that add one-off runs.
//
// It is stateful: the time of each schedule's last run and the pending
// one-offs are in its state, so runs missed while the daemon was down are
// skipped, run once, or each run, as the schedule's `missed` says, and
// one-offs survive restarts (a late one runs at once, marked "late").
package scheduler

import (
	_ "embed"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/runtime"
	"github.com/multimodule/multimodule/tasks/internal/taskconf"
)

// Kind is the task's registered kind.
const Kind = "builtin.Scheduler"

// Description is the one line --list-kinds shows.
const Description = "emits messages on intervals, cron expressions or set times; one-offs by message; missed runs caught up or skipped"

// ConfigSchema is the CUE definition #Config of the task's config.
//
//go:embed scheduler.cue
var ConfigSchema string

// TickTimer is the timer that checks what is due.
const TickTimer = "tick"

const (
	tickEvery = 250 * time.Millisecond
	// late is how far past its time a run still counts as on time (not
	// missed): a tick or a slow handler may delay it that much.
	late = 5 * time.Second
	// maxCatchUp bounds the runs one schedule catches up with "all".
	maxCatchUp = 1000
	// maxOneOffs bounds the pending one-offs.
	maxOneOffs = 10000
)

// parser reads 5-field expressions and descriptors such as @daily.
var parser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

type schedule struct {
	name    string
	every   time.Duration
	cron    cron.Schedule
	at      []time.Time // sorted
	message map[string]any
	to      string
	missed  string
}

// next is the schedule's first time after t (zero if none).
func (s *schedule) next(t time.Time) time.Time {
	switch {
	case s.every > 0:
		return t.Add(s.every)
	case s.cron != nil:
		return s.cron.Next(t)
	}
	for _, a := range s.at {
		if a.After(t) {
			return a
		}
	}
	return time.Time{}
}

// Scheduler is the task.
type Scheduler struct {
	schedules []*schedule
	now       func() time.Time
}

// New makes a Scheduler.
func New() runtime.Task { return &Scheduler{now: time.Now} }

// Stateful marks the last runs and one-offs as persisted.
func (*Scheduler) Stateful() {}

// CheckConfig validates a config as SetConfig would.
func CheckConfig(c map[string]any) error {
	_, err := parseConfig(c)
	return err
}

func parseConfig(c map[string]any) ([]*schedule, error) {
	r := taskconf.New(c)
	r.Only("schedules")
	raw, _ := r.Any("schedules").([]any)
	if r.Has("schedules") && raw == nil {
		if _, isList := r.Any("schedules").([]any); !isList {
			r.Fail("schedules", "want a list")
		}
	}
	var out []*schedule
	seen := map[string]bool{}
	for i, x := range raw {
		m, ok := x.(map[string]any)
		path := []string{"schedules", fmt.Sprint(i)}
		if !ok {
			return nil, taskconf.Errorf(path, "want an object")
		}
		s, err := parseSchedule(m, path)
		if err != nil {
			return nil, err
		}
		if seen[s.name] {
			return nil, taskconf.Errorf(append(path, "name"), "duplicate name %q", s.name)
		}
		seen[s.name] = true
		out = append(out, s)
	}
	if err := r.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

func parseSchedule(m map[string]any, path []string) (*schedule, error) {
	r := taskconf.New(m)
	r.Only("name", "every", "cron", "at", "message", "to", "missed")
	s := &schedule{name: r.String("name", ""), to: r.String("to", ""), missed: r.String("missed", "skip")}
	s.every = r.Seconds("every", 0, 366*24*time.Hour)
	expr := r.String("cron", "")
	at := r.Strings("at")
	s.message, _ = r.Any("message").(map[string]any)
	if r.Has("message") && s.message == nil {
		r.Fail("message", "want an object")
	}
	if err := r.Err(); err != nil {
		return nil, prefix(err, path)
	}
	fail := func(key, format string, args ...any) error {
		return taskconf.Errorf(append(slices.Clone(path), key), format, args...)
	}
	if s.name == "" {
		return nil, fail("name", "required")
	}
	if s.every > 0 && s.every < 100*time.Millisecond {
		return nil, fail("every", "at least 0.1 seconds")
	}
	n := 0
	for _, has := range []bool{r.Has("every"), r.Has("cron"), r.Has("at")} {
		if has {
			n++
		}
	}
	if n != 1 {
		return nil, fail("name", "schedule %q: want exactly one of every, cron and at", s.name)
	}
	if expr != "" {
		sched, err := parser.Parse(expr)
		if err != nil {
			return nil, fail("cron", "%v", err)
		}
		s.cron = sched
	}
	for i, a := range at {
		t, err := time.Parse(time.RFC3339, a)
		if err != nil {
			return nil, taskconf.Errorf(append(slices.Clone(path), "at", fmt.Sprint(i)), "want an RFC 3339 time: %v", err)
		}
		s.at = append(s.at, t)
	}
	sort.Slice(s.at, func(i, j int) bool { return s.at[i].Before(s.at[j]) })
	switch s.missed {
	case "skip", "once", "all":
	default:
		return nil, fail("missed", `want "skip", "once" or "all", got %q`, s.missed)
	}
	if s.message == nil {
		s.message = map[string]any{}
	}
	return s, nil
}

func prefix(err error, path []string) error {
	var e *taskconf.Error
	if errors.As(err, &e) {
		return &taskconf.Error{Path: append(slices.Clone(path), e.Path...), Err: e.Err}
	}
	return err
}

// SetConfig takes the schedules and starts the tick.
func (s *Scheduler) SetConfig(ctx runtime.Context, c map[string]any) error {
	scheds, err := parseConfig(c)
	if err != nil {
		return err
	}
	s.schedules = scheds
	ctx.Recur(TickTimer, tickEvery, s.tick)
	s.tick(ctx)
	return nil
}

// Message takes {"schedule": {"at": RFC3339 | "in": seconds, "message":
// {...}, "to"?: QUEUE}}: a one-off run, kept in the state until it ran.
func (s *Scheduler) Message(ctx runtime.Context, msg runtime.Message) error {
	req, ok := msg["schedule"].(map[string]any)
	if !ok {
		return errors.New(`scheduler: want {"schedule": {"at" or "in", "message", "to"?}}`)
	}
	var at time.Time
	switch {
	case req["at"] != nil:
		str, _ := req["at"].(string)
		t, err := time.Parse(time.RFC3339, str)
		if err != nil {
			return fmt.Errorf("scheduler: schedule.at: want an RFC 3339 time: %w", err)
		}
		at = t
	case req["in"] != nil:
		sec, ok := req["in"].(float64)
		if !ok || sec < 0 {
			return errors.New("scheduler: schedule.in: want seconds, 0 or more")
		}
		at = s.now().Add(time.Duration(sec * float64(time.Second)))
	default:
		return errors.New("scheduler: schedule: want at or in")
	}
	m, _ := req["message"].(map[string]any)
	if m == nil {
		return errors.New("scheduler: schedule.message: want an object")
	}
	to, _ := req["to"].(string)
	list, _ := ctx.State()["oneoffs"].([]any)
	if len(list) >= maxOneOffs {
		return fmt.Errorf("scheduler: %d one-offs pending already", len(list))
	}
	one := map[string]any{"at": at.UTC().Format(time.RFC3339Nano), "message": m}
	if to != "" {
		one["to"] = to
	}
	ctx.State()["oneoffs"] = append(list, one)
	s.tick(ctx)
	return nil
}

// tick runs what is due.
func (s *Scheduler) tick(ctx runtime.Context) {
	now := s.now()
	lastRuns, _ := ctx.State()["last"].(map[string]any)
	if lastRuns == nil {
		lastRuns = map[string]any{}
		ctx.State()["last"] = lastRuns
	}
	for _, sc := range s.schedules {
		str, _ := lastRuns[sc.name].(string)
		last, err := time.Parse(time.RFC3339Nano, str)
		if err != nil {
			// New schedule: its first run is its next time from now.
			lastRuns[sc.name] = now.UTC().Format(time.RFC3339Nano)
			continue
		}
		last = s.runDue(ctx, sc, last, now)
		lastRuns[sc.name] = last.UTC().Format(time.RFC3339Nano)
	}
	for name := range maps.Keys(lastRuns) {
		if !slices.ContainsFunc(s.schedules, func(sc *schedule) bool { return sc.name == name }) {
			delete(lastRuns, name) // a schedule removed from the config
		}
	}
	s.runOneOffs(ctx, now)
}

// runDue runs sc's times after last up to now, applying its missed
// policy to those more than `late` ago, and returns the last time run.
func (s *Scheduler) runDue(ctx runtime.Context, sc *schedule, last, now time.Time) time.Time {
	var missed []time.Time
	if sc.every > 0 {
		// Down for long: jump over what even "all" would not run.
		if k := now.Sub(last) / sc.every; k > maxCatchUp+1 {
			last = last.Add((k - maxCatchUp - 1) * sc.every)
		}
	}
	for next := sc.next(last); !next.IsZero() && !next.After(now); next = sc.next(last) {
		last = next
		if now.Sub(next) > late {
			if len(missed) < maxCatchUp {
				missed = append(missed, next)
			}
			continue
		}
		s.fire(ctx, sc.message, sc.to, sc.name, next, false)
	}
	switch {
	case len(missed) == 0:
	case sc.missed == "all":
		for _, t := range missed {
			s.fire(ctx, sc.message, sc.to, sc.name, t, true)
		}
	case sc.missed == "once":
		s.fire(ctx, sc.message, sc.to, sc.name, missed[len(missed)-1], true)
	default:
		ctx.Log("scheduler: missed runs skipped", "schedule", sc.name, "runs", len(missed))
	}
	return last
}

func (s *Scheduler) runOneOffs(ctx runtime.Context, now time.Time) {
	list, _ := ctx.State()["oneoffs"].([]any)
	if len(list) == 0 {
		return
	}
	keep := list[:0:0]
	for _, x := range list {
		one, _ := x.(map[string]any)
		at, err := time.Parse(time.RFC3339Nano, fmt.Sprint(one["at"]))
		m, _ := one["message"].(map[string]any)
		if err != nil || m == nil {
			continue // not ours: dropped
		}
		if at.After(now) {
			keep = append(keep, x)
			continue
		}
		to, _ := one["to"].(string)
		s.fire(ctx, m, to, "", at, now.Sub(at) > late)
	}
	ctx.State()["oneoffs"] = keep
}

// fire emits (or sends) a copy of msg, stamped with its schedule and time.
func (s *Scheduler) fire(ctx runtime.Context, msg map[string]any, to, name string, at time.Time, isLate bool) {
	m := message.DeepCopy(msg).(map[string]any)
	m["scheduled_at"] = at.UTC().Format(time.RFC3339Nano)
	if name != "" {
		m["schedule"] = name
	}
	if isLate {
		m["late"] = true
	}
	if to == "" {
		ctx.Emit(m)
		return
	}
	if err := ctx.Send(to, m); err != nil {
		ctx.Error("scheduler: send failed", "to", to, "schedule", name, "error", err)
	}
}
