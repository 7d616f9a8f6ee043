// Package schema loads a directory of CUE files into typed task specs,
// validated against the embedded schema, with every error located at
// file:line:col.
package schema

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/build"
	"cuelang.org/go/cue/cuecontext"
	cueerrors "cuelang.org/go/cue/errors"
	"cuelang.org/go/cue/parser"
	"cuelang.org/go/cue/token"
)

//go:embed multimodule.cue
var baseSchema string

// SchemaFile is the name the schema carries in error positions and when
// written next to a config (mmctl schema --write).
const SchemaFile = "multimodule_schema.cue"

// Errors from Load.
var (
	// ErrInvalid means the directory loaded but does not satisfy the
	// schema (or a built-in task's config check); see *LoadError.
	ErrInvalid = errors.New("invalid config")
	// ErrUnreadable means the directory or a file could not be read.
	ErrUnreadable = errors.New("config unreadable")
)

// Builtin is a built-in task kind that ships a CUE definition of its
// config, so that a bad config is an error before the task runs.
type Builtin struct {
	// Kind is the fully qualified kind, e.g. "builtin.Router".
	Kind string
	// CUE holds definitions, among them #Config (the config's shape).
	CUE string
	// Stateless kinds cannot be external (they run in every process).
	Stateless bool
	// Check optionally validates what CUE cannot (a regexp compiles, ...).
	// An error with a ConfigPath() []string method is reported at that
	// path inside the task's config. Load calls it from several goroutines
	// at once, each with a config of its own.
	Check func(config map[string]any) error
	// Explain optionally says, in one line, what is allowed at a path
	// inside the config where CUE refused a field (a pattern's keys, say),
	// or "" to leave CUE's words; the path's last element is the field.
	Explain func(path []string) string
}

// Schema is the compiled schema with its built-ins.
type Schema struct {
	src      string
	builtins []Builtin
	// defaults are taskDefaults, for literalSpec.
	defaults map[string]map[string]any

	// For tests: list the tasks and decode every one the JSON way, in one
	// evaluation; decode none from its file; the groups to evaluate apart
	// in (0: GOMAXPROCS); count the tasks the walk left to the JSON way,
	// the loads whose tasks were listed, the loads evaluated apart and the
	// tasks read from their files.
	viaJSON    bool
	walkOnly   bool
	groups     int
	fellBack   atomic.Int64
	listed     atomic.Int64
	apartLoads atomic.Int64
	fromFiles  atomic.Int64
}

// New compiles the schema with the given built-in config definitions.
func New(builtins ...Builtin) (*Schema, error) {
	var b strings.Builder
	b.WriteString(baseSchema)
	// A task's built-in kind is looked up in _builtinKinds, once: a
	// conditional per built-in kind cost a third of the evaluation.
	b.WriteString(`
// A task of a built-in kind takes that kind's config; any other kind takes
// any object.
#Config: tasks: [#TaskName]: T={
	if _builtinKinds[T.kind] != _|_ {_builtinKinds[T.kind]}
	if _builtinKinds[T.kind] == _|_ {config: {...}}
}

// What a task of each built-in kind, by its short and its full name, is
// held to. A hidden field, not a definition: a definition's structs are
// closed, and would close the task they are embedded in.
_builtinKinds: {
`)
	var defs strings.Builder
	for _, bi := range builtins {
		ns, name, ok := strings.Cut(bi.Kind, ".")
		if !ok {
			return nil, fmt.Errorf("schema: builtin kind %q is not namespace.Name", bi.Kind)
		}
		def := "#" + ns + "_" + name
		if bi.Stateless {
			fmt.Fprintf(&b, "\t// %s is stateless: it runs in every process, never on its own.\n", bi.Kind)
			fmt.Fprintf(&b, "\t%s: {config: %s.#Config, external: false}\n", name, def)
		} else {
			fmt.Fprintf(&b, "\t%s: config: %s.#Config\n", name, def)
		}
		fmt.Fprintf(&b, "\t%q: %s\n", bi.Kind, name)
		fmt.Fprintf(&defs, "\n// The config of %s tasks.\n%s: {\n%s\n}\n", bi.Kind, def, bi.CUE)
	}
	b.WriteString("}\n")
	b.WriteString(defs.String())

	src := schemaTop + indent(b.String()) + "}\n"
	v := cuecontext.New().CompileString(src, cue.Filename(SchemaFile))
	if err := v.Err(); err != nil {
		return nil, fmt.Errorf("schema: %v", cueerrors.Details(err, nil))
	}
	s := &Schema{src: src, builtins: builtins}
	var err error
	if s.defaults, err = s.taskDefaults(); err != nil {
		return nil, fmt.Errorf("schema: %v", err)
	}
	return s, nil
}

