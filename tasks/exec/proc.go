package exec

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	osexec "os/exec"
	"sync/atomic"
	"syscall"
	"time"
)

// Errors of the program, each wrapped with what happened.
var (
	ErrExited     = errors.New("program exited")
	ErrNoAck      = errors.New("program did not acknowledge the message in time")
	ErrLineTooBig = errors.New("program wrote a stdout line longer than max_line")
	ErrGarbage    = errors.New("program wrote a line that is not a protocol message")
	ErrStdin      = errors.New("writing to the program's stdin")
)

// stderrLine is the longest stderr line logged; the rest is cut.
const stderrLine = 4 << 10

// stderrQueue bounds the stderr lines waiting for the task's goroutine;
// beyond it lines are counted and dropped, so a chatty program cannot grow
// the daemon's memory.
const stderrQueue = 1024

// stdoutQueue bounds the stdout lines read ahead of the task's goroutine;
// beyond it the reader stops and the program blocks on its stdout.
const stdoutQueue = 256

// line is one item read from the program's stdout.
type line struct {
	b   []byte
	err error // ErrLineTooBig or a read error: the last item
}

// proc is one run of the program. Its goroutines only read the pipes and
// wait for the exit; everything else happens on the task's goroutine.
type proc struct {
	cmd   *osexec.Cmd
	stdin *os.File
	out   chan line   // closed at EOF of stdout
	errs  chan string // stderr lines
	// dropped counts stderr lines dropped because errs was full.
	dropped atomic.Uint64
	exited  chan struct{} // closed when the program has been reaped
	waitErr error         // valid once exited is closed
	started time.Time
}

// start runs the program in a process group of its own, so that stopping
// it reaches what it started too.
func start(c *config) (*proc, error) {
	cmd := osexec.Command(c.command, c.args...)
	cmd.Dir = c.dir
	cmd.Env = os.Environ()
	for k, v := range c.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	// Pdeathsig: a daemon killed with SIGKILL takes its programs along
	// (they would see EOF on stdin anyway, if they read it).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// Pipes of our own (not cmd.StdinPipe) so that writes to stdin can
	// have a deadline: a program that stops reading must not stall the
	// task forever.
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("exec: stdin pipe: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		closeAll(inR, inW)
		return nil, fmt.Errorf("exec: stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		closeAll(inR, inW, outR, outW)
		return nil, fmt.Errorf("exec: stderr pipe: %w", err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	if err := cmd.Start(); err != nil {
		closeAll(inR, inW, outR, outW, errR, errW)
		return nil, fmt.Errorf("exec: starting %s: %w", c.command, err)
	}
	closeAll(inR, outW, errW) // the child's ends
	p := &proc{
		cmd: cmd, stdin: inW, started: time.Now(),
		out: make(chan line, stdoutQueue), errs: make(chan string, stderrQueue),
		exited: make(chan struct{}),
	}
	go p.readStdout(outR, c.maxLine, p.out)
	go p.readStderr(errR, p.errs)
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

func closeAll(fs ...*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// readStdout splits stdout into lines of at most max bytes. A longer line
// is reported and ends the reading: the task then kills the program.
func (p *proc) readStdout(r *os.File, max int, out chan<- line) {
	defer close(out)
	defer r.Close()
	br := bufio.NewReaderSize(r, 64<<10)
	var buf []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(buf)+len(chunk) > max+1 { // +1: the newline
			out <- line{err: fmt.Errorf("%w (%d bytes)", ErrLineTooBig, max)}
			return
		}
		switch {
		case err == nil:
			var b []byte
			if buf == nil {
				b = bytes.Clone(chunk)
			} else {
				b = append(buf, chunk...)
			}
			out <- line{b: b}
			buf = nil
		case errors.Is(err, bufio.ErrBufferFull):
			buf = append(buf, chunk...)
		default:
			if len(buf)+len(chunk) > 0 {
				out <- line{b: append(buf, chunk...)} // a last line without newline
			}
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) {
				out <- line{err: fmt.Errorf("exec: reading stdout: %w", err)}
			}
			return
		}
	}
}

// readStderr hands stderr lines, cut at stderrLine bytes, to the task.
func (p *proc) readStderr(r *os.File, errs chan<- string) {
	defer close(errs)
	defer r.Close()
	br := bufio.NewReaderSize(r, stderrLine)
	cut := false // the rest of a long line is being skipped
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 && !cut {
			s := string(bytes.TrimRight(chunk, "\r\n"))
			if errors.Is(err, bufio.ErrBufferFull) {
				s += " [cut]"
			}
			select {
			case errs <- s:
			default:
				p.dropped.Add(1)
			}
		}
		cut = errors.Is(err, bufio.ErrBufferFull)
		if err != nil && !cut {
			return
		}
	}
}

// kill ends the program's whole process group at once and waits (bounded)
// for it to be reaped.
func (p *proc) kill() {
	p.stdin.Close()
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	// Nobody reads stdout any more: let its reader run to the end.
	go func() {
		for range p.out {
		}
	}()
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
	}
}

// exitStatus describes how the program ended (after exited is closed).
func (p *proc) exitStatus() string {
	var ee *osexec.ExitError
	if errors.As(p.waitErr, &ee) {
		return ee.ProcessState.String()
	}
	if p.waitErr != nil {
		return p.waitErr.Error()
	}
	return "exit status 0"
}

// hasExited reports whether the program has been reaped.
func (p *proc) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}
