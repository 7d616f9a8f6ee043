package schema_test

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/cuecontext"
	"cuelang.org/go/cue/format"
	"cuelang.org/go/cue/parser"

	mm "github.com/multimodule/multimodule"
	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/schema"
	"github.com/multimodule/multimodule/tasks/router"
)

// Files are grouped by the tasks they declare, and a file that does not
// stand alone keeps the dir whole.
func TestApartGroups(t *testing.T) {
	cases := []struct {
		name  string
		files []string
		n     int
		want  [][]int // files by group; nil: evaluated whole
	}{
		{"one group each", []string{"tasks: A: {}", "tasks: B: {}", "tasks: C: {}"}, 3, [][]int{{0}, {1}, {2}}},
		{"fewer cores", []string{"tasks: A: {}", "tasks: B: {}", "tasks: C: {}"}, 2, [][]int{{0, 2}, {1}}},
		{"one core", []string{"tasks: A: {}", "tasks: B: {}"}, 1, nil},
		{"a task in two files", []string{"tasks: A: {}", "tasks: B: {}", "tasks: A: config: x: 1"}, 3, [][]int{{0, 2}, {1}}},
		{"daemon in two files", []string{"daemon: sample_every: 2\ntasks: A: {}", "tasks: B: {}", "daemon: max_queues: 5"}, 3, [][]int{{0, 2}, {1}}},
		{"all joined", []string{"tasks: {A: {}, B: {}}", "tasks: B: {}", "tasks: A: {}"}, 3, nil},
		{"predeclared types", []string{"package p\ntasks: A: config: {x: int | *1, y: [...string], z: _}", "package p\ntasks: \"b-1\": {}"}, 2, [][]int{{0}, {1}}},
		{"a reference", []string{"tasks: A: {}", "tasks: B: config: tasks.A.config"}, 2, nil},
		{"a reference inside the task", []string{"tasks: A: {}", "tasks: B: config: {x: 1, y: x}"}, 2, nil},
		{"another file's field", []string{"tasks: A: {}", "tasks: B: config: x: other"}, 2, nil},
		{"a hidden field", []string{"_x: 1\ntasks: A: {}", "tasks: B: {}"}, 2, nil},
		{"a hidden task", []string{"tasks: _A: {}", "tasks: B: {}"}, 2, nil},
		{"a pattern", []string{"tasks: [string]: disabled: true", "tasks: B: {}"}, 2, nil},
		{"an optional task", []string{"tasks: A?: {}", "tasks: B: {}"}, 2, nil},
		{"a computed name", []string{"tasks: (\"A\"): {}", "tasks: B: {}"}, 2, nil},
		{"a comprehension", []string{"for n in [\"A\"] {tasks: (n): {}}", "tasks: B: {}"}, 2, nil},
		{"an embedding", []string{"{tasks: A: {}}", "tasks: B: {}"}, 2, nil},
		{"a let", []string{"let x = 1\ntasks: A: config: n: x", "tasks: B: {}"}, 2, nil},
		{"an import", []string{"import \"strings\"\ntasks: A: config: s: strings.ToUpper(\"a\")", "tasks: B: {}"}, 2, nil},
		{"another top-level field", []string{"task: A: {}", "tasks: B: {}"}, 2, nil},
		{"tasks not a struct literal", []string{"tasks: {A: {}} & {B: {}}", "tasks: C: {}"}, 2, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var files []*ast.File
			var sizes []int
			for i, src := range c.files {
				f, err := parser.ParseFile(fmt.Sprintf("f%d.cue", i), src)
				if err != nil {
					t.Fatal(err)
				}
				files = append(files, f)
				sizes = append(sizes, 1)
			}
			var got [][]int
			for _, g := range schema.Apart(files, sizes, c.n) {
				var idx []int
				for _, f := range g {
					idx = append(idx, slices.Index(files, f))
				}
				got = append(got, idx)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("groups %v, want %v", got, c.want)
			}
		})
	}
}

