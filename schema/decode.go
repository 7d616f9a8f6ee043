package schema

import (
	"encoding/json"
	"strconv"

	"cuelang.org/go/cue"
)

// decodeSpec decodes one task's validated value. Config values must look
// to a task exactly as a message or a restored state does (numbers are
// float64), which is what CUE's JSON export read back by encoding/json
// gives; but the export of a whole task sorts its fields, its limits' and
// its restart's against every schema definition the task unifies with,
// and was a third of loading 1,000 tasks. So the task's own fields are
// looked up and decoded directly, its config through the config's own
// export, and a task the walk does not fully understand (a number float64
// cannot hold, a field or shape TaskSpec does not expect) goes the JSON
// way, which also words any error as before. walked is false then.
// TestDecodeWalkMatchesJSON holds the two ways to identical specs and
// hashes.
func decodeSpec(v, empty cue.Value) (spec TaskSpec, walked bool, err error) {
	if spec, ok := walkSpec(v, empty); ok {
		return spec, true, nil
	}
	spec, err = decodeSpecJSON(v)
	return spec, false, err
}

// decodeSpecJSON is the JSON way: CUE's export, read by encoding/json.
func decodeSpecJSON(v cue.Value) (TaskSpec, error) {
	var spec TaskSpec
	raw, err := v.MarshalJSON()
	if err == nil {
		err = json.Unmarshal(raw, &spec)
	}
	return spec, err
}

// field is the regular (not optional, not hidden, not a definition) field
// name of v, with its default taken; ok is false when there is none.
// Looking a field up by name does not sort v's fields as listing them does.
func field(v cue.Value, name string) (cue.Value, bool) {
	f := v.LookupPath(cue.MakePath(cue.Str(name)))
	if !f.Exists() {
		return f, false
	}
	if d, ok := f.Default(); ok {
		f = d
	}
	return f, true
}

// walkSpec is decodeSpecJSON without the export. It looks up #Task's
// fields by name: #Task is a closed definition, so a validated task has no
// other regular fields (encoding/json would also take "Kind" for kind:
// that cannot pass the schema).
func walkSpec(v, empty cue.Value) (spec TaskSpec, ok bool) {
	if v.Kind() != cue.StructKind {
		return spec, false
	}
	if f, found := field(v, "kind"); found {
		if spec.Kind, ok = str(f); !ok {
			return spec, false
		}
	}
	if f, found := field(v, "external"); found {
		if spec.External, ok = boolean(f); !ok {
			return spec, false
		}
	}
	if f, found := field(v, "disabled"); found {
		if spec.Disabled, ok = boolean(f); !ok {
			return spec, false
		}
	}
	if f, found := field(v, "config"); found {
		// The config is what the task sees, so it is read the JSON way
		// itself. Its own export sorts each of its structs' fields as a
		// walk listing them would, but without a call into CUE (and a
		// context made for it) for every value: decoding 1,000 tasks took
		// 50 ms this way against 58 ms walking their configs.
		raw, err := f.MarshalJSON()
		if err != nil || json.Unmarshal(raw, &spec.Config) != nil {
			return spec, false
		}
	}
	if f, found := field(v, "intervals"); found {
		if spec.Intervals, ok = floats(f, empty); !ok {
			return spec, false
		}
	}
	if f, found := field(v, "limits"); found {
		if spec.Limits, ok = limits(f, empty); !ok {
			return spec, false
		}
	}
	if f, found := field(v, "restart"); found {
		if spec.Restart, ok = restart(f); !ok {
			return spec, false
		}
	}
	return spec, true
}

func str(v cue.Value) (string, bool) {
	if v.Kind() != cue.StringKind {
		return "", false
	}
	s, err := v.String()
	return s, err == nil
}

func boolean(v cue.Value) (bool, bool) {
	if v.Kind() != cue.BoolKind {
		return false, false
	}
	b, err := v.Bool()
	return b, err == nil
}

