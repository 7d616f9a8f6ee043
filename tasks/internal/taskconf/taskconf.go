// Package taskconf reads a built-in task's config (the map SetConfig gets)
// into typed values, with errors that name the path of the offending
// value, so that the config loader points at its line. The CUE definition
// of each task checks the shape first; this is the same check in Go, for
// SetConfig, which may be handed a config that never went through CUE
// (mmtest, a control message).
package taskconf

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrBadConfig is wrapped by every config error.
var ErrBadConfig = errors.New("bad config")

// Error locates a problem inside a task's config.
type Error struct {
	Path []string
	Err  error
}

func (e *Error) Error() string {
	if len(e.Path) == 0 {
		return fmt.Sprintf("%v: %v", ErrBadConfig, e.Err)
	}
	return fmt.Sprintf("%v: %s: %v", ErrBadConfig, strings.Join(e.Path, "."), e.Err)
}

func (e *Error) Unwrap() []error { return []error{ErrBadConfig, e.Err} }

// ConfigPath is the path of the offending value inside the config (see
// schema.Builtin.Check).
func (e *Error) ConfigPath() []string { return e.Path }

// Errorf makes an Error at path.
func Errorf(path []string, format string, args ...any) error {
	return &Error{Path: path, Err: fmt.Errorf(format, args...)}
}

// Reader reads fields of one config object; the first error sticks, so a
// parser reads every field and checks Err once.
type Reader struct {
	m    map[string]any
	path []string
	err  error
}

// New reads config (nil is an empty object).
func New(config map[string]any) *Reader { return &Reader{m: config} }

// Err is the first error met, if any.
func (r *Reader) Err() error { return r.err }

// Fail records an error at the field key (unless one is recorded).
func (r *Reader) Fail(key string, format string, args ...any) {
	if r.err == nil {
		r.err = Errorf(r.at(key), format, args...)
	}
}

func (r *Reader) at(key string) []string {
	return append(slices.Clone(r.path), key)
}

// Only fails on any field not in known (the CUE definitions are closed).
func (r *Reader) Only(known ...string) {
	keys := make([]string, 0, len(r.m))
	for k := range r.m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !slices.Contains(known, k) {
			r.Fail(k, "unknown field (want one of %s)", strings.Join(known, ", "))
		}
	}
}

// Has reports whether key is set.
func (r *Reader) Has(key string) bool { _, ok := r.m[key]; return ok }

// String reads a string field; def when absent.
func (r *Reader) String(key, def string) string {
	v, ok := r.m[key]
	if !ok {
		return def
	}
	s, ok := v.(string)
	if !ok {
		r.Fail(key, "want a string, got %T", v)
	}
	return s
}

// Bool reads a boolean field; def when absent.
func (r *Reader) Bool(key string, def bool) bool {
	v, ok := r.m[key]
	if !ok {
		return def
	}
	b, ok := v.(bool)
	if !ok {
		r.Fail(key, "want true or false, got %T", v)
	}
	return b
}

// Number reads a number field; def when absent.
func (r *Reader) Number(key string, def float64) float64 {
	v, ok := r.m[key]
	if !ok {
		return def
	}
	f, ok := toFloat(v)
	if !ok {
		r.Fail(key, "want a number, got %T", v)
	}
	return f
}

// Int reads an integer field within [lo, hi]; def when absent.
func (r *Reader) Int(key string, def, lo, hi int) int {
	if !r.Has(key) {
		return def
	}
	f := r.Number(key, 0)
	if f != math.Trunc(f) || f < float64(lo) || f > float64(hi) {
		r.Fail(key, "want a whole number from %d to %d, got %v", lo, hi, f)
		return def
	}
	return int(f)
}

// Seconds reads a duration in seconds within (0, max]; def when absent.
func (r *Reader) Seconds(key string, def, max time.Duration) time.Duration {
	if !r.Has(key) {
		return def
	}
	f := r.Number(key, 0)
	d := time.Duration(f * float64(time.Second))
	if f <= 0 || d > max || math.IsNaN(f) {
		r.Fail(key, "want seconds above 0 and at most %v, got %v", max.Seconds(), f)
		return def
	}
	return d
}

// Strings reads a list of strings.
func (r *Reader) Strings(key string) []string {
	v, ok := r.m[key]
	if !ok {
		return nil
	}
	list, ok := v.([]any)
	if !ok {
		r.Fail(key, "want a list of strings, got %T", v)
		return nil
	}
	out := make([]string, 0, len(list))
	for i, x := range list {
		s, ok := x.(string)
		if !ok {
			if r.err == nil {
				r.err = Errorf(append(r.at(key), strconv.Itoa(i)), "want a string, got %T", x)
			}
			return nil
		}
		out = append(out, s)
	}
	return out
}

// StringMap reads an object of strings.
func (r *Reader) StringMap(key string) map[string]string {
	v, ok := r.m[key]
	if !ok {
		return nil
	}
	obj, ok := v.(map[string]any)
	if !ok {
		r.Fail(key, "want an object of strings, got %T", v)
		return nil
	}
	out := make(map[string]string, len(obj))
	for k, x := range obj {
		s, ok := x.(string)
		if !ok {
			if r.err == nil {
				r.err = Errorf(append(r.at(key), k), "want a string, got %T", x)
			}
			return nil
		}
		out[k] = s
	}
	return out
}

// Object reads a nested object field with a Reader of its own, whose
// errors are placed under key and recorded here by Close.
func (r *Reader) Object(key string) *Reader {
	sub := &Reader{path: r.at(key)}
	v, ok := r.m[key]
	if !ok {
		return sub
	}
	m, ok := v.(map[string]any)
	if !ok {
		r.Fail(key, "want an object, got %T", v)
		return sub
	}
	sub.m = m
	return sub
}

// Close records a nested Reader's error in r.
func (r *Reader) Close(sub *Reader) {
	if r.err == nil {
		r.err = sub.err
	}
}

// Any returns a field as it is (nil when absent).
func (r *Reader) Any(key string) any { return r.m[key] }

func toFloat(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	}
	return 0, false
}
