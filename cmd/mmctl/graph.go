package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/multimodule/multimodule/internal/control"
	"github.com/multimodule/multimodule/schema"
)

type graphOptions struct {
	*globalOptions
	configDir string
	output    string
}

func newGraphCmd(g *globalOptions) *cobra.Command {
	o := &graphOptions{globalOptions: g}
	cmd := &cobra.Command{
		Use:   "graph",
		Short: "The route graph of a config dir, as Graphviz DOT or Mermaid",
		Long: `graph draws the tasks of a config dir and the Routers' routes: each route with
its match, the queues it forwards to, and the tasks whose messages it matches
by source. External tasks are drawn as 3D boxes, disabled ones dashed. When a
daemon answers status, held tasks are marked (red, with why); otherwise the
graph is the config's alone. static_forwards travel in messages, so they are
not part of the graph: only what the Routers' routes do is.

  mmctl graph -c config | dot -Tpng -o routes.png
  mmctl graph -c config -o mermaid`,
		Args: args(0),
		RunE: func(*cobra.Command, []string) error { return o.run() },
	}
	cmd.Flags().StringVarP(&o.configDir, "config", "c", ".", "config dir (or one file)")
	cmd.Flags().StringVarP(&o.output, "output", "o", "dot", "dot or mermaid")
	return cmd
}

func (o *graphOptions) run() error {
	if o.output != "dot" && o.output != "mermaid" {
		return usageError{fmt.Errorf("-o %q: want dot or mermaid", o.output)}
	}
	cfg, err := loadConfig(o.configDir)
	if err != nil {
		fmt.Fprint(o.stderr, schema.Format(err))
		return exitError{code: 1}
	}
	// The daemon's word on held tasks is a bonus: without a daemon (or
	// with one that does not answer soon) the config alone is drawn.
	var st *control.StatusReply
	o.timeout = min(o.timeout, 2*time.Second)
	if reply, err := o.request(control.Op{Type: control.Status}); err == nil {
		st = reply.Status
	}
	g := buildGraph(cfg, st)
	if o.output == "mermaid" {
		return writeMermaid(o.stdout, g)
	}
	return writeDOT(o.stdout, g)
}

// graphTask is one task as the graph draws it.
type graphTask struct {
	Name, Kind string
	External   bool
	Disabled   bool
	Held       string // why, when the daemon says it is held
	Routes     []graphRoute
}

// graphRoute is one of a Router's routes.
type graphRoute struct {
	Match        string   // the match, compact
	Sources      []string // tasks the match names as source
	Forwards     []string
	Transform    bool
	ShortCircuit bool
}

// routeGraph is everything drawn: tasks, and queues forwarded to that
// are not tasks.
type routeGraph struct {
	Tasks  []graphTask
	Queues []string
	Live   bool // held marks come from a daemon
}

func isRouterKind(kind string) bool { return kind == "Router" || kind == "builtin.Router" }

// buildGraph draws cfg; st (nil without a daemon) marks held tasks.
func buildGraph(cfg *schema.Config, st *control.StatusReply) *routeGraph {
	g := &routeGraph{Live: st != nil}
	held := map[string]string{}
	if st != nil {
		for _, t := range st.Tasks {
			if t.Status == "held" {
				held[t.Name] = control.HoldLabel(t.HeldReason, "")
			}
		}
	}
	queues := map[string]bool{}
	for _, name := range cfg.Names() {
		spec := cfg.Tasks[name]
		t := graphTask{Name: name, Kind: spec.Kind, External: spec.External, Disabled: spec.Disabled, Held: held[name]}
		if isRouterKind(spec.Kind) {
			t.Routes = routesOf(spec.Config)
			for _, r := range t.Routes {
				for _, q := range r.Forwards {
					if _, isTask := cfg.Tasks[q]; !isTask {
						queues[q] = true
					}
				}
			}
		}
		g.Tasks = append(g.Tasks, t)
	}
	for q := range queues {
		g.Queues = append(g.Queues, q)
	}
	sort.Strings(g.Queues)
	return g
}

