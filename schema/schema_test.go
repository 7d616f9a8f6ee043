package schema_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/schema"
	"github.com/multimodule/multimodule/tasks/router"
)

// loadInvalid loads a dir of a good file and bad.cue holding src, which
// must not load (ErrInvalid); it returns the dir and the error.
func loadInvalid(t *testing.T, s *schema.Schema, src string) (string, error) {
	t.Helper()
	dir := testenv.WriteFiles(t, map[string]string{"good.cue": "tasks: Good: {}\n", "bad.cue": src})
	_, err := s.Load(dir)
	if !errors.Is(err, schema.ErrInvalid) {
		t.Fatalf("got %v, want ErrInvalid", err)
	}
	return dir, err
}

func newSchema(t *testing.T) *schema.Schema {
	t.Helper()
	s, err := schema.New(schema.Builtin{Kind: router.Kind, CUE: router.ConfigSchema, Check: router.CheckConfig, Explain: router.ExplainConfig, Stateless: true})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const seed = `tasks: Example1: config: outstr: "howdy"
tasks: Example2: {}
tasks: Router: config: routes: [{match: source: "Example1", forwards: [{qname: "Example2"}]}]
`

func TestLoadSeed(t *testing.T) {
	t.Parallel()
	s := newSchema(t)
	cfg, err := s.Load(testenv.WriteFiles(t, map[string]string{"example.cue": seed}))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.Names(), ","); got != "Example1,Example2,Router" {
		t.Fatalf("tasks %s", got)
	}
	e1 := cfg.Tasks["Example1"]
	if e1.Kind != "Example1" || e1.External || e1.Disabled || e1.Config["outstr"] != "howdy" {
		t.Fatalf("Example1 decoded as %+v", e1)
	}
	if e1.Restart.Initial != 1 || e1.Restart.HoldAfter != 5 {
		t.Fatalf("restart defaults not applied: %+v", e1.Restart)
	}
	routes := cfg.Tasks["Router"].Config["routes"].([]any)
	if len(routes) != 1 {
		t.Fatalf("routes %v", routes)
	}
	if cfg.Tasks["Example2"].Hash == "" || cfg.Tasks["Example2"].Hash == e1.Hash {
		t.Fatal("spec hashes missing or not distinct")
	}
}

func TestLoadAcrossFilesAndSkips(t *testing.T) {
	t.Parallel()
	s := newSchema(t)
	dir := testenv.WriteFiles(t, map[string]string{
		"a.cue":       `_greeting: "howdy"` + "\n" + `tasks: A: config: outstr: _greeting`,
		"b.cue":       `tasks: B: {kind: "Counter", intervals: {tick: 0.5, save_state: 2}}`,
		".hidden.cue": `this is not CUE`,
		"_draft.cue":  `this is not CUE`,
		".#a.cue":     `this is not CUE`,
		"#a.cue#":     `this is not CUE`,
		"a.cue~":      `this is not CUE`,
		"notes.txt":   `this is not CUE`,
		"README.md":   `# x`,
	})
	os.Mkdir(filepath.Join(dir, "sub.cue"), 0o700)
	cfg, err := s.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Tasks["A"].Config["outstr"] != "howdy" {
		t.Fatalf("cross-file reference: %+v", cfg.Tasks["A"])
	}
	b := cfg.Tasks["B"]
	if b.Kind != "Counter" || b.Intervals["tick"] != 0.5 || b.Intervals["save_state"] != 2 {
		t.Fatalf("B decoded as %+v", b)
	}
	if len(cfg.Files) != 2 {
		t.Fatalf("loaded %v, want a.cue and b.cue only", cfg.Files)
	}
	// A single file loads too.
	one, err := s.Load(filepath.Join(dir, "b.cue"))
	if err != nil || len(one.Tasks) != 1 {
		t.Fatalf("single file: %v %v", one, err)
	}
}

