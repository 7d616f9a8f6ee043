package monitor

import (
	"fmt"
	"time"

	"github.com/shirou/gopsutil/v4/mem"
	"github.com/shirou/gopsutil/v4/process"
)

// ProcSample is what a process uses, in the units of the metrics.
type ProcSample struct {
	CPU, Memory, ReadBytes, WriteBytes, FDs, Threads float64
	// HasCPU: CPU was measured by this sample; CPU is 0 without it (the
	// first sample, or one sooner than minCPUInterval after the last).
	HasCPU bool
}

// Values adds the sample to a task's metric values (CPU only if measured).
func (s ProcSample) Values(into map[string]float64) {
	if s.HasCPU {
		into[CPU] = s.CPU
	}
	into[Memory], into[ReadBytes], into[WriteBytes] = s.Memory, s.ReadBytes, s.WriteBytes
	into[FDs], into[Threads] = s.FDs, s.Threads
}

// ProcSampler samples processes by pid. It keeps each process's handle
// between samples: CPU and IO are rates since the previous sample.
// It is not safe for concurrent use.
type ProcSampler struct {
	procs map[int]*sampled
}

type sampled struct {
	p      *process.Process
	io     *process.IOCountersStat
	at     time.Time
	cpuAt  time.Time
	marked bool
}

// minCPUInterval is the shortest interval a CPU rate is taken over: CPU
// time is counted in clock ticks (10 ms), so a shorter one is mostly
// rounding. A sample sooner than that has no CPU figure.
const minCPUInterval = 50 * time.Millisecond

// NewProcSampler returns an empty sampler.
func NewProcSampler() *ProcSampler { return &ProcSampler{procs: map[int]*sampled{}} }

// Sample measures pid. The first sample of a process has no rates yet
// (CPU and IO are 0).
func (s *ProcSampler) Sample(pid int) (ProcSample, error) {
	e := s.procs[pid]
	if e == nil {
		p, err := process.NewProcess(int32(pid))
		if err != nil {
			return ProcSample{}, fmt.Errorf("process %d: %w", pid, err)
		}
		e = &sampled{p: p}
		s.procs[pid] = e
	}
	e.marked = true
	var out ProcSample
	if now := time.Now(); now.Sub(e.cpuAt) >= minCPUInterval {
		cpu, err := e.p.Percent(0)
		if err != nil {
			return out, fmt.Errorf("process %d cpu: %w", pid, err)
		}
		out.CPU, out.HasCPU = cpu/100, !e.cpuAt.IsZero()
		e.cpuAt = now
	}
	mem, err := e.p.MemoryInfo()
	if err != nil {
		return out, fmt.Errorf("process %d memory: %w", pid, err)
	}
	out.Memory = float64(mem.RSS)
	fds, err := e.p.NumFDs()
	if err != nil {
		return out, fmt.Errorf("process %d fds: %w", pid, err)
	}
	out.FDs = float64(fds)
	threads, err := e.p.NumThreads()
	if err != nil {
		return out, fmt.Errorf("process %d threads: %w", pid, err)
	}
	out.Threads = float64(threads)
	now := time.Now()
	// Storage IO (read_bytes/write_bytes of /proc/PID/io), not pipes or
	// queues; an unreadable io file (another user's process) leaves 0.
	if io, err := e.p.IOCounters(); err == nil {
		if e.io != nil {
			dt := now.Sub(e.at).Seconds()
			if dt > 0 {
				out.ReadBytes = float64(io.DiskReadBytes-min(e.io.DiskReadBytes, io.DiskReadBytes)) / dt
				out.WriteBytes = float64(io.DiskWriteBytes-min(e.io.DiskWriteBytes, io.DiskWriteBytes)) / dt
			}
		}
		e.io, e.at = io, now
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

// BoxMemory is the machine's memory in bytes, 0 if unknown.
func BoxMemory() float64 {
	vm, err := mem.VirtualMemory()
	if err != nil {
		return 0
	}
	return float64(vm.Total)
}
