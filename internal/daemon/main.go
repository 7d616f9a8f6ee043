// Package daemon wires the multimodule daemon together: flags, locks, the
// owner goroutine and the ordered shutdown. The task author's API and
// Main live in the root package, which calls Run.
package daemon

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/multimodule/multimodule/internal/control"
	"github.com/multimodule/multimodule/internal/version"

	"github.com/multimodule/multimodule/runtime"
	"github.com/multimodule/multimodule/runtime/external"
	"github.com/multimodule/multimodule/schema"
	"github.com/multimodule/multimodule/transit"
)

// Kinds is what the daemon runs: the task kinds of this binary and the
// config schema that knows the built-in ones.
type Kinds struct {
	Registry *runtime.Registry
	Schema   func() (*schema.Schema, error)
	// About describes kinds in one line each (the built-ins'), for
	// --list-kinds.
	About map[string]string
}

// daemonOptions are the daemon's flags.
type daemonOptions struct {
	controlQueue string
	namespaces   string
	configDir    string
	stateDir     string
	level        string
	oob          string
	transitDir   string
	task         string // -m: run as the external process of this task
	metricsAddr  string
	loadTimeout  time.Duration // bounds one evaluation of the config dir
	stopGrace    time.Duration // an external's time between SIGTERM and SIGKILL
	listKinds    bool          // print the task kinds and exit
}

func defaultStateDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "multimodule")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "state", "multimodule")
	}
	return "state"
}

// errVersionShown: --version printed the version; the program ends, 0.
var errVersionShown = errors.New("version shown")

func parseFlags(args []string, stderr io.Writer) (*daemonOptions, error) {
	o := &daemonOptions{}
	fs := flag.NewFlagSet("multimodule", flag.ContinueOnError)
	fs.SetOutput(stderr)
	both := func(p *string, short, long, def, usage string) {
		fs.StringVar(p, short, def, usage)
		fs.StringVar(p, long, def, "same as -"+short)
	}
	both(&o.controlQueue, "q", "control-queue", control.DefaultQueue, "control `queue` (mmctl talks to it)")
	both(&o.namespaces, "p", "namespaces", "", "task `namespaces` searched after builtin, in order (comma separated)")
	both(&o.configDir, "c", "config", "", "config `dir` of CUE files (or one file)")
	both(&o.stateDir, "s", "state-dir", defaultStateDir(), "state `dir` (one daemon per dir)")
	both(&o.level, "d", "log-level", "info", "log `level`: debug, info, warn, error")
	both(&o.oob, "o", "oob", "", "out-of-band channels, e.g. log:1,alert:2,error:/var/log/mm.err,debug:router (defaults "+runtime.DefaultOOB+")")
	both(&o.transitDir, "T", "transit-dir", transit.DefaultDir(), "transit `dir` naming the System V queues (env "+transit.EnvDir+")")
	both(&o.task, "m", "task", "", "run as the external process of this `task` (the daemon starts these itself)")
	fs.DurationVar(&o.loadTimeout, "load-timeout", DefaultLoadTimeout, "give up a config load after this `duration` (the last good config keeps running)")
	fs.DurationVar(&o.stopGrace, "stop-grace", DefaultStopGrace, "an external task's time to exit after SIGTERM before SIGKILL of its process group (`duration`)")
	fs.BoolVar(&o.listKinds, "list-kinds", false, "print the task kinds this binary runs, one a line with what it does, and exit")
	fs.StringVar(&o.metricsAddr, "metrics-addr", "", "serve Prometheus metrics on this `address` (host:port; off when empty)")
	showVersion := fs.Bool("version", false, "print the version of multimodule this binary was built from, and exit")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: %s -c CONFIG_DIR [-q control_queue] [-p namespaces] [-s state_dir] [-d level] [-o oob] [-T transit_dir] [--metrics-addr host:port] [--load-timeout 10s] [--stop-grace 20s]\n", fs.Name())
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *showVersion {
		return nil, errVersionShown
	}
	if o.configDir == "" && o.task == "" && !o.listKinds {
		return nil, errors.New("no config: pass -c DIR")
	}
	if !transit.ValidName(o.controlQueue) {
		return nil, fmt.Errorf("control queue %q is not a valid queue name", o.controlQueue)
	}
	return o, nil
}

// Run is the daemon (or, with -m, an external task's process); it returns
// the exit code. Signals arrive on sig.
func Run(k Kinds, args []string, sig <-chan os.Signal, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, errVersionShown) {
		fmt.Fprintln(stdout, version.String())
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "multimodule: %v\n", err)
		return 2
	}
	if o.listKinds {
		listKinds(k, stdout)
		return 0
	}
	level, err := runtime.ParseLevel(o.level)
	if err != nil {
		fmt.Fprintf(stderr, "multimodule: %v\n", err)
		return 2
	}
	if o.task != "" {
		namespaces := strings.Split(o.namespaces, ",")
		return external.RunProcess(external.ProcessOptions{Task: o.task, StateDir: o.stateDir, TransitDir: o.transitDir,
			OOB: o.oob, ControlQueue: o.controlQueue, Level: level, ShutdownTimeout: ShutdownTimeout,
			Resolve: func(kind string) (string, runtime.Factory, error) { return k.Registry.Resolve(kind, namespaces) },
		}, sig, stdout, stderr)
	}
	d, code, err := newDaemon(k, o, level, stdout, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "multimodule: %v", err)
		if !strings.HasSuffix(err.Error(), "\n") {
			fmt.Fprintln(stderr)
		}
		return code
	}
	return d.serve(sig)
}

// listKinds prints every registered kind and its description.
func listKinds(k Kinds, w io.Writer) {
	kinds := k.Registry.Kinds()
	width := 0
	for _, kind := range kinds {
		width = max(width, len(kind))
	}
	for _, kind := range kinds {
		about := k.About[kind]
		if about == "" {
			about = "(registered by this binary)"
		}
		fmt.Fprintf(w, "%-*s  %s\n", width, kind, about)
	}
}
