// Package monitor judges what tasks use: it samples processes, turns
// samples into levels against thresholds, and exposes both to Prometheus.
// It takes plain readings (Reading) from whoever runs the tasks and knows
// nothing of the daemon: a Tracker, owned by one goroutine, follows each
// task across restarts and returns the level changes (Judgement), which
// the caller alerts on and acts upon.
//
// A level changes only when Confirm consecutive samples agree, so a spike
// is caught within a couple of samples and one odd sample never flaps an
// alert.
package monitor

import (
	"fmt"
	"math"
)

// Level is how far past its limits a metric is.
type Level uint8

// Levels, in order of gravity.
const (
	OK Level = iota
	Warn
	Severe
	Failsafe
)

func (l Level) String() string {
	switch l {
	case OK:
		return "ok"
	case Warn:
		return "warn"
	case Severe:
		return "severe"
	case Failsafe:
		return "failsafe"
	}
	return fmt.Sprintf("level(%d)", uint8(l))
}

// Thresholds are a metric's limits for Warn, Severe and Failsafe, in the
// metric's unit. NaN means the level is not set.
type Thresholds [3]float64

// Unset has no level set.
var Unset = Thresholds{math.NaN(), math.NaN(), math.NaN()}

// Of returns the threshold of level l (NaN for OK or an unset level).
func (t Thresholds) Of(l Level) float64 {
	if l == OK || l > Failsafe {
		return math.NaN()
	}
	return t[l-1]
}

// Judge returns the gravest level whose threshold v reaches.
func (t Thresholds) Judge(v float64) Level {
	for l := Failsafe; l > OK; l-- {
		if th := t.Of(l); !math.IsNaN(th) && v >= th {
			return l
		}
	}
	return OK
}

// Confirm is how many consecutive samples must agree before a level
// changes.
const Confirm = 2

// Watch follows one metric of one task. Its zero value is at OK, as if
// the samples before the first were all OK.
type Watch struct {
	level  Level
	recent [Confirm]Level
}

// Level is the watched level.
func (w *Watch) Level() Level { return w.level }

// Steady says that another sample at the watched level would change
// nothing: the last Confirm samples are all at it.
func (w *Watch) Steady() bool {
	for _, l := range w.recent {
		if l != w.level {
			return false
		}
	}
	return true
}

// Observe takes the level of a new sample and reports whether the watched
// level changed (and from what). The level rises to the lowest level the
// last Confirm samples all reach, and falls to the highest level none of
// them exceeds.
func (w *Watch) Observe(l Level) (changed bool, from Level) {
	copy(w.recent[:], w.recent[1:])
	w.recent[Confirm-1] = l
	lo, hi := w.recent[0], w.recent[0]
	for _, x := range w.recent[1:] {
		lo, hi = min(lo, x), max(hi, x)
	}
	from = w.level
	switch {
	case lo > w.level:
		w.level = lo
	case hi < w.level:
		w.level = hi
	default:
		return false, from
	}
	return true, from
}
