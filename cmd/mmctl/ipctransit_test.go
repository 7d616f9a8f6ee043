package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/multimodule/multimodule/internal/testenv"
	"github.com/multimodule/multimodule/transit"
)

// sharedDir is a transit dir marked with mmctl transit init --ipc-transit.
func sharedDir(t *testing.T) string {
	t.Helper()
	dir := testenv.TransitDir(t)
	code, out, errs := mmctl(t, dir, "", "transit", "init", "--ipc-transit", dir)
	if code != 0 || !strings.Contains(out, "shared with IPC::Transit") {
		t.Fatalf("transit init: exit %d: %s%s", code, out, errs)
	}
	if b, err := os.ReadFile(filepath.Join(dir, transit.FormatFile)); err != nil || string(b) != "ipc-transit\n" {
		t.Fatalf(".format: %q %v", b, err)
	}
	return dir
}

func TestIPCTransitStransToMmctlRecv(t *testing.T) {
	t.Parallel()
	perl := testenv.IPCTransit(t, "../..")
	for _, first := range []string{"perl", "mmctl"} {
		t.Run(first+" first", func(t *testing.T) {
			t.Parallel()
			dir := sharedDir(t)
			want := 1
			if first == "mmctl" {
				if code, _, errs := mmctl(t, dir, "", "send", "--create", "Example1", `{"from":"mmctl"}`); code != 0 {
					t.Fatal(errs)
				}
				want = 2
			}
			perl.Strans(t, dir, `{"new_ct":999}`, "Example1")
			code, out, errs := mmctl(t, dir, "", "recv", "Example1", "-n", strconv.Itoa(want), "--timeout", "10s")
			if code != 0 || !strings.Contains(out, `"new_ct":999`) || strings.Count(out, "\n") != want {
				t.Fatalf("recv: exit %d: %s%s", code, out, errs)
			}
		})
	}
}

func TestIPCTransitMmctlSendToRtrans(t *testing.T) {
	t.Parallel()
	perl := testenv.IPCTransit(t, "../..")
	for _, first := range []string{"perl", "mmctl"} {
		t.Run(first+" first", func(t *testing.T) {
			t.Parallel()
			dir := sharedDir(t)
			if first == "perl" {
				if _, stderr, err := perl.Eval(t, 30*time.Second, dir, `IPC::Transit::stat(qname => "Example2") or die`); err != nil {
					t.Fatal(err, stderr)
				}
			} else if code, _, errs := mmctl(t, dir, "", "queues"); code != 0 {
				t.Fatal(errs)
			}
			big := strings.Repeat("x", 100_000)
			for _, m := range []string{`{"ct":1}`, `{"big":"` + big + `"}`} {
				if code, _, errs := mmctl(t, dir, "", "send", "--create", "Example2", m); code != 0 {
					t.Fatalf("send: %s", errs)
				}
			}
			got := perl.Rtrans(t, 30*time.Second, dir, "Example2", 2)
			if got[0]["ct"] != 1.0 || got[1]["big"] != big {
				t.Fatalf("rtrans got %v", got[0])
			}
			if left := testenv.SpillFiles(t, dir); len(left) > 0 {
				t.Errorf("files left behind: %v", left)
			}
		})
	}
}

func TestIPCTransitQueuesBothWays(t *testing.T) {
	t.Parallel()
	perl := testenv.IPCTransit(t, "../..")
	dir := sharedDir(t)
	perl.Strans(t, dir, `{"a":1}`, "perlq")
	if code, _, errs := mmctl(t, dir, "", "send", "--create", "goq", `{"b":2}`); code != 0 {
		t.Fatal(errs)
	}
	code, out, errs := mmctl(t, dir, "", "queues", "-o", "json")
	var stats []transit.Stats
	if code != 0 || json.Unmarshal([]byte(out), &stats) != nil || len(stats) != 2 ||
		stats[0].Name != "goq" || stats[1].Name != "perlq" || stats[1].Messages != 1 {
		t.Fatalf("queues: exit %d: %s%s", code, out, errs)
	}
	qt, stderr, err := perl.Tool(t, 30*time.Second, "qtrans", dir)
	if err != nil || !strings.Contains(qt, "goq ") || !strings.Contains(qt, "perlq ") {
		t.Fatalf("qtrans: %v\n%s%s", err, qt, stderr)
	}
	// A key file that cannot be read is reported, and the rest listed.
	os.WriteFile(filepath.Join(dir, "broken"), []byte("qid=12\n"), 0o600)
	defer os.Remove(filepath.Join(dir, "broken"))
	code, out, errs = mmctl(t, dir, "", "queues")
	if code != 1 || !strings.Contains(errs, "broken") || !strings.Contains(errs, "damaged") || !strings.Contains(out, "perlq") {
		t.Fatalf("queues with a damaged key file: exit %d: %s%s", code, out, errs)
	}
}