// schemaTop opens the complete schema: what the package may hold, and the
// let that holds the definitions, which New closes.
const schemaTop = `// The MultiModule config schema. The daemon loads it as one more file of
// the config directory's package, as cue vet -c sees it beside the config.
import "struct"

// A config holds tasks and daemon settings, of #Config's shapes. Each is
// given here, rather than #Config embedded: fields declared beside an
// embedding are allowed, so that would not close the package. Any other
// regular field is refused in the words CUE uses for a closed struct.
[!="tasks" & !="daemon"]: error("field not allowed")
tasks:  schema.#Config.tasks
daemon: schema.#Config.daemon

// The definitions are a let's: a let belongs to its file, so a config file
// can neither add fields to them (a definition of the same name at a
// config file's top level would) nor refer to them.
let schema = {
`

// indent puts a tab before each non-empty line of s.
func indent(s string) string {
	lines := strings.SplitAfter(s, "\n")
	for i, l := range lines {
		if strings.TrimSpace(l) != "" {
			lines[i] = "\t" + l
		}
	}
	return strings.Join(lines, "")
}

// Source is the complete schema as CUE (package-less, like config files).
func (s *Schema) Source() string { return s.src }

// Config is a loaded, validated config directory.
type Config struct {
	// Files are the CUE files that were loaded, in order.
	Files []string
	// Tasks by name.
	Tasks map[string]TaskSpec
	// Daemon holds the daemon-wide settings.
	Daemon DaemonSpec
	// SourceHash changes whenever any loaded file's name or content does.
	SourceHash string
}

// Names lists the task names, sorted.
func (c *Config) Names() []string {
	names := make([]string, 0, len(c.Tasks))
	for n := range c.Tasks {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Seconds is a config's seconds as a duration.
func Seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// IntervalDurations are the task's intervals (seconds in the config) as
// durations, by timer name.
func (t TaskSpec) IntervalDurations() map[string]time.Duration {
	iv := make(map[string]time.Duration, len(t.Intervals))
	for k, sec := range t.Intervals {
		iv[k] = Seconds(sec)
	}
	return iv
}

// TaskSpec is one task's desired state.
type TaskSpec struct {
	Name      string             `json:"-"`
	Kind      string             `json:"kind"`
	External  bool               `json:"external"`
	Disabled  bool               `json:"disabled"`
	Config    map[string]any     `json:"config"`
	Intervals map[string]float64 `json:"intervals"`
	Limits    map[string]Levels  `json:"limits"`
	Restart   Restart            `json:"restart"`
	// Hash identifies this spec: equal specs have equal hashes.
	Hash string `json:"-"`
}

// Levels are a metric's thresholds; nil means not set.
type Levels struct {
	Warn     *Threshold `json:"warn,omitempty"`
	Severe   *Threshold `json:"severe,omitempty"`
	Failsafe *Threshold `json:"failsafe,omitempty"`
}

// Threshold is one limit: a number in the metric's unit or, for memory, a
// fraction of the box's memory (a number up to 1) or a size ("200MiB").
type Threshold struct {
	// Value is the number as written, or the size in bytes.
	Value float64
	// Size is the size as written; empty for a number.
	Size string
}

func (t Threshold) MarshalJSON() ([]byte, error) {
	if t.Size != "" {
		return json.Marshal(t.Size)
	}
	return json.Marshal(t.Value)
}

func (t *Threshold) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		n, err := ParseSize(s)
		*t = Threshold{Value: n, Size: s}
		return err
	}
	*t = Threshold{}
	return json.Unmarshal(b, &t.Value)
}

var sizeUnits = map[string]float64{
	"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
	"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
}

// ParseSize reads a size such as "200MiB", "1.5GB" or "4096B" (the
// schema's #Size) into bytes.
func ParseSize(s string) (float64, error) {
	num := strings.TrimRight(s, "KMGTiB")
	unit := s[len(num):]
	mult, ok := sizeUnits[unit]
	n, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if !ok || err != nil || n < 0 || strings.ContainsAny(num, "eEx+-_") {
		return 0, fmt.Errorf("size %q: want a number and one of B, KB, MB, GB, TB, KiB, MiB, GiB, TiB", s)
	}
	return n * mult, nil
}

