// Command benchreport runs the project's benchmarks (`make bench`) and
// writes BENCHMARKS.md: every figure next to the raw baseline measured in
// the same run, with the ratio. Each benchmark reports both as metrics;
// this program only runs them, takes the median over the runs and lays
// them out.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// run is one `go test` invocation, in dir (the project's root if empty).
type run struct {
	pkg, bench, benchtime string
	count                 int
	dir                   string
}

var runs = []run{
	{"./runtime/", "InProcessDelivery", "4000000x", 5, ""},
	{"./tasks/router/", "RouterHop", "1000000x", 5, ""},
	{"./tasks/exec/", "ExecCat", "50000x", 3, ""},
	{"./transit/", "Codec", "", 5, ""},
	{"./transit/", "CrossProcess|RoundTrip", "200000x", 3, ""},
	{".", "SendToExternalTask", "1x", 3, ""},
	{".", "ConfigEditToApplied", "1x", 3, ""},
	{"./reconcile/", "LoadAndPlan1000", "3x", 3, ""},
	{".", "ExternalSpawnToFirstMessage|ExternalKillToRecovered", "1x", 3, ""},
	{"./statestore/", "StateSave", "1000x", 3, ""},
	{"./monitor/", "Sampling100Externals", "1x", 3, ""},
	{"./runtime/", "Scale10000Tasks", "1x", 3, ""},
	{".", "Scale200Externals", "1x", 3, ""},
	{".", "Scale10000IdleTasks", "1x", 3, ""},
	{"./...", ".", "1000000x", 3, "bench/peers"},
}

// metric names one figure: the benchmark and the unit it reports it in.
type metric struct{ bench, unit string }

// figure is one row of the table.
type figure struct {
	section, name string
	ours, base    metric
	higherBetter  bool
	unit          string // as shown
	note          string
}

