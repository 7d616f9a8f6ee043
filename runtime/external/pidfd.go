package external

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"

	"golang.org/x/sys/unix"
)

// errGone: the process a pidfd was asked for is not (or no longer) the
// one named.
var errGone = errors.New("process is gone")

// openPidfd opens a pidfd of id's process, made non-blocking so that the
// runtime's netpoller waits on it: a goroutine per process, and no OS
// thread, however many externals run. With a start time, the identity is
// checked after the open, so the pidfd cannot be of a later process that
// reused the pid (errGone). A kernel without pidfds (before 5.3) gives
// ENOSYS.
func openPidfd(id Identity) (*os.File, error) {
	fd, err := unix.PidfdOpen(id.Pid, 0)
	if err == unix.ESRCH {
		return nil, errGone
	}
	if err != nil {
		return nil, fmt.Errorf("pidfd of %d: %w", id.Pid, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("pidfd of %d: %w", id.Pid, err)
	}
	if id.Start != 0 && !id.Alive() {
		unix.Close(fd)
		return nil, errGone
	}
	return os.NewFile(uintptr(fd), fmt.Sprintf("pidfd:%d", id.Pid)), nil
}

// watch waits for e's process to end and reports it at once (finish).
// A pidfd becomes readable when the process has exited; cmd, for a
// child, is then reaped (cmd.Wait returns at once) for its status. With
// no pidfd (nil), cmd.Wait alone waits. e.gone is closed when it ended.
func (s *Supervisor) watch(e *entry, pidfd *os.File, cmd *exec.Cmd) {
	if pidfd != nil {
		if err := waitReadable(pidfd); err != nil {
			// Not expected of a pidfd; the process is then looked at
			// by the fallback below.
			s.o.Error.Error("waiting on a pidfd", "task", e.name, "pid", e.p.Pid, "error", err)
		}
		pidfd.Close()
	}
	if cmd != nil {
		err := cmd.Wait()
		s.mu.Lock()
		e.waitErr = err
		s.mu.Unlock()
	} else {
		// A zombie thread-group leader whose other threads still exit
		// counts as alive (Identity.Alive); it lasts a moment.
		for e.p.Alive() {
			time.Sleep(pollEvery)
		}
	}
	close(e.gone)
	s.finish(e)
}

// waitReadable parks the goroutine on the netpoller until f is readable.
func waitReadable(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("pidfd: %w", err)
	}
	var perr error
	err = rc.Read(func(fd uintptr) bool {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			n, err := unix.Poll(fds, 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				perr = err
				return true
			}
			return n > 0 // false: not yet, wait for the poller
		}
	})
	if err != nil {
		return fmt.Errorf("pidfd: %w", err)
	}
	if perr != nil {
		return fmt.Errorf("pidfd poll: %w", perr)
	}
	return nil
}