func TestLoadErrorsArePositioned(t *testing.T) {
	t.Parallel()
	s := newSchema(t)
	tests := []struct {
		name, src string
		want      []string // substrings of the error, the first one file:line
	}{
		{"wrong type", "tasks: Example1: {}\ntasks: Example1: external: \"yes\"\n",
			[]string{"bad.cue:2:28", "tasks.Example1.external", "want true or false"}},
		{"syntax", "tasks: Example1: {\n  config: outstr: \"howdy\"\n",
			[]string{"bad.cue:2:", "expected '}'"}},
		{"unknown task field", "tasks: E: {extrnal: true}\n",
			[]string{"bad.cue:1:12", "tasks.E.extrnal", "not allowed"}},
		{"unknown top-level field", "task: E: {}\n",
			[]string{"bad.cue:1:1", "task", "not allowed"}},
		{"bad task name", "tasks: \"a/b\": {}\n",
			[]string{"bad.cue:1:8", "not allowed"}},
		{"bad kind", "tasks: E: kind: \"not a kind\"\n",
			[]string{"bad.cue:1:17", "tasks.E.kind"}},
		{"negative interval", "tasks: E: intervals: tick: -1\n",
			[]string{"bad.cue:1:28", "tasks.E.intervals.tick"}},
		{"unknown metric", "tasks: E: limits: cpuz: warn: 1\n",
			[]string{"bad.cue:1:19", "tasks.E.limits.cpuz"}},
		{"config not an object", "tasks: E: config: 5\n",
			[]string{"bad.cue:1:19", "tasks.E.config"}},
		{"route without match", "tasks: Router: config: routes: [{forwards: [{qname: \"A\"}]}]\n",
			[]string{"bad.cue:1:", "tasks.Router.config.routes.0.match", "required"}},
		{"route with unknown operator", "tasks: Router: config: routes: [{match: a: $rex: \"x\"}]\n",
			[]string{"bad.cue:1:", "tasks.Router.config.routes.0.match.a"}},
		{"route with bad forward", "tasks: R: {kind: \"Router\", config: routes: [{match: {}, forwards: [{queue: \"A\"}]}]}\n",
			[]string{"bad.cue:1:", "tasks.R.config.routes.0.forwards.0.queue", "not allowed"}},
		{"route with bad regexp", "tasks: Router: config: routes: [\n\t{match: {}},\n\t{match: a: $re: \"(\"},\n]\n",
			[]string{"bad.cue:3:3", "tasks.Router.config.routes.1.match", "missing closing )"}},
		{"stateless built-in made external", "tasks: Router: external: true\n",
			[]string{"bad.cue:1:26", "tasks.Router.external"}},
		{"interval too small", "tasks: E: intervals: tick: 1e-12\n",
			[]string{"bad.cue:1:28", "tasks.E.intervals.tick"}},
		{"queue fill has no failsafe", "tasks: E: limits: queue_fill: failsafe: 0.9\n",
			[]string{"bad.cue:1:31", "tasks.E.limits.queue_fill.failsafe", "not allowed"}},
		{"memory not a size", "tasks: E: limits: memory: warn: \"200 megs\"\n",
			[]string{"bad.cue:1:33", "tasks.E.limits.memory.warn"}},
		{"memory fraction over 1", "tasks: E: limits: memory: warn: 2\n",
			[]string{"bad.cue:1:33", "tasks.E.limits.memory.warn"}},
		{"cpu as a string", "tasks: E: limits: cpu: warn: \"1\"\n",
			[]string{"bad.cue:1:30", "tasks.E.limits.cpu.warn"}},
		{"empty levels", "tasks: E: limits: fds: {}\n",
			[]string{"bad.cue:1:", "tasks.E.limits.fds"}},
		{"sampling too fast", "daemon: sample_every: 0.01\n",
			[]string{"bad.cue:1:23", "daemon.sample_every"}},
		{"no queues at all", "daemon: max_queues: 0\n",
			[]string{"bad.cue:1:", "daemon.max_queues"}},
		// The schema's definitions are out of a config's reach: one of the
		// same name is another definition, and widens nothing.
		{"a definition named as the schema's", "#Task: extrnal: bool\ntasks: E: {extrnal: true}\n",
			[]string{"bad.cue:2:12", "tasks.E.extrnal", "not allowed"}},
		{"a hidden field named as the schema's", "_builtinKinds: Counter: {}\ntasks: E: {kind: \"Counter\", config: 5}\n",
			[]string{"bad.cue:2:37", "tasks.E.config"}},
		{"unknown quoted top-level field", "\"my field\": 1\n",
			[]string{"bad.cue:1:1", `"my field"`, "not allowed"}},
		{"required field under a quoted name", "tasks: \"a-b\": {kind: \"Router\", config: routes: [{}]}\n",
			[]string{"bad.cue:1:49", `tasks."a-b".config.routes.0.match`, "required"}},
		{"a check's error under a quoted name", "tasks: \"a-b\": {kind: \"Router\", config: routes: [{match: {x: {$bogus: 1}}}]}\n",
			[]string{"bad.cue:1:", `tasks."a-b".config.routes.0.match.x: unknown operator $bogus`}},
		{"a number beyond float64", "tasks: E: config: x: 1e400\n",
			[]string{"bad.cue:1:8", "tasks.E: cannot be given to the task as JSON"}},
		{"a file that is a value", "[1, 2]\n",
			[]string{"bad.cue:1:1", "want fields (tasks: and daemon:), got a list"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir, err := loadInvalid(t, s, tt.src)
			msg := err.Error()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Fatalf("error lacks %q:\n%s", w, msg)
				}
			}
			if !strings.HasPrefix(msg, filepath.Join(dir, "bad.cue")+":") {
				t.Fatalf("error does not start with the file position:\n%s", msg)
			}
		})
	}
}

