package schema

import (
	"slices"
	"sort"
	"strings"
	"sync"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/token"
)

// Evaluating the schema with a config is one goroutine's work in CUE, and
// was over half of loading 1,000 tasks. A dir of many tasks is often many
// files of plain tasks, each file standing alone: it declares tasks and
// daemon settings and refers to nothing. Such files fall into groups that
// share no task, and each group is evaluated with the schema on a core of
// its own, in a CUE context of its own.
//
// That gives every task the value the whole evaluation gives it. A field
// of a CUE package is the unification of its conjuncts, and a task's come
// from the files that declare it, which are in one group, and from the
// schema, which is in every group and relates a task only to itself. A
// file that refers to anything (a field, a let, an alias, an import)
// could bring conjuncts from elsewhere, so when any file does, the dir is
// evaluated whole. The whole is valid when every group is, as each
// group's top level holds only tasks and daemon, and the files that set
// daemon are in one group. When a group is not valid, the whole
// evaluation runs and reports the errors as it always has.

// declaration is what a file that stands alone declares at its top
// level: daemon settings (key "daemon"), or a task (key "tasks" NUL its
// name) with its value.
type declaration struct {
	key   string
	value ast.Expr
}

// standing are the declarations of each file (see declarations), or nil
// when a file does not stand alone.
func standing(files []*ast.File) [][]declaration {
	decls := make([][]declaration, len(files))
	for i, f := range files {
		var ok bool
		if decls[i], ok = declarations(f); !ok {
			return nil
		}
	}
	return decls
}

// group is files evaluated together, their size and their declarations.
type group struct {
	files []*ast.File
	size  int
	decls []declaration
}

// apart splits files, with the declarations (see standing) and sizes
// given, into up to n groups that declare no task in common, of about
// equal size; nil when a file does not stand alone or they are not worth
// splitting.
func apart(files []*ast.File, decls [][]declaration, sizes []int, n int) []group {
	if decls == nil || n < 2 || len(files) < 2 {
		return nil
	}
	// Files that declare the same task or daemon settings are joined.
	root := make([]int, len(files))
	find := func(i int) int {
		for root[i] != i {
			root[i] = root[root[i]]
			i = root[i]
		}
		return i
	}
	declaredIn := map[string]int{}
	for i := range files {
		root[i] = i
		for _, d := range decls[i] {
			if j, seen := declaredIn[d.key]; seen {
				root[find(i)] = find(j)
			} else {
				declaredIn[d.key] = i
			}
		}
	}
	byRoot := map[int]*group{}
	var comps []*group
	for i, f := range files {
		r := find(i)
		c := byRoot[r]
		if c == nil {
			c = &group{}
			byRoot[r] = c
			comps = append(comps, c)
		}
		c.files = append(c.files, f)
		c.size += sizes[i]
		c.decls = append(c.decls, decls[i]...)
	}
	if len(comps) < 2 {
		return nil
	}
	// The largest first, each onto the lightest group. Stable, so a
	// dir's groups are the same on every load.
	sort.SliceStable(comps, func(i, j int) bool { return comps[i].size > comps[j].size })
	groups := make([]group, min(n, len(comps)))
	for _, c := range comps {
		lightest := 0
		for g := range groups {
			if groups[g].size < groups[lightest].size {
				lightest = g
			}
		}
		g := &groups[lightest]
		g.files = append(g.files, c.files...)
		g.size += c.size
		g.decls = append(g.decls, c.decls...)
	}
	return groups
}

// predeclared are the names a file that stands alone may use: CUE's
// types and top, which no config file can shadow at its top level (a file
// that stands alone declares only tasks and daemon there).
var predeclared = map[string]bool{
	"_": true, "bool": true, "bytes": true, "float": true, "int": true, "number": true, "string": true,
}