// Restart is a task's restart backoff (seconds).
type Restart struct {
	Initial   float64 `json:"initial"`
	Max       float64 `json:"max"`
	HoldAfter int     `json:"hold_after"`
}

// DaemonSpec holds the daemon-wide settings.
type DaemonSpec struct {
	// Limits are every task's defaults, level by level.
	Limits map[string]Levels `json:"limits"`
	// SampleEvery is the seconds between two samples of every task.
	SampleEvery float64 `json:"sample_every"`
	// FailsafeGrace is the seconds a failsafed external has between
	// SIGTERM and SIGKILL.
	FailsafeGrace float64 `json:"failsafe_grace"`
	// MaxQueues bounds the queues one process creates on demand by
	// sending (transit.Options.MaxQueues).
	MaxQueues int `json:"max_queues"`
}

// Error is one problem, located in a config file.
type Error struct {
	File      string // empty when the problem has no position
	Line, Col int
	Path      string // e.g. tasks.Example1.external
	Msg       string

	path []string
}

func (e Error) String() string {
	var b strings.Builder
	if e.File != "" {
		fmt.Fprintf(&b, "%s:%d:%d: ", e.File, e.Line, e.Col)
	}
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// LoadError lists every problem found; it wraps ErrInvalid.
type LoadError struct {
	Errors []Error
}

func (e *LoadError) Error() string {
	lines := make([]string, len(e.Errors))
	for i, x := range e.Errors {
		lines[i] = x.String()
	}
	return strings.Join(lines, "\n")
}

func (e *LoadError) Unwrap() error { return ErrInvalid }

// IsConfigFile reports whether a directory entry name is loaded as config:
// *.cue, not hidden, not _-prefixed (the convention for files tools skip),
// not an editor's lock or backup file.
func IsConfigFile(name string) bool {
	return strings.HasSuffix(name, ".cue") && !strings.HasPrefix(name, ".") &&
		!strings.HasPrefix(name, "_") && !strings.HasPrefix(name, "#") && name != SchemaFile
}

// HashDir hashes the names and contents of the files Load would read from
// path: equal hashes mean Load would see the same input.
func HashDir(path string) (string, error) {
	files, err := configFiles(path)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("%w: %v", ErrUnreadable, err)
		}
		hashFile(h, f, src)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func hashFile(h io.Writer, name string, src []byte) {
	fmt.Fprintf(h, "%s\x00%d\x00", filepath.Base(name), len(src))
	h.Write(src)
}

// Load reads path (a directory of CUE files, or one file) and validates it.
func (s *Schema) Load(path string) (*Config, error) {
	files, err := configFiles(path)
	if err != nil {
		return nil, err
	}
	cfg := &Config{Files: files, Tasks: map[string]TaskSpec{}}
	h := sha256.New()
	dir := filepath.Dir(path)
	// pkg only checks that the files make one package.
	pkg := build.NewContext().NewInstance(dir, nil)
	var asts []*ast.File
	var sizes []int
	var lerr LoadError
	for _, f := range parseFiles(files) {
		if f.readErr != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnreadable, f.readErr)
		}
		hashFile(h, f.name, f.src)
		if f.parseErr != nil {
			lerr.add(f.parseErr, files)
			continue
		}
		if err := pkg.AddSyntax(f.ast); err != nil {
			lerr.add(err, files)
		}
		asts = append(asts, f.ast)
		sizes = append(sizes, len(f.src))
	}
	cfg.SourceHash = hex.EncodeToString(h.Sum(nil))
	if len(lerr.Errors) > 0 {
		return nil, &lerr
	}
	// Files that stand alone are evaluated in groups, on several cores,
	// and their plain tasks read from them (apart.go, literal.go); the
	// whole evaluation below reports any error.
	var decls [][]declaration
	if !s.viaJSON {
		decls = standing(asts)
	}
	if groups := apart(asts, decls, sizes, cmp.Or(s.groups, runtime.GOMAXPROCS(0))); len(groups) > 1 && s.loadApart(dir, groups, cfg) {
		s.apartLoads.Add(1)
		return cfg, nil
	}
	var all []declaration
	if decls != nil {
		all = slices.Concat(decls...)
	}
	l, v, err := s.evaluate(dir, asts, all)
	if err != nil {
		return nil, fmt.Errorf("schema: %v", err)
	}
	// user, the files alone, only locates errors; built when there are.
	user := sync.OnceValue(func() cue.Value {
		inst := build.NewContext().NewInstance(dir, nil)
		for _, f := range asts {
			_ = inst.AddSyntax(f) // added once already without error
		}
		return l.ctx.BuildInstance(inst)
	})
	// Validating finalizes the whole value; only then may it be read
	// concurrently, as decoding does: reading a value CUE is still
	// evaluating races (the race detector showed it).
	if err := v.Validate(cue.Concrete(true)); err != nil {
		user := user()
		lerr.add(err, files)
		lerr.place(user)
		s.explain(&lerr, v, user)
		return nil, &lerr
	}
	tasks, err := l.decode(v, asts, cfg)
	if err != nil {
		return nil, err
	}
	for _, t := range tasks {
		if t.err != nil {
			// CUE took it, but it cannot be given to a task (a number
			// beyond float64's range, say).
			lerr.Errors = append(lerr.Errors, at(user(), []string{"tasks", t.name}, "cannot be given to the task as JSON: "+t.err.Error()))
			continue
		}
		for _, err := range t.checks {
			lerr.Errors = append(lerr.Errors, checkError(user(), t.name, err))
		}
		cfg.Tasks[t.name] = t.spec
	}
	if len(lerr.Errors) > 0 {
		lerr.sort()
		return nil, &lerr
	}
	return cfg, nil
}

