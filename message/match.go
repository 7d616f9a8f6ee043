// Package message holds the operations on messages that the Router and
// the daemon share: matching a message against a pattern, transforming it,
// and deep copies.
package message

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// ErrBadPattern is wrapped by every error from Compile.
var ErrBadPattern = errors.New("bad match pattern")

// Matcher is a compiled match pattern.
//
// A pattern is an object; a message matches when every key of the pattern
// holds for the message:
//   - a scalar equals the message's value, or is contained in it when the
//     message's value is an array (numbers compare by value: 1 == 1.0);
//   - an object of plain keys matches the message's object recursively;
//   - an array equals the message's array, element by element;
//   - an object of operators applies them all to the message's value:
//     $re (regexp, also any element of an array; numbers are matched in
//     plain decimal), $exists (bool), $in (array of allowed values), $ne
//     (the plain rule negated), $gt, $gte, $lt, $lte
//     (numbers, or strings compared lexically). A missing key fails
//     every operator except $exists: false and $ne.
//
// The empty pattern {} matches every message.
type Matcher struct {
	keys []keyMatch
}

type keyMatch struct {
	key   string
	check func(v any, ok bool) bool
}

// Compile checks and compiles a pattern. Regexps are compiled once here.
func Compile(pattern map[string]any) (*Matcher, error) {
	m := &Matcher{}
	keys := make([]string, 0, len(pattern))
	for k := range pattern {
		keys = append(keys, k)
	}
	sort.Strings(keys) // deterministic order, deterministic errors
	for _, k := range keys {
		check, err := compileValue(pattern[k])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		m.keys = append(m.keys, keyMatch{k, check})
	}
	return m, nil
}

// Match reports whether msg matches.
func (m *Matcher) Match(msg map[string]any) bool {
	for _, km := range m.keys {
		v, ok := msg[km.key]
		if !km.check(v, ok) {
			return false
		}
	}
	return true
}

func isOperatorObject(p map[string]any) bool {
	if len(p) == 0 {
		return false
	}
	for k := range p {
		if !strings.HasPrefix(k, "$") {
			return false
		}
	}
	return true
}

func compileValue(p any) (func(v any, ok bool) bool, error) {
	switch p := p.(type) {
	case map[string]any:
		if isOperatorObject(p) {
			return compileOperators(p)
		}
		for k := range p {
			if strings.HasPrefix(k, "$") {
				return nil, fmt.Errorf("%w: %q mixes operators and fields", ErrBadPattern, k)
			}
		}
		sub, err := Compile(p)
		if err != nil {
			return nil, err
		}
		return func(v any, ok bool) bool {
			mv, isMap := v.(map[string]any)
			return ok && isMap && sub.Match(mv)
		}, nil
	case []any:
		return func(v any, ok bool) bool { return ok && equal(p, v) }, nil
	default:
		if !isScalar(p) {
			return nil, fmt.Errorf("%w: unsupported value %T", ErrBadPattern, p)
		}
		return func(v any, ok bool) bool { return ok && scalarMatch(p, v) }, nil
	}
}

// scalarMatch is the plain-value rule: equal, or contained in an array.
func scalarMatch(p, v any) bool {
	if arr, isArr := v.([]any); isArr {
		for _, e := range arr {
			if equal(p, e) {
				return true
			}
		}
		return false
	}
	return equal(p, v)
}

