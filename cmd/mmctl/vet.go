package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	mm "github.com/multimodule/multimodule"
	"github.com/multimodule/multimodule/schema"
)

type vetOptions struct {
	*globalOptions
	configDir string
}

func newVetCmd(g *globalOptions) *cobra.Command {
	o := &vetOptions{globalOptions: g}
	cmd := &cobra.Command{
		Use:   "vet",
		Short: "Check a config dir offline with the daemon's schema (exit 1 on errors)",
		Args:  args(0),
		RunE:  func(*cobra.Command, []string) error { return o.run() },
	}
	cmd.Flags().StringVarP(&o.configDir, "config", "c", ".", "config dir (or one file)")
	return cmd
}

func (o *vetOptions) run() error {
	s, err := mm.NewSchema()
	if err != nil {
		return err
	}
	// The stock cue vet checks against the written schema, not this one.
	path := filepath.Join(o.configDir, schema.SchemaFile)
	if b, err := os.ReadFile(path); err == nil && string(b) != written(s) {
		fmt.Fprintf(o.stderr, "warning: %s is not this mmctl's schema, so cue vet checks the dir against another; run mmctl schema --write %s\n", path, o.configDir)
	}
	cfg, err := s.Load(o.configDir)
	if err != nil {
		fmt.Fprint(o.stderr, schema.Format(err))
		return exitError{code: 1}
	}
	fmt.Fprintf(o.stdout, "ok: %d tasks in %d files\n", len(cfg.Tasks), len(cfg.Files))
	return nil
}

// loadConfig loads a config dir exactly as the daemon does.
func loadConfig(dir string) (*schema.Config, error) {
	s, err := mm.NewSchema()
	if err != nil {
		return nil, err
	}
	return s.Load(dir)
}