var figures = []figure{
	{"Delivery", "In-process delivery, task to task", metric{"InProcessDelivery", "mm-msgs/s"}, metric{"InProcessDelivery", "bare-msgs/s"}, true, "msgs/s", "baseline: a buffered Go channel carrying the same maps"},
	{"Delivery", "In-process delivery, at least once (each message in its lineage)", metric{"InProcessDelivery", "mm-acked-msgs/s"}, metric{"InProcessDelivery", "mm-msgs/s"}, true, "msgs/s", "baseline: the same path for messages in no lineage (born in a timer)"},
	{"Delivery", "Router hop (Example1 -> Router -> Sink)", metric{"RouterHop", "router-msgs/s"}, metric{"RouterHop", "direct-msgs/s"}, true, "msgs/s", "baseline: Example1 sending straight to Sink"},
	{"Delivery", "Exec task running cat-like Python (each message acked)", metric{"ExecCat", "exec-msgs/s"}, metric{"ExecCat", "bare-pipe-msgs/s"}, true, "msgs/s", "baseline: the same program fed by a bare pipe, pipelined"},
	{"Delivery", "Exec task running cat-like Python, vs one message at a time", metric{"ExecCat", "exec-msgs/s"}, metric{"ExecCat", "bare-lockstep-msgs/s"}, true, "msgs/s", "baseline: the same program on a bare pipe, write one and read its answer"},
	{"Delivery", "Message codec, encode + decode", metric{"Codec/transit", "ns/op"}, metric{"Codec/encoding-json", "ns/op"}, false, "ns", "baseline: encoding/json"},
	{"Delivery", "Cross-process, one message per send", metric{"CrossProcess", "mm-msgs/s"}, metric{"CrossProcess", "bare-msgs/s"}, true, "msgs/s", "baseline: bare msgsnd/msgrcv + encoding/json to a second process"},
	{"Delivery", "Cross-process, batches of 64", metric{"CrossProcess", "mm-batch64-msgs/s"}, metric{"CrossProcess", "bare-msgs/s"}, true, "msgs/s", "same baseline"},
	{"Delivery", "Cross-process round trip", metric{"RoundTrip", "mm-rtt-us"}, metric{"RoundTrip", "bare-rtt-us"}, false, "us", "baseline: bare msgsnd/msgrcv ping-pong"},
	{"Delivery", "A task's Send to an external task", metric{"SendToExternalTask", "mm-msgs/s"}, metric{"SendToExternalTask", "bare-msgs/s"}, true, "msgs/s", "baseline: bare msgsnd/msgrcv + encoding/json loop"},
	{"Config", "Config edit to applied, p50", metric{"ConfigEditToApplied", "edit-applied-p50-ms"}, metric{"ConfigEditToApplied", "bare-fsnotify-p50-ms"}, false, "ms", "50 ms debounce included; baseline: a bare fsnotify event"},
	{"Config", "Config edit to applied, p95", metric{"ConfigEditToApplied", "edit-applied-p95-ms"}, metric{"ConfigEditToApplied", "bare-fsnotify-p50-ms"}, false, "ms", "same baseline"},
	{"Config", "Load, check and plan 1,000 tasks in 100 files", metric{"LoadAndPlan1000", "load-plan-ms"}, metric{"LoadAndPlan1000", "bare-cue-ms"}, false, "ms", "baseline: bare CUE evaluation of the same files"},
	{"Processes", "Spawn an external to its first handled message", metric{"ExternalSpawnToFirstMessage", "spawn-to-first-msg-ms"}, metric{"ExternalSpawnToFirstMessage", "bare-exec-ms"}, false, "ms", "baseline: exec of the same binary printing its usage"},
	{"Processes", "kill -9 of an external to a message handled by its replacement", metric{"ExternalKillToRecovered", "kill-to-recovered-ms"}, metric{"ExternalSpawnToFirstMessage", "bare-exec-ms"}, false, "ms", "baseline: the same bare exec"},
	{"State", "State save (snapshot, checksum, prune, fsync)", metric{"StateSave", "save-us"}, metric{"StateSave", "bare-bbolt-us"}, false, "us", "baseline: a bare fsync'd bbolt update of the same JSON"},
	{"Monitoring", "Sampling 100 externals once a second", metric{"Sampling100Externals", "%core@1Hz"}, metric{"Sampling100Externals", "bare_%core@1Hz"}, false, "% of a core", "baseline: bare reads of the same /proc files"},
	{"Scale", "10,000 internal tasks: start", metric{"Scale10000Tasks", "start-ms"}, metric{"Scale10000Tasks", "bare-start-ms"}, false, "ms", "served from System V queues, made when first sent to from outside; baseline: 10,000 goroutines on channels"},
	{"Scale", "10,000 internal tasks: memory added", metric{"Scale10000Tasks", "rss-MiB"}, metric{"Scale10000Tasks", "bare-rss-MiB"}, false, "MiB", "same baseline"},
	{"Scale", "10,000 internal tasks: idle CPU", metric{"Scale10000Tasks", "idle-%core"}, metric{"Scale10000Tasks", "bare-idle-%core"}, false, "% of a core", "one read of the kernel's queue totals a second; same baseline"},
	{"Scale", "200 externals: start until all run", metric{"Scale200Externals", "start-all-ms"}, metric{"Scale200Externals", "bare-exec-all-ms"}, false, "ms", "baseline: 200 bare execs of the same binary"},
	{"Scale", "200 externals: daemon memory", metric{"Scale200Externals", "daemon-rss-MiB"}, metric{"Scale200Externals", "one-external-rss-MiB"}, false, "MiB", "baseline: one external process (the same binary hosting one task)"},
	{"Scale", "200 externals: daemon idle CPU (supervision, sampling, reports)", metric{"Scale200Externals", "daemon-idle-%core"}, metric{"Scale200Externals", "bare-proc-reads-%core@1Hz"}, false, "% of a core", "baseline: bare reads of the /proc files sampling needs, once a second"},
	{"Scale", "10,000 idle internal tasks: whole daemon idle CPU (sampling, monitoring)", metric{"Scale10000IdleTasks", "daemon-idle-%core"}, metric{"Scale10000IdleTasks", "idle-process-%core"}, false, "% of a core", "the daemon binary as top shows it; baseline: an idle Go process over the same seconds"},
	{"Peers", "One-to-one throughput vs protoactor-go", metric{"OneToOne/multimodule", "msgs/s"}, metric{"OneToOne/protoactor", "msgs/s"}, true, "msgs/s", "baseline: asynkron/protoactor-go, local actors, the same maps"},
	{"Peers", "Ping-pong round trip vs protoactor-go", metric{"PingPong/multimodule", "ns/roundtrip"}, metric{"PingPong/protoactor", "ns/roundtrip"}, false, "ns", "same"},
	{"Peers", "Fan-out over 1,000 actors vs protoactor-go", metric{"FanOut1000/multimodule", "msgs/s"}, metric{"FanOut1000/protoactor", "msgs/s"}, true, "msgs/s", "same"},
	{"Peers", "One-to-one throughput vs hollywood", metric{"OneToOne/multimodule", "msgs/s"}, metric{"OneToOne/hollywood", "msgs/s"}, true, "msgs/s", "baseline: anthdm/hollywood, local actors, the same maps"},
	{"Peers", "Ping-pong round trip vs hollywood", metric{"PingPong/multimodule", "ns/roundtrip"}, metric{"PingPong/hollywood", "ns/roundtrip"}, false, "ns", "same"},
	{"Peers", "Fan-out over 1,000 actors vs hollywood", metric{"FanOut1000/multimodule", "msgs/s"}, metric{"FanOut1000/hollywood", "msgs/s"}, true, "msgs/s", "same"},
	{"Peers", "One-to-one throughput vs ergo", metric{"OneToOne/multimodule", "msgs/s"}, metric{"OneToOne/ergo", "msgs/s"}, true, "msgs/s", "baseline: ergo-services/ergo, local processes of one node, networking and logging off, the same maps"},
	{"Peers", "Ping-pong round trip vs ergo", metric{"PingPong/multimodule", "ns/roundtrip"}, metric{"PingPong/ergo", "ns/roundtrip"}, false, "ns", "same"},
	{"Peers", "Fan-out over 1,000 actors vs ergo", metric{"FanOut1000/multimodule", "msgs/s"}, metric{"FanOut1000/ergo", "msgs/s"}, true, "msgs/s", "same"},
}

