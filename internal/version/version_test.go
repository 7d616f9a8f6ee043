package version

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestDescribe(t *testing.T) {
	own := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: Module, Version: "v0.3.0"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef"}, {Key: "vcs.modified", Value: "true"}}}
	if got, want := describe(own), Module+" v0.3.0 (0123456789ab, modified), go1.26.8"; got != want {
		t.Errorf("own binary: %q, want %q", got, want)
	}
	user := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "example.com/mydaemon", Version: "(devel)"},
		Deps: []*debug.Module{{Path: Module, Version: "v0.0.0-00010101000000-000000000000", Replace: &debug.Module{Path: "../multimodule"}}}}
	if got := describe(user); !strings.Contains(got, "replaced by ../multimodule") || !strings.Contains(got, "in example.com/mydaemon") {
		t.Errorf("a user's daemon: %q", got)
	}
	if s := String(); !strings.HasPrefix(s, Module+" ") {
		t.Errorf("String() = %q", s)
	}
}