// An error's path elements quote a name that is not an identifier; a
// quoted "0" is a field's name, a bare 0 an index.
func TestErrorPathsAreLookedUpAsWritten(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		path []string
		want string
	}{
		{[]string{"tasks", `"a-b"`, "config"}, `tasks."a-b".config`},
		{[]string{"tasks", "A", "config", `"0"`, "0"}, `tasks.A.config."0"[0]`},
		{[]string{"tasks", "A", "config", `"my key"`}, `tasks.A.config."my key"`},
	} {
		if got := schema.CuePath(tt.path).String(); got != tt.want {
			t.Errorf("%q: %s, want %s", tt.path, got, tt.want)
		}
	}
}

// Several errors come one a line, in the order of the files and their
// lines, whichever CUE or a built-in kind's check found first.
func TestLoadErrorsComeInFileOrder(t *testing.T) {
	t.Parallel()
	s := newSchema(t)
	for _, tt := range []struct {
		files map[string]string
		want  []string
	}{
		{map[string]string{
			"a.cue": "task: E: {}\ntasks: A: {extrnal: true}\n",
			"b.cue": "daemon: sample_everyy: 1\ntasks: B: intervals: tick: -1\n",
		}, []string{"a.cue:1:1", "a.cue:2:12", "b.cue:1:9", "b.cue:2:28"}},
		{map[string]string{
			"a.cue": "tasks: B: kind: \"Router\"\ntasks: A: {kind: \"Router\", config: routes: [{match: {x: {$bogus: 1}}}]}\n",
			"b.cue": "tasks: B: config: routes: [{match: {x: {$bogus: 1}}}]\n",
		}, []string{"a.cue:2:54", "b.cue:1:37"}},
	} {
		dir := testenv.WriteFiles(t, tt.files)
		_, err := s.Load(dir)
		if !errors.Is(err, schema.ErrInvalid) {
			t.Fatalf("got %v, want ErrInvalid", err)
		}
		var got []string
		for _, line := range strings.Split(strings.TrimSpace(schema.Format(err)), "\n") {
			got = append(got, strings.SplitN(strings.TrimPrefix(line, dir+"/"), ": ", 2)[0])
		}
		if strings.Join(got, " ") != strings.Join(tt.want, " ") {
			t.Errorf("errors at %v, want %v:\n%s", got, tt.want, schema.Format(err))
		}
	}
}

