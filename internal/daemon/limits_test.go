package daemon

import (
	"testing"

	"github.com/multimodule/multimodule/monitor"
	"github.com/multimodule/multimodule/runtime"
)

// The mailbox's default levels are fractions of the bound past which a
// task's mailbox pushes back on its queue: they must move with it.
func TestMailboxDefaultsFollowMailboxBound(t *testing.T) {
	if monitor.MailboxWarn != runtime.MailboxBound/4 || monitor.MailboxSevere != runtime.MailboxBound*3/4 {
		t.Errorf("mailbox defaults %d/%d, want %d/%d (a quarter and three quarters of MailboxBound)",
			monitor.MailboxWarn, monitor.MailboxSevere, runtime.MailboxBound/4, runtime.MailboxBound*3/4)
	}
	if got := monitor.Defaults(0)[monitor.Mailbox]; got[0] != monitor.MailboxWarn || got[1] != monitor.MailboxSevere {
		t.Errorf("Defaults mailbox = %v", got)
	}
}