// sharedPeers is where the sources of the peers the module proxy here does
// not serve are kept, beside the checkout (its README says which commits).
const sharedPeers = "../shared/peers"

// Where the peers came from, as the report says it (without naming a
// path outside the checkout: readers of the report do not have it).
const (
	fetchedPeersNote = "anthdm/hollywood and ergo-services/ergo were fetched by the versions bench/peers/go.mod requires.\n"
	localPeersNote   = "anthdm/hollywood and ergo-services/ergo were built from local copies of the commits bench/peers/go.mod\n" +
		"requires (through a temporary modfile: the module proxy of the machine that ran this does not serve them).\n"
)

// peersModfile returns, when sharedPeers exists, a temporary copy of
// bench/peers' go.mod (with its go.sum beside it) in which hollywood and
// ergo are replaced by those folders, and a func that removes it; "" when
// it does not, and go fetches them as it would anywhere. The checkout's
// own files never name a path outside it.
func peersModfile() (modfile string, cleanup func(), err error) {
	cleanup = func() {}
	shared, err := filepath.Abs(sharedPeers)
	if err != nil {
		return "", cleanup, fmt.Errorf("peers: %w", err)
	}
	if _, err := os.Stat(shared); err != nil {
		return "", cleanup, nil
	}
	tmp, err := os.MkdirTemp("", "benchreport-peers")
	if err != nil {
		return "", cleanup, fmt.Errorf("peers modfile: %w", err)
	}
	cleanup = func() { os.RemoveAll(tmp) }
	modfile = filepath.Join(tmp, "peers.mod")
	for from, to := range map[string]string{"go.mod": modfile, "go.sum": filepath.Join(tmp, "peers.sum")} {
		b, err := os.ReadFile(filepath.Join("bench/peers", from))
		if err != nil {
			return "", cleanup, fmt.Errorf("peers modfile: %w", err)
		}
		if err := os.WriteFile(to, b, 0o644); err != nil {
			return "", cleanup, fmt.Errorf("peers modfile: %w", err)
		}
	}
	cmd := exec.Command("go", "mod", "edit", "-modfile", modfile,
		"-replace", "github.com/anthdm/hollywood="+filepath.Join(shared, "hollywood"),
		"-replace", "ergo.services/ergo="+filepath.Join(shared, "ergo"))
	cmd.Dir = "bench/peers"
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", cleanup, fmt.Errorf("peers modfile: go mod edit: %w: %s", err, out)
	}
	fmt.Fprintf(os.Stderr, "bench/peers: hollywood and ergo from %s, through the temporary modfile %s\n", shared, modfile)
	return modfile, cleanup, nil
}

// sectionNotes are printed under a section's heading.
var sectionNotes = map[string]string{
	"Peers": "bench/peers is its own module (the project does not depend on its peers): `cd bench/peers && go test -bench . ./...`.\n" +
		"Each framework runs the same workloads on the same small maps; hollywood in a test binary of its own\n" +
		"(it and protoactor-go both register the protobuf message actor.PID). Messages come from outside the\n" +
		"actors (our h.Send: in no lineage, as in every framework here).\n",
}

