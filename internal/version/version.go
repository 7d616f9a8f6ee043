// Package version says which MultiModule a binary was built from, from
// the build info the go tool records (no -ldflags needed, so `go install`
// and `go build` in a user's own module report it too).
package version

import (
	"fmt"
	"runtime/debug"
	"strings"
)

// Module is the project's module path.
const Module = "github.com/multimodule/multimodule"

// String is "MODULE VERSION[ (REVISION[, modified])], GOVERSION": the
// version of this module as the binary was built, whether the binary is
// this module's own (multimodule, mmctl) or a user's daemon that requires
// it (a dependency, perhaps replaced by a checkout).
func String() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Module + " (no build info: built without module support)"
	}
	return describe(bi)
}

func describe(bi *debug.BuildInfo) string {
	v := "(unknown)"
	var extra []string
	switch {
	case bi.Main.Path == Module:
		v = bi.Main.Version
		settings := map[string]string{}
		for _, s := range bi.Settings {
			settings[s.Key] = s.Value
		}
		if r := settings["vcs.revision"]; r != "" {
			rev := r[:min(12, len(r))]
			if settings["vcs.modified"] == "true" {
				rev += ", modified"
			}
			extra = append(extra, rev)
		}
	default:
		for _, d := range bi.Deps {
			if d.Path != Module {
				continue
			}
			v = d.Version
			if d.Replace != nil {
				extra = append(extra, "replaced by "+d.Replace.Path)
				if d.Replace.Version != "" {
					extra[len(extra)-1] += " " + d.Replace.Version
				}
			}
		}
		extra = append(extra, "in "+bi.Main.Path)
	}
	s := Module + " " + v
	if len(extra) > 0 {
		s += " (" + strings.Join(extra, "; ") + ")"
	}
	return fmt.Sprintf("%s, %s", s, bi.GoVersion)
}
