package monitor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/shirou/gopsutil/v4/mem"
	"github.com/tklauser/go-sysconf"
	"golang.org/x/sys/unix"
)

// ProcSample is what a process uses, in the units of the metrics.
type ProcSample struct {
	CPU, Memory, ReadBytes, WriteBytes, FDs, Threads float64
	// HasCPU: CPU was measured by this sample; CPU is 0 without it (the
	// first sample, or one sooner than minCPUInterval after the last).
	HasCPU bool
	// State is the state letter of /proc/PID/stat (R, S, D, T, t, ...),
	// so that a stall check needs no read of its own.
	State byte
}

// Values adds the sample to a task's metric values (CPU only if measured).
func (s ProcSample) Values(into map[string]float64) {
	if s.HasCPU {
		into[CPU] = s.CPU
	}
	into[Memory], into[ReadBytes], into[WriteBytes] = s.Memory, s.ReadBytes, s.WriteBytes
	into[FDs], into[Threads] = s.FDs, s.Threads
}

// ProcSampler samples processes by pid. It keeps each process's previous
// readings between samples: CPU and IO are rates since the previous
// sample. It reads /proc itself, each file once per process per sample
// (stat, io, and the fd directory), into buffers it reuses: gopsutil's
// Process re-read /proc/PID/stat for each figure and /proc/stat for the
// boot time on every call, most of what sampling 200 idle externals cost
// the daemon. It is not safe for concurrent use.
type ProcSampler struct {
	procs map[int]*sampled
	buf   []byte // one /proc file or a batch of fd directory entries
}

type sampled struct {
	start      uint64 // start time (ticks since boot): a reused pid is a new process
	ticks      uint64 // utime+stime at cpuAt
	cpuAt      time.Time
	readBytes  uint64
	writeBytes uint64
	ioAt       time.Time // zero until io was read
	marked     bool
}

// minCPUInterval is the shortest interval a CPU rate is taken over: CPU
// time is counted in clock ticks (10 ms), so a shorter one is mostly
// rounding. A sample sooner than that has no CPU figure.
const minCPUInterval = 50 * time.Millisecond

// clockTicks and pageSize convert /proc's units; both are fixed for the
// life of the process.
var (
	clockTicks = func() float64 {
		if t, err := sysconf.Sysconf(sysconf.SC_CLK_TCK); err == nil && t > 0 {
			return float64(t)
		}
		return 100 // USER_HZ on every Linux architecture we run on
	}()
	pageSize = float64(os.Getpagesize())
)

// NewProcSampler returns an empty sampler.
func NewProcSampler() *ProcSampler {
	return &ProcSampler{procs: map[int]*sampled{}, buf: make([]byte, 8<<10)}
}

// Sample measures pid. The first sample of a process has no rates yet
// (CPU and IO are 0).
func (s *ProcSampler) Sample(pid int) (ProcSample, error) {
	var out ProcSample
	dir := "/proc/" + strconv.Itoa(pid)
	st, err := s.stat(dir)
	if err != nil {
		return out, fmt.Errorf("process %d: %w", pid, err)
	}
	e := s.procs[pid]
	if e == nil || e.start != st.start {
		e = &sampled{start: st.start}
		s.procs[pid] = e
	}
	e.marked = true
	now := time.Now()
	out.State = st.state
	out.Memory = float64(st.rssPages) * pageSize
	out.Threads = float64(st.threads)
	if now.Sub(e.cpuAt) >= minCPUInterval {
		if !e.cpuAt.IsZero() {
			used := float64(st.ticks-min(e.ticks, st.ticks)) / clockTicks
			out.CPU, out.HasCPU = used/now.Sub(e.cpuAt).Seconds(), true
		}
		e.ticks, e.cpuAt = st.ticks, now
	}
	fds, err := s.countFDs(dir + "/fd")
	if err != nil {
		return out, fmt.Errorf("process %d fds: %w", pid, err)
	}
	out.FDs = float64(fds)
	// Storage IO (read_bytes/write_bytes of /proc/PID/io), not pipes or
	// queues; an unreadable io file (another user's process) leaves 0.
	if rb, wb, err := s.io(dir); err == nil {
		if !e.ioAt.IsZero() {
			if dt := now.Sub(e.ioAt).Seconds(); dt > 0 {
				out.ReadBytes = float64(rb-min(e.readBytes, rb)) / dt
				out.WriteBytes = float64(wb-min(e.writeBytes, wb)) / dt
			}
		}
		e.readBytes, e.writeBytes, e.ioAt = rb, wb, now
	}
	return out, nil
}

