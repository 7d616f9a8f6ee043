package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	mm "github.com/multimodule/multimodule"
	"github.com/multimodule/multimodule/internal/control"
	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/reconcile"
	"github.com/multimodule/multimodule/schema"
)

const routers = `
tasks: R1: {kind: "Router", config: routes: [{match: {}, forwards: [{qname: "out"}]}]}
tasks: R2: kind: "Router"
`

func TestVetPointsAtTheLine(t *testing.T) {
	t.Parallel()
	good := testenv.WriteFiles(t, map[string]string{"a.cue": routers})
	if code, out, errs := mmctl(t, testenv.TransitDir(t), "", "vet", "-c", good); code != 0 || !strings.Contains(out, "ok: 2 tasks in 1 files") {
		t.Fatalf("vet of a good dir: exit %d: %s %s", code, out, errs)
	}
	bad := testenv.WriteFiles(t, map[string]string{"a.cue": routers, "bad.cue": "tasks: X: {\n\tdisabled: 3\n}\n"})
	code, _, errs := mmctl(t, testenv.TransitDir(t), "", "vet", "-c", bad)
	if code != 1 || !strings.Contains(errs, filepath.Join(bad, "bad.cue")+":2:12: tasks.X.disabled") {
		t.Fatalf("vet of a wrong type: exit %d, stderr %s", code, errs)
	}
}

// A written schema that is not this mmctl's (written by an older one) is
// what the stock cue vet checks against: vet says so, and still checks.
func TestVetWarnsOfAStaleWrittenSchema(t *testing.T) {
	t.Parallel()
	dir := testenv.WriteFiles(t, map[string]string{"a.cue": routers})
	transit := testenv.TransitDir(t)
	if code, _, errs := mmctl(t, transit, "", "schema", "--write", dir); code != 0 {
		t.Fatal(errs)
	}
	if code, _, errs := mmctl(t, transit, "", "vet", "-c", dir); code != 0 || errs != "" {
		t.Fatalf("vet beside a fresh schema: exit %d, stderr %q", code, errs)
	}
	path := filepath.Join(dir, schema.SchemaFile)
	if err := os.WriteFile(path, []byte("// an older schema\n#Config: {...}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := mmctl(t, transit, "", "vet", "-c", dir)
	if code != 0 || !strings.Contains(out, "ok: 2 tasks") || !strings.Contains(errs, path+" is not this mmctl's schema") || !strings.Contains(errs, "mmctl schema --write "+dir) {
		t.Fatalf("vet beside a stale schema: exit %d, stdout %q, stderr %q", code, out, errs)
	}
}

func buildDaemon(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the daemon")
	}
	bin := filepath.Join(t.TempDir(), "multimodule")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/multimodule/multimodule/cmd/multimodule").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func TestDiffExitCodes(t *testing.T) {
	t.Parallel()
	bin := buildDaemon(t)
	dir := testenv.TransitDir(t)
	applied := testenv.WriteFiles(t, map[string]string{"a.cue": routers})

	// Without a daemon, against nothing.
	code, out, errs := mmctl(t, dir, "", "diff", "-c", applied)
	if code != 1 || out != "+ start R1 (internal)\n+ start R2 (internal)\n" {
		t.Fatalf("diff without a daemon: exit %d\n%s%s", code, out, errs)
	}

	d := exec.Command(bin, "-c", applied, "-s", t.TempDir(), "-T", dir)
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Process.Signal(syscall.SIGTERM); d.Wait() })
	testenv.WaitFor(t, 10*time.Second, "the daemon to answer", func() bool {
		code, _, _ := mmctl(t, dir, "", "status", "--reply-timeout", "200ms")
		return code == 0
	})

	if code, out, errs := mmctl(t, dir, "", "diff", "-c", applied); code != 0 || out != "" {
		t.Fatalf("diff of the applied dir: exit %d\n%s%s", code, out, errs)
	}
	changed := testenv.WriteFiles(t, map[string]string{"a.cue": `
tasks: R1: {kind: "Router", config: routes: []}
tasks: R3: kind: "Router"
`})
	code, out, errs = mmctl(t, dir, "", "diff", "-c", changed)
	want := "- stop R2 (removed from the config)\n~ reconfigure R1\n+ start R3 (internal)\n"
	var actions strings.Builder
	for _, l := range strings.SplitAfter(out, "\n") {
		if !strings.HasPrefix(l, "    ") { // the spec's unified diff under ~ reconfigure
			actions.WriteString(l)
		}
	}
	if code != 1 || actions.String() != want || !strings.Contains(out, "    +++ config/R1\n") {
		t.Fatalf("diff of a changed dir: exit %d\n%s%s\nwant\n%s", code, out, errs, want)
	}
	if code, _, errs := mmctl(t, dir, "", "diff", "-c", filepath.Join(t.TempDir(), "missing")); code != 2 || !strings.Contains(errs, "missing") {
		t.Fatalf("diff of an unreadable dir: exit %d: %s", code, errs)
	}
	broken := testenv.WriteFiles(t, map[string]string{"a.cue": "tasks: {\n"})
	if code, _, errs := mmctl(t, dir, "", "diff", "-c", broken); code != 2 || !strings.Contains(errs, "a.cue:") {
		t.Fatalf("diff of a broken dir: exit %d: %s", code, errs)
	}
	if code, out, _ := mmctl(t, dir, "", "apply", "--dry-run"); code != 0 || out != "no changes\n" {
		t.Fatalf("apply --dry-run on the applied dir: exit %d: %s", code, out)
	}
	if code, out, _ := mmctl(t, dir, "", "status"); code != 0 || !strings.Contains(out, "READY") || !strings.Contains(out, "R1") {
		t.Fatalf("status: exit %d: %s", code, out)
	}
}

