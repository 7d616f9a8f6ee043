package reconcile

import (
	"context"
	"errors"
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

// recordingTarget notes the calls a plan makes, in order.
type recordingTarget struct {
	calls []string
	fail  map[string]error
}

func (r *recordingTarget) StartTasks(specs []schema.TaskSpec) []error {
	errs := make([]error, len(specs))
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
		errs[i] = r.fail["start "+s.Name]
	}
	r.calls = append(r.calls, "start "+strings.Join(names, ","))
	return errs
}

func (r *recordingTarget) StopTask(_ context.Context, name string) error {
	r.calls = append(r.calls, "stop "+name)
	return r.fail["stop "+name]
}

func (r *recordingTarget) MigrateTask(_ context.Context, s schema.TaskSpec) error {
	r.calls = append(r.calls, "migrate "+s.Name)
	return r.fail["migrate "+s.Name]
}

func (r *recordingTarget) ReconfigureTask(_ context.Context, s schema.TaskSpec) error {
	r.calls = append(r.calls, "reconfigure "+s.Name)
	return r.fail["reconfigure "+s.Name]
}

func TestApplyOrderAndErrors(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	tgt := &recordingTarget{fail: map[string]error{"start B": boom, "stop R": boom}}
	plan := []Action{
		Stop{Name: "S", Reason: "removed from the config"},
		Restart{Spec: spec("R", "R", "h"), Reason: "kind changed"},
		Migrate{Spec: spec("M", "M", "h", external), From: "internal"},
		Reconfigure{Spec: spec("C", "C", "h")},
		Start{Spec: spec("A", "A", "h")},
		Start{Spec: spec("B", "B", "h")},
	}
	results := Apply(context.Background(), tgt, plan)
	want := []string{"stop S", "stop R", "migrate M", "reconfigure C", "start A,B"}
	if !reflect.DeepEqual(tgt.calls, want) {
		t.Fatalf("calls %v, want %v (a restart whose stop failed must not start)", tgt.calls, want)
	}
	err := Errors(results)
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "-/+ restart R (kind changed): boom") ||
		!strings.Contains(err.Error(), "+ start B (internal): boom") || len(results) != 6 {
		t.Fatalf("results %v, error %v", results, err)
	}
}
