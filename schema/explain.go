package schema

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"cuelang.org/go/cue"
	cueerrors "cuelang.org/go/cue/errors"
)

// CUE words a value that fits none of a disjunction's branches as one
// error per branch ("conflicting values "E" and "x"", then "out of bound
// =~"^[A-Za-z_]..."), and a field a closed struct or a pattern does not
// allow as a bare "field not allowed". An operator reading that needs to
// know what would have been accepted, on one line. explain rewrites the
// errors of one path into one line saying so, keeping file:line:col and
// the path.

// valueRules say what a value at a path may be, for the paths whose
// schema is a disjunction or a regexp (whose CUE errors name the schema's
// internals rather than the rule). "*" matches any one path element.
var valueRules = []struct{ path, want string }{
	{"tasks.*.kind", `a kind: Name or namespace.Name, each part a letter or _ then letters, digits, _ or - (e.g. "Counter", "acme.Counter")`},
	{"tasks.*.external", "true or false"},
	{"tasks.*.disabled", "true or false"},
	{"tasks.*.limits.memory.*", `a fraction of the box's memory (a number above 0, up to 1) or a size such as "200MiB" (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)`},
}

// taskNameRule is #TaskName in words.
const taskNameRule = "a task name is a letter or _ then up to 127 letters, digits, _ or -"

var mismatched = regexp.MustCompile(`^conflicting values (.+) and (.+) \(mismatched types (\w+) and (\w+)\)$`)

func matchPath(pattern string, path []string) bool {
	pp := strings.Split(pattern, ".")
	if len(pp) != len(path) {
		return false
	}
	for i, p := range pp {
		if p != "*" && p != path[i] {
			return false
		}
	}
	return true
}

// typeWords names a CUE type the way an operator reads a config.
func typeWords(t string) string {
	switch t {
	case "struct":
		return "an object"
	case "list":
		return "a list"
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "int", "float", "number":
		return "a number"
	}
	return t
}

// explain rewrites each path's errors into one line saying what is
// allowed there. v is the schema unified with the user's files, user the
// files alone.
func (s *Schema) explain(l *LoadError, v, user cue.Value) {
	var out []Error
	done := map[string]int{} // path -> index in out
	for _, e := range l.Errors {
		if len(e.path) == 0 {
			// A file that is a value, not fields: CUE prints the whole
			// schema it conflicts with.
			if m := mismatched.FindStringSubmatch(e.Msg); m != nil && (m[3] == "struct") != (m[4] == "struct") {
				got := m[4]
				if got == "struct" {
					got = m[3]
				}
				e.Msg = "want fields (tasks: and daemon:), got " + typeWords(got)
			}
			out = append(out, e)
			continue
		}
		msg, whole := s.explainOne(e, v, user)
		if i, ok := done[e.Path]; ok {
			if whole {
				out[i].Msg = msg // the rule replaces the path's other errors
			} else if !strings.Contains(out[i].Msg, msg) && !strings.HasPrefix(out[i].Msg, "want ") {
				out[i].Msg += "; " + msg
			}
			continue
		}
		e.Msg = msg
		done[e.Path] = len(out)
		out = append(out, e)
	}
	l.Errors = out
}

// explainOne is e's message in words; whole reports that it states the
// complete rule for the path, so that the path's other errors add nothing.
func (s *Schema) explainOne(e Error, v, user cue.Value) (msg string, whole bool) {
	path := e.path
	if strings.HasSuffix(e.Msg, "field not allowed") {
		field := path[len(path)-1]
		if u, err := strconv.Unquote(field); err == nil {
			field = u
		}
		if len(path) == 2 && path[0] == "tasks" {
			return fmt.Sprintf("task name %q not allowed: %s", field, taskNameRule), true
		}
		if x := s.builtinExplain(path, v); x != "" {
			return x, true
		}
		if allowed := allowedFields(v, path[:len(path)-1]); len(allowed) > 0 {
			return fmt.Sprintf("%s not allowed%s; allowed: %s", field, suggest(field, allowed), strings.Join(allowed, ", ")), true
		}
		return e.Msg, false
	}
	got := userValue(user, path)
	for _, r := range valueRules {
		if matchPath(r.path, path) {
			return fmt.Sprintf("want %s, got %s", r.want, got), true
		}
	}
	if m := mismatched.FindStringSubmatch(e.Msg); m != nil {
		want := m[4]
		if k := user.LookupPath(cuePath(path)).IncompleteKind().String(); k == m[4] {
			want = m[3] // the user's value came second
		}
		return fmt.Sprintf("want %s, got %s", typeWords(want), got), false
	}
	return e.Msg, false
}

// builtinExplain asks the built-in kind of the task at path (if any) what
// is allowed at the part of its config the path names.
func (s *Schema) builtinExplain(path []string, v cue.Value) string {
	if len(path) < 4 || path[0] != "tasks" || path[2] != "config" {
		return ""
	}
	kind, err := v.LookupPath(cue.MakePath(cue.Str("tasks"), cue.Str(path[1]), cue.Str("kind"))).String()
	if err != nil {
		kind = path[1]
	}
	for _, bi := range s.builtins {
		_, short, _ := strings.Cut(bi.Kind, ".")
		if bi.Explain != nil && (kind == bi.Kind || kind == short) {
			return bi.Explain(path[3:])
		}
	}
	return ""
}

// allowedFields lists the fields the schema declares at path (in v, the
// schema unified with the config), sorted; none for a struct whose fields
// are given by a pattern.
func allowedFields(v cue.Value, path []string) []string {
	parent := v.LookupPath(cuePath(path))
	it, err := parent.Fields(cue.Optional(true))
	if err != nil {
		return nil
	}
	var out []string
	for it.Next() {
		if sel := it.Selector(); !sel.IsDefinition() && !refused(it.Value(), len(path)+1) {
			out = append(out, sel.Unquoted())
		}
	}
	sort.Strings(out)
	return out
}

// refused reports whether x (at a path of depth elements) is a field the
// schema does not allow, rather than an allowed one with an error inside.
func refused(x cue.Value, depth int) bool {
	for _, e := range cueerrors.Errors(x.Err()) {
		if len(e.Path()) == depth && strings.HasSuffix(e.Error(), "field not allowed") {
			return true
		}
	}
	return false
}

// cuePath is the path of an error's path elements, which quote a field
// name that is not an identifier ("my-task").
func cuePath(path []string) cue.Path {
	sels := make([]cue.Selector, len(path))
	for i, p := range path {
		if u, err := strconv.Unquote(p); err == nil && strings.HasPrefix(p, `"`) {
			sels[i] = cue.Str(u) // "0" is a field's name, not an index
		} else if n, ok := index(p); ok {
			sels[i] = cue.Index(n)
		} else {
			sels[i] = cue.Str(p)
		}
	}
	return cue.MakePath(sels...)
}

func index(p string) (int, bool) {
	if p == "" {
		return 0, false
	}
	n := 0
	for _, c := range p {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// userValue is the value the user wrote at path, as CUE prints it (short).
func userValue(user cue.Value, path []string) string {
	x := user.LookupPath(cuePath(path))
	if !x.Exists() {
		return "nothing"
	}
	s := strings.Join(strings.Fields(fmt.Sprint(x)), " ")
	if len(s) > 40 {
		s = s[:37] + "..."
	}
	return s
}

// suggest names the allowed field closest to a misspelt one.
func suggest(field string, allowed []string) string {
	best, bestD := "", 3 // at most two edits away
	for _, a := range allowed {
		if d := editDistance(strings.ToLower(field), strings.ToLower(a)); d < bestD {
			best, bestD = a, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %s?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
