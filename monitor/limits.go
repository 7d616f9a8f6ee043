package monitor

import (
	"fmt"
	"math"

	"github.com/multimodule/multimodule/schema"
)

// Limits are one task's thresholds, by metric, once the task's own, the
// daemon's and the defaults are merged. A metric it lacks is not judged.
type Limits map[string]Thresholds

// Of returns the thresholds of metric (Unset if none).
func (l Limits) Of(metric string) Thresholds {
	if th, ok := l[metric]; ok {
		return th
	}
	return Unset
}

// MergeLimits returns a task's limits: its own, level by level, over the
// daemon's, over defaults. box is the machine's memory in bytes (0 if
// unknown): a memory limit written as a number is a fraction of it, and
// of an unknown box it is not set rather than 0, which every task would
// reach.
func MergeLimits(defaults map[string]Thresholds, box float64, daemon, task map[string]schema.Levels) Limits {
	out := make(Limits, len(Metrics))
	for _, mt := range Metrics {
		th, ok := defaults[mt.Name]
		if !ok {
			th = Unset
		}
		for _, l := range []schema.Levels{daemon[mt.Name], task[mt.Name]} {
			for i, t := range []*schema.Threshold{l.Warn, l.Severe, l.Failsafe} {
				if t == nil {
					continue
				}
				v := t.Value
				if mt.Name == Memory && t.Size == "" {
					v *= box
					if box <= 0 {
						v = math.NaN()
					}
				}
				th[i] = v
			}
		}
		out[mt.Name] = th
	}
	return out
}

// OrderError is a metric whose merged limits are out of order: a graver
// level is reached first (a warn above the failsafe, say). The limits
// still work, the gravest level reached wins, but the graver level then
// acts with no warning first, which is rarely what was meant.
type OrderError struct {
	Metric     string
	Thresholds Thresholds
}

func (e OrderError) Error() string {
	return fmt.Sprintf("%s limits out of order: warn %v, severe %v, failsafe %v",
		e.Metric, e.Thresholds.Of(Warn), e.Thresholds.Of(Severe), e.Thresholds.Of(Failsafe))
}

// Check returns the metrics whose limits are out of order, in the order
// of Metrics.
func (l Limits) Check() []OrderError {
	var out []OrderError
	for _, mt := range Metrics {
		th := l.Of(mt.Name)
		below := math.Inf(-1)
		for lv := Warn; lv <= Failsafe; lv++ {
			v := th.Of(lv)
			if math.IsNaN(v) {
				continue
			}
			if v < below {
				out = append(out, OrderError{Metric: mt.Name, Thresholds: th})
				break
			}
			below = v
		}
	}
	return out
}
