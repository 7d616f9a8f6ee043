package external

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
