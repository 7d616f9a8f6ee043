package peers

import "sync/atomic"

// fanCount counts the fan-out messages not yet handled, across all the
// receivers of one runner.
type fanCount struct{ left atomic.Int64 }

func (f *fanCount) expect(n int) { f.left.Store(int64(n)) }

// done reports whether this was the last fan-out message.
func (f *fanCount) done() bool { return f.left.Add(-1) == 0 }