// An error CUE words as a disjunction (one line per branch) or as a bare
// "field not allowed" reads as one line saying what is allowed, still at
// file:line:col and the path.
func TestLoadErrorsSayWhatIsAllowed(t *testing.T) {
	t.Parallel()
	s := newSchema(t)
	tests := []struct {
		name, src string
		want      []string // the one line holds each, in order
	}{
		{"operator typo at the top of a match", "tasks: Router: config: routes: [{match: {$gtt: 5}}]\n",
			[]string{"bad.cue:1:42: ", "tasks.Router.config.routes.0.match.$gtt: ", "unknown operator $gtt (want $re,", "in a field's object"}},
		{"operator typo inside a match", "tasks: Router: config: routes: [{match: {size: {$gtt: 5}}}]\n",
			[]string{"bad.cue:1:", "tasks.Router.config.routes.0.match.size: unknown operator $gtt (want $re,"}},
		{"known operator misplaced", "tasks: R: {kind: \"Router\", config: routes: [{match: {$gt: 5}}]}\n",
			[]string{"bad.cue:1:", "tasks.R.config.routes.0.match.$gt: ", "operator $gt where a field name belongs"}},
		{"$copy at the top of a transform", "tasks: Router: config: routes: [{match: {}, transform: {$copy: \"a\"}}]\n",
			[]string{"bad.cue:1:", "transform.$copy: ", "$copy goes in a field's object"}},
		{"route field typo", "tasks: Router: config: routes: [{match: {}, forwardz: [{qname: \"A\"}]}]\n",
			[]string{"bad.cue:1:", "routes.0.forwardz: ", "did you mean forwards?", "allowed: forwards, match, short_circuit, transform"}},
		{"invalid task name", "tasks: \"a/b\": {}\n",
			[]string{"bad.cue:1:8: ", `task name "a/b" not allowed: a task name is a letter or _ then up to 127 letters, digits, _ or -`}},
		{"task field typo", "tasks: E: {extrnal: true}\n",
			[]string{"bad.cue:1:12: ", "tasks.E.extrnal: ", "did you mean external?", "allowed: config, disabled, external, intervals, kind, limits, restart"}},
		{"bad kind", "tasks: E: kind: \"not a kind\"\n",
			[]string{"bad.cue:1:17: ", "tasks.E.kind: want a kind: Name or namespace.Name", `got "not a kind"`}},
		{"memory neither fraction nor size", "tasks: E: limits: memory: warn: \"200 megs\"\n",
			[]string{"bad.cue:1:33: ", "want a fraction of the box's memory", `got "200 megs"`}},
		{"bool as a string", "tasks: E: external: \"yes\"\n",
			[]string{"bad.cue:1:21: ", "tasks.E.external: want true or false, got \"yes\""}},
		{"match not an object", "tasks: Router: config: routes: [{match: 5}]\n",
			[]string{"bad.cue:1:", "routes.0.match: want an object, got 5"}},
		{"routes not a list", "tasks: Router: config: routes: {}\n",
			[]string{"bad.cue:1:", "tasks.Router.config.routes: want a list, got {}"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir, err := loadInvalid(t, s, tt.src)
			msg := strings.TrimSuffix(schema.Format(err), "\n")
			if strings.Contains(msg, "\n") {
				t.Fatalf("want one line, got:\n%s", msg)
			}
			for _, noise := range []string{"conflicting values", "out of bound =~", "disjunction", "#"} {
				if strings.Contains(msg, noise) {
					t.Fatalf("error shows CUE's internals (%q):\n%s", noise, msg)
				}
			}
			rest := strings.TrimPrefix(msg, dir+"/")
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("error lacks %q (in order):\n%s", w, msg)
				}
				rest = rest[i+len(w):]
			}
		})
	}
}

func TestLoadAcceptsEdgeCases(t *testing.T) {
	t.Parallel()
	s := newSchema(t)
	dir := testenv.WriteFiles(t, map[string]string{"a.cue": `
tasks: "my-task": {}
tasks: Router: config: routes: [
	{match: {x: {}}, transform: {a: {}}},
	{match: {x: {$exists: true}}, transform: {b: {$copy: "x"}}},
]
`})
	cfg, err := s.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Tasks["my-task"].Kind != "my-task" {
		t.Fatalf("kind %q", cfg.Tasks["my-task"].Kind)
	}
}

func TestLoadLimits(t *testing.T) {
	t.Parallel()
	s := newSchema(t)
	dir := testenv.WriteFiles(t, map[string]string{"a.cue": `
tasks: E: limits: {memory: {warn: 0.05, failsafe: "200MiB"}, cpu: severe: 1.5, queue_fill: warn: 0.5}
daemon: {limits: fds: warn: 10, sample_every: 0.25, max_queues: 50}
`})
	cfg, err := s.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	l := cfg.Tasks["E"].Limits
	if l["memory"].Warn.Value != 0.05 || l["memory"].Failsafe.Value != 200<<20 || l["memory"].Failsafe.Size != "200MiB" ||
		l["cpu"].Severe.Value != 1.5 || l["cpu"].Warn != nil || l["queue_fill"].Warn.Value != 0.5 {
		t.Fatalf("limits %+v", l)
	}
	d := cfg.Daemon
	if d.Limits["fds"].Warn.Value != 10 || d.SampleEvery != 0.25 || d.FailsafeGrace != 5 || d.MaxQueues != 50 {
		t.Fatalf("daemon %+v", d)
	}
	// The default settings without a daemon section.
	dir = testenv.WriteFiles(t, map[string]string{"a.cue": "tasks: E: {}\n"})
	if cfg, err = s.Load(dir); err != nil || cfg.Daemon.SampleEvery != 1 || cfg.Daemon.FailsafeGrace != 5 || cfg.Daemon.MaxQueues != 1000 {
		t.Fatalf("defaults %+v, %v", cfg.Daemon, err)
	}
}

func TestLoadUnreadable(t *testing.T) {
	t.Parallel()
	s := newSchema(t)
	if _, err := s.Load(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, schema.ErrUnreadable) {
		t.Fatalf("got %v, want ErrUnreadable", err)
	}
}

