package schema

import (
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/literal"
	"cuelang.org/go/cue/parser"
	"cuelang.org/go/cue/token"
)

// A task written as a plain literal is read from its file. Decoding a
// validated value costs a call into CUE for each of a task's fields and
// CUE's sorting of every struct it exports: it was a third of loading
// 1,000 tasks evaluated apart. When the files stand alone (apart.go),
// a task declared once, as JSON would write it (fields of plain names,
// strings, decimal numbers, true, false, null, lists and structs of
// those), has the value its literal gives, with the schema's defaults
// where it says nothing: the schema's other conjuncts only check it
// (CUE has validated it already), except a built-in kind's config schema
// that adds to a config (a default), whose tasks go CUE's way. The spec
// is decoded from the JSON of that value, as the JSON way decodes CUE's
// export. TestDecodeWalkMatchesJSON and TestApartMatchesWhole hold the
// two to identical specs and hashes.

// taskFields are #Task's fields, as TaskSpec's JSON names them.
var taskFields = func() map[string]bool {
	fields := map[string]bool{}
	for f := range reflect.TypeFor[TaskSpec]().Fields() {
		if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name != "-" {
			fields[name] = true
		}
	}
	return fields
}()

// literalSpec is the spec of task name declared once as e; ok is false
// when e is not a plain literal or its kind's config schema adds to it.
func (l *loading) literalSpec(name string, e ast.Expr) (spec TaskSpec, ok bool) {
	v, ok := plainValue(e)
	if !ok {
		return spec, false
	}
	task, ok := v.(map[string]any)
	if !ok {
		return spec, false
	}
	for k := range task {
		if !taskFields[k] {
			return spec, false
		}
	}
	kind := name
	if k, given := task["kind"]; given {
		if kind, ok = k.(string); !ok {
			return spec, false
		}
	}
	defaults, ok := l.defaults[kind]
	if !ok {
		defaults = l.defaults[""]
	}
	if defaults == nil {
		return spec, false // a kind whose schema adds what defaults do not give
	}
	// The schema's defaults where the task says nothing; CUE has checked
	// that what it says fits them.
	for k, d := range defaults {
		given, ok := task[k]
		if !ok {
			task[k] = d
			continue
		}
		if dm, isMap := d.(map[string]any); isMap {
			gm, ok := given.(map[string]any)
			if !ok {
				return spec, false
			}
			for dk, dv := range dm {
				if _, set := gm[dk]; !set {
					gm[dk] = dv
				}
			}
		}
	}
	task["kind"] = kind
	raw, err := json.Marshal(task)
	if err != nil || json.Unmarshal(raw, &spec) != nil {
		return TaskSpec{}, false
	}
	return spec, true
}

// decimal is a number literal as JSON writes one, without its sign.
var decimal = regexp.MustCompile(`^(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$`)

// plainValue is e's value as encoding/json decodes its JSON into an any,
// but numbers, which are their text, so that JSON reads them as it reads
// CUE's export (exactly, into an int); ok is false when e is not written
// as JSON would write it (a reference, an operator, a default, an
// optional or hidden field, a number in another notation, bytes, ...).
func plainValue(e ast.Expr) (any, bool) {
	switch e := e.(type) {
	case *ast.BasicLit:
		switch e.Kind {
		case token.STRING:
			if !strings.HasPrefix(e.Value, `"`) {
				return nil, false // bytes, or a raw string: rare
			}
			s, err := literal.Unquote(e.Value)
			return s, err == nil
		case token.INT, token.FLOAT:
			return decimalNumber(e.Value, false)
		case token.TRUE:
			return true, true
		case token.FALSE:
			return false, true
		case token.NULL:
			return nil, true
		}
	case *ast.UnaryExpr:
		if lit, ok := e.X.(*ast.BasicLit); ok && e.Op == token.SUB && (lit.Kind == token.INT || lit.Kind == token.FLOAT) {
			return decimalNumber(lit.Value, true)
		}
	case *ast.ListLit:
		out := make([]any, 0, len(e.Elts))
		for _, x := range e.Elts {
			v, ok := plainValue(x)
			if !ok {
				return nil, false
			}
			out = append(out, v)
		}
		return out, true
	case *ast.StructLit:
		fields, ok := plainFields(e)
		if !ok {
			return nil, false
		}
		out := make(map[string]any, len(fields))
		for _, f := range fields {
			v, ok := plainValue(f.value)
			if _, dup := out[f.name]; !ok || dup {
				return nil, false
			}
			out[f.name] = v
		}
		return out, true
	}
	return nil, false
}

