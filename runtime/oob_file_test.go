package runtime

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// A link planted for an -o file target (another user's, in /tmp or the
// working directory) is refused at start, naming the file, and again at
// the first write if it is planted later; the link's target is untouched.
func TestOOBFileRefusesLinks(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	planted := filepath.Join(dir, "mm.err")
	if err := os.Symlink(victim, planted); err != nil {
		t.Fatal(err)
	}
	opts := ChannelOptions{Stdout: io.Discard, Stderr: io.Discard}
	_, err := OpenChannels("error:"+planted, opts)
	if !errors.Is(err, ErrUnsafeLogFile) || !strings.Contains(err.Error(), planted) || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("planted link at start: %v", err)
	}

	// Planted after the start, before the first write.
	later := filepath.Join(dir, "later.err")
	c, err := OpenChannels("error:"+later, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := os.Symlink(victim, later); err != nil {
		t.Fatal(err)
	}
	c.Error.Error("boom")
	if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
		t.Fatalf("the link was followed: victim holds %q", b)
	}

	// A hard link to someone's file is refused too (nlink > 1), and so is
	// a FIFO (without hanging).
	hard := filepath.Join(dir, "hard.err")
	if err := os.Link(victim, hard); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo.err")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{hard, fifo} {
		if _, err := OpenChannels("error:"+p, opts); !errors.Is(err, ErrUnsafeLogFile) {
			t.Fatalf("%s: %v", p, err)
		}
		if _, err := openLogFile(p); !errors.Is(err, ErrUnsafeLogFile) {
			t.Fatalf("open %s: %v", p, err)
		}
	}

	// A file of another user's (only root can make one to test with).
	if os.Geteuid() == 0 {
		theirs := filepath.Join(dir, "theirs.err")
		os.WriteFile(theirs, nil, 0o600)
		if err := os.Chown(theirs, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenChannels("error:"+theirs, opts); !errors.Is(err, ErrUnsafeLogFile) || !strings.Contains(err.Error(), "owned by uid 65534") {
			t.Fatalf("another user's file: %v", err)
		}
	}

	// An ordinary file is created 0600 and written.
	good := filepath.Join(dir, "good.err")
	c2, err := OpenChannels("error:"+good, opts)
	if err != nil {
		t.Fatal(err)
	}
	c2.Error.Error("written")
	c2.Close()
	st, err := os.Stat(good)
	if b, _ := os.ReadFile(good); err != nil || st.Mode().Perm() != 0o600 || !strings.Contains(string(b), "written") {
		t.Fatalf("good file: %v %v %q", st, err, b)
	}
}
