package multimodule

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/internal/testenv"
)

// fence is one fenced code block of a Markdown file.
type fence struct {
	lang, text, where string
}

var fenceRE = regexp.MustCompile("(?ms)^```(\\w*)\\n(.*?)^```")

func fences(t *testing.T, files ...string) []fence {
	t.Helper()
	var out []fence
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range fenceRE.FindAllSubmatchIndex(b, -1) {
			line := 1 + strings.Count(string(b[:m[0]]), "\n")
			out = append(out, fence{lang: string(b[m[2]:m[3]]), text: string(b[m[4]:m[5]]), where: f + ":" + strconv.Itoa(line)})
		}
	}
	return out
}

// Every Go snippet of the README and docs compiles, vets and passes its
// tests as the user's own module, made with the README's own go mod
// commands against this checkout; every CUE snippet passes mmctl vet.
func TestReadmeSnippetsCompileAndVet(t *testing.T) {
	t.Parallel()
	mmctl := buildCmd(t, "./cmd/mmctl")
	docs, _ := filepath.Glob("docs/*.md")
	all := fences(t, append([]string{"README.md"}, docs...)...)
	checkout, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	mod := t.TempDir()
	goFiles, cueBlocks := 0, 0
	for _, f := range all {
		switch f.lang {
		case "go":
			first, _, _ := strings.Cut(f.text, "\n")
			name, ok := strings.CutPrefix(first, "// ")
			if !ok || !strings.HasSuffix(name, ".go") || strings.Contains(name, "/") {
				t.Errorf("%s: a Go snippet must start with its file name (// main.go), got %q", f.where, first)
				continue
			}
			if err := os.WriteFile(filepath.Join(mod, name), []byte(f.text), 0o600); err != nil {
				t.Fatal(err)
			}
			goFiles++
		case "cue":
			dir := testenv.WriteFiles(t, map[string]string{"snippet.cue": f.text})
			if out, err := exec.Command(mmctl, "vet", "-c", dir).CombinedOutput(); err != nil {
				t.Errorf("%s: mmctl vet: %v\n%s\n%s", f.where, err, out, f.text)
			}
			cueBlocks++
		case "sh":
			// The README's go mod commands, run as written (against this
			// checkout rather than ../multimodule).
			for _, line := range strings.Split(f.text, "\n") {
				if !strings.HasPrefix(line, "go mod init ") && !strings.HasPrefix(line, "go mod edit ") {
					continue
				}
				line = strings.ReplaceAll(line, "=../multimodule", "="+checkout)
				cmd := exec.Command("sh", "-c", line)
				cmd.Dir = mod
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("%s: %s: %v\n%s", f.where, line, err, out)
				}
			}
		}
	}
	if goFiles < 2 || cueBlocks < 2 {
		t.Fatalf("found %d Go and %d CUE snippets: the extraction is broken", goFiles, cueBlocks)
	}
	if _, err := os.Stat(filepath.Join(mod, "go.mod")); err != nil {
		t.Fatal("the README's go mod commands made no go.mod")
	}
	for _, argv := range [][]string{{"mod", "tidy"}, {"vet", "./..."}, {"test", "-count=1", "./..."}, {"build", "-o", "mydaemon", "."}} {
		cmd := exec.Command("go", argv...)
		cmd.Dir = mod
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s in the README's module: %v\n%s", strings.Join(argv, " "), err, out)
		}
	}
	out, err := exec.Command(filepath.Join(mod, "mydaemon"), "--version").Output()
	if err != nil || !strings.Contains(string(out), "github.com/multimodule/multimodule") || !strings.Contains(string(out), "replaced by") {
		t.Fatalf("the README's daemon --version: %v: %s", err, out)
	}
}

// Every config example in the README runs on the binary the README names
// for it: the seed example's on multimodule-counter (-p examples), the
// built-in tasks' on the stock multimodule. One that names a kind of the
// user's own (the README says so) is only vetted, above.
func TestReadmeConfigsRunOnTheirBinaries(t *testing.T) {
	t.Parallel()
	stock := buildCmd(t, "./cmd/multimodule")
	counter := buildCmd(t, "./examples/counter")
	builtin := regexp.MustCompile(`kind: "(Exec|FollowTail|Scheduler|Runner|HTTPClient|Router)"`)
	anyKind := regexp.MustCompile(`kind: "`)
	ran := 0
	for _, f := range fences(t, "README.md") {
		if f.lang != "cue" {
			continue
		}
		var argv []string
		switch {
		case strings.Contains(f.text, "Example1"):
			argv = []string{counter, "-p", "examples"}
		case builtin.MatchString(f.text) || !anyKind.MatchString(f.text) && strings.Contains(f.text, "Router"):
			argv = []string{stock}
		default:
			t.Logf("%s: a kind of the user's own: vetted only", f.where)
			continue
		}
		dir := testenv.WriteFiles(t, map[string]string{"snippet.cue": f.text})
		p := startProc(t, argv[0], append(argv[1:], "-c", dir, "-s", t.TempDir(), "-T", testenv.TransitDir(t), "-o", "log:2")...)
		testenv.WaitFor(t, 20*time.Second, f.where+" running on "+filepath.Base(argv[0]), func() bool {
			return strings.Contains(p.output(), "multimodule running")
		})
		p.cmd.Process.Signal(syscall.SIGTERM)
		if err := p.wait(t); err != nil {
			t.Errorf("%s on %s: exit %v\n%s", f.where, filepath.Base(argv[0]), err, p.output())
		}
		ran++
	}
	if ran < 3 {
		t.Fatalf("ran %d README configs: the extraction is broken", ran)
	}
}