// declarations are what f declares at its top level; ok is false when f
// does not stand alone: when it declares anything else there (a hidden
// field, a pattern, an embedding, a comprehension, a let, a task of a
// computed name), or refers to anything but a predeclared type.
func declarations(f *ast.File) (decls []declaration, ok bool) {
	var pkgName *ast.Ident // among the unresolved, though it refers to nothing
	for _, d := range f.Decls {
		if p, ok := d.(*ast.Package); ok {
			pkgName = p.Name
		}
	}
	for _, id := range f.Unresolved {
		if id != pkgName && !predeclared[id.Name] {
			return nil, false
		}
	}
	refers := false
	ast.Walk(f, func(n ast.Node) bool {
		if id, isIdent := n.(*ast.Ident); isIdent && id.Node != nil {
			refers = true
		}
		return !refers
	}, nil)
	if refers {
		return nil, false
	}
	for _, d := range f.Decls {
		switch d := d.(type) {
		case *ast.Package, *ast.Attribute, *ast.CommentGroup:
			continue
		case *ast.Field:
			switch name, ok := plainLabel(d); {
			case !ok:
				return nil, false
			case name == "daemon":
				decls = append(decls, declaration{key: name, value: d.Value})
			case name == "tasks":
				st, isStruct := d.Value.(*ast.StructLit)
				tasks, plain := plainFields(st)
				if !isStruct || !plain {
					return nil, false
				}
				for _, t := range tasks {
					decls = append(decls, declaration{key: "tasks\x00" + t.name, value: t.value})
				}
			default:
				return nil, false
			}
		default:
			return nil, false
		}
	}
	return decls, true
}

// plainField is a field with a plain label (see plainLabel).
type plainField struct {
	name  string
	value ast.Expr
}

// plainFields are st's fields, in order; ok is false unless every one of
// its elements is a comment or a field with a plain label.
func plainFields(st *ast.StructLit) (fields []plainField, ok bool) {
	if st == nil {
		return nil, false
	}
	for _, e := range st.Elts {
		if _, isComment := e.(*ast.CommentGroup); isComment {
			continue
		}
		f, isField := e.(*ast.Field)
		if !isField {
			return nil, false
		}
		name, ok := plainLabel(f)
		if !ok {
			return nil, false
		}
		fields = append(fields, plainField{name, f.Value})
	}
	return fields, true
}

// plainLabel is the name of a regular field with a name written as an
// identifier or a string, that is neither hidden nor a definition.
func plainLabel(f *ast.Field) (string, bool) {
	if f.Constraint != token.ILLEGAL || f.Alias != nil {
		return "", false
	}
	name, isIdent, err := ast.LabelName(f.Label)
	if err != nil || (isIdent && (strings.HasPrefix(name, "_") || strings.HasPrefix(name, "#"))) {
		return "", false
	}
	return name, true
}

// loadApart evaluates and decodes each group on its own goroutine, and
// fills in cfg's tasks and daemon settings; false when anything in any
// group is wrong, for the whole evaluation to report.
func (s *Schema) loadApart(dir string, groups []group, cfg *Config) bool {
	type result struct {
		tasks   []decoded
		daemon  DaemonSpec
		invalid bool
	}
	results := make([]result, len(groups))
	var wg sync.WaitGroup
	for i, g := range groups {
		wg.Go(func() {
			r := &results[i]
			l, v, err := s.evaluate(dir, g.files, g.decls)
			if err != nil || v.Validate(cue.Concrete(true)) != nil {
				r.invalid = true
				return
			}
			// decode spreads the group's tasks over the cores too: a
			// group that ends early leaves its core to the others.
			var c Config
			if r.tasks, err = l.decode(v, g.files, &c); err != nil {
				r.invalid = true
				return
			}
			r.daemon = c.Daemon
		})
	}
	wg.Wait()
	for _, r := range results {
		if r.invalid || slices.ContainsFunc(r.tasks, func(t decoded) bool { return t.err != nil || len(t.checks) > 0 }) {
			return false
		}
	}
	// A group none of whose files sets daemon has the schema's defaults.
	cfg.Daemon = results[0].daemon
	for i, r := range results {
		for _, t := range r.tasks {
			cfg.Tasks[t.name] = t.spec
		}
		if slices.ContainsFunc(groups[i].decls, func(d declaration) bool { return d.key == "daemon" }) {
			cfg.Daemon = r.daemon
		}
	}
	return true
}

// declaredOnce are the tasks declared once among decls, by their values.
func declaredOnce(decls []declaration) map[string]ast.Expr {
	once := map[string]ast.Expr{}
	twice := map[string]bool{}
	for _, d := range decls {
		name, isTask := strings.CutPrefix(d.key, "tasks\x00")
		if !isTask {
			continue
		}
		if _, seen := once[name]; seen {
			twice[name] = true
		}
		once[name] = d.value
	}
	for name := range twice {
		delete(once, name)
	}
	return once
}
