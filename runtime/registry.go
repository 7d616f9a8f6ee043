package runtime

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
)

// BuiltinNamespace is always searched first when resolving a kind.
const BuiltinNamespace = "builtin"

// ErrUnknownKind is returned by Resolve when no namespace has the kind.
var ErrUnknownKind = errors.New("unknown task kind")

var kindRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)+$`)

// Registry maps fully qualified kinds ("namespace.Name") to factories.
type Registry struct {
	mu    sync.RWMutex
	kinds map[string]Factory
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{kinds: map[string]Factory{}} }

// Register adds a kind. It panics on a malformed kind or a duplicate: both
// are programming errors found at init time.
func (r *Registry) Register(kind string, f Factory) {
	if !kindRE.MatchString(kind) {
		panic(fmt.Sprintf("multimodule: Register(%q): kind must be namespace.Name", kind))
	}
	if f == nil {
		panic(fmt.Sprintf("multimodule: Register(%q): nil factory", kind))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.kinds[kind]; dup {
		panic(fmt.Sprintf("multimodule: Register(%q): kind registered twice", kind))
	}
	r.kinds[kind] = f
}

// Kinds lists the registered kinds, sorted.
func (r *Registry) Kinds() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.kinds))
	for k := range r.kinds {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Resolve finds kind. A kind with a dot is taken as fully qualified; a bare
// name is looked up in "builtin" and then in namespaces, in order. Its
// error lists the registered kinds and, when a namespace that was not
// searched has the name, the -p that would find it: the usual cause is a
// missing -p or a config meant for another daemon binary.
func (r *Registry) Resolve(kind string, namespaces []string) (string, Factory, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if strings.Contains(kind, ".") {
		if f, ok := r.kinds[kind]; ok {
			return kind, f, nil
		}
		return "", nil, fmt.Errorf("%w %q: it is not registered; %s", ErrUnknownKind, kind, r.registeredLocked())
	}
	var searched []string
	for _, ns := range SearchPath(namespaces) {
		full := ns + "." + kind
		if f, ok := r.kinds[full]; ok {
			return full, f, nil
		}
		searched = append(searched, full)
	}
	hint := "add its namespace with -p NAMESPACE, or run a daemon built with it"
	var elsewhere []string
	for full := range r.kinds {
		if ns, name, _ := strings.Cut(full, "."); name == kind {
			elsewhere = append(elsewhere, ns)
		}
	}
	if len(elsewhere) > 0 {
		sort.Strings(elsewhere)
		ns := append(SearchPath(namespaces)[1:], elsewhere[0]) // builtin is always searched
		hint = fmt.Sprintf("%s.%s is registered: run with -p %s", elsewhere[0], kind, strings.Join(ns, ","))
	}
	return "", nil, fmt.Errorf("%w %q: searched %s; %s; %s", ErrUnknownKind, kind, strings.Join(searched, ", "), r.registeredLocked(), hint)
}

// maxListed bounds the kinds an error names: a daemon may register many.
const maxListed = 20

// registeredLocked lists the registered kinds for an error; r.mu is held.
func (r *Registry) registeredLocked() string {
	if len(r.kinds) == 0 {
		return "no kinds are registered"
	}
	all := make([]string, 0, len(r.kinds))
	for k := range r.kinds {
		all = append(all, k)
	}
	sort.Strings(all)
	if len(all) > maxListed {
		all = append(all[:maxListed], fmt.Sprintf("and %d more", len(all)-maxListed))
	}
	return "registered kinds: " + strings.Join(all, ", ")
}

// SearchPath is the namespace search order for the given -p namespaces.
func SearchPath(namespaces []string) []string {
	out := []string{BuiltinNamespace}
	for _, ns := range namespaces {
		if ns = strings.TrimSpace(ns); ns != "" && ns != BuiltinNamespace {
			out = append(out, ns)
		}
	}
	return out
}
