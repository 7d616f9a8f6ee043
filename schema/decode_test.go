package schema_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	mm "github.com/multimodule/multimodule"
	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/schema"
)

// decodeCases are configs beyond the repository's own that the walk must
// decode exactly as CUE's JSON export does (or leave to it).
var decodeCases = map[string]string{
	"seed": seed,
	"edge": `
tasks: "my-task": {}
tasks: Router: config: routes: [
	{match: {x: {}}, transform: {a: {}}},
	{match: {x: {$exists: true}}, transform: {b: {$copy: "x"}}},
]
`,
	"limits": `
tasks: E: limits: {memory: {warn: 0.05, failsafe: "200MiB"}, cpu: severe: 1.5, queue_fill: warn: 0.5}
daemon: {limits: fds: warn: 10, sample_every: 0.25, max_queues: 50}
`,
	"across": `_greeting: "howdy"
tasks: A: config: outstr: _greeting
tasks: B: {kind: "Counter", intervals: {tick: 0.5, save_state: 2}}
`,
	"numbers": `tasks: N: config: {
	i: 1, f: 1.0, e: 1e3, big: 9007199254740993, huge: 123456789012345678901234567890,
	tiny: 1e-300, neg: -2.5, z: 0, fz: 0.0, nz: -0, nfz: -0.0, third: 0.3333333333333333333333,
	l: [1, 2.5, [3, [4]], {a: 5}], hex: 0xff, under: 1_000_000, si: 2Ki
}`,
	"values": `tasks: V: {
	external: true, disabled: true
	config: {s: "héllo \"x\" <&> \u2028 ` + "`" + `", t: true, f: false, n: null, empty: {}, el: [], nested: {a: {b: {c: [null, "x", {}]}}},
		"quoted key": 1, "$op": {"$gt": 3}, def: *"d" | string, _hidden: 1, #Def: 2, opt?: 3, sum: 1 + 2, ref: s}
	intervals: {save_state: 1, tick: 0.001, year: 31536000}
	restart: {initial: 0.5, max: 120, hold_after: 10}
	limits: {memory: {warn: 1, severe: "1.5GB", failsafe: "4096B"}, fds: {warn: 100, severe: 200, failsafe: 300}, restarts: failsafe: 3, messages_in: warn: 1e3}
}`,
	"bytes": "tasks: B: config: {b: 'a\\x00b', s: \"x\"}\ntasks: C: {}\n",
	// Structs with no regular fields, found without listing them, and
	// ones with only hidden fields, definitions or optional fields.
	"emptyish": `tasks: {
	E: {config: {}, intervals: {}, limits: {}}
	H: {config: {_h: 1, #D: 2, o?: 3, n: {_x: 1}}, intervals: {_t: 1}, limits: {cpu?: warn: 1}}
	O: {config: {o?: 1, l: [{}, {o?: 2}]}, limits: {fds: {warn: 1, severe?: 2}}}
}`,
	"kinds": `tasks: {
	R: {kind: "builtin.Router", config: routes: [{match: {a: {$re: "^x"}, n: {$gt: 1, $lt: 9.5}}, forwards: [{qname: "X"}], short_circuit: true}]}
	S: {kind: "Scheduler", config: schedules: [{name: "a", every: 1}, {name: "b", cron: "@hourly", message: {x: 1}, to: "R"}]}
	X: {kind: "Exec", config: {command: "/bin/cat", args: ["-u"], env: {A: "1"}, backoff: initial: 0.5}}
	"acme-1": {kind: "acme.Thing", config: {deep: [[[]]], x: *1 | 2}}
}`,
	// Tasks the files name only as plain labels are looked up by those
	// names; the others (listed) are added by a comprehension or a
	// reference, or are optional.
	"names":                "tasks: A: {}\ntasks: {\"b-1\": {}, C: config: x: 1, _h: 1}\ntasks: A: config: y: 2\n",
	"listed-comprehension": "tasks: A: {}\nfor n in [\"E\", \"F\"] {tasks: (n): {}}\n",
	"listed-reference":     "_more: {X: {}}\ntasks: _more\ntasks: Y: {}\n",
	"listed-optional":      "tasks: A: {}\ntasks: D?: {}\nfor n in [\"E\"] {tasks: (n): config: n: 1}\n",
}

