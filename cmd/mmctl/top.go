package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/multimodule/multimodule/internal/control"
)

// top draws with plain ANSI escapes and termios from x/sys/unix, which
// the module already uses: one screen of a table, redrawn whole each
// second, needs no widget library, and the daemon's module gains no
// dependency for it.

type topOptions struct {
	*globalOptions
	interval time.Duration
	sortBy   string
}

func newTopCmd(g *globalOptions) *cobra.Command {
	o := &topOptions{globalOptions: g}
	cmd := &cobra.Command{
		Use:   "top",
		Short: "A live full-screen view of the daemon's tasks, by CPU or backlog",
		Long: `top shows the daemon's tasks on the whole terminal, redrawn every --interval,
busiest first. Keys: c sorts by CPU, b by backlog (mailbox plus queued
messages), n by name; q (or Ctrl-C) quits. It needs a terminal; for a log
of frames use mmctl status --watch.`,
		Args: args(0),
		RunE: func(*cobra.Command, []string) error { return o.run() },
	}
	cmd.Flags().DurationVar(&o.interval, "interval", time.Second, "how often to refresh")
	cmd.Flags().StringVar(&o.sortBy, "sort", "cpu", "cpu, backlog or name (keys c, b, n switch)")
	return cmd
}

// topSorts maps a key to the sort it selects.
var topSorts = map[byte]string{'c': "cpu", 'b': "backlog", 'n': "name"}

func (o *topOptions) run() error {
	if o.interval <= 0 {
		return usageError{fmt.Errorf("--interval must be positive, got %v", o.interval)}
	}
	if o.sortBy != "cpu" && o.sortBy != "backlog" && o.sortBy != "name" {
		return usageError{fmt.Errorf("--sort %q: want cpu, backlog or name", o.sortBy)}
	}
	in, out := int(os.Stdin.Fd()), int(os.Stdout.Fd())
	saved, err := unix.IoctlGetTermios(in, unix.TCGETS)
	if err != nil || !isTerminal(o.stdout) {
		return errors.New("top needs a terminal on stdin and stdout (for a log of frames: mmctl status --watch)")
	}
	// Keys arrive one by one, unechoed; ISIG stays on so that Ctrl-C is a
	// SIGINT, which ends top as q does.
	raw := *saved
	raw.Lflag &^= unix.ICANON | unix.ECHO
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(in, unix.TCSETS, &raw); err != nil {
		return fmt.Errorf("terminal: %w", err)
	}
	defer unix.IoctlSetTermios(in, unix.TCSETS, saved)
	fmt.Fprint(o.stdout, "\x1b[?1049h\x1b[?25l") // the alternate screen, no cursor
	defer fmt.Fprint(o.stdout, "\x1b[?25h\x1b[?1049l")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	defer signal.Stop(winch)
	keys := make(chan byte, 16)
	go func() { // ends with the process: a read of a terminal cannot be cancelled
		b := make([]byte, 16)
		for {
			n, err := os.Stdin.Read(b)
			if err != nil {
				close(keys)
				return
			}
			for _, k := range b[:n] {
				keys <- k
			}
		}
	}()

	tick := time.NewTicker(o.interval)
	defer tick.Stop()
	st, fetchErr := o.status()
	for {
		w, h := 100, 30
		if ws, err := unix.IoctlGetWinsize(out, unix.TIOCGWINSZ); err == nil && ws.Col > 0 && ws.Row > 0 {
			w, h = int(ws.Col), int(ws.Row)
		}
		frame := topFrame(st, fetchErr, o.sortBy, w, h, time.Now())
		if _, err := fmt.Fprint(o.stdout, "\x1b[H\x1b[2J"+frame); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case k, ok := <-keys:
			if !ok || k == 'q' || k == 'Q' {
				return nil
			}
			if s, ok := topSorts[k|0x20]; ok {
				o.sortBy = s
			}
		case <-winch:
		case <-tick.C:
			st, fetchErr = o.status()
		}
	}
}

// backlog is what waits for a task: its mailbox and its queue.
func backlog(t control.TaskStatus) uint64 {
	n := deref(t.MailboxDepth)
	if t.Queue != nil {
		n += t.Queue.Messages
	}
	return n
}

// sortTasks orders the tasks busiest first by the sort, then by name.
func sortTasks(tasks []control.TaskStatus, by string) []control.TaskStatus {
	out := slices.Clone(tasks)
	slices.SortStableFunc(out, func(a, b control.TaskStatus) int {
		var c int
		switch by {
		case "cpu":
			c = cmp.Compare(b.Metrics["cpu"], a.Metrics["cpu"])
		case "backlog":
			c = cmp.Compare(backlog(b), backlog(a))
		}
		return cmp.Or(c, strings.Compare(a.Name, b.Name))
	})
	return out
}

// topFrame is one screen: a header, the tasks (as many as fit, each line
// cut to the width), the keys. Lines end in \r\n: the terminal is raw.
func topFrame(st *control.StatusReply, fetchErr error, sortBy string, width, height int, now time.Time) string {
	var lines []string
	head := fmt.Sprintf("mmctl top  %s  sort: %s  (c cpu, b backlog, n name, q quit)", now.Format(time.TimeOnly), sortBy)
	lines = append(lines, head)
	if fetchErr != nil {
		lines = append(lines, "mmctl: "+fetchErr.Error()+" (retrying)")
	}
	if st != nil {
		d := st.Daemon
		lines = append(lines, fmt.Sprintf("daemon pid %d, up %s, %d tasks, dead letters %d", d.Pid, age(d.UptimeS), len(st.Tasks), d.DeadLetters))
		if d.ConfigError != "" {
			lines = append(lines, "config error: "+strings.SplitN(d.ConfigError, "\n", 2)[0])
		}
		tb := &table{header: []string{"NAME", "WHERE", "PID", "STATUS", "CPU", "MEM", "BACKLOG", "MAILBOX", "QUEUED", "IN/OUT", "LEVEL"}}
		for _, t := range sortTasks(st.Tasks, sortBy) {
			row := []string{t.Name, t.Where, "-", statusText(t), "-", "-", strconv.FormatUint(backlog(t), 10), dash(t.MailboxDepth), "-", "-", worstLevel(t.Levels)}
			if t.Running {
				row[2] = strconv.Itoa(t.Pid)
				if v, ok := t.Metrics["cpu"]; ok {
					row[4] = fmt.Sprintf("%.2f", v)
				}
				if v, ok := t.Metrics["memory"]; ok {
					row[5] = bytesIEC(v)
				}
				if t.MessagesIn != nil || t.MessagesOut != nil {
					row[9] = count(t.MessagesIn) + "/" + count(t.MessagesOut)
				}
			}
			if t.Queue != nil {
				row[8] = strconv.FormatUint(t.Queue.Messages, 10)
			}
			tb.rows = append(tb.rows, row)
		}
		var b strings.Builder
		tb.write(&b, 0, nil)
		lines = append(lines, strings.Split(strings.TrimRight(b.String(), "\n"), "\n")...)
	}
	if len(lines) > height {
		lines = append(lines[:height-1], fmt.Sprintf("... %d more lines (a taller terminal shows them)", len(lines)-height+1))
	}
	for i, l := range lines {
		lines[i] = cut(l, width)
	}
	return strings.Join(lines, "\r\n")
}