// cueCLI builds the stock cue command at the version this module uses.
func cueCLI(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the cue CLI")
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "cuelang.org/go").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	version := strings.TrimSpace(string(out))
	gobin := t.TempDir()
	cmd := exec.Command("go", "install", "cuelang.org/go/cmd/cue@"+version)
	cmd.Env = append(os.Environ(), "GOBIN="+gobin, "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go install cue@%s: %v\n%s", version, err, out)
	}
	return filepath.Join(gobin, "cue")
}

func TestStockCueVetWithTheWrittenSchema(t *testing.T) {
	t.Parallel()
	cue := cueCLI(t)
	seed, err := os.ReadFile("../../examples/counter/config/example.cue")
	if err != nil {
		t.Fatal(err)
	}
	s, err := mm.NewSchema()
	if err != nil {
		t.Fatal(err)
	}
	// vet runs cue vet on the files; the daemon's loader must agree.
	vet := func(files map[string]string) (string, error) {
		dir := testenv.WriteFiles(t, files)
		if code, _, errs := mmctl(t, testenv.TransitDir(t), "", "schema", "--write", dir); code != 0 {
			t.Fatal(errs)
		}
		names, _ := filepath.Glob(filepath.Join(dir, "*.cue"))
		cmd := exec.Command(cue, append([]string{"vet", "-c"}, names...)...)
		out, err := cmd.CombinedOutput()
		if _, lerr := s.Load(dir); (lerr == nil) != (err == nil) {
			t.Errorf("cue vet says %v, the daemon %v, on %v", err, lerr, files)
		}
		return string(out), err
	}
	if out, err := vet(map[string]string{"example.cue": string(seed)}); err != nil {
		t.Fatalf("cue vet rejected the example: %v\n%s", err, out)
	}
	// cue vet refuses what the daemon refuses, closedness too: the written
	// schema is one more file of the package, so its top-level fields
	// must close what the other files add.
	for bad, want := range map[string]string{
		"tasks: Example1: external: \"yes\"\n": "tasks.Example1.external",
		"tasks: Example1: extrnal: true\n":     "tasks.Example1.extrnal: field not allowed",
		"task: Example3: {}\n":                 "task: field not allowed",
		"tasks: \"a/b\": {}\n":                 "field not allowed",
		"daemon: sample_everyy: 1\n":           "daemon.sample_everyy: field not allowed",
		// The schema's definitions are a let's: a config's own #Task is
		// another definition, not more fields for the schema's.
		"#Task: extrnal: bool\ntasks: Example1: extrnal: true\n": "tasks.Example1.extrnal: field not allowed",
	} {
		out, err := vet(map[string]string{"example.cue": string(seed), "bad.cue": bad})
		if err == nil || !strings.Contains(out, want) {
			t.Errorf("cue vet on %q: %v, want %q in\n%s", bad, err, want, out)
		}
	}
	// The daemon ignores the written schema file.
	if !schema.IsConfigFile("a.cue") || schema.IsConfigFile(schema.SchemaFile) {
		t.Fatal("the schema file would be loaded as config")
	}
}

// diff labels a hold as the daemon says it was taken: a failsafe is not
// a crash loop.
func TestDiffLabelsHolds(t *testing.T) {
	yes := true
	observed, held := observedFrom([]control.TaskStatus{
		{Name: "M", Status: "held",
			AppliedSpec:    control.AppliedSpec{AppliedHash: "h1", AppliedKind: "Hog", AppliedExternal: &yes},
			ReconcileState: control.ReconcileState{HeldReason: control.HeldFailsafe, HoldMessage: "failsafe: memory 300MiB reached 200MiB"}},
		{Name: "C", Status: "held",
			ReconcileState: control.ReconcileState{HeldReason: control.HeldRetriesExhausted, HoldMessage: "+ start C (external): exit status 1"}},
		{Name: "R", Status: "running", AppliedSpec: control.AppliedSpec{AppliedHash: "h2", AppliedKind: "Router"}},
	})
	for name, want := range map[string]string{
		"M": "! held M (failsafe: memory 300MiB reached 200MiB)",
		"C": "! held C (retries exhausted: + start C (external): exit status 1)",
	} {
		if got := (reconcile.Held{Name: name, Reason: held[name]}).String(); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	if len(held) != 2 || !observed["M"].External || observed["R"].Hash != "h2" || len(observed) != 2 {
		t.Fatalf("observed %v, held %v", observed, held)
	}
}
