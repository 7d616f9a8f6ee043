package transit

import (
	"errors"
	"os"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// System V message queue syscalls. x/sys/unix has no typed wrappers for
// them, so these are the raw calls with EINTR retried.

// msqidDS is the kernel's struct msqid64_ds on 64-bit Linux.
type msqidDS struct {
	Perm   unix.SysvIpcPerm
	Stime  int64
	Rtime  int64
	Ctime  int64
	Cbytes uint64
	Qnum   uint64
	Qbytes uint64
	Lspid  int32
	Lrpid  int32
	_      uint64
	_      uint64
}

const typeSize = 8 // the long mtype before the text

func msgget(key int32, flags int) (int, error) {
	for {
		id, _, e := unix.Syscall(unix.SYS_MSGGET, uintptr(key), uintptr(flags), 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return -1, e
		}
		return int(id), nil
	}
}

// msgsnd sends buf, whose first 8 bytes hold the mtype and the rest the
// text.
func msgsnd(id int, buf []byte, flags int) error {
	for {
		_, _, e := unix.Syscall6(unix.SYS_MSGSND, uintptr(id), uintptr(unsafe.Pointer(&buf[0])),
			uintptr(len(buf)-typeSize), uintptr(flags), 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return e
		}
		return nil
	}
}

// msgsndUntil sends buf, blocking in the kernel until the queue has room
// or deadline passes (then EAGAIN). System V calls cannot time out, and a
// signal ends them with EINTR whatever SA_RESTART says: at the deadline a
// timer signals the sending thread (SIGURG, which the Go runtime takes
// for its own and otherwise ignores) until it has returned.
func msgsndUntil(id int, buf []byte, deadline time.Time) error {
	if !time.Now().Before(deadline) {
		return unix.EAGAIN
	}
	goruntime.LockOSThread()
	defer goruntime.UnlockOSThread()
	pid, tid := unix.Getpid(), unix.Gettid()
	var expired atomic.Bool
	var mu sync.Mutex
	out := false
	timer := time.AfterFunc(time.Until(deadline), func() {
		expired.Store(true)
		// A signal that lands before the call blocks is missed: repeat.
		for {
			mu.Lock()
			if out {
				mu.Unlock()
				return
			}
			unix.Tgkill(pid, tid, unix.SIGURG)
			mu.Unlock()
			time.Sleep(time.Millisecond)
		}
	})
	defer func() {
		mu.Lock()
		out = true
		mu.Unlock()
		timer.Stop()
	}()
	for {
		_, _, e := unix.Syscall6(unix.SYS_MSGSND, uintptr(id), uintptr(unsafe.Pointer(&buf[0])),
			uintptr(len(buf)-typeSize), 0, 0, 0)
		switch {
		case e == unix.EINTR:
			if expired.Load() || !time.Now().Before(deadline) {
				return unix.EAGAIN
			}
		case e != 0:
			return e
		default:
			return nil
		}
	}
}

// msgrcv receives into buf (mtype then text) and returns the text length.
// A blocking call parks its OS thread: Syscall, not RawSyscall, so the Go
// scheduler runs other goroutines meanwhile.
func msgrcv(id int, buf []byte, msgtyp int64, flags int) (int, error) {
	for {
		n, _, e := unix.Syscall6(unix.SYS_MSGRCV, uintptr(id), uintptr(unsafe.Pointer(&buf[0])),
			uintptr(len(buf)-typeSize), uintptr(msgtyp), uintptr(flags), 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(n), nil
	}
}

func msgstat(id int) (msqidDS, error) {
	var ds msqidDS
	_, _, e := unix.Syscall(unix.SYS_MSGCTL, uintptr(id), uintptr(unix.IPC_STAT), uintptr(unsafe.Pointer(&ds)))
	if e != 0 {
		return ds, e
	}
	return ds, nil
}

func msgrmid(id int) error {
	_, _, e := unix.Syscall(unix.SYS_MSGCTL, uintptr(id), uintptr(unix.IPC_RMID), 0)
	if e != 0 {
		return e
	}
	return nil
}

// isGone reports whether err means the queue no longer exists.
func isGone(err error) bool {
	return errors.Is(err, unix.EIDRM) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT)
}

// kernelLimit reads /proc/sys/kernel/NAME, falling back to def.
func kernelLimit(name string, def int) int {
	b, err := os.ReadFile("/proc/sys/kernel/" + name)
	if err != nil {
		return def
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n <= 0 {
		return def
	}
	return n
}

// msgsetmode sets the queue's permission bits (IPC_SET; the other fields
// it sets are written back as they were read).
func msgsetmode(id int, ds msqidDS, mode uint32) error {
	ds.Perm.Mode = ds.Perm.Mode&^0o777 | mode
	_, _, e := unix.Syscall(unix.SYS_MSGCTL, uintptr(id), uintptr(unix.IPC_SET), uintptr(unsafe.Pointer(&ds)))
	if e != 0 {
		return e
	}
	return nil
}

// Totals are the kernel's counts over every System V queue of this IPC
// namespace (msgctl MSG_INFO): queues, messages and bytes.
type Totals struct{ Queues, Messages, Bytes int32 }

// msgInfo is the kernel's struct msginfo.
type msgInfo struct {
	pool, mapped, max, mnb, mni, ssz, tql int32
	seg                                   uint16
}

// SystemTotals reads Totals with one system call: a receiver that sees
// them unchanged since it last looked knows that no message arrived in
// any queue meanwhile, without looking at each.
func SystemTotals() (Totals, error) {
	const msgInfoCmd = 12 // MSG_INFO
	var mi msgInfo
	_, _, e := unix.Syscall(unix.SYS_MSGCTL, 0, msgInfoCmd, uintptr(unsafe.Pointer(&mi)))
	if e != 0 {
		return Totals{}, e
	}
	return Totals{Queues: mi.pool, Messages: mi.mapped, Bytes: mi.tql}, nil
}