// parsedFile is a config file read and parsed.
type parsedFile struct {
	name     string
	src      []byte
	ast      *ast.File
	readErr  error
	parseErr error
}

// parseFiles reads and parses files, in their order, spread over the
// cores as decoding is.
func parseFiles(files []string) []parsedFile {
	out := make([]parsedFile, len(files))
	eachOnCores(len(out), func(i int) {
		f := &out[i]
		f.name = files[i]
		if f.src, f.readErr = os.ReadFile(f.name); f.readErr == nil {
			f.ast, f.parseErr = parser.ParseFile(f.name, f.src, parser.ParseComments)
		}
	})
	return out
}

// eachOnCores calls do for 0..n-1, spread over up to GOMAXPROCS
// goroutines when there are enough of them to be worth it.
func eachOnCores(n int, do func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), n/16+1)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				do(i)
			}
		})
	}
	wg.Wait()
}

func configFiles(path string) ([]string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnreadable, err)
	}
	if !fi.IsDir() {
		return []string{path}, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnreadable, err)
	}
	var files []string
	for _, e := range entries {
		if !IsConfigFile(e.Name()) {
			continue
		}
		p := filepath.Join(path, e.Name())
		if st, err := os.Stat(p); err != nil || !st.Mode().IsRegular() {
			continue // a dangling link or a directory named *.cue
		}
		files = append(files, p)
	}
	return files, nil
}

// decode reads the daemon's settings from v into cfg, and decodes v's
// tasks; their errors and their built-in kinds' checks are left to the
// caller to report.
func (s *loading) decode(v cue.Value, files []*ast.File, cfg *Config) ([]decoded, error) {
	if d := v.LookupPath(cue.ParsePath("daemon")); d.Exists() {
		if err := d.Decode(&cfg.Daemon); err != nil {
			return nil, fmt.Errorf("%w: daemon: %v", ErrInvalid, err)
		}
	}
	tasks := s.tasks(v, files)
	// Decoding is a third of loading many tasks: it is spread over the
	// cores.
	eachOnCores(len(tasks), func(i int) { s.decodeTask(&tasks[i]) })
	return tasks, nil
}

// tasks lists v's tasks with their values. Listing the fields of tasks
// sorts them (7-16 ms for 1,000), so the names the files write as plain
// labels of a top-level tasks are looked up instead, when they are all
// there is: when CUE counts as many tasks. Other files (a comprehension
// or a reference that adds tasks, a name written as an expression) are
// listed.
func (s *loading) tasks(v cue.Value, files []*ast.File) []decoded {
	tv := v.LookupPath(cue.MakePath(cue.Str("tasks")))
	if names := taskNames(files); len(names) > 0 && !s.viaJSON {
		// __len is len, which a config cannot shadow.
		count := s.ctx.BuildExpr(ast.NewCall(ast.NewIdent("__len"), ast.NewIdent("tasks")), cue.Scope(v))
		if n, err := count.Int64(); err == nil && n == int64(len(names)) {
			tasks := make([]decoded, len(names))
			for i, name := range names {
				tasks[i] = decoded{name: name, v: tv.LookupPath(cue.MakePath(cue.Str(name)))}
				if !tasks[i].v.Exists() {
					tasks = nil // cannot be: each name is a task
					break
				}
			}
			if tasks != nil {
				return tasks
			}
		}
	}
	s.listed.Add(1)
	it, err := tv.Fields()
	if err != nil {
		return nil // not a struct: Validate has said so
	}
	var tasks []decoded
	for it.Next() {
		tasks = append(tasks, decoded{name: it.Selector().Unquoted(), v: it.Value()})
	}
	return tasks
}

