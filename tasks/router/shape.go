package router

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// The shapes of patterns and transforms at every depth, as router.cue's
// recursive #Pattern/#Transform used to describe them; CUE now checks only
// their top level (see router.cue). Each check returns the path inside
// the object of the value that does not fit, so that the error is placed
// where CUE placed it. message.Compile and CompileTransform then check
// what shapes cannot (a regexp compiles, a $copy path is well formed).

// operators are the pattern operators and what each takes.
var operators = map[string]func(any) bool{
	"$re":     isString,
	"$exists": isBool,
	"$in":     isList,
	"$ne":     func(any) bool { return true },
	"$gt":     isNumberOrString,
	"$gte":    isNumberOrString,
	"$lt":     isNumberOrString,
	"$lte":    isNumberOrString,
}

func isString(v any) bool         { _, ok := v.(string); return ok }
func isBool(v any) bool           { _, ok := v.(bool); return ok }
func isList(v any) bool           { _, ok := v.([]any); return ok }
func isNumberOrString(v any) bool { _, ok := v.(float64); return ok || isString(v) }

// isScalarOrList: null, bool, number, string or any list.
func isScalarOrList(v any) bool {
	switch v.(type) {
	case nil, bool, float64, string, []any:
		return true
	}
	return false
}

// sortedKeys: the first problem found is the same on every load.
func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func hasOperator(m map[string]any) bool {
	for k := range m {
		if strings.HasPrefix(k, "$") {
			return true
		}
	}
	return false
}

// checkPattern: plain keys whose values are scalars, lists, operator
// objects (one or more operators, nothing else) or patterns.
func checkPattern(p map[string]any) ([]string, error) {
	for _, k := range sortedKeys(p) {
		if strings.HasPrefix(k, "$") {
			return []string{k}, fmt.Errorf("operator %s where a field name belongs (operators go in a field's object)", k)
		}
		v := p[k]
		if isScalarOrList(v) {
			continue
		}
		m, ok := v.(map[string]any)
		if !ok {
			return []string{k}, fmt.Errorf("unsupported value %T", v)
		}
		if !hasOperator(m) {
			if sub, err := checkPattern(m); err != nil {
				return append([]string{k}, sub...), err
			}
			continue
		}
		for _, op := range sortedKeys(m) {
			takes, known := operators[op]
			switch {
			case !known && strings.HasPrefix(op, "$"):
				return []string{k}, fmt.Errorf("unknown operator %s (want $re, $exists, $in, $ne, $gt, $gte, $lt, $lte)", op)
			case !known:
				return []string{k}, fmt.Errorf("%q mixes operators and fields", k)
			case !takes(m[op]):
				return []string{k, op}, fmt.Errorf("%s does not take %T", op, m[op])
			}
		}
	}
	return nil, nil
}

// checkTransform: plain keys whose values are scalars, lists, {$copy:
// "path"} or transforms.
func checkTransform(t map[string]any) ([]string, error) {
	for _, k := range sortedKeys(t) {
		if strings.HasPrefix(k, "$") {
			return []string{k}, fmt.Errorf("%q: field names may not start with $", k)
		}
		v := t[k]
		if isScalarOrList(v) {
			continue
		}
		m, ok := v.(map[string]any)
		if !ok {
			return []string{k}, fmt.Errorf("unsupported value %T", v)
		}
		if !hasOperator(m) {
			if sub, err := checkTransform(m); err != nil {
				return append([]string{k}, sub...), err
			}
			continue
		}
		if c, ok := m["$copy"].(string); len(m) != 1 || !ok || c == "" {
			return []string{k}, errors.New("$copy wants a dotted field path and nothing else")
		}
	}
	return nil, nil
}
