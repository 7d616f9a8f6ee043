package transit

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzSpillReference hands unspill any reference. Only the genuine spill
// file may ever be read (and removed); the files beside it, a link to a
// secret and a spill file with the wrong mode stay untouched.
func FuzzSpillReference(f *testing.F) {
	dir := filepath.Join(f.TempDir(), "transit")
	tr, err := Open(Options{Dir: dir})
	if err != nil {
		f.Fatal(err)
	}
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("secret"), 0o600); err != nil {
		f.Fatal(err)
	}
	genuine := []byte(`{"big":"message"}`)
	ref, err := tr.spill("Q", genuine)
	if err != nil {
		f.Fatal(err)
	}
	other, err := tr.spill("Other", []byte("another queue's"))
	if err != nil {
		f.Fatal(err)
	}
	loose := "0123456789abcdef0123456789abcdef"
	if err := os.WriteFile(filepath.Join(tr.spillDir("Q"), loose), []byte("readable by all"), 0o644); err != nil {
		f.Fatal(err)
	}
	link := "fedcba9876543210fedcba9876543210"
	if err := os.Symlink(secret, filepath.Join(tr.spillDir("Q"), link)); err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{ref, other, loose, link, "../secret", "/etc/passwd", "../Other/" + other, ref + "\x00", ""} {
		f.Add(seed)
	}
	keep := []string{secret, filepath.Join(tr.spillDir("Other"), other), filepath.Join(tr.spillDir("Q"), loose),
		filepath.Join(tr.spillDir("Q"), link)}
	f.Fuzz(func(t *testing.T, r string) {
		text, err := tr.unspill("Q", r, true)
		if err == nil {
			if r != ref || !bytes.Equal(text, genuine) {
				t.Fatalf("reference %q read %q", r, text)
			}
			// Put the genuine file back for the next input.
			if err := os.WriteFile(filepath.Join(tr.spillDir("Q"), ref), genuine, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		for _, p := range keep {
			if _, err := os.Lstat(p); err != nil {
				t.Fatalf("reference %q removed %s", r, p)
			}
		}
	})
}
