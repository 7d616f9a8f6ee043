package monitor

import (
	"math"
	"testing"
)

func TestJudge(t *testing.T) {
	nan := math.NaN()
	for _, c := range []struct {
		th   Thresholds
		v    float64
		want Level
	}{
		{Thresholds{1, 2, 3}, 0.5, OK},
		{Thresholds{1, 2, 3}, 1, Warn},
		{Thresholds{1, 2, 3}, 2.5, Severe},
		{Thresholds{1, 2, 3}, 3, Failsafe},
		{Thresholds{1, 2, nan}, 99, Severe},
		{Thresholds{nan, nan, 5}, 4, OK},
		{Thresholds{nan, nan, 5}, 5, Failsafe},
		// A failsafe set below a default warn still wins.
		{Thresholds{10, 20, 5}, 6, Failsafe},
		{Unset, 1e300, OK},
	} {
		if got := c.th.Judge(c.v); got != c.want {
			t.Errorf("%v.Judge(%v) = %v, want %v", c.th, c.v, got, c.want)
		}
	}
}

func TestWatchNeedsTwoSamplesToChange(t *testing.T) {
	for _, c := range []struct {
		name    string
		samples []Level
		want    []Level // the watched level after each sample
	}{
		{"one spike never alerts", []Level{OK, Failsafe, OK, Severe, OK}, []Level{OK, OK, OK, OK, OK}},
		{"two samples rise", []Level{Warn, Warn, Warn}, []Level{OK, Warn, Warn}},
		{"rise to what both reach", []Level{Warn, Failsafe, Failsafe}, []Level{OK, Warn, Failsafe}},
		{"fall after two", []Level{Severe, Severe, OK, Severe, OK, OK}, []Level{OK, Severe, Severe, Severe, Severe, OK}},
		{"fall to the higher of the two", []Level{Severe, Severe, OK, Warn}, []Level{OK, Severe, Severe, Warn}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var w Watch
			changes := 0
			for i, s := range c.samples {
				before := w.Level()
				changed, from := w.Observe(s)
				if from != before {
					t.Fatalf("sample %d: from %v, was %v", i, from, before)
				}
				if changed {
					changes++
				}
				if changed != (w.Level() != before) {
					t.Fatalf("sample %d: changed=%v but %v -> %v", i, changed, before, w.Level())
				}
				if w.Level() != c.want[i] {
					t.Fatalf("after sample %d (%v): level %v, want %v", i, s, w.Level(), c.want[i])
				}
			}
		})
	}
}
