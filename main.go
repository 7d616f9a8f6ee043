package multimodule

import (
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/multimodule/multimodule/internal/daemon"
)

// Main is the daemon's main: it parses the flags, loads the config
// directory, runs every task and shuts down in order on SIGINT or SIGTERM
// (or a cleanly_exit on the control queue). Started with -m TASK it is
// that external task's process instead. It does not return.
func Main() {
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	os.Exit(run(os.Args[1:], sig, os.Stdout, os.Stderr))
}

// run is Main with its signals and output given, for tests.
func run(args []string, sig <-chan os.Signal, stdout, stderr io.Writer) int {
	about := map[string]string{}
	for _, b := range builtins {
		about[b.schema.Kind] = b.about
	}
	return daemon.Run(daemon.Kinds{Registry: registry, Schema: NewSchema, About: about}, args, sig, stdout, stderr)
}