func main() {
	out := flag.String("o", "BENCHMARKS.md", "the report to write")
	only := flag.String("run", "", "run only the benchmarks matching this substring (the report then has gaps)")
	flag.Parse()
	var raw bytes.Buffer
	results := map[metric][]float64{}
	peersNote := fetchedPeersNote
	start := time.Now()
	for _, r := range runs {
		if *only != "" && !strings.Contains(r.bench, *only) {
			continue
		}
		args := []string{"test", "-run", "^$", "-bench", r.bench, "-count", strconv.Itoa(r.count)}
		if r.benchtime != "" {
			args = append(args, "-benchtime", r.benchtime)
		}
		if r.dir == "bench/peers" {
			modfile, cleanup, err := peersModfile()
			if err != nil {
				fmt.Fprintln(os.Stderr, "benchreport:", err)
				os.Exit(1)
			}
			defer cleanup()
			if modfile != "" {
				args = append(args, "-modfile", modfile)
				peersNote = localPeersNote
			}
		}
		args = append(args, r.pkg)
		fmt.Fprintf(os.Stderr, "go %s\n", strings.Join(args, " "))
		cmd := exec.Command("go", args...)
		cmd.Dir = r.dir
		var buf bytes.Buffer
		cmd.Stdout = io.MultiWriter(&buf, os.Stdout)
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "benchreport: go %s: %v\n", strings.Join(args, " "), err)
			os.Exit(1)
		}
		parse(&buf, results)
		for _, line := range strings.Split(buf.String(), "\n") {
			if strings.HasPrefix(line, "Benchmark") {
				raw.WriteString(line + "\n")
			}
		}
	}
	if err := os.WriteFile(*out, report(results, raw.String(), peersNote, time.Since(start)), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "wrote %s\n", *out)
}

// parse reads benchmark lines: "BenchmarkName-2  N  v1 unit1  v2 unit2 ...".
func parse(r io.Reader, into map[metric][]float64) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := strings.TrimPrefix(f[0], "Benchmark")
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			name = name[:i] // the GOMAXPROCS suffix
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			k := metric{name, f[i+1]}
			into[k] = append(into[k], v)
		}
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func format(v float64) string {
	switch {
	case math.IsNaN(v):
		return "-"
	case math.Abs(v) >= 1e6:
		return fmt.Sprintf("%.2f M", v/1e6)
	case math.Abs(v) >= 1e4:
		return fmt.Sprintf("%.0f k", v/1e3)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 1:
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.3g", v)
}

func span(v []float64) string {
	if len(v) < 2 {
		return ""
	}
	return fmt.Sprintf(" (%s-%s)", format(slices.Min(v)), format(slices.Max(v)))
}

func report(res map[metric][]float64, raw, peersNote string, took time.Duration) []byte {
	var b bytes.Buffer
	cpu := "unknown"
	if info, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(info), "\n") {
			if strings.HasPrefix(l, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	fmt.Fprintf(&b, "# Benchmarks\n\nWritten by `make bench` (internal/benchreport) on %s: %s, %d cores, %s; the whole run took %s.\n\n",
		time.Now().UTC().Format("2006-01-02"), cpu, runtime.NumCPU(), runtime.Version(), took.Round(time.Second))
	b.WriteString("Every figure is next to a raw baseline measured in the same run, on the same machine, so the ratio\n" +
		"means something even on a shared, noisy machine. Each value is the median of the runs, with the range\n" +
		"in brackets. *Ours vs baseline* is how many times better (above 1) or worse (below 1) ours is.\n")
	section := ""
	for _, f := range figures {
		if f.section != section {
			section = f.section
			fmt.Fprintf(&b, "\n## %s\n\n", section)
			if n := sectionNotes[section]; n != "" {
				if section == "Peers" {
					n += peersNote
				}
				b.WriteString(n + "\n")
			}
			fmt.Fprintf(&b, "| Figure | Ours | Baseline | Ours vs baseline | Unit | Notes |\n| --- | --- | --- | --- | --- | --- |\n")
		}
		ours, base := res[f.ours], res[f.base]
		mo, mb := median(ours), median(base)
		ratio := "-"
		if !math.IsNaN(mo) && !math.IsNaN(mb) && mo > 0 && mb > 0 {
			r := mo / mb
			if !f.higherBetter {
				r = mb / mo
			}
			ratio = fmt.Sprintf("%.2f", r)
		}
		fmt.Fprintf(&b, "| %s | %s%s | %s%s | %s | %s | %s |\n", f.name, format(mo), span(ours), format(mb), span(base), ratio, f.unit, f.note)
	}
	b.WriteString("\n## Raw output\n\n```\n" + raw + "```\n")
	return b.Bytes()
}
