package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/multimodule/multimodule/runtime/external"
	"github.com/spf13/cobra"
)

type logsOptions struct {
	*globalOptions
	stateDir string
	follow   bool
	interval time.Duration
}

func newLogsCmd(g *globalOptions) *cobra.Command {
	o := &logsOptions{globalOptions: g}
	cmd := &cobra.Command{
		Use:   "logs TASK",
		Short: "Print an external task's log (STATE/external/TASK.log); -f follows it",
		Long: `Print an external task's log: the output of its process (STATE/external/TASK.log),
which holds what its stateless tasks print too, and its out-of-band records while the
daemon is down. The state dir comes from the running daemon, or -s. -f follows the
file (across truncation and replacement) until interrupted. An internal task's output
is the daemon's own.`,
		Args: args(1),
		RunE: func(_ *cobra.Command, a []string) error { return o.run(a[0]) },
	}
	cmd.Flags().StringVarP(&o.stateDir, "state-dir", "s", "", "the daemon's state dir (default: ask the running daemon)")
	cmd.Flags().BoolVarP(&o.follow, "follow", "f", false, "keep printing what is appended until interrupted")
	cmd.Flags().DurationVar(&o.interval, "interval", 200*time.Millisecond, "how often -f looks for more")
	return cmd
}

func (o *logsOptions) run(task string) error {
	if o.interval <= 0 {
		return usageError{fmt.Errorf("--interval must be positive, got %v", o.interval)}
	}
	state := o.stateDir
	if state == "" {
		st, err := o.status()
		if err != nil {
			return fmt.Errorf("%w (or name the state dir with -s)", err)
		}
		state = st.Daemon.StateDir
	}
	path := filepath.Join(external.Dir(state), task+".log")
	if filepath.Base(path) != task+".log" || filepath.Dir(path) != external.Dir(state) {
		return usageError{fmt.Errorf("%q is not a task name", task)}
	}
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("no log for %s in %s: only external tasks have one (an internal task's output is the daemon's)", task, external.Dir(state))
		}
		return err
	}
	defer func() { f.Close() }()
	// Before the first line is out: whoever saw it may interrupt at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := io.Copy(o.stdout, f); err != nil || !o.follow {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(o.interval):
		}
		// A log replaced (rotated) or truncated is read from its start.
		pos, _ := f.Seek(0, io.SeekCurrent)
		open, _ := f.Stat()
		now, err := os.Stat(path)
		if err == nil && (!os.SameFile(open, now) || now.Size() < pos) {
			nf, err := os.Open(path)
			if err == nil {
				f.Close()
				f = nf
			}
		}
		if _, err := io.Copy(o.stdout, f); err != nil {
			return err
		}
	}
}
