package scheduler_test

import (
	"errors"
	"testing"
	"time"

	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/tasks/scheduler"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func cfg(s ...map[string]any) map[string]any {
	list := make([]any, len(s))
	for i, x := range s {
		list[i] = x
	}
	return map[string]any{"schedules": list}
}

func TestEveryAndMissedRuns(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	for _, tc := range []struct {
		missed string
		want   int // runs after 95 s down
	}{{"skip", 0}, {"once", 1}, {"all", 9}} {
		t.Run(tc.missed, func(t *testing.T) {
			conf := cfg(map[string]any{"name": "beat", "every": 10.0, "message": map[string]any{"hb": true}, "missed": tc.missed})
			h := mmtest.New(t, "Sched", scheduler.NewAt(c.now), mmtest.Config(conf))
			c.t = c.t.Add(10 * time.Second)
			h.Fire(scheduler.TickTimer)
			if len(h.Emitted) != 1 || h.Emitted[0]["hb"] != true || h.Emitted[0]["schedule"] != "beat" || h.Emitted[0]["late"] != nil {
				t.Fatalf("emitted %v", h.Emitted)
			}
			// Down for 97 s: runs at +20 .. +100 were missed (9 of them).
			c.t = c.t.Add(97 * time.Second)
			h.Restart(scheduler.NewAt(c.now), conf)
			if len(h.Emitted) != tc.want {
				t.Fatalf("%d runs caught up, want %d: %v", len(h.Emitted), tc.want, h.Emitted)
			}
			for _, m := range h.Emitted {
				if m["late"] != true {
					t.Fatalf("not marked late: %v", m)
				}
			}
			h.Reset()
			c.t = c.t.Add(3 * time.Second) // +110: on time again
			h.Fire(scheduler.TickTimer)
			if len(h.Emitted) != 1 || h.Emitted[0]["late"] != nil {
				t.Fatalf("emitted %v", h.Emitted)
			}
		})
	}
}

func TestCronAtAndOneOffs(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 0, 0, 30, 0, time.UTC)}
	conf := cfg(
		map[string]any{"name": "five", "cron": "*/5 * * * *", "to": "Q"},
		map[string]any{"name": "once", "at": []any{"2026-01-01T00:02:00Z"}},
	)
	h := mmtest.New(t, "Sched", scheduler.NewAt(c.now), mmtest.Config(conf))
	if err := h.Message(map[string]any{"schedule": map[string]any{"in": 60.0, "message": map[string]any{"x": 1.0}}}); err != nil {
		t.Fatal(err)
	}
	for range 10 { // to 00:05:30, a minute at a time
		c.t = c.t.Add(30 * time.Second)
		h.Fire(scheduler.TickTimer)
	}
	if len(h.Sent) != 1 || h.Sent[0].Queue != "Q" || h.Sent[0].Msg["scheduled_at"] != "2026-01-01T00:05:00Z" {
		t.Fatalf("sent %v", h.Sent)
	}
	if len(h.Emitted) != 2 || h.Emitted[0]["x"] != 1.0 || h.Emitted[1]["schedule"] != "once" {
		t.Fatalf("emitted %v", h.Emitted)
	}
	// A one-off due while stopped runs at the start, marked late.
	h.Message(map[string]any{"schedule": map[string]any{"at": "2026-01-01T01:00:00Z", "message": map[string]any{"y": 1.0}}})
	c.t = c.t.Add(2 * time.Hour)
	h.Restart(scheduler.NewAt(c.now), conf)
	var late bool
	for _, m := range h.Emitted {
		late = late || (m["y"] == 1.0 && m["late"] == true)
	}
	if !late {
		t.Fatalf("emitted %v", h.Emitted)
	}
}

func TestCheckConfig(t *testing.T) {
	for _, c := range []map[string]any{
		cfg(map[string]any{"name": "a"}),
		cfg(map[string]any{"name": "a", "every": 1.0, "cron": "* * * * *"}),
		cfg(map[string]any{"name": "a", "cron": "61 * * * *"}),
		cfg(map[string]any{"name": "a", "at": []any{"tomorrow"}}),
		cfg(map[string]any{"name": "a", "every": 1.0, "missed": "later"}),
		cfg(map[string]any{"name": "a", "every": 1.0}, map[string]any{"name": "a", "every": 2.0}),
	} {
		var located interface{ ConfigPath() []string }
		if err := scheduler.CheckConfig(c); !errors.As(err, &located) {
			t.Errorf("%v: %v", c, err)
		}
	}
	if err := scheduler.CheckConfig(cfg(map[string]any{"name": "d", "cron": "@daily", "missed": "once"})); err != nil {
		t.Fatal(err)
	}
}