// decimalNumber is the text of a decimal literal as CUE writes it (-0 as
// 0), when it has at most 40 digits and an exponent of at most 300: CUE
// writes such a number as it is, and encoding/json reads the two texts
// alike. Far beyond float64's range, CUE writes another number or NaN.
func decimalNumber(text string, negative bool) (any, bool) {
	mantissa, exp, hasExp := strings.Cut(strings.ToLower(text), "e")
	if !decimal.MatchString(text) || len(mantissa) > 41 {
		return nil, false
	}
	if e, err := strconv.Atoi(exp); hasExp && (err != nil || e > 300 || e < -300) {
		return nil, false
	}
	if negative && strings.Trim(mantissa, "0.") != "" {
		text = "-" + text
	}
	return json.Number(text), true
}

// taskDefaults are, for each built-in kind by its short and its full name
// and for any other kind (""), the values the schema gives a task's fields
// (but kind and config) that the task does not set: what a literal task
// reads as where it says nothing, merged one level deep. A kind whose
// schema adds to a value satisfying it anything those defaults do not give
// (a default or a field of its config, one below a task's field, or a
// comprehension's, which no field shows) has nil: its tasks go CUE's way.
func (s *Schema) taskDefaults() (map[string]map[string]any, error) {
	conditional := map[string]bool{"": hasComprehension(baseSchema)}
	kinds := []string{""}
	for _, bi := range s.builtins {
		_, short, _ := strings.Cut(bi.Kind, ".")
		kinds = append(kinds, short, bi.Kind)
		conditional[short] = conditional[""] || hasComprehension(bi.CUE)
		conditional[bi.Kind] = conditional[short]
	}
	var src strings.Builder
	for i, k := range kinds {
		if k == "" {
			fmt.Fprintf(&src, "tasks: T%d: {}\n", i)
		} else {
			fmt.Fprintf(&src, "tasks: T%d: kind: %q\n", i, k)
		}
	}
	f, err := parser.ParseFile("defaults.cue", src.String())
	if err != nil {
		return nil, err
	}
	_, v, err := s.evaluate("", []*ast.File{f}, nil)
	if err != nil {
		return nil, err
	}
	out := map[string]map[string]any{}
kinds:
	for i, k := range kinds {
		task := v.LookupPath(cue.MakePath(cue.Str("tasks"), cue.Str(fmt.Sprintf("T%d", i))))
		if conditional[k] || addsTo(task.LookupPath(cue.MakePath(cue.Str("config"))), 0, false) {
			out[k] = nil
			continue
		}
		d := map[string]any{}
		for name := range taskFields {
			if name == "kind" || name == "config" {
				continue
			}
			fv := task.LookupPath(cue.MakePath(cue.Str(name)))
			if addsTo(fv, 0, true) {
				out[k] = nil
				continue kinds
			}
			var x any
			if raw, err := fv.MarshalJSON(); err != nil || json.Unmarshal(raw, &x) != nil {
				out[k] = nil // no default of its own: the task must say
				continue kinds
			}
			d[name] = x
		}
		out[k] = d
	}
	return out, nil
}

// hasComprehension reports whether CUE source src has a comprehension.
func hasComprehension(src string) bool {
	f, err := parser.ParseFile("schema.cue", src)
	if err != nil {
		return true
	}
	found := false
	ast.Walk(f, func(n ast.Node) bool {
		if _, ok := n.(*ast.Comprehension); ok {
			found = true
		}
		return !found
	}, nil)
	return found
}

// addsTo reports whether the schema v adds anything to a value that
// satisfies it: a regular field (one CUE gives a value of its own, or
// requires) that is not a plain type without a default, which the value
// must set itself; when merged, v's own regular fields are given by the
// defaults merged in, and only what is below them counts. Optional and
// required fields and pattern constraints (a default there adds nothing:
// the field is the value's or absent), and list elements, are looked
// into; too deep a schema counts as adding.
func addsTo(v cue.Value, depth int, merged bool) bool {
	if depth > 16 {
		return true
	}
	switch v.IncompleteKind() {
	case cue.StructKind:
		it, err := v.Fields(cue.Optional(true), cue.Patterns(true))
		if err != nil {
			return true
		}
		for it.Next() {
			f := it.Value()
			if it.Selector().ConstraintType() == 0 && !merged {
				if _, hasDefault := f.Default(); hasDefault || f.IsConcrete() || f.IncompleteKind()&(cue.StructKind|cue.ListKind) != 0 {
					return true
				}
			}
			if addsTo(f, depth+1, false) {
				return true
			}
		}
	case cue.ListKind:
		return addsTo(v.LookupPath(cue.MakePath(cue.AnyIndex)), depth+1, false)
	}
	return false
}
