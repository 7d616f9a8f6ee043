package reconcile

import (
	"reflect"
	"strings"
	"testing"

	"github.com/multimodule/multimodule/schema"
)

func spec(name, kind, hash string, mods ...func(*schema.TaskSpec)) schema.TaskSpec {
	s := schema.TaskSpec{Name: name, Kind: kind, Hash: hash}
	for _, m := range mods {
		m(&s)
	}
	return s
}

func disabled(s *schema.TaskSpec) { s.Disabled = true }
func external(s *schema.TaskSpec) { s.External = true }

func TestPlan(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		desired  []schema.TaskSpec
		observed []Observed
		want     []string
	}{
		{"nothing to do", []schema.TaskSpec{spec("A", "A", "h1")}, []Observed{{"A", "A", "h1", false}}, nil},
		{"empty", nil, nil, nil},
		{"start from nothing", []schema.TaskSpec{spec("B", "B", "h"), spec("A", "A", "h")}, nil,
			[]string{"+ start A (internal)", "+ start B (internal)"}},
		{"start external", []schema.TaskSpec{spec("A", "A", "h", external)}, nil, []string{"+ start A (external)"}},
		{"removed", nil, []Observed{{"A", "A", "h", false}}, []string{"- stop A (removed from the config)"}},
		{"disabled running", []schema.TaskSpec{spec("A", "A", "h", disabled)}, []Observed{{"A", "A", "h", false}},
			[]string{"- stop A (disabled)"}},
		{"disabled not running", []schema.TaskSpec{spec("A", "A", "h", disabled)}, nil, nil},
		{"config changed", []schema.TaskSpec{spec("A", "A", "h2")}, []Observed{{"A", "A", "h1", false}},
			[]string{"~ reconfigure A"}},
		{"kind changed", []schema.TaskSpec{spec("A", "acme.A", "h2")}, []Observed{{"A", "A", "h1", false}},
			[]string{"-/+ restart A (kind changed)"}},
		{"moved", []schema.TaskSpec{spec("A", "A", "h2", external)}, []Observed{{"A", "A", "h1", false}},
			[]string{"> migrate A internal->external"}},
		{"ordered by action then name",
			[]schema.TaskSpec{spec("N", "N", "h"), spec("C", "C", "h2"), spec("K", "X", "h")},
			[]Observed{{"Z", "Z", "h", false}, {"C", "C", "h1", false}, {"K", "K", "h", false}, {"B", "B", "h", false}},
			[]string{"- stop B (removed from the config)", "- stop Z (removed from the config)",
				"-/+ restart K (kind changed)", "~ reconfigure C", "+ start N (internal)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			desired := map[string]schema.TaskSpec{}
			for _, d := range tt.desired {
				desired[d.Name] = d
			}
			observed := map[string]Observed{}
			for _, o := range tt.observed {
				observed[o.Name] = o
			}
			var got []string
			for _, a := range Plan(desired, observed) {
				got = append(got, a.String())
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("plan\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}