// Sweep forgets the processes not sampled since the previous Sweep.
func (s *ProcSampler) Sweep() {
	for pid, e := range s.procs {
		if !e.marked {
			delete(s.procs, pid)
		}
		e.marked = false
	}
}

// read reads a whole /proc file into s.buf (it grows as needed) with
// plain system calls: os.Open's fstat and poller checks would double
// the calls per file.
func (s *ProcSampler) read(path string) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	n := 0
	for {
		if n == len(s.buf) {
			s.buf = append(s.buf, make([]byte, len(s.buf))...)
		}
		m, err := unix.Read(fd, s.buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		if m == 0 {
			return s.buf[:n], nil
		}
		n += m
	}
}

// procStat is what sampling takes from /proc/PID/stat.
type procStat struct {
	state                           byte
	ticks, start, rssPages, threads uint64
}

// stat reads /proc/PID/stat once: state, CPU ticks, threads, start time
// and resident pages (what statm would say, from the same counters).
func (s *ProcSampler) stat(dir string) (procStat, error) {
	b, err := s.read(dir + "/stat")
	if err != nil {
		return procStat{}, err
	}
	// "pid (comm) S ...": comm may hold spaces and parentheses; the
	// fields counted here follow the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, errors.New("unreadable /proc stat")
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 22 || len(f[0]) != 1 {
		return procStat{}, errors.New("unreadable /proc stat")
	}
	if f[0][0] == 'Z' || f[0][0] == 'X' {
		return procStat{}, errors.New("process has exited")
	}
	// f[k] is field k+3 of proc(5): utime 14, stime 15, num_threads 20,
	// starttime 22, rss 24.
	var v [5]uint64
	for j, k := range [5]int{11, 12, 17, 19, 21} {
		if v[j], err = strconv.ParseUint(string(f[k]), 10, 64); err != nil {
			return procStat{}, fmt.Errorf("/proc stat field %d: %w", k+3, err)
		}
	}
	return procStat{state: f[0][0], ticks: v[0] + v[1], threads: v[2], start: v[3], rssPages: v[4]}, nil
}

// io reads read_bytes and write_bytes of /proc/PID/io.
func (s *ProcSampler) io(dir string) (read, write uint64, err error) {
	b, err := s.read(dir + "/io")
	if err != nil {
		return 0, 0, err
	}
	var found int
	for line := range bytes.SplitSeq(b, []byte{'\n'}) {
		k, v, ok := bytes.Cut(line, []byte(": "))
		if !ok {
			continue
		}
		var into *uint64
		switch string(k) {
		case "read_bytes":
			into = &read
		case "write_bytes":
			into = &write
		default:
			continue
		}
		if *into, err = strconv.ParseUint(string(v), 10, 64); err != nil {
			return 0, 0, fmt.Errorf("/proc io %s: %w", k, err)
		}
		found++
	}
	if found != 2 {
		return 0, 0, errors.New("/proc io without read_bytes and write_bytes")
	}
	return read, write, nil
}

// countFDs counts the entries of /proc/PID/fd with getdents, without
// making a name or a sorted list of them.
func (s *ProcSampler) countFDs(dir string) (int, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", dir, err)
	}
	defer unix.Close(fd)
	count := 0
	for {
		n, err := unix.Getdents(fd, s.buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("getdents %s: %w", dir, err)
		}
		if n <= 0 {
			return count, nil
		}
		// linux_dirent64: ino (8), off (8), reclen (2), type (1), name.
		for off := 0; off+19 < n; {
			reclen := int(binary.NativeEndian.Uint16(s.buf[off+16:]))
			if reclen == 0 {
				break
			}
			name := s.buf[off+19 : off+reclen]
			if !(name[0] == '.' && (name[1] == 0 || name[1] == '.' && name[2] == 0)) {
				count++
			}
			off += reclen
		}
	}
}

// BoxMemory is the machine's memory in bytes, 0 if unknown.
func BoxMemory() float64 {
	vm, err := mem.VirtualMemory()
	if err != nil {
		return 0
	}
	return float64(vm.Total)
}
