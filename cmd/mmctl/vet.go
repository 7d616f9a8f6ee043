package main

import (
	"fmt"

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
	cfg, err := loadConfig(o.configDir)
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