// taskNames are the distinct names the files give as plain regular labels
// of a top-level tasks field (tasks: A: ..., tasks: {A: ..., "b": ...}),
// in the order written. Each is a task of the loaded value; a task named
// in any other way is not among them.
func taskNames(files []*ast.File) []string {
	seen := map[string]bool{}
	var names []string
	for _, f := range files {
		for _, d := range f.Decls {
			tf, ok := d.(*ast.Field)
			if !ok || tf.Constraint != token.ILLEGAL {
				continue
			}
			if label, _, err := ast.LabelName(tf.Label); err != nil || label != "tasks" {
				continue
			}
			st, ok := tf.Value.(*ast.StructLit)
			if !ok {
				continue
			}
			for _, e := range st.Elts {
				f, ok := e.(*ast.Field)
				if !ok || f.Constraint != token.ILLEGAL {
					continue // optional or required: not a task by itself
				}
				name, isIdent, err := ast.LabelName(f.Label)
				if err != nil || (isIdent && (strings.HasPrefix(name, "_") || strings.HasPrefix(name, "#"))) || seen[name] {
					continue // an expression, a hidden field or a definition
				}
				seen[name] = true
				names = append(names, name)
			}
		}
	}
	return names
}

// loading is one evaluation's CUE context (a whole load's or a group's),
// {} in it for the decoding walk's isEmpty, and the tasks to read from
// their files.
type loading struct {
	*Schema
	ctx      *cue.Context
	empty    cue.Value
	literals map[string]ast.Expr // by task name: see literalSpec
}

// evaluate builds the schema and files as one package, as `cue vet` sees
// the schema beside the config: one evaluation of both (unifying the
// schema with the files built alone evaluated the files twice). Each
// evaluation has a CUE context of its own: a context keeps every value
// built in it, and one shared by every load kept each load's whole config
// (6-17 MiB for 1,000 tasks). decls are the files' declarations when
// they stand alone (else nil): their plain tasks are read from them.
func (s *Schema) evaluate(dir string, files []*ast.File, decls []declaration) (*loading, cue.Value, error) {
	// Parsed again each time (90 µs): AddSyntax resolves a file's names
	// in its syntax tree, which evaluations side by side would share.
	schemaAST, err := parser.ParseFile(SchemaFile, s.src)
	if err != nil {
		return nil, cue.Value{}, err
	}
	inst := build.NewContext().NewInstance(dir, nil)
	for _, f := range append([]*ast.File{schemaAST}, files...) {
		if err := inst.AddSyntax(f); err != nil {
			return nil, cue.Value{}, err
		}
	}
	l := &loading{Schema: s, ctx: cuecontext.New()}
	l.empty = l.ctx.CompileString("{}")
	if decls != nil && !s.walkOnly {
		l.literals = declaredOnce(decls)
	}
	return l, l.ctx.BuildInstance(inst), nil
}

// decoded is one task on its way from its value to its spec.
type decoded struct {
	name string
	v    cue.Value

	spec   TaskSpec
	err    error   // the value cannot be decoded
	checks []error // from its built-in kind's Check
}

// decodeTask fills in t's spec, or its errors.
func (s *loading) decodeTask(t *decoded) {
	// Config values look to a task exactly as a message or a restored
	// state does (numbers are float64): as CUE's JSON export read by
	// encoding/json, which decodeSpec gets to mostly without the export.
	var fromFile bool
	if e := s.literals[t.name]; e != nil {
		t.spec, fromFile = s.literalSpec(t.name, e)
	}
	switch {
	case fromFile:
		s.fromFiles.Add(1)
	case s.viaJSON:
		t.spec, t.err = decodeSpecJSON(t.v)
	default:
		var walked bool
		t.spec, walked, t.err = decodeSpec(t.v, s.empty)
		if !walked {
			s.fellBack.Add(1)
		}
	}
	if t.err != nil {
		return
	}
	spec := &t.spec
	spec.Name = t.name
	if spec.Config == nil {
		spec.Config = map[string]any{}
	}
	for _, bi := range s.builtins {
		_, short, _ := strings.Cut(bi.Kind, ".")
		if bi.Check == nil || (spec.Kind != bi.Kind && spec.Kind != short) {
			continue
		}
		if err := bi.Check(spec.Config); err != nil {
			t.checks = append(t.checks, err)
		}
	}
	canon, _ := json.Marshal(spec) // maps marshal in key order
	sum := sha256.Sum256(canon)
	spec.Hash = hex.EncodeToString(sum[:8])
}