func TestEmptyDirIsNoTasks(t *testing.T) {
	t.Parallel()
	cfg, err := newSchema(t).Load(t.TempDir())
	if err != nil || len(cfg.Tasks) != 0 {
		t.Fatalf("%v %v", cfg, err)
	}
}

func TestSourceHash(t *testing.T) {
	t.Parallel()
	s := newSchema(t)
	dir := testenv.WriteFiles(t, map[string]string{"a.cue": seed})
	c1, _ := s.Load(dir)
	c2, _ := s.Load(dir)
	os.WriteFile(filepath.Join(dir, "a.cue"), []byte(seed+"\n"), 0o600)
	c3, _ := s.Load(dir)
	if c1.SourceHash != c2.SourceHash || c1.SourceHash == c3.SourceHash {
		t.Fatal("source hash must follow file contents")
	}
	if c1.Tasks["Router"].Hash != c3.Tasks["Router"].Hash {
		t.Fatal("a whitespace change changed a task's spec hash")
	}
}

// Any file, beside one of a plain task, loads or fails with a classified
// error, and loads as the whole evaluation decoded the JSON way loads it
// (evaluated apart, tasks read from their files).
func FuzzLoad(f *testing.F) {
	f.Add(seed)
	f.Add("tasks: E: external: \"yes\"")
	f.Add("tasks: {")
	f.Add("tasks: A: {config: {n: -0, f: 1.50, l: [1, {a: null}], s: \"\\u00e9\"}, restart: max: 9, limits: memory: warn: \"1MiB\"}")
	s, err := schema.New(schema.Builtin{Kind: router.Kind, CUE: router.ConfigSchema, Check: router.CheckConfig})
	if err != nil {
		f.Fatal(err)
	}
	grouped, whole := s.InGroups(2), s.ViaJSON()
	f.Fuzz(func(t *testing.T, src string) {
		dir := testenv.WriteFiles(t, map[string]string{"f.cue": src, "g.cue": "tasks: Fixed: config: n: 1\n"})
		cfg, err := grouped.Load(dir)
		if err == nil && cfg == nil {
			t.Fatal("nil config without an error")
		}
		if err != nil && !errors.Is(err, schema.ErrInvalid) && !errors.Is(err, schema.ErrUnreadable) {
			t.Fatalf("unclassified error: %v", err)
		}
		want, werr := whole.Load(dir)
		if fmt.Sprint(err) != fmt.Sprint(werr) {
			t.Fatalf("error %v, want %v", err, werr)
		}
		if err == nil && !reflect.DeepEqual(cfg.Tasks, want.Tasks) {
			t.Fatalf("tasks %+v, want %+v", cfg.Tasks, want.Tasks)
		}
	})
}

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want float64
		bad  bool
	}{
		{in: "200MiB", want: 200 << 20},
		{in: "1.5GB", want: 1.5e9},
		{in: "4096B", want: 4096},
		{in: "512 KiB", want: 512 << 10},
		{in: "1TiB", want: 1 << 40},
		{in: "12", bad: true},
		{in: "MiB", bad: true},
		{in: "1e3MB", bad: true},
		{in: "-1MB", bad: true},
		{in: "1XB", bad: true},
	} {
		got, err := schema.ParseSize(c.in)
		if c.bad != (err != nil) || got != c.want {
			t.Errorf("ParseSize(%q) = %v, %v", c.in, got, err)
		}
	}
}

// Loading leaves nothing behind: a CUE context keeps every value built in
// it, and the one the schema kept for every load held each load's whole
// config for as long as the schema lived (the daemon's whole life). Not
// parallel: it measures the heap.
func TestLoadsLeaveNothingBehind(t *testing.T) {
	s := newSchema(t)
	files := map[string]string{}
	for n := range 200 {
		files[fmt.Sprintf("f%d.cue", n/10)] += fmt.Sprintf("tasks: T%d: {kind: \"Router\", config: routes: [{match: n: %d, forwards: [{qname: \"X\"}]}]}\n", n, n)
	}
	dir := testenv.WriteFiles(t, files)
	heap := func() int64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return int64(ms.HeapAlloc)
	}
	var before int64
	for i := range 11 {
		if _, err := s.Load(dir); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			before = heap()
		}
	}
	// Each load kept about 2 MiB of this config.
	if grew := heap() - before; grew > 8<<20 {
		t.Fatalf("10 loads left %d MiB more on the heap", grew>>20)
	}
	runtime.KeepAlive(s) // the daemon keeps its schema
}