// split writes src as files of a few declarations each, with a top-level
// tasks struct's tasks declared one by one: the same package, spread out.
// A source with a file-level let, import or hidden field stays one
// file.
func split(t *testing.T, src string, n int) map[string]string {
	t.Helper()
	f, err := parser.ParseFile("c.cue", src, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	var head, decls []ast.Decl
	for _, d := range f.Decls {
		switch d := d.(type) {
		case *ast.Package:
			head = append(head, d)
		case *ast.ImportDecl, *ast.LetClause:
			return map[string]string{"c.cue": src}
		case *ast.Field:
			st, ok := d.Value.(*ast.StructLit)
			name, _, err := ast.LabelName(d.Label)
			if strings.HasPrefix(name, "_") {
				return map[string]string{"c.cue": src} // files of no package do not share hidden fields
			}
			if err != nil || name != "tasks" || !ok {
				decls = append(decls, d)
				continue
			}
			for _, e := range st.Elts {
				decls = append(decls, &ast.Field{Label: ast.NewIdent("tasks"), Value: ast.NewStruct(e)})
			}
		default:
			decls = append(decls, d)
		}
	}
	files := map[string]string{}
	for i := range n {
		out := &ast.File{Decls: slices.Clone(head)}
		for j := i; j < len(decls); j += n {
			out.Decls = append(out.Decls, decls[j])
		}
		b, err := format.Node(out)
		if err != nil {
			t.Fatal(err)
		}
		files[fmt.Sprintf("f%d.cue", i)] = string(b)
	}
	return files
}

// Evaluated in groups, every config of the repository, spread over
// files, gives the tasks and daemon settings the whole evaluation gives,
// and a bad one the whole evaluation's errors.
func TestApartMatchesWhole(t *testing.T) {
	s, err := mm.NewSchema()
	if err != nil {
		t.Fatal(err)
	}
	grouped, whole := s.InGroups(3), s.ViaJSON()
	srcs := configSources(t)
	// Each file of a bad config stands alone; the whole is wrong.
	srcs["bad-field"] = "tasks: A: {}\ntasks: B: extrnal: true\ntasks: C: {}\n"
	srcs["bad-route"] = "tasks: A: {}\ntasks: R: {kind: \"Router\", config: routes: [{match: {a: {$gtt: 1}}}]}\ntasks: C: {}\n"
	srcs["bad-daemon"] = "tasks: A: {}\ndaemon: sample_every: 0\ntasks: C: {}\n"
	srcs["bad-conflict"] = "tasks: A: config: x: 1\ntasks: B: {}\ntasks: A: config: x: 2\n"
	srcs["bad-check"] = "tasks: A: {}\ntasks: R: {kind: \"Router\", config: routes: [{match: {a: {$re: \"(\"}}}]}\ntasks: C: {}\n"
	// Evaluated apart, B would count only its own group's tasks.
	srcs["counts"] = "tasks: A: {}\ntasks: B: config: n: len(tasks)\ntasks: C: {}\n"
	// B refers to another file's daemon settings.
	srcs["refers"] = "package p\ndaemon: limits: cpu: warn: 1\ntasks: B: config: n: daemon.limits\ntasks: C: {}\n"
	// Tasks written as plain literals, read from their files but S, whose
	// kind's schema adds a default to its config.
	srcs["plain"] = `package p
tasks: A: {
	config: {i: 1, f: 1.0, e: 1e3, E: 2.5E-3, big: 9007199254740993, huge: 123456789012345678901234567890,
		tiny: 1e-300, neg: -2.5, z: 0, fz: 0.0, nz: -0, nfz: -0.0, nez: -0.000e5, den: -0.00000001e-300, under: -0.000000000000000000000000001e-300, third: 0.3333333333333333333333,
		l: [1, [2, {a: "x"}]], s: "tab\tq\"u\u00e9", t: true, n: null, o: {}, el: [], "quoted key": 1, "$op": {"$gt": 3}}
	intervals: {tick: 0.5, save_state: 2}
	restart: initial: 0.5
	limits: {memory: {warn: 0.5, failsafe: "200MiB"}, cpu: severe: 1.5}
	external: true
	disabled: false
}
tasks: R: {kind: "builtin.Router", config: routes: [{match: {a: {$re: "^x"}, n: {$gt: 1, $lt: 9.5}}, forwards: [{qname: "X"}], short_circuit: true}]}
tasks: S: {kind: "Scheduler", config: schedules: [{name: "a", every: 1}]}
tasks: H: {kind: "HTTPClient", config: allow: ["example.com"]}
tasks: X: {kind: "Exec", config: {command: "/bin/cat", backoff: initial: 0.5}}
tasks: D: {}
`
	// A is declared twice: it is not read from either declaration alone.
	srcs["twice"] = "tasks: A: config: x: 1\ntasks: B: {}\ntasks: A: restart: max: 9\n"
	fromFiles := map[string]int64{"plain": 5, "bench": 200, "seed": 3, "twice": 1}
	// These refer to something (a field, a let, a name): evaluated whole.
	refers := map[string]bool{"counts": true, "refers": true, "across": true, "values": true, "listed-reference": true, "listed-comprehension": true}
	apartWanted := map[string]bool{"plain": true, "twice": true, "bench": true, "kinds": true, "limits": true, "edge": true, "numbers": true, "emptyish": true, "seed": true}
	for name, src := range srcs {
		files := split(t, src, 3)
		dir := testenv.WriteFiles(t, files)
		want, werr := whole.Load(dir)
		before, literalBefore := grouped.ApartLoads(), grouped.FromFiles()
		got, gerr := grouped.Load(dir)
		if fmt.Sprint(werr) != fmt.Sprint(gerr) {
			t.Errorf("%s: error %v, want %v", name, gerr, werr)
			continue
		}
		if bad := strings.HasPrefix(name, "bad-"); bad != (werr != nil) {
			t.Errorf("%s: error %v", name, werr)
			continue
		}
		apart := grouped.ApartLoads() > before
		if apartWanted[name] && !apart {
			t.Errorf("%s: evaluated whole, want in groups (files %q)", name, files)
		}
		if refers[name] && apart {
			t.Errorf("%s refers to something, but was evaluated in groups", name)
		}
		if n, ok := fromFiles[name]; ok && grouped.FromFiles()-literalBefore != n {
			t.Errorf("%s: %d tasks read from their files, want %d", name, grouped.FromFiles()-literalBefore, n)
		}
		if werr != nil {
			continue
		}
		if !reflect.DeepEqual(got.Daemon, want.Daemon) {
			t.Errorf("%s: daemon %+v, want %+v", name, got.Daemon, want.Daemon)
		}
		if len(got.Tasks) != len(want.Tasks) {
			t.Errorf("%s: %d tasks, want %d", name, len(got.Tasks), len(want.Tasks))
		}
		for n, w := range want.Tasks {
			if g := got.Tasks[n]; g.Hash != w.Hash || !reflect.DeepEqual(g, w) {
				t.Errorf("%s: task %s: %+v, want %+v", name, n, g, w)
			}
		}
	}
}

// A config schema adds to a config when CUE gives the config something
// the config does not say: such a kind's tasks are not read from their
// files.
func TestConfigSchemaAddsTo(t *testing.T) {
	cases := []struct {
		schema string
		adds   bool
	}{
		{`{}`, false},
		{`{...}`, false},
		{`{[string]: int}`, false},
		{`{a?: int, b!: string, c: string & !=""}`, false},
		{`{a?: *1 | int}`, false}, // optional: the config's or absent
		{`{a: *1 | int}`, true},
		{`{a: 1}`, true},
		{`{a: {b?: int}}`, true}, // CUE makes a: {}
		{`{a: [...int]}`, true},
		{`{l?: [...{m: string, n?: [...{o?: bool}]}]}`, false},
		{`{l?: [...{m: *"x" | string}]}`, true},
		{`{r!: {x?: {y: *1 | int}}}`, true},
		{`{m?: [string]: {a: *1 | int}}`, true}, // a pattern's default
		{`{m?: [string]: {a?: int}}`, false},
		{router.ConfigSchema + "\n#Config", false},
	}
	for _, c := range cases {
		v := cuecontext.New().CompileString(c.schema)
		if err := v.Err(); err != nil {
			t.Fatalf("%s: %v", c.schema, err)
		}
		if got := schema.AddsTo(v, 0, false); got != c.adds {
			t.Errorf("%s: adds %v, want %v", c.schema, got, c.adds)
		}
	}
}

// randomValue writes a random CUE value of depth at most d, mostly as
// JSON would write it, sometimes not (a default, an operator, another
// notation): either way it must load as the whole evaluation loads it.
func randomValue(r *rand.Rand, d int) string {
	switch n := r.IntN(15); {
	case n == 14 && r.IntN(20) == 0:
		return "1e400" // beyond float64: the load fails, both ways alike
	case n == 0 && d > 0:
		return randomObject(r, d-1)
	case n == 1 && d > 0:
		var parts []string
		for range r.IntN(4) {
			parts = append(parts, randomValue(r, d-1))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case n == 2:
		return []string{`"x"`, `"é\t\"q\""`, `""`, `"\u00e9"`, `'bytes'`, `"""` + "\n\tmulti\n\t" + `"""`}[r.IntN(6)]
	case n == 3:
		return []string{"true", "false", "null"}[r.IntN(3)]
	case n == 4:
		return []string{"*1 | int", "1 + 2", "0x10", "1_000", "2Ki", "-1e-400"}[r.IntN(6)]
	case n == 5:
		return []string{"0", "-0", "0.0", "-0.0", "1e3", "1E-3", "-2.5e+10", "9007199254740993", "0.1", "123456789012345678901234567890"}[r.IntN(10)]
	default:
		return strconv.Itoa(r.IntN(2000) - 1000)
	}
}

// randomObject writes a struct of up to five random values.
func randomObject(r *rand.Rand, d int) string {
	var parts []string
	for i := range r.IntN(6) {
		parts = append(parts, fmt.Sprintf("%s: %s", []string{"a", "b", `"c d"`, `"$x"`, "e"}[i], randomValue(r, d)))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// randomTask writes a random task: a kind, and some of #Task's fields.
func randomTask(r *rand.Rand) string {
	var fields []string
	switch r.IntN(5) {
	case 0:
		fields = append(fields, `kind: "Router"`, `config: routes: [{match: {a: `+randomValue(r, 0)+`}, forwards: [{qname: "X"}]}]`)
	case 1:
		fields = append(fields, `kind: "builtin.Scheduler"`, `config: schedules: [{name: "s", every: 1}]`)
	case 2:
		fields = append(fields, `kind: "HTTPClient"`, `config: allow: ["example.com"]`)
	default:
		fields = append(fields, "config: "+randomObject(r, 3))
	}
	if r.IntN(3) == 0 {
		fields = append(fields, fmt.Sprintf("intervals: {tick: %s}", []string{"0.5", "1", "2e1"}[r.IntN(3)]))
	}
	if r.IntN(3) == 0 {
		fields = append(fields, []string{"restart: initial: 0.5", "restart: {max: 9, hold_after: 2}", "restart: {}"}[r.IntN(3)])
	}
	if r.IntN(3) == 0 {
		fields = append(fields, []string{`limits: memory: failsafe: "200MiB"`, "limits: {cpu: warn: 0.5, fds: {severe: 10}}"}[r.IntN(2)])
	}
	if r.IntN(4) == 0 {
		fields = append(fields, "disabled: true")
	}
	return "{" + strings.Join(fields, ", ") + "}"
}

// Random configs of plain and not so plain tasks over a few files load as
// the whole evaluation decoded the JSON way loads them.
func TestRandomConfigsLoadAsWhole(t *testing.T) {
	t.Parallel()
	s, err := mm.NewSchema()
	if err != nil {
		t.Fatal(err)
	}
	grouped, whole := s.InGroups(2), s.ViaJSON()
	r := rand.New(rand.NewPCG(1, 2))
	loaded, literal := 0, grouped.FromFiles()
	for i := range 200 {
		files := map[string]string{}
		for n := range 6 {
			name := fmt.Sprintf("f%d.cue", r.IntN(3))
			files[name] += fmt.Sprintf("tasks: T%d: %s\n", n, randomTask(r))
		}
		dir := testenv.WriteFiles(t, files)
		want, werr := whole.Load(dir)
		got, gerr := grouped.Load(dir)
		if fmt.Sprint(werr) != fmt.Sprint(gerr) {
			t.Fatalf("config %d %q: error %v, want %v", i, files, gerr, werr)
		}
		if werr != nil {
			continue
		}
		loaded++
		for n, w := range want.Tasks {
			if g := got.Tasks[n]; g.Hash != w.Hash || !reflect.DeepEqual(g, w) {
				t.Fatalf("config %d %q: task %s: %+v, want %+v", i, files, n, g, w)
			}
		}
	}
	t.Logf("%d of 200 configs loaded, %d tasks read from their files", loaded, grouped.FromFiles()-literal)
	if loaded < 20 || grouped.FromFiles()-literal < 100 {
		t.Fatalf("%d configs loaded, %d tasks read from their files: too few to say", loaded, grouped.FromFiles()-literal)
	}
}

// Values the reading of plain tasks once took otherwise than CUE's export
// gives them: each loads both ways alike.
func TestLiteralsLoadAsCUEWritesThem(t *testing.T) {
	s, err := mm.NewSchema()
	if err != nil {
		t.Fatal(err)
	}
	pattern, err := schema.New(schema.Builtin{Kind: "builtin.P", CUE: "#Config: {m?: [string]: {a: *1 | int}}"})
	if err != nil {
		t.Fatal(err)
	}
	comprehension, err := schema.New(schema.Builtin{Kind: "builtin.C", CUE: "#Config: {a?: int, if a != _|_ {b: *1 | int}}"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		s   *schema.Schema
		src string
	}{
		{s, "tasks: A: restart: hold_after: 9007199254740993\n"}, // exactly, into an int
		{s, "tasks: A: config: x: 1e-100001\n"},                  // CUE writes 1
		{s, "tasks: A: restart: initial: 5e-100001\n"},
		{s, "tasks: A: config: x: 0e99999999999\n"}, // CUE writes NaN: not JSON
		{s, "tasks: E: {kind: \"Exec\", config: {command: \"x\", ack_timeout: 1e-100001}}\n"},
		{s, "tasks: A: config: {x: -0.0, y: -0.000000000000000000000000001e-300}\n"},
		{pattern, "tasks: A: {kind: \"P\", config: m: k: {}}\n"},
		{comprehension, "tasks: A: {kind: \"C\", config: a: 1}\n"},
	}
	for _, c := range cases {
		dir := testenv.WriteFiles(t, map[string]string{"a.cue": c.src, "b.cue": "tasks: B: {}\n"})
		want, werr := c.s.ViaJSON().Load(dir)
		got, gerr := c.s.InGroups(2).Load(dir)
		if fmt.Sprint(werr) != fmt.Sprint(gerr) {
			t.Errorf("%s: error %v, want %v", c.src, gerr, werr)
		} else if werr == nil && !reflect.DeepEqual(got.Tasks, want.Tasks) {
			t.Errorf("%s: tasks %+v, want %+v", c.src, got.Tasks, want.Tasks)
		}
	}
}
