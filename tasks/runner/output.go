package runner

import (
	"bytes"
	"unicode/utf8"
)

// tail keeps the last n bytes written to it and counts them all, so that
// a program flooding its output costs the daemon n bytes, not the flood.
type tail struct {
	n     int
	buf   []byte
	total int64
}

func newTail(n int) *tail { return &tail{n: n} }

func (t *tail) Write(p []byte) (int, error) {
	t.total += int64(len(p))
	switch {
	case t.n == 0:
	case len(p) >= t.n:
		t.buf = append(t.buf[:0], p[len(p)-t.n:]...)
	default:
		t.buf = append(t.buf, p...)
		// Cut back only once twice the tail is held: each byte is then
		// copied at most once more, whatever the sizes of the writes.
		if len(t.buf) > 2*t.n {
			t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.n:]...)
		}
	}
	return len(p), nil
}

// String is the tail, starting at a whole UTF-8 character when cut.
func (t *tail) String() string {
	b := t.buf
	if len(b) > t.n {
		b = b[len(b)-t.n:]
	}
	if int64(len(b)) < t.total {
		for i := 0; i < len(b) && i < utf8.UTFMax && !utf8.RuneStart(b[i]); i++ {
			b = b[1:]
		}
	}
	return string(b)
}

// lineQueue bounds the stdout lines read ahead of the handler: beyond it
// the program waits on its full pipe.
const lineQueue = 64

// lineWriter splits a program's stdout into lines for the handler. A line
// longer than max is skipped (and counted), so memory stays bounded by
// max whatever the program writes.
type lineWriter struct {
	max      int
	ch       chan []byte
	buf      []byte
	skipping bool // the rest of a line longer than max is being skipped
	long     int  // lines skipped for their length
}

func newLineWriter(max int) *lineWriter {
	return &lineWriter{max: max, ch: make(chan []byte, lineQueue)}
}

func (w *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		if !w.skipping {
			if len(w.buf)+len(chunk) > w.max {
				w.skipping, w.buf = true, w.buf[:0]
				w.long++
			} else {
				w.buf = append(w.buf, chunk...)
			}
		}
		if i < 0 {
			break
		}
		if !w.skipping {
			w.ch <- bytes.Clone(w.buf)
		}
		w.buf, w.skipping = w.buf[:0], false
		p = p[i+1:]
	}
	return n, nil
}

// rest is a last line without a newline (nil if none); call it only once
// nothing writes any more.
func (w *lineWriter) rest() []byte {
	if w.skipping || len(w.buf) == 0 {
		return nil
	}
	return w.buf
}
