package scheduler

import (
	"time"

	"github.com/multimodule/multimodule/runtime"
)

// NewAt makes a Scheduler whose clock is now().
func NewAt(now func() time.Time) runtime.Task { return &Scheduler{now: now} }