// routesOf reads a Router's routes; the config was validated by the
// schema, so what does not fit is simply left out.
func routesOf(config map[string]any) []graphRoute {
	list, _ := config["routes"].([]any)
	var out []graphRoute
	for _, x := range list {
		r, _ := x.(map[string]any)
		match, _ := r["match"].(map[string]any)
		gr := graphRoute{Match: compactJSON(match)}
		if src, ok := match["source"].(string); ok {
			gr.Sources = []string{src}
		}
		fw, _ := r["forwards"].([]any)
		for _, f := range fw {
			if q, ok := f.(map[string]any)["qname"].(string); ok {
				gr.Forwards = append(gr.Forwards, q)
			}
		}
		_, gr.Transform = r["transform"]
		gr.ShortCircuit, _ = r["short_circuit"].(bool)
		out = append(out, gr)
	}
	return out
}

// compactJSON is a match as one short line: {"a":{"$gt":5}} reads a: {$gt: 5}.
func compactJSON(m map[string]any) string {
	if len(m) == 0 {
		return "every message"
	}
	var buf strings.Builder
	enc := json.NewEncoder(&buf) // maps marshal in key order
	enc.SetEscapeHTML(false)     // a match's "<" is not for a browser
	_ = enc.Encode(m)
	s := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(buf.String()), "{"), "}")
	s = strings.NewReplacer(`":`, `: `, `,"`, `, `, `{"`, `{`).Replace(strings.TrimPrefix(s, `"`))
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	return s
}

func (t graphTask) lines() []string {
	where := "internal"
	if t.External {
		where = "external"
	}
	l := []string{t.Name}
	if t.Kind != t.Name {
		l = append(l, "kind "+t.Kind)
	}
	l = append(l, where)
	if t.Disabled {
		l = append(l, "disabled")
	}
	if t.Held != "" {
		l = append(l, "HELD: "+t.Held)
	}
	return l
}

func (r graphRoute) lines(i int) []string {
	l := []string{fmt.Sprintf("route %d", i), r.Match}
	if r.Transform {
		l = append(l, "+ transform")
	}
	if r.ShortCircuit {
		l = append(l, "short_circuit")
	}
	return l
}

func dotQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s) + `"`
}

func graphSource(g *routeGraph) string {
	if g.Live {
		return "held tasks as the running daemon reports them"
	}
	return "from the config alone (no daemon answered: held tasks are not known)"
}

