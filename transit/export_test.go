package transit

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// RemoveKernelQueueForTest removes the kernel queue but not its name.
func RemoveKernelQueueForTest(q *Queue) error { return msgrmid(q.qid()) }

// SetCapacityForTest lowers the kernel queue's msg_qbytes (an owner may
// lower it; only root may raise it above msgmnb).
func SetCapacityForTest(q *Queue, n uint64) error {
	ds, err := msgstat(q.qid())
	if err != nil {
		return err
	}
	ds.Qbytes = n
	_, _, e := unix.Syscall(unix.SYS_MSGCTL, uintptr(q.qid()), uintptr(unix.IPC_SET), uintptr(unsafe.Pointer(&ds)))
	if e != 0 {
		return e
	}
	return nil
}

// QueueModeForTest is the kernel queue's permission bits.
func QueueModeForTest(q *Queue) uint32 {
	ds, err := msgstat(q.qid())
	if err != nil {
		return 0
	}
	return ds.Perm.Mode & 0o777
}

// KernelIDForTest is the id of the queue's kernel queue.
func KernelIDForTest(q *Queue) int { return q.qid() }