// configSources are every CUE config of the repository: the examples',
// testdata's and the README's and docs' snippets.
func configSources(t *testing.T) map[string]string {
	t.Helper()
	srcs := map[string]string{}
	for name, src := range decodeCases {
		srcs[name] = src
	}
	for _, root := range []string{"../examples", "../testdata"} {
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && strings.HasSuffix(p, ".cue") {
				b, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				srcs[p] = string(b)
			}
			return nil
		})
	}
	docs, _ := filepath.Glob("../docs/*.md")
	fence := regexp.MustCompile("(?ms)^```cue\n(.*?)^```")
	for _, doc := range append([]string{"../README.md"}, docs...) {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for i, m := range fence.FindAllSubmatch(b, -1) {
			srcs[fmt.Sprintf("%s#%d", doc, i)] = string(m[1])
		}
	}
	var sb strings.Builder
	for n := range 200 { // enough for Load to decode them on several cores
		if n%2 == 0 {
			fmt.Fprintf(&sb, "tasks: T%04d: {kind: \"Router\", config: routes: [{match: {source: \"T%04d\", ct: {$gt: %d}}, forwards: [{qname: \"T%04d\"}]}]}\n", n, n+1, n, n+1)
		} else {
			fmt.Fprintf(&sb, "tasks: T%04d: {config: {outstr: \"task %d\", n: %d}, intervals: tick: 0.5}\n", n, n, n)
		}
	}
	srcs["bench"] = sb.String()
	return srcs
}

// The walk, and the reading of tasks written as plain literals, decode
// every config to the specs and hashes CUE's JSON export of the whole task
// gives, byte for byte, the walk without falling back to it.
func TestDecodeWalkMatchesJSON(t *testing.T) {
	s, err := mm.NewSchema()
	if err != nil {
		t.Fatal(err)
	}
	walk, viaJSON := s.WalkOnly(), s.ViaJSON()
	tasks, literals := 0, int64(0)
	for name, src := range configSources(t) {
		dir := testenv.WriteFiles(t, map[string]string{"c.cue": src})
		want, werr := viaJSON.Load(dir)
		if werr != nil {
			t.Errorf("%s: %v", name, werr) // every case is a valid config
			continue
		}
		before, listedBefore, literalsBefore := walk.FellBack(), walk.Listed(), s.FromFiles()
		for way, sc := range map[string]*schema.Schema{"walk": walk, "literal": s} {
			got, err := sc.Load(dir)
			if err != nil {
				t.Errorf("%s: %s: %v", name, way, err)
				continue
			}
			if len(got.Tasks) != len(want.Tasks) {
				t.Errorf("%s: %s: %d tasks, want %d", name, way, len(got.Tasks), len(want.Tasks))
			}
			for n, w := range want.Tasks {
				tasks++
				g := got.Tasks[n]
				gj, _ := json.Marshal(g)
				wj, _ := json.Marshal(w)
				if g.Hash != w.Hash || !bytes.Equal(gj, wj) || !reflect.DeepEqual(g, w) {
					t.Errorf("%s: task %s:\n%s %s %s\njson %s %s", name, n, way, g.Hash, gj, w.Hash, wj)
				}
			}
		}
		literals += s.FromFiles() - literalsBefore
		// The repository's own configs may be written either way.
		if _, own := decodeCases[name]; own {
			if listed, want := walk.Listed()-listedBefore, map[bool]int64{true: 1}[strings.HasPrefix(name, "listed-")]; listed != want {
				t.Errorf("%s: tasks listed in %d loads, want %d", name, listed, want)
			}
		}
		fell := walk.FellBack() - before
		if fell != 0 {
			t.Errorf("%s: %d tasks decoded the JSON way, want none", name, fell)
		}
	}
	if tasks < 120 || literals < 200 {
		t.Fatalf("compared %d tasks, %d read from their files: the configs were not found", tasks, literals)
	}
}
