package peers

import "sync/atomic"

// fanLeft counts the fan-out messages not yet handled, across all
// receivers of every framework (one workload runs at a time).
var fanLeft atomic.Int64

// fanDone reports whether this was the last fan-out message.
func fanDone() bool { return fanLeft.Add(-1) == 0 }
