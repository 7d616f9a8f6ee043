package message

import (
	"errors"
	"reflect"
	"testing"

	"github.com/multimodule/multimodule/internal/testenv"
)

// obj parses JSON so that table entries look like the messages users send.
func obj(t *testing.T, s string) map[string]any { return testenv.Object(t, s) }

func TestMatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, pattern, msg string
		want               bool
	}{
		{"empty pattern matches all", `{}`, `{"a":1}`, true},
		{"empty pattern matches empty", `{}`, `{}`, true},
		{"scalar equal", `{"source":"Example1"}`, `{"source":"Example1","ct":1}`, true},
		{"scalar differs", `{"source":"Example1"}`, `{"source":"Example2"}`, false},
		{"scalar missing", `{"source":"Example1"}`, `{"ct":1}`, false},
		{"number equal", `{"ct":3}`, `{"ct":3.0}`, true},
		{"number differs", `{"ct":3}`, `{"ct":4}`, false},
		{"bool", `{"ok":true}`, `{"ok":true}`, true},
		{"bool vs string", `{"ok":true}`, `{"ok":"true"}`, false},
		{"null", `{"x":null}`, `{"x":null}`, true},
		{"null vs missing", `{"x":null}`, `{}`, false},
		{"all keys must hold", `{"a":1,"b":2}`, `{"a":1,"b":3}`, false},
		{"nested map", `{"h":{"os":"linux","n":{"x":1}}}`, `{"h":{"os":"linux","n":{"x":1,"y":2},"z":0}}`, true},
		{"nested map differs deep", `{"h":{"n":{"x":1}}}`, `{"h":{"n":{"x":2}}}`, false},
		{"nested map vs scalar", `{"h":{"os":"linux"}}`, `{"h":"linux"}`, false},
		{"array contains scalar", `{"tags":"b"}`, `{"tags":["a","b"]}`, true},
		{"array lacks scalar", `{"tags":"c"}`, `{"tags":["a","b"]}`, false},
		{"array contains number", `{"ns":2}`, `{"ns":[1,2.0]}`, true},
		{"array pattern equals", `{"tags":["a","b"]}`, `{"tags":["a","b"]}`, true},
		{"array pattern order", `{"tags":["a","b"]}`, `{"tags":["b","a"]}`, false},
		{"$re", `{"host":{"$re":"^web\\d+$"}}`, `{"host":"web12"}`, true},
		{"$re no match", `{"host":{"$re":"^web\\d+$"}}`, `{"host":"db1"}`, false},
		{"$re on number", `{"ct":{"$re":"^4\\d$"}}`, `{"ct":42}`, true},
		{"$re on a large number is decimal", `{"ct":{"$re":"^1000000$"}}`, `{"ct":1000000}`, true},
		{"$re on array element", `{"tags":{"$re":"^prod"}}`, `{"tags":["x","production"]}`, true},
		{"$re missing", `{"host":{"$re":"."}}`, `{}`, false},
		{"$re on object", `{"host":{"$re":"."}}`, `{"host":{"a":1}}`, false},
		{"$exists true", `{"ct":{"$exists":true}}`, `{"ct":0}`, true},
		{"$exists true missing", `{"ct":{"$exists":true}}`, `{}`, false},
		{"$exists false", `{"ct":{"$exists":false}}`, `{}`, true},
		{"$exists false present", `{"ct":{"$exists":false}}`, `{"ct":null}`, false},
		{"$in", `{"lvl":{"$in":["warn","error"]}}`, `{"lvl":"error"}`, true},
		{"$in not", `{"lvl":{"$in":["warn","error"]}}`, `{"lvl":"info"}`, false},
		{"$in numbers", `{"n":{"$in":[1,2]}}`, `{"n":2.0}`, true},
		{"$in array value", `{"tags":{"$in":["a","z"]}}`, `{"tags":["y","z"]}`, true},
		{"$in missing", `{"lvl":{"$in":["warn"]}}`, `{}`, false},
		{"$ne", `{"lvl":{"$ne":"debug"}}`, `{"lvl":"info"}`, true},
		{"$ne equal", `{"lvl":{"$ne":"debug"}}`, `{"lvl":"debug"}`, false},
		{"$ne missing", `{"lvl":{"$ne":"debug"}}`, `{}`, true},
		{"$ne array holding it", `{"tags":{"$ne":"x"}}`, `{"tags":["x","y"]}`, false},
		{"$ne array without it", `{"tags":{"$ne":"x"}}`, `{"tags":["y"]}`, true},
		{"$gt", `{"ct":{"$gt":5}}`, `{"ct":6}`, true},
		{"$gt equal", `{"ct":{"$gt":5}}`, `{"ct":5}`, false},
		{"$gte equal", `{"ct":{"$gte":5}}`, `{"ct":5}`, true},
		{"$lt", `{"ct":{"$lt":5}}`, `{"ct":4.5}`, true},
		{"$lt not", `{"ct":{"$lt":5}}`, `{"ct":5}`, false},
		{"$lte equal", `{"ct":{"$lte":5}}`, `{"ct":5}`, true},
		{"$gt on string", `{"v":{"$gt":"b"}}`, `{"v":"c"}`, true},
		{"$gt mixed types", `{"v":{"$gt":1}}`, `{"v":"2"}`, false},
		{"$gt missing", `{"v":{"$gt":1}}`, `{}`, false},
		{"range", `{"ct":{"$gte":10,"$lt":20}}`, `{"ct":15}`, true},
		{"range out", `{"ct":{"$gte":10,"$lt":20}}`, `{"ct":20}`, false},
		{"operator inside nested", `{"h":{"load":{"$gt":2}}}`, `{"h":{"load":3}}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Compile(obj(t, tt.pattern))
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Match(obj(t, tt.msg)); got != tt.want {
				t.Fatalf("pattern %s on %s: got %v, want %v", tt.pattern, tt.msg, got, tt.want)
			}
		})
	}
}

func TestMatchGoNumbers(t *testing.T) {
	t.Parallel()
	m, _ := Compile(map[string]any{"ct": map[string]any{"$gt": 2}})
	if !m.Match(map[string]any{"ct": int64(3)}) || m.Match(map[string]any{"ct": uint8(1)}) {
		t.Fatal("numbers from Go code must compare by value")
	}
}

func TestCompileErrors(t *testing.T) {
	t.Parallel()
	for _, p := range []string{
		`{"a":{"$re":"("}}`,
		`{"a":{"$re":1}}`,
		`{"a":{"$exists":"yes"}}`,
		`{"a":{"$in":"x"}}`,
		`{"a":{"$gt":true}}`,
		`{"a":{"$near":1}}`,
		`{"a":{"$re":"x","b":1}}`,
	} {
		if _, err := Compile(obj(t, p)); !errors.Is(err, ErrBadPattern) {
			t.Errorf("%s: got %v, want ErrBadPattern", p, err)
		}
	}
}

func TestTransform(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, transform, msg, want string
	}{
		{"set", `{"a":1,"b":"x"}`, `{"a":0,"c":true}`, `{"a":1,"b":"x","c":true}`},
		{"merge nested", `{"h":{"b":2}}`, `{"h":{"a":1}}`, `{"h":{"a":1,"b":2}}`},
		{"create nested", `{"h":{"b":2}}`, `{}`, `{"h":{"b":2}}`},
		{"replace scalar by object", `{"h":{"b":2}}`, `{"h":5}`, `{"h":{"b":2}}`},
		{"copy field", `{"dst":{"$copy":"src"}}`, `{"src":"v"}`, `{"src":"v","dst":"v"}`},
		{"copy nested path", `{"host":{"$copy":"meta.host"}}`, `{"meta":{"host":"w1"}}`, `{"meta":{"host":"w1"},"host":"w1"}`},
		{"copy into nested", `{"out":{"ct":{"$copy":"ct"}}}`, `{"ct":3}`, `{"ct":3,"out":{"ct":3}}`},
		{"copy a dot-prefixed key", `{"ts":{"$copy":".ipc_transit_meta.send_ts"}}`, `{".ipc_transit_meta":{"send_ts":5}}`, `{".ipc_transit_meta":{"send_ts":5},"ts":5}`},
		{"copy missing sets nothing", `{"dst":{"$copy":"nope"}}`, `{"a":1}`, `{"a":1}`},
		{"copy reads before sets", `{"a":{"$copy":"b"},"b":"new"}`, `{"b":"old"}`, `{"a":"old","b":"new"}`},
		{"set array", `{"tags":["x"]}`, `{}`, `{"tags":["x"]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := CompileTransform(obj(t, tt.transform))
			if err != nil {
				t.Fatal(err)
			}
			msg := obj(t, tt.msg)
			tr.Apply(msg)
			if want := obj(t, tt.want); !reflect.DeepEqual(msg, want) {
				t.Fatalf("got %v, want %v", msg, want)
			}
		})
	}
	for _, bad := range []string{`{"$x":1}`, `{"a":{"$copy":1}}`, `{"a":{"$copy":"b","c":1}}`} {
		if _, err := CompileTransform(obj(t, bad)); !errors.Is(err, ErrBadTransform) {
			t.Errorf("%s: got %v, want ErrBadTransform", bad, err)
		}
	}
}

func TestTransformDoesNotShareConfig(t *testing.T) {
	t.Parallel()
	tr, _ := CompileTransform(obj(t, `{"tags":["a"]}`))
	m1, m2 := map[string]any{}, map[string]any{}
	tr.Apply(m1)
	tr.Apply(m2)
	m1["tags"].([]any)[0] = "changed"
	if m2["tags"].([]any)[0] != "a" {
		t.Fatal("two messages share the transform's array")
	}
}
