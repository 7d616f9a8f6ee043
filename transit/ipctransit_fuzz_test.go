package transit

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzIPCTransit feeds IPC::Transit's header and key-file parsers
// anything: they must not panic, a header must lie within the text, and
// a key file is read only when it is whole.
func FuzzIPCTransit(f *testing.F) {
	for _, s := range []string{`10:s=json,l=7{"a":1}`, `0:{}`, `4:l=13`, "20:n=bm9uY2U=,S=host,l=2\x01\x02",
		"qid=16909060\nqname=q\n", "12345\n", "qid=1\n", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if h, payload, err := parseWireHeader(b); err == nil {
			if !bytes.HasPrefix(b, h.raw) || len(h.raw)+len(payload) != len(b) {
				t.Fatalf("header %q and payload %q do not make up %q", h.raw, payload, b)
			}
			_ = h.unsupported(payload)
		} else if !errors.Is(err, ErrBadWireHeader) {
			t.Fatalf("unwrapped error %v", err)
		}
		k, err := parseKeyFile("q", b)
		if err == nil && (k == 0 || len(b) == 0 || b[len(b)-1] != '\n') {
			t.Fatalf("key %d from %q", k, b)
		}
		if err != nil && !errors.Is(err, ErrDamagedKeyFile) && !errors.Is(err, errIncomplete) {
			t.Fatalf("unwrapped error %v", err)
		}
	})
}
