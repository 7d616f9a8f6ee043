package message

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// ErrBadTransform is wrapped by every error from CompileTransform.
var ErrBadTransform = errors.New("bad transform")

// Transform is a compiled transform: it sets fields of a message.
//
// Each key of the transform sets the message's field to the value (a deep
// copy, so messages never share structure with the config). An object
// value merges into the message's object at that key, recursively,
// creating it when missing. The value {"$copy": "a.b"} copies the
// message's field at the dotted path a.b instead (nothing is set when that
// field is missing; see SplitPath for keys that start with a dot).
type Transform struct {
	steps []step
}

type step struct {
	key  string
	set  any        // a literal value
	sub  *Transform // merge into an object
	copy []string   // a path to copy from
}

// CompileTransform checks and compiles a transform.
func CompileTransform(t map[string]any) (*Transform, error) {
	out := &Transform{}
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if strings.HasPrefix(k, "$") {
			return nil, fmt.Errorf("%w: %q: field names may not start with $", ErrBadTransform, k)
		}
		s := step{key: k}
		switch v := t[k].(type) {
		case map[string]any:
			if src, isCopy := v["$copy"]; isCopy {
				path, ok := src.(string)
				if !ok || path == "" || len(v) != 1 {
					return nil, fmt.Errorf("%w: %s: $copy wants a dotted field path and nothing else", ErrBadTransform, k)
				}
				s.copy = SplitPath(path)
			} else {
				sub, err := CompileTransform(v)
				if err != nil {
					return nil, fmt.Errorf("%s.%w", k, err)
				}
				s.sub = sub
			}
		default:
			s.set = v
		}
		out.steps = append(out.steps, s)
	}
	return out, nil
}

// Apply changes msg in place. Copies read the message as it was before the
// transform, so the order of keys never matters.
func (t *Transform) Apply(msg map[string]any) {
	copies := t.collect(msg, nil, nil)
	t.set(msg)
	for _, c := range copies {
		dst := msg
		for _, k := range c.dst[:len(c.dst)-1] {
			m, ok := dst[k].(map[string]any)
			if !ok {
				m = map[string]any{}
				dst[k] = m
			}
			dst = m
		}
		dst[c.dst[len(c.dst)-1]] = c.val
	}
}

type pendingCopy struct {
	dst []string
	val any
}

// collect reads every $copy source before anything is changed.
func (t *Transform) collect(root map[string]any, prefix []string, out []pendingCopy) []pendingCopy {
	for _, s := range t.steps {
		dst := append(append([]string(nil), prefix...), s.key)
		switch {
		case s.copy != nil:
			if v, ok := lookup(root, s.copy); ok {
				out = append(out, pendingCopy{dst, DeepCopy(v)})
			}
		case s.sub != nil:
			out = s.sub.collect(root, dst, out)
		}
	}
	return out
}

// set applies the literal values and merges.
func (t *Transform) set(dst map[string]any) {
	for _, s := range t.steps {
		switch {
		case s.sub != nil:
			m, ok := dst[s.key].(map[string]any)
			if !ok {
				m = map[string]any{}
				dst[s.key] = m
			}
			s.sub.set(m)
		case s.copy == nil:
			dst[s.key] = DeepCopy(s.set)
		}
	}
}

// SplitPath splits a dotted field path. A key that itself starts with a
// dot is written with its dot: ".ipc_transit_meta.send_ts" is the key
// ".ipc_transit_meta", then "send_ts"; "a..b" is "a", then ".b".
func SplitPath(path string) []string {
	var out []string
	parts := strings.Split(path, ".")
	for i := 0; i < len(parts); i++ {
		if parts[i] == "" && i+1 < len(parts) {
			i++
			out = append(out, "."+parts[i])
			continue
		}
		out = append(out, parts[i])
	}
	return out
}

func lookup(m map[string]any, path []string) (any, bool) {
	var cur any = m
	for _, p := range path {
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = obj[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// DeepCopy copies the JSON-shaped parts of v (objects and arrays); other
// values are immutable or shared as they are.
func DeepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[k] = DeepCopy(e)
		}
		return m
	case []any:
		a := make([]any, len(v))
		for i, e := range v {
			a[i] = DeepCopy(e)
		}
		return a
	}
	return v
}
