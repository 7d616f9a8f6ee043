package router

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/runtime"
)

// obj parses JSON so that table entries look like the messages users send.
func obj(t *testing.T, s string) map[string]any { return testenv.Object(t, s) }

// routed runs one message through a Router configured with routes and
// returns what it sent, as "queue:json" lines.
func routed(t *testing.T, routes, msg string) ([]string, *mmtest.Harness) {
	t.Helper()
	h := mmtest.New(t, "Router", New(), mmtest.Config(obj(t, `{"routes":`+routes+`}`)))
	if err := h.Message(obj(t, msg)); err != nil {
		t.Fatalf("Message: %v", err)
	}
	var out []string
	for _, s := range h.Sent {
		b, _ := json.Marshal(s.Msg)
		out = append(out, s.Queue+":"+string(b))
	}
	return out, h
}

func TestRouting(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, routes, msg string
		want              []string
	}{
		{"seed example",
			`[{"match":{"source":"Example1"},"forwards":[{"qname":"Example2"}]}]`,
			`{"source":"Example1","ct":1}`,
			[]string{`Example2:{"ct":1,"source":"Example1"}`}},
		{"no match",
			`[{"match":{"source":"Example1"},"forwards":[{"qname":"Example2"}]}]`,
			`{"source":"Other"}`, nil},
		{"every route in order",
			`[{"match":{},"forwards":[{"qname":"A"}]},{"match":{"x":1},"forwards":[{"qname":"B"},{"qname":"C"}]}]`,
			`{"x":1}`,
			[]string{`A:{"x":1}`, `B:{"x":1}`, `C:{"x":1}`}},
		{"short_circuit stops",
			`[{"match":{"x":1},"forwards":[{"qname":"A"}],"short_circuit":true},{"match":{},"forwards":[{"qname":"B"}]}]`,
			`{"x":1}`,
			[]string{`A:{"x":1}`}},
		{"short_circuit only when matched",
			`[{"match":{"x":2},"forwards":[{"qname":"A"}],"short_circuit":true},{"match":{},"forwards":[{"qname":"B"}]}]`,
			`{"x":1}`,
			[]string{`B:{"x":1}`}},
		{"transform before its forwards, after earlier ones",
			`[{"match":{},"forwards":[{"qname":"Raw"}]},{"match":{"x":1},"transform":{"y":{"$copy":"x"},"tag":"t"},"forwards":[{"qname":"Cooked"}]}]`,
			`{"x":1}`,
			[]string{`Raw:{"x":1}`, `Cooked:{"tag":"t","x":1,"y":1}`}},
		{"later routes see the transform",
			`[{"match":{},"transform":{"lvl":"high"}},{"match":{"lvl":"high"},"forwards":[{"qname":"Pager"}]}]`,
			`{}`,
			[]string{`Pager:{"lvl":"high"}`}},
		{"static_forwards skip routes",
			`[{"match":{},"forwards":[{"qname":"Routed"}]}]`,
			`{"a":1,"static_forwards":[[{"forward":{"qname":"S1"}},{"forward":{"qname":"S2"},"transform":{"b":2}}],[{"forward":{"qname":"Next"}}]]}`,
			[]string{`S1:{"a":1,"static_forwards":[[{"forward":{"qname":"Next"}}]]}`,
				`S2:{"a":1,"b":2,"static_forwards":[[{"forward":{"qname":"Next"}}]]}`}},
		{"static_forwards last hop removes the itinerary and logs history",
			`[]`,
			`{"a":1,"static_forwards":[[{"forward":{"qname":"Last"},"log_history":true}]]}`,
			[]string{`Last:{".static_forwards_log":{"forward_history":[{"forward":{"qname":"Last"},"log_history":true}]},"a":1}`}},
		{"empty static_forwards routes normally",
			`[{"match":{},"forwards":[{"qname":"Routed"}]}]`,
			`{"static_forwards":[]}`,
			[]string{`Routed:{"static_forwards":[]}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _ := routed(t, tt.routes, tt.msg)
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Fatalf("sent:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestForwardsGetTheirOwnCopy(t *testing.T) {
	t.Parallel()
	h := mmtest.New(t, "Router", New(), mmtest.Config(obj(t,
		`{"routes":[{"match":{},"forwards":[{"qname":"A"},{"qname":"B"}]}]}`)))
	h.Message(obj(t, `{"n":{"x":1}}`))
	h.Sent[0].Msg["n"].(map[string]any)["x"] = 99
	if h.Sent[1].Msg["n"].(map[string]any)["x"] != 1.0 {
		t.Fatal("two forwards share one message")
	}
}

func TestUnroutedIsCountedAtDebug(t *testing.T) {
	t.Parallel()
	_, h := routed(t, `[{"match":{"x":1},"forwards":[{"qname":"A"}]}]`, `{"x":2}`)
	h.Message(obj(t, `{"x":3}`))
	if len(h.Debugs) != 2 || h.Debugs[1].Msg != "unrouted message" || h.Debugs[1].KV["unrouted_total"] != uint64(2) {
		t.Fatalf("debug records %+v", h.Debugs)
	}
	// Out-of-band records sent to the Router are never reported again.
	h.Message(runtime.Message{runtime.OOBMarker: true})
	if len(h.Debugs) != 2 {
		t.Fatal("an out-of-band record was reported, which loops with debug:router")
	}
}

func TestBadStaticForwardsIsAnError(t *testing.T) {
	t.Parallel()
	h := mmtest.New(t, "Router", New())
	for _, m := range []string{
		`{"static_forwards":"Q"}`,
		`{"static_forwards":["notalist"]}`,
		`{"static_forwards":[[{"forward":"x"}]]}`,
		`{"static_forwards":[[{"forward":{"qname":"Q"},"transform":{"$bad":1}}]]}`,
	} {
		if err := h.Message(obj(t, m)); !errors.Is(err, ErrBadStaticForwards) {
			t.Errorf("%s: got %v", m, err)
		}
	}
}

func TestSetConfigErrorsKeepOldRoutes(t *testing.T) {
	t.Parallel()
	h := mmtest.New(t, "Router", New(), mmtest.Config(obj(t,
		`{"routes":[{"match":{},"forwards":[{"qname":"A"}]}]}`)))
	for _, bad := range []string{
		`{"routes":{}}`,
		`{"routes":[{"forwards":[{"qname":"A"}]}]}`,
		`{"routes":[{"match":{"a":{"$re":"("}}}]}`,
		`{"routes":[{"match":{},"forwards":[{"queue":"A"}]}]}`,
		`{"routes":[{"match":{},"short_circuit":"yes"}]}`,
		`{"routes":[{"match":{},"extra":1}]}`,
		`{"rules":[]}`,
	} {
		if err := h.Configure(obj(t, bad)); !errors.Is(err, ErrBadConfig) {
			t.Errorf("%s: got %v, want ErrBadConfig", bad, err)
		}
	}
	h.Message(obj(t, `{}`))
	if len(h.Sent) != 1 || h.Sent[0].Queue != "A" {
		t.Fatalf("old routes lost: %+v", h.Sent)
	}
}

func TestOutOfBandRecordsNeverFail(t *testing.T) {
	t.Parallel()
	h := mmtest.New(t, "Router", New(), mmtest.Config(obj(t,
		`{"routes":[{"match":{},"forwards":[{"qname":"A"}]}]}`)))
	h.SendErr = errors.New("no such queue")
	if err := h.Message(obj(t, `{"x":1}`)); err == nil {
		t.Fatal("a failed forward must be an error")
	}
	if err := h.Message(runtime.Message{runtime.OOBMarker: true, "msg": "x"}); err != nil {
		t.Fatalf("a failed forward of an out-of-band record returned %v: with -o error:router it would loop", err)
	}
}

// FuzzRouter feeds the Router any routes and any message: a config that
// CheckConfig accepts must also be accepted by SetConfig, and no message
// may make it panic.
func FuzzRouter(f *testing.F) {
	f.Add(`[{"match":{"source":"Example1"},"forwards":[{"qname":"Example2"}]}]`, `{"source":"Example1","ct":1}`)
	f.Add(`[{"match":{"x":{"$gt":1,"$lt":5}},"transform":{"y":{"$copy":"x.z"}},"forwards":[{"qname":"A"}]}]`, `{"x":3}`)
	f.Add(`[{"match":{"a":{"$re":"^b+$"},"n":[1,2]},"short_circuit":true,"forwards":[{"qname":"B"}]}]`, `{"a":"bbb","n":[1,2]}`)
	f.Add(`[{"match":{"x":{"$exists":false}},"transform":{"x":{"$copy":""}},"forwards":[{"qname":"C"}]}]`, `{}`)
	f.Fuzz(func(t *testing.T, routes, msg string) {
		var cfg map[string]any
		if json.Unmarshal([]byte(`{"routes":`+routes+`}`), &cfg) != nil || CheckConfig(cfg) != nil {
			return
		}
		var m map[string]any
		if json.Unmarshal([]byte(msg), &m) != nil || m == nil {
			return
		}
		h := mmtest.New(t, "Router", New(), mmtest.Config(cfg)) // fails the test if SetConfig refuses
		if err := h.Message(m); errors.Is(err, mmtest.ErrPanic) {
			t.Fatalf("routes %s, message %s: %v", routes, msg, err)
		}
	})
}

// Errors in a route's match or transform say what is allowed on one line:
// the deep ones from CheckConfig (at their path), the top-level ones that
// router.cue refuses from ExplainConfig.
func TestConfigErrorsSayWhatIsAllowed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		routes string   // for CheckConfig; "" for an ExplainConfig case
		path   []string // for ExplainConfig
		path2  string   // CheckConfig's path for the error
		want   []string
	}{
		{name: "operator typo in a field", routes: `[{"match": {"size": {"$gtt": 5}}}]`, path2: "routes.0.match.size",
			want: []string{"unknown operator $gtt (want $re, $exists, $in, $ne, $gt, $gte, $lt, $lte)"}},
		{name: "operator of the wrong type", routes: `[{"match": {"a": {"$re": 5}}}]`, path2: "routes.0.match.a.$re",
			want: []string{"$re does not take float64"}},
		{name: "operator typo at the top", path: []string{"routes", "0", "match", "$gtt"},
			want: []string{"unknown operator $gtt (want $re,", "operators go in a field's object: {size: {$gt: 5}}"}},
		{name: "known operator at the top", path: []string{"routes", "3", "match", "$in"},
			want: []string{"operator $in where a field name belongs", "{size: {$in: ...}}"}},
		{name: "$copy at the top of a transform", path: []string{"routes", "0", "transform", "$copy"},
			want: []string{"$copy where a field name belongs", `{to: {$copy: "from.path"}}`}},
		{name: "plain field refused elsewhere", path: []string{"routes", "0", "forwardz"}},
		{name: "not under a route", path: []string{"$gtt"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var msg string
			if tt.routes != "" {
				err := CheckConfig(obj(t, `{"routes":`+tt.routes+`}`))
				var ce *ConfigError
				if !errors.As(err, &ce) || strings.Join(ce.Path, ".") != tt.path2 {
					t.Fatalf("CheckConfig: %v, want a ConfigError at %s", err, tt.path2)
				}
				msg = ce.Err.Error()
			} else {
				msg = ExplainConfig(tt.path)
			}
			if strings.Contains(msg, "\n") || (len(tt.want) == 0) != (msg == "") {
				t.Fatalf("got %q", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Fatalf("%q lacks %q", msg, w)
				}
			}
		})
	}
}