func compileOperators(ops map[string]any) (func(v any, ok bool) bool, error) {
	names := make([]string, 0, len(ops))
	for k := range ops {
		names = append(names, k)
	}
	sort.Strings(names)
	var checks []func(v any, ok bool) bool
	for _, op := range names {
		arg := ops[op]
		var c func(v any, ok bool) bool
		switch op {
		case "$re":
			s, isStr := arg.(string)
			if !isStr {
				return nil, fmt.Errorf("%w: $re wants a string, got %T", ErrBadPattern, arg)
			}
			re, err := regexp.Compile(s)
			if err != nil {
				return nil, fmt.Errorf("%w: $re: %v", ErrBadPattern, err)
			}
			c = func(v any, ok bool) bool {
				if !ok {
					return false
				}
				if arr, isArr := v.([]any); isArr {
					for _, e := range arr {
						if reMatch(re, e) {
							return true
						}
					}
					return false
				}
				return reMatch(re, v)
			}
		case "$exists":
			want, isBool := arg.(bool)
			if !isBool {
				return nil, fmt.Errorf("%w: $exists wants true or false, got %T", ErrBadPattern, arg)
			}
			c = func(_ any, ok bool) bool { return ok == want }
		case "$in":
			list, isList := arg.([]any)
			if !isList {
				return nil, fmt.Errorf("%w: $in wants an array, got %T", ErrBadPattern, arg)
			}
			c = func(v any, ok bool) bool {
				if !ok {
					return false
				}
				vals := []any{v}
				if arr, isArr := v.([]any); isArr {
					vals = arr
				}
				for _, x := range vals {
					for _, want := range list {
						if equal(want, x) {
							return true
						}
					}
				}
				return false
			}
		case "$ne":
			// The negation of the plain rule: an array holding the value
			// is not "not equal".
			c = func(v any, ok bool) bool { return !ok || !scalarMatch(arg, v) }
		case "$gt", "$gte", "$lt", "$lte":
			if _, isNum := toFloat(arg); !isNum {
				if _, isStr := arg.(string); !isStr {
					return nil, fmt.Errorf("%w: %s wants a number or string, got %T", ErrBadPattern, op, arg)
				}
			}
			want := map[string]func(int) bool{
				"$gt": func(c int) bool { return c > 0 }, "$gte": func(c int) bool { return c >= 0 },
				"$lt": func(c int) bool { return c < 0 }, "$lte": func(c int) bool { return c <= 0 },
			}[op]
			c = func(v any, ok bool) bool {
				cmp, comparable := compare(v, arg)
				return ok && comparable && want(cmp)
			}
		default:
			return nil, fmt.Errorf("%w: unknown operator %s (want $re, $exists, $in, $ne, $gt, $gte, $lt, $lte)", ErrBadPattern, op)
		}
		checks = append(checks, c)
	}
	return func(v any, ok bool) bool {
		for _, c := range checks {
			if !c(v, ok) {
				return false
			}
		}
		return true
	}, nil
}

func reMatch(re *regexp.Regexp, v any) bool {
	switch v := v.(type) {
	case string:
		return re.MatchString(v)
	case bool, nil, map[string]any, []any:
		return false
	default:
		if f, ok := toFloat(v); ok {
			return re.MatchString(strconv.FormatFloat(f, 'f', -1, 64))
		}
		return false
	}
}

func isScalar(v any) bool {
	switch v.(type) {
	case nil, string, bool:
		return true
	}
	_, ok := toFloat(v)
	return ok
}

// toFloat accepts every numeric type a message may carry: float64 from
// JSON, int and friends from Go code in the same process.
func toFloat(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case float32:
		return float64(n), true
	case int:
		return float64(n), true
	case int8:
		return float64(n), true
	case int16:
		return float64(n), true
	case int32:
		return float64(n), true
	case int64:
		return float64(n), true
	case uint:
		return float64(n), true
	case uint8:
		return float64(n), true
	case uint16:
		return float64(n), true
	case uint32:
		return float64(n), true
	case uint64:
		return float64(n), true
	}
	return 0, false
}

// compare orders two numbers or two strings.
func compare(a, b any) (int, bool) {
	if x, ok := toFloat(a); ok {
		y, ok := toFloat(b)
		if !ok {
			return 0, false
		}
		switch {
		case x < y:
			return -1, true
		case x > y:
			return 1, true
		}
		return 0, true
	}
	x, ok1 := a.(string)
	y, ok2 := b.(string)
	if !ok1 || !ok2 {
		return 0, false
	}
	return strings.Compare(x, y), true
}

// equal is deep equality with numbers compared by value.
func equal(a, b any) bool {
	if x, ok := toFloat(a); ok {
		y, ok := toFloat(b)
		return ok && x == y
	}
	switch a := a.(type) {
	case []any:
		b, ok := b.([]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range a {
			if !equal(a[i], b[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		b, ok := b.(map[string]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for k, av := range a {
			bv, ok := b[k]
			if !ok || !equal(av, bv) {
				return false
			}
		}
		return true
	case string, bool, nil:
		return a == b
	}
	return reflect.DeepEqual(a, b)
}
