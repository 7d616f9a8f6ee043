package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/multimodule/multimodule/internal/control"
	"github.com/multimodule/multimodule/internal/testenv"
)

// A config with two Routers' worth of routes (a forward to a task, one to
// a queue that is no task, a transform, a short circuit), an external
// task and, by the daemon's word, a held one.
const graphConfig = `tasks: Reader: {kind: "acme.Reader", external: true}
tasks: Writer: {}
tasks: Spare: disabled: true
tasks: Router: config: routes: [
	{match: source: "Reader", forwards: [{qname: "Writer"}, {qname: "audit_q"}]},
	{match: {level: {$gt: 3}}, transform: {alert: true}, forwards: [{qname: "Writer"}], short_circuit: true},
]
`

func heldStatus() *control.StatusReply {
	return &control.StatusReply{Tasks: []control.TaskStatus{
		{Name: "Writer", Status: "held", ReconcileState: control.ReconcileState{HeldReason: control.HeldFailsafe}},
		{Name: "Reader", Status: "running"},
	}}
}

func TestGraphOutputs(t *testing.T) {
	t.Parallel()
	cfg, err := loadConfig(testenv.WriteFiles(t, map[string]string{"a.cue": graphConfig}))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		status *control.StatusReply
		write  func(*bytes.Buffer, *routeGraph) error
		want   []string
		not    []string
	}{
		{"dot with a daemon", heldStatus(), func(b *bytes.Buffer, g *routeGraph) error { return writeDOT(b, g) }, []string{
			"held tasks as the running daemon reports them",
			`t0 [label="Reader\nkind acme.Reader\nexternal", shape=box3d`,
			`t1 [label="Router\ninternal", shape=box, style="rounded"]`,
			`t2 [label="Spare\ninternal\ndisabled", shape=box, style="dashed"]`,
			`t3 [label="Writer\ninternal\nHELD: failsafe", shape=box, style="rounded", color=red`,
			`q0 [label="audit_q\nqueue", shape=cylinder]`,
			`r1_0 [label="route 0\nsource: \"Reader\""`,
			`r1_1 [label="route 1\nlevel: {$gt: 3}\n+ transform\nshort_circuit"`,
			"t1 -> r1_0 [arrowhead=none",
			`t0 -> t1 [style=dashed, label="emit"]`,
			"r1_0 -> t3;", "r1_0 -> q0;", "r1_1 -> t3;",
		}, nil},
		{"dot from the config alone", nil, func(b *bytes.Buffer, g *routeGraph) error { return writeDOT(b, g) },
			[]string{"from the config alone", `t3 [label="Writer\ninternal", shape=box`}, []string{"HELD", "color=red"}},
		{"mermaid with a daemon", heldStatus(), func(b *bytes.Buffer, g *routeGraph) error { return writeMermaid(b, g) }, []string{
			"flowchart LR",
			`t0["Reader<br/>kind acme.Reader<br/>external"]`,
			`t3("Writer<br/>internal<br/>HELD: failsafe")`,
			`q0[("audit_q<br/>queue")]`,
			`r1_0>"route 0<br/>source: #quot;Reader#quot;"]`,
			"t0 -.->|emit| t1", "r1_0 --> t3", "r1_0 --> q0",
			"class t0 external", "class t2 disabled", "class t3 held",
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var b bytes.Buffer
			if err := tt.write(&b, buildGraph(cfg, tt.status)); err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(b.String(), w) {
					t.Fatalf("output lacks %q:\n%s", w, b.String())
				}
			}
			for _, n := range tt.not {
				if strings.Contains(b.String(), n) {
					t.Fatalf("output has %q:\n%s", n, b.String())
				}
			}
		})
	}
}

// mmctl graph without a daemon draws the config; a config error is an
// error with its position; -o is checked.
func TestGraphCommand(t *testing.T) {
	t.Parallel()
	dir := testenv.TransitDir(t)
	good := testenv.WriteFiles(t, map[string]string{"a.cue": graphConfig})
	bad := testenv.WriteFiles(t, map[string]string{"a.cue": "tasks: E: external: \"yes\"\n"})
	tests := []struct {
		name    string
		argv    []string
		code    int
		out     string
		errWant string
	}{
		{"dot by default", []string{"graph", "-c", good}, 0, "digraph multimodule {", ""},
		{"mermaid", []string{"graph", "-c", good, "-o", "mermaid"}, 0, "flowchart LR", ""},
		{"bad output", []string{"graph", "-c", good, "-o", "svg"}, 2, "", `-o "svg": want dot or mermaid`},
		{"broken config", []string{"graph", "-c", bad}, 1, "", "a.cue:1:21: tasks.E.external"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, out, errs := mmctl(t, dir, "", tt.argv...)
			if code != tt.code || !strings.Contains(out, tt.out) || !strings.Contains(errs, tt.errWant) {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, out, errs)
			}
		})
	}
}

// The DOT output is valid Graphviz: the seed example's graph and the
// test config's render to PNG (docs/route-graph.png is the seed's).
func TestGraphRendersWithDot(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("dot"); err != nil {
		t.Skip("no Graphviz dot on PATH")
	}
	dir := testenv.TransitDir(t)
	for _, cfg := range []string{filepath.Join("..", "..", "examples", "counter", "config"),
		testenv.WriteFiles(t, map[string]string{"a.cue": graphConfig})} {
		code, out, errs := mmctl(t, dir, "", "graph", "-c", cfg)
		if code != 0 {
			t.Fatalf("graph -c %s: exit %d: %s", cfg, code, errs)
		}
		png := filepath.Join(t.TempDir(), "g.png")
		cmd := exec.Command("dot", "-Tpng", "-o", png)
		cmd.Stdin = strings.NewReader(out)
		if msg, err := cmd.CombinedOutput(); err != nil || len(msg) > 0 {
			t.Fatalf("dot on %s: %v %s\n%s", cfg, err, msg, out)
		}
		b, err := os.ReadFile(png)
		if err != nil || !bytes.HasPrefix(b, []byte("\x89PNG")) {
			t.Fatalf("dot wrote no PNG: %v", err)
		}
	}
}
