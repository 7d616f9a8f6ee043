package multimodule

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/multimodule/multimodule/runtime"
	"github.com/multimodule/multimodule/schema"
	"github.com/multimodule/multimodule/statestore"
)

// ShutdownTimeout bounds the orderly shutdown: draining in-flight messages
// and saving every state.
const ShutdownTimeout = 10 * time.Second

// Main is the daemon's main: it parses the flags, loads the config
// directory, runs every task and shuts down in order on SIGINT or SIGTERM.
// It does not return.
func Main() {
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	os.Exit(run(os.Args[1:], sig, os.Stdout, os.Stderr))
}

// daemonOptions are the daemon's flags.
type daemonOptions struct {
	namespaces string
	configDir  string
	stateDir   string
	level      string
	oob        string
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

func parseFlags(args []string, stderr io.Writer) (*daemonOptions, error) {
	o := &daemonOptions{}
	fs := flag.NewFlagSet("multimodule", flag.ContinueOnError)
	fs.SetOutput(stderr)
	both := func(p *string, short, long, def, usage string) {
		fs.StringVar(p, short, def, usage)
		fs.StringVar(p, long, def, "same as -"+short)
	}
	both(&o.namespaces, "p", "namespaces", "", "task `namespaces` searched after builtin, in order (comma separated)")
	both(&o.configDir, "c", "config", "", "config `dir` of CUE files (or one file)")
	both(&o.stateDir, "s", "state-dir", defaultStateDir(), "state `dir` (one daemon per dir)")
	both(&o.level, "d", "log-level", "info", "log `level`: debug, info, warn, error")
	both(&o.oob, "o", "oob", "", "out-of-band channels, e.g. log:1,alert:2,error:/var/log/mm.err,debug:router (defaults "+runtime.DefaultOOB+")")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: %s -c CONFIG_DIR [-p namespaces] [-s state_dir] [-d level] [-o oob]\n", fs.Name())
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.configDir == "" {
		return nil, errors.New("no config: pass -c DIR")
	}
	return o, nil
}

// run is the daemon; it returns the exit code. Signals arrive on sig.
func run(args []string, sig <-chan os.Signal, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "multimodule: %v\n", err)
		return 2
	}
	level, err := runtime.ParseLevel(o.level)
	if err != nil {
		fmt.Fprintf(stderr, "multimodule: %v\n", err)
		return 2
	}
	namespaces := strings.Split(o.namespaces, ",")

	sch, err := NewSchema()
	if err != nil {
		fmt.Fprintf(stderr, "multimodule: %v\n", err)
		return 1
	}
	cfg, err := sch.Load(o.configDir)
	if err != nil {
		fmt.Fprintf(stderr, "multimodule: config %s:\n%s", o.configDir, schema.Format(err))
		return 1
	}
	specs, err := resolve(cfg, namespaces)
	if err != nil {
		fmt.Fprintf(stderr, "multimodule: %v\n", err)
		return 1
	}

	lock, err := statestore.LockDir(o.stateDir)
	if err != nil {
		fmt.Fprintf(stderr, "multimodule: %v\n", err)
		return 1
	}
	defer lock.Unlock()

	host, err := runtime.NewHost(runtime.Options{
		StateDir: o.stateDir, OOB: o.oob, Level: level, Stdout: stdout, Stderr: stderr,
	})
	if err != nil {
		fmt.Fprintf(stderr, "multimodule: %v\n", err)
		return 2
	}
	defer host.Close()
	ch := host.Channels()

	started := 0
	for i, err := range host.StartAll(specs) {
		if err != nil {
			ch.Error.Error("task did not start", "task", specs[i].Name, "error", err)
			continue
		}
		started++
	}
	ch.Log.Info("multimodule running", "tasks", started, "configured", len(specs),
		"config", o.configDir, "state_dir", o.stateDir, "pid", os.Getpid())

	s := <-sig
	ch.Log.Info("shutting down", "signal", s.String())
	ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- host.Shutdown(ctx) }()
	select {
	case err = <-done:
	case s := <-sig:
		ch.Error.Error("second signal: exiting without finishing the shutdown", "signal", s.String())
		return 130
	}
	if err != nil {
		ch.Error.Error("shutdown incomplete", "error", err)
		return 1
	}
	ch.Log.Info("stopped cleanly")
	return 0
}

// resolve turns the loaded config into what the host runs, resolving each
// kind in the namespaces. Every problem is reported, not just the first.
func resolve(cfg *schema.Config, namespaces []string) ([]runtime.TaskSpec, error) {
	var specs []runtime.TaskSpec
	var errs []error
	for _, name := range cfg.Names() {
		t := cfg.Tasks[name]
		if t.Disabled {
			continue
		}
		kind, factory, err := registry.Resolve(t.Kind, namespaces)
		if err != nil {
			errs = append(errs, fmt.Errorf("task %s: %w", name, err))
			continue
		}
		if t.External {
			errs = append(errs, fmt.Errorf("task %s: external: true is not supported by this daemon yet", name))
			continue
		}
		iv := make(map[string]time.Duration, len(t.Intervals))
		for k, sec := range t.Intervals {
			iv[k] = time.Duration(sec * float64(time.Second))
		}
		specs = append(specs, runtime.TaskSpec{
			Name: name, Kind: kind, New: factory, Config: t.Config, Intervals: iv,
		})
	}
	return specs, errors.Join(errs...)
}