// checkError places a built-in's check error at the deepest part of the
// task's config the error names (see Builtin.Check) that the user wrote.
func checkError(user cue.Value, task string, err error) Error {
	path := []string{"tasks", task, "config"}
	msg := err.Error()
	var located interface{ ConfigPath() []string }
	if errors.As(err, &located) {
		path = append(path, located.ConfigPath()...)
		// The check's message repeats the path ("router config:
		// routes.0.match: ..."); the line already starts with it.
		if prefix := strings.Join(located.ConfigPath(), ".") + ": "; len(located.ConfigPath()) > 0 {
			if i := strings.Index(msg, prefix); i >= 0 {
				msg = msg[i+len(prefix):]
			}
		}
	}
	return at(user, path, msg)
}

// at is an error at path (field names as written, list indexes), placed
// at the deepest part of it the user wrote.
func at(user cue.Value, path []string, msg string) Error {
	// Written as CUE writes an error's path: a name that is not an
	// identifier, or would be a hidden field's or a definition's, quoted.
	quoted := make([]string, len(path))
	for i, p := range path {
		quoted[i] = p
		if _, isIndex := index(p); !isIndex && (!ast.IsValidIdent(p) || strings.HasPrefix(p, "_") || strings.HasPrefix(p, "#")) {
			quoted[i] = strconv.Quote(p)
		}
	}
	l := LoadError{Errors: []Error{{Path: strings.Join(quoted, "."), Msg: msg, path: quoted}}}
	l.place(user)
	return l.Errors[0]
}

// add records a CUE error, each at the position in the user's files that
// explains it best.
func (l *LoadError) add(err error, files []string) {
	user := map[string]bool{}
	for _, f := range files {
		user[f] = true
	}
	seen := map[string]bool{}
	var unplaced []Error
	for _, e := range cueerrors.Errors(err) {
		format, args := e.Msg()
		msg := fmt.Sprintf(format, args...)
		if strings.Contains(msg, "errors in empty disjunction") {
			continue // a summary of the errors that follow
		}
		var pos token.Pos
		for _, p := range append([]token.Pos{e.Position()}, e.InputPositions()...) {
			if p.IsValid() && user[p.Filename()] {
				pos = p
				break
			}
		}
		x := located(pos, strings.Join(e.Path(), "."), msg)
		x.path = e.Path()
		if k := x.String(); !seen[k] {
			seen[k] = true
			if x.File == "" {
				unplaced = append(unplaced, x)
			} else {
				l.Errors = append(l.Errors, x)
			}
		}
	}
	l.Errors = append(l.Errors, unplaced...) // the located ones first
	if len(l.Errors) == 0 {
		l.Errors = append(l.Errors, Error{Msg: err.Error()})
	}
}

// place gives an error with no position of its own (a missing required
// field, say) the position of the nearest enclosing value the user wrote.
func (l *LoadError) place(user cue.Value) {
	for i := range l.Errors {
		e := &l.Errors[i]
		for n := len(e.path); e.File == "" && n > 0; n-- {
			if pos := user.LookupPath(cuePath(e.path[:n])).Pos(); pos.IsValid() {
				e.File, e.Line, e.Col = pos.Filename(), pos.Line(), pos.Column()
			}
		}
	}
	l.sort()
}

// sort puts the errors in the order of the files (Load reads them sorted
// by name) and of their lines; an error without a position last.
func (l *LoadError) sort() {
	sort.SliceStable(l.Errors, func(i, j int) bool {
		a, b := l.Errors[i], l.Errors[j]
		if (a.File == "") != (b.File == "") {
			return b.File == ""
		}
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
}

func located(pos token.Pos, path, msg string) Error {
	e := Error{Path: path, Msg: msg}
	if pos.IsValid() {
		e.File, e.Line, e.Col = pos.Filename(), pos.Line(), pos.Column()
	}
	return e
}

// Format renders errors one per line, for a terminal.
func Format(err error) string {
	var le *LoadError
	if errors.As(err, &le) {
		var b bytes.Buffer
		for _, e := range le.Errors {
			b.WriteString(e.String() + "\n")
		}
		return b.String()
	}
	return err.Error() + "\n"
}
