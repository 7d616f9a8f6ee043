package runtime_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/multimodule/multimodule/runtime"
)

type nop struct{}

func (nop) Message(runtime.Context, runtime.Message) error { return nil }

// An unknown kind's error says where it looked, what is registered and
// the -p that would find it, on one line.
func TestResolveUnknownKindSaysWhatIsRegistered(t *testing.T) {
	t.Parallel()
	reg := runtime.NewRegistry()
	for _, k := range []string{"builtin.Router", "examples.Example1", "acme.Counter", "zeta.Counter"} {
		reg.Register(k, func() runtime.Task { return nop{} })
	}
	many := runtime.NewRegistry()
	for i := range 25 {
		many.Register(fmt.Sprintf("ns.K%02d", i), func() runtime.Task { return nop{} })
	}
	tests := []struct {
		name       string
		reg        *runtime.Registry
		kind       string
		namespaces []string
		want       []string
		not        []string
	}{
		{"bare name in no namespace", reg, "Nope", []string{"examples"},
			[]string{`unknown task kind "Nope": searched builtin.Nope, examples.Nope`,
				"registered kinds: acme.Counter, builtin.Router, examples.Example1, zeta.Counter",
				"-p NAMESPACE"}, nil},
		{"bare name in an unsearched namespace", reg, "Example1", []string{""},
			[]string{"searched builtin.Example1;", "examples.Example1 is registered: run with -p examples"}, []string{"-p ,"}},
		{"keeps the namespaces given", reg, "Counter", []string{"examples"},
			[]string{"acme.Counter is registered: run with -p examples,acme"}, nil},
		{"qualified name", reg, "acme.Nope", nil,
			[]string{`unknown task kind "acme.Nope": it is not registered; registered kinds: acme.Counter,`}, []string{"-p"}},
		{"long list is bounded", many, "Nope", nil,
			[]string{"ns.K00, ns.K01", "ns.K19, and 5 more"}, []string{"ns.K20"}},
		{"empty registry", runtime.NewRegistry(), "Nope", nil, []string{"no kinds are registered"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, _, err := tt.reg.Resolve(tt.kind, tt.namespaces)
			if !errors.Is(err, runtime.ErrUnknownKind) {
				t.Fatalf("got %v, want ErrUnknownKind", err)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Fatalf("want one line: %q", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Fatalf("%q lacks %q", msg, w)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(msg, n) {
					t.Fatalf("%q has %q", msg, n)
				}
			}
		})
	}
}
