package external

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Identity names one process for as long as it lives: a pid alone may be
// reused, a pid with its start time may not.
type Identity struct {
	Pid   int    `json:"pid"`
	Start uint64 `json:"start"` // clock ticks since boot, from /proc
}

// StartTime reads a process's start time; an error means it is gone (a
// zombie has exited too).
func StartTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("unreadable /proc stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 || f[0] == "Z" {
		return 0, errors.New("process has exited")
	}
	return strconv.ParseUint(f[19], 10, 64) // field 22 of stat
}

// Alive reports whether the process has not fully exited. A zombie
// thread-group leader whose other threads are still exiting counts as
// alive: one of them may still hold the state file or take a message.
func (id Identity) Alive() bool {
	st, err := StartTime(id.Pid)
	if err == nil {
		return st == id.Start
	}
	tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(id.Pid) + "/task/*")
	return len(tasks) > 1
}

// StartedAt is when the process started, by the wall clock: the boot time
// plus its start in clock ticks. Unlike Process.Started it does not move
// when a new daemon adopts the process.
func (id Identity) StartedAt() (time.Time, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "btime" {
			boot, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return time.Time{}, fmt.Errorf("/proc/stat btime: %w", err)
			}
			// USER_HZ is 100 on every Linux the daemon runs on (the
			// kernel fixes it for /proc whatever CONFIG_HZ is).
			const userHZ = 100
			return time.Unix(boot, 0).Add(time.Duration(id.Start) * time.Second / userHZ), nil
		}
	}
	return time.Time{}, errors.New("/proc/stat has no btime")
}