// number is what encoding/json reads from the number's JSON export: CUE
// exports the decimal's text, which strconv.ParseFloat reads as apd's
// Float64 does. CUE's Float64 refuses what ParseFloat would round to an
// infinity or below the smallest float64 (so does encoding/json: the JSON
// way words it), and makes -0 into 0, which encoding/json does not: a
// zero is read from its export (a scalar's export is cheap).
func number(v cue.Value) (float64, bool) {
	if k := v.Kind(); k != cue.IntKind && k != cue.FloatKind {
		return 0, false
	}
	f, err := v.Float64()
	if err != nil {
		return 0, false
	}
	if f == 0 {
		raw, err := v.MarshalJSON()
		if err != nil {
			return 0, false
		}
		f, err = strconv.ParseFloat(string(raw), 64)
		return f, err == nil
	}
	return f, true
}

// isEmpty reports whether struct v has no regular fields, which listing
// them would also say, but after sorting them (a tenth of loading 1,000
// tasks went to sorting their empty limits). empty is an empty struct of
// v's context; Equals compares the fields themselves, regular and required
// ones (a hidden field or a definition makes it false: the caller then
// lists them, leaving those out).
func isEmpty(v, empty cue.Value) bool { return v.Equals(empty) }

// floats is a map[string]float64 as encoding/json fills it.
func floats(v, empty cue.Value) (map[string]float64, bool) {
	if v.Kind() != cue.StructKind {
		return nil, false
	}
	out := map[string]float64{}
	if isEmpty(v, empty) {
		return out, true
	}
	it, err := v.Fields()
	if err != nil {
		return nil, false
	}
	for it.Next() {
		f := it.Value()
		if d, ok := f.Default(); ok {
			f = d
		}
		n, ok := number(f)
		if !ok {
			return nil, false
		}
		out[it.Selector().Unquoted()] = n
	}
	return out, true
}

// levels are the fields of Levels, as the schema's #LevelsOf spells them.
var levels = []string{"warn", "severe", "failsafe"}

// limits is a map[string]Levels as encoding/json fills it. Its fields
// are listed (they are few, and #Limits closes them); a level's, looked
// up: #LevelsOf closes them to these names.
func limits(v, empty cue.Value) (map[string]Levels, bool) {
	if v.Kind() != cue.StructKind {
		return nil, false
	}
	out := map[string]Levels{}
	if isEmpty(v, empty) {
		return out, true
	}
	it, err := v.Fields()
	if err != nil {
		return nil, false
	}
	for it.Next() {
		lv := it.Value()
		if d, ok := lv.Default(); ok {
			lv = d
		}
		if lv.Kind() != cue.StructKind {
			return nil, false
		}
		var l Levels
		for _, name := range levels {
			f, found := field(lv, name)
			if !found {
				continue
			}
			t, ok := threshold(f)
			if !ok {
				return nil, false
			}
			switch name {
			case "warn":
				l.Warn = t
			case "severe":
				l.Severe = t
			default:
				l.Failsafe = t
			}
		}
		out[it.Selector().Unquoted()] = l
	}
	return out, true
}

// threshold is Threshold.UnmarshalJSON on a value.
func threshold(v cue.Value) (*Threshold, bool) {
	if s, ok := str(v); ok {
		n, err := ParseSize(s)
		return &Threshold{Value: n, Size: s}, err == nil
	}
	n, ok := number(v)
	return &Threshold{Value: n}, ok
}

// restart is a Restart as encoding/json fills it; #Restart closes its
// fields to these names and gives each a default.
func restart(v cue.Value) (Restart, bool) {
	var r Restart
	if v.Kind() != cue.StructKind {
		return r, false
	}
	ok := true
	if f, found := field(v, "initial"); found && ok {
		r.Initial, ok = number(f)
	}
	if f, found := field(v, "max"); found && ok {
		r.Max, ok = number(f)
	}
	if f, found := field(v, "hold_after"); found && ok {
		// encoding/json reads an int from an integer's text only.
		var n int64
		var err error
		if f.Kind() == cue.IntKind {
			n, err = f.Int64()
		}
		ok = f.Kind() == cue.IntKind && err == nil && int64(int(n)) == n
		r.HoldAfter = int(n)
	}
	return r, ok
}
