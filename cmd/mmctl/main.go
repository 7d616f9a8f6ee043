// Command mmctl controls a multimodule daemon and talks to its queues.
//
//	mmctl vet [-c DIR]               check a config dir offline (exit 1 on errors)
//	mmctl diff [-c DIR]              what applying DIR would do (exit 0 none, 1 changes, 2 error)
//	mmctl apply [--dry-run]          the daemon reloads its config dir now
//	mmctl schema [--write DIR]       the schema, for the stock cue vet
//	mmctl send QUEUE JSON            queue a message (JSON object)
//	mmctl recv QUEUE [-n N] [--timeout D]
//	mmctl queues                     every queue with its fill
//	mmctl transit init [--ipc-transit] [DIR]  create a transit dir (shared with IPC::Transit)
//	mmctl status [TASK] [-o wide|json] [--watch]   the daemon and its tasks (exit 1: held, stalled, config error)
//	mmctl clear TASK                 give a held task another chance
//	mmctl restart|stop|start TASK    one-off actions on one task (status shows them)
//	mmctl logs TASK [-f]             an external task's log
//	mmctl gc [--yes]                 queues and state files of tasks no longer in the config
//	mmctl queues rm NAME...          remove queues
//	mmctl graph [-c DIR] [-o dot|mermaid]   the route graph of a config dir
//	mmctl top                        live view of the tasks by CPU or backlog
//	mmctl version                    the version it was built from (also --version)
//	mmctl shutdown [--exit-externals]
//
// Errors go to stderr with a non-zero exit: 1 for a failure, 2 for a
// usage error (diff: 2 for any error, as 1 means "changes").
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/multimodule/multimodule/internal/control"
	"github.com/multimodule/multimodule/internal/version"
	"github.com/multimodule/multimodule/transit"
)

// globalOptions are the flags every subcommand shares.
type globalOptions struct {
	transitDir   string
	controlQueue string
	timeout      time.Duration
	stdout       io.Writer
	stderr       io.Writer
	stdin        io.Reader
}

func (g *globalOptions) transit() (*transit.Transit, error) {
	return transit.Open(transit.Options{Dir: g.transitDir})
}

// usageError makes mmctl exit 2.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// exitError carries a specific exit status (diff's "1 means changes").
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }

func newRootCmd(g *globalOptions) *cobra.Command {
	root := &cobra.Command{
		Use:           "mmctl",
		Short:         "Control a multimodule daemon and talk to its queues",
		Version:       version.String(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("mmctl {{.Version}}\n")
	root.SetOut(g.stdout)
	root.SetErr(g.stderr)
	root.SetIn(g.stdin)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVarP(&g.transitDir, "transit-dir", "T", transit.DefaultDir(), "transit dir naming the queues (env "+transit.EnvDir+")")
	pf.StringVarP(&g.controlQueue, "control-queue", "q", control.DefaultQueue, "the daemon's control queue")
	pf.DurationVar(&g.timeout, "reply-timeout", 5*time.Second, "how long to wait for the daemon's reply")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if g.timeout <= 0 {
			return usageError{fmt.Errorf("--reply-timeout must be positive, got %v", g.timeout)}
		}
		return nil
	}
	root.AddCommand(newVetCmd(g), newDiffCmd(g), newApplyCmd(g), newStatusCmd(g), newSchemaCmd(g),
		newClearCmd(g), newSendCmd(g), newRecvCmd(g), newQueuesCmd(g), newShutdownCmd(g), newTransitCmd(g),
		newRestartCmd(g), newStopCmd(g), newStartCmd(g), newLogsCmd(g), newGCCmd(g), newGraphCmd(g), newTopCmd(g), &cobra.Command{
			Use:   "version",
			Short: "Print the version of multimodule mmctl was built from (as --version)",
			Args:  args(0),
			RunE: func(*cobra.Command, []string) error {
				_, err := fmt.Fprintf(g.stdout, "mmctl %s\n", version.String())
				return err
			},
		})
	return root
}

// args checks the number of positional arguments as a usage error.
func args(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if len(a) != n {
			return usageError{fmt.Errorf("%s takes %d argument(s), got %d: %s", cmd.Name(), n, len(a), cmd.Use)}
		}
		return nil
	}
}

// run executes mmctl and returns its exit status.
func run(argv []string, stdin io.Reader, stdout, stderr io.Writer) int {
	g := &globalOptions{stdout: stdout, stderr: stderr, stdin: stdin}
	root := newRootCmd(g)
	root.SetArgs(argv)
	err := root.Execute()
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintf(stderr, "mmctl: %v\n", ee.err)
		}
		return ee.code
	}
	fmt.Fprintf(stderr, "mmctl: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") {
		return 2
	}
	return 1
}

func main() { os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }
