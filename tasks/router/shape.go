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
	return checkTree(p, func(k string) error {
		return fmt.Errorf("operator %s where a field name belongs (operators go in a field's object)", k)
	}, func(k string, m map[string]any) ([]string, error) {
		for _, op := range sortedKeys(m) {
			takes, known := operators[op]
			switch {
			case !known && strings.HasPrefix(op, "$"):
				return []string{k}, fmt.Errorf("unknown operator %s (want %s)", op, operatorList)
			case !known:
				return []string{k}, fmt.Errorf("%q mixes operators and fields", k)
			case !takes(m[op]):
				return []string{k, op}, fmt.Errorf("%s does not take %T", op, m[op])
			}
		}
		return nil, nil
	})
}

// checkTransform: plain keys whose values are scalars, lists, {$copy:
// "path"} or transforms.
func checkTransform(t map[string]any) ([]string, error) {
	return checkTree(t, func(k string) error {
		return fmt.Errorf("%q: field names may not start with $", k)
	}, func(k string, m map[string]any) ([]string, error) {
		if c, ok := m["$copy"].(string); len(m) != 1 || !ok || c == "" {
			return []string{k}, errors.New("$copy wants a dotted field path and nothing else")
		}
		return nil, nil
	})
}

// checkTree walks the plain keys of a pattern or a transform, in order: a
// $ key where a field name belongs is refused with dollar's error,
// scalars and lists pass, an object without operators is walked in turn
// and one with operators goes to operand. It returns the path to the
// first error.
func checkTree(t map[string]any, dollar func(k string) error, operand func(k string, m map[string]any) ([]string, error)) ([]string, error) {
	for _, k := range sortedKeys(t) {
		if strings.HasPrefix(k, "$") {
			return []string{k}, dollar(k)
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
			if sub, err := checkTree(m, dollar, operand); err != nil {
				return append([]string{k}, sub...), err
			}
			continue
		}
		if path, err := operand(k, m); err != nil {
			return path, err
		}
	}
	return nil, nil
}

// operatorList names the operators, for messages.
const operatorList = "$re, $exists, $in, $ne, $gt, $gte, $lt, $lte"

// ExplainConfig says, as one line, what is allowed at path inside a Router's config
// where the schema refused a field (schema.Builtin.Explain): router.cue
// allows only field names at the top of a match or a transform, so a
// misplaced or misspelt operator ($gtt) would otherwise read "field not
// allowed".
func ExplainConfig(path []string) string {
	if len(path) != 4 || path[0] != "routes" || !strings.HasPrefix(path[3], "$") {
		return ""
	}
	field := path[3]
	switch path[2] {
	case "match":
		if _, known := operators[field]; !known {
			return fmt.Sprintf("unknown operator %s (want %s), and operators go in a field's object: {size: {$gt: 5}}", field, operatorList)
		}
		return fmt.Sprintf("operator %s where a field name belongs: operators go in a field's object, e.g. {size: {%s: ...}}", field, field)
	case "transform":
		return fmt.Sprintf(`%s where a field name belongs: a transform's keys are field names, and $copy goes in a field's object: {to: {$copy: "from.path"}}`, field)
	}
	return ""
}