// writeDOT writes g as a Graphviz digraph.
func writeDOT(w io.Writer, g *routeGraph) error {
	var b strings.Builder
	fmt.Fprintf(&b, "// mmctl graph: %s.\n// static_forwards travel in messages: not drawn.\n", graphSource(g))
	b.WriteString("digraph multimodule {\n\trankdir=LR;\n\tnode [fontname=\"Helvetica\", fontsize=11];\n\tedge [fontname=\"Helvetica\", fontsize=9];\n")
	ids := map[string]string{}
	for i, t := range g.Tasks {
		ids[t.Name] = fmt.Sprintf("t%d", i)
		attrs := []string{"shape=box", "style=\"rounded\""}
		if t.External {
			attrs[0], attrs[1] = "shape=box3d", "style=\"solid\""
		}
		if t.Disabled {
			attrs[1] = "style=\"dashed\""
		}
		if t.Held != "" {
			attrs = append(attrs, "color=red", "penwidth=2", "fontcolor=red")
		}
		fmt.Fprintf(&b, "\t%s [label=%s, %s];\n", ids[t.Name], dotQuote(strings.Join(t.lines(), "\n")), strings.Join(attrs, ", "))
	}
	for i, q := range g.Queues {
		ids["queue "+q] = fmt.Sprintf("q%d", i)
		fmt.Fprintf(&b, "\tq%d [label=%s, shape=cylinder];\n", i, dotQuote(q+"\nqueue"))
	}
	g.eachRoute(ids, func(i int, rid string, lines, emitters, forwards []string) {
		fmt.Fprintf(&b, "\t%s [label=%s, shape=note, fontsize=9];\n", rid, dotQuote(strings.Join(lines, "\n")))
		fmt.Fprintf(&b, "\tt%d -> %s [arrowhead=none, style=dotted];\n", i, rid)
		for _, id := range emitters {
			fmt.Fprintf(&b, "\t%s -> t%d [style=dashed, label=\"emit\"];\n", id, i)
		}
		for _, id := range forwards {
			fmt.Fprintf(&b, "\t%s -> %s;\n", rid, id)
		}
	})
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// eachRoute walks g's routes for a writer, in order: for route j of task
// i, its node id (rN_M) and lines, the node ids of the tasks whose emits
// reach it, and those of what it forwards to (a task, else its queue).
// ids maps task names, and "queue NAME" for queues, to node ids.
func (g *routeGraph) eachRoute(ids map[string]string, f func(task int, rid string, lines, emitters, forwards []string)) {
	for i, t := range g.Tasks {
		for j, r := range t.Routes {
			var emitters, forwards []string
			for _, src := range r.Sources {
				if id, ok := ids[src]; ok {
					emitters = append(emitters, id)
				}
			}
			for _, q := range r.Forwards {
				id, ok := ids[q]
				if !ok {
					id = ids["queue "+q]
				}
				forwards = append(forwards, id)
			}
			f(i, fmt.Sprintf("r%d_%d", i, j), r.lines(j), emitters, forwards)
		}
	}
}

func mermaidQuote(s string) string {
	return `"` + strings.NewReplacer(`"`, "#quot;", "\n", "<br/>", "<", "#lt;", ">", "#gt;").Replace(s) + `"`
}

// writeMermaid writes g as a Mermaid flowchart.
func writeMermaid(w io.Writer, g *routeGraph) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%%%% mmctl graph: %s.\n%%%% static_forwards travel in messages: not drawn.\nflowchart LR\n", graphSource(g))
	ids := map[string]string{}
	var held, external, disabled []string
	for i, t := range g.Tasks {
		id := fmt.Sprintf("t%d", i)
		ids[t.Name] = id
		open, closing := "(", ")" // rounded: internal
		if t.External {
			open, closing = "[", "]"
			external = append(external, id)
		}
		if t.Held != "" {
			held = append(held, id)
		}
		if t.Disabled {
			disabled = append(disabled, id)
		}
		fmt.Fprintf(&b, "    %s%s%s%s\n", id, open, mermaidQuote(strings.Join(t.lines(), "\n")), closing)
	}
	for i, q := range g.Queues {
		ids["queue "+q] = fmt.Sprintf("q%d", i)
		fmt.Fprintf(&b, "    q%d[(%s)]\n", i, mermaidQuote(q+"\nqueue"))
	}
	g.eachRoute(ids, func(i int, rid string, lines, emitters, forwards []string) {
		fmt.Fprintf(&b, "    %s>%s]\n", rid, mermaidQuote(strings.Join(lines, "\n")))
		fmt.Fprintf(&b, "    t%d --- %s\n", i, rid)
		for _, id := range emitters {
			fmt.Fprintf(&b, "    %s -.->|emit| t%d\n", id, i)
		}
		for _, id := range forwards {
			fmt.Fprintf(&b, "    %s --> %s\n", rid, id)
		}
	})
	for _, c := range []struct {
		name, style string
		ids         []string
	}{
		{"external", "stroke-width:3px", external},
		{"disabled", "stroke-dasharray:5 5", disabled},
		{"held", "stroke:#d00,stroke-width:3px,color:#d00", held},
	} {
		if len(c.ids) > 0 {
			fmt.Fprintf(&b, "    classDef %s %s\n    class %s %s\n", c.name, c.style, strings.Join(c.ids, ","), c.name)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
