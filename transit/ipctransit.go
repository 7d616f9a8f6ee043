package transit

// IPC::Transit compatibility (DESIGN.md section 6).
//
// The Perl IPC::Transit library names a queue with a key file
// "qid=KEY\nqname=NAME\n" in its config dir (our transit dir), frames a
// message as "<L>:<k=v,...><payload>" (L the length of the k=v list) at
// mtype 1, and writes a message over 4,096 bytes to a *.transit file whose
// path the queued header names (f=PATH). Readers here accept both
// formats everywhere; in a dir marked shared (a .format file reading
// "ipc-transit") writers use IPC::Transit's, so that its strans, rtrans,
// qtrans and programs share the dir with us.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// More errors.
var (
	// ErrDamagedKeyFile: a file in the transit dir that should name a
	// queue holds neither our "KEY\n" nor IPC::Transit's
	// "qid=KEY\nqname=NAME\n".
	ErrDamagedKeyFile = errors.New("key file is damaged")
	// ErrUnknownFormat: the transit dir's .format file names a format
	// this version does not speak.
	ErrUnknownFormat = errors.New("unknown transit dir format")
	// ErrUnframeable: a large message cannot be written the way
	// IPC::Transit expects, because the path of its file would contain
	// a ',' or '=' (IPC::Transit splits its header on them).
	ErrUnframeable = errors.New("cannot frame for IPC::Transit")
	// ErrBadWireHeader: a text starting with a digit is not a valid
	// IPC::Transit header.
	ErrBadWireHeader = errors.New("malformed IPC::Transit header")
)

const (
	// FormatFile, in a transit dir, says which format its writers use.
	FormatFile = ".format"
	// FormatIPCTransit marks a dir shared with Perl IPC::Transit.
	FormatIPCTransit = "ipc-transit"
	// DefaultLargeMessageDir is IPC::Transit's
	// $large_transit_message_dir: where its senders put messages over
	// 4,096 bytes (world-writable; fixed in its source).
	DefaultLargeMessageDir = "/tmp/transit_large_messages"
	// maxWireHeader bounds the header we parse: IPC::Transit's is a
	// few short fields and one path.
	maxWireHeader = 4096
	// keyRetry is how long a reader waits for a key file that IPC::Transit
	// is still writing (it opens, truncates, then prints two lines).
	keyRetry = 2 * time.Second
)

// MarkIPCTransit marks dir (created 0700 if needed) as shared with
// IPC::Transit: every process that opens it afterwards writes
// IPC::Transit's formats there.
func MarkIPCTransit(dir string) error {
	if err := (&Transit{uid: os.Geteuid()}).privateDir(dir); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".format-")
	if err != nil {
		return fmt.Errorf("transit: %w", err)
	}
	_, werr := tmp.WriteString(FormatIPCTransit + "\n")
	if err := errors.Join(werr, tmp.Close(), os.Rename(tmp.Name(), filepath.Join(dir, FormatFile))); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("transit: %w", err)
	}
	return nil
}

// readFormat reports whether dir is marked shared with IPC::Transit.
func readFormat(dir string) (bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, FormatFile))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("transit: %w", err)
	}
	switch f := strings.TrimSpace(string(b)); f {
	case FormatIPCTransit:
		return true, nil
	default:
		return false, fmt.Errorf("%w: %s/%s reads %q (want %q)", ErrUnknownFormat, dir, FormatFile, excerpt([]byte(f), 64), FormatIPCTransit)
	}
}

// IPCTransit reports whether the dir is marked shared with IPC::Transit.
func (t *Transit) IPCTransit() bool { return t.layout.ipc }

// errIncomplete: a key file that may still be being written.
var errIncomplete = errors.New("incomplete")

// parseKeyFile reads the key of queue name from its key file's content,
// in either format: an error wrapping ErrDamagedKeyFile when it is
// neither, errIncomplete when it may be still being written.
func parseKeyFile(name string, b []byte) (int32, error) {
	if len(b) == 0 || b[len(b)-1] != '\n' {
		// Both formats end in a newline; IPC::Transit may be between
		// its open and its last print.
		return 0, errIncomplete
	}
	if b[0] != 'q' {
		k, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 32)
		if err != nil || k == 0 {
			return 0, fmt.Errorf("%w: %q", ErrDamagedKeyFile, excerpt(b, 80))
		}
		return int32(k), nil
	}
	var qid, qname string
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		k, v, ok := strings.Cut(line, "=")
		switch {
		case !ok:
			return 0, fmt.Errorf("%w: line %q is not key=value", ErrDamagedKeyFile, excerpt([]byte(line), 80))
		case k == "qid":
			qid = v
		case k == "qname":
			qname = v
		}
	}
	if qid == "" || qname == "" {
		return 0, errIncomplete
	}
	if qname != name {
		return 0, fmt.Errorf("%w: it names queue %q", ErrDamagedKeyFile, excerpt([]byte(qname), 80))
	}
	k, err := strconv.ParseInt(qid, 10, 32)
	if err != nil || k == 0 {
		return 0, fmt.Errorf("%w: qid %q", ErrDamagedKeyFile, excerpt([]byte(qid), 80))
	}
	return int32(k), nil
}

// keyFileText is what a key file holds, in the dir's format.
func (t *Transit) keyFileText(name string, key int32) []byte {
	if t.layout.ipc {
		return fmt.Appendf(nil, "qid=%d\nqname=%s\n", key, name)
	}
	return fmt.Appendf(nil, "%d\n", key)
}

// readKey reads the key file at path, waiting a little for one that
// IPC::Transit may be writing.
func (t *Transit) readKey(name, path string) (int32, error) {
	deadline := time.Now().Add(keyRetry)
	for {
		b, err := os.ReadFile(path)
		if err != nil {
			return 0, err
		}
		k, err := parseKeyFile(name, b)
		if err == nil {
			return k, nil
		}
		if !errors.Is(err, errIncomplete) || time.Now().After(deadline) {
			return 0, fmt.Errorf("transit: key file %s: %w", path, incompleteErr(err, b))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// incompleteErr turns errIncomplete into the damaged error it is once
// the wait is over.
func incompleteErr(err error, b []byte) error {
	if errors.Is(err, errIncomplete) {
		return fmt.Errorf("%w: %q is incomplete", ErrDamagedKeyFile, excerpt(b, 80))
	}
	return err
}

// lockDir takes IPC::Transit's advisory lock, DIR/.lock created with
// O_EXCL, while a key file is published: IPC::Transit re-reads the dir
// under it and then truncates and writes the file of a queue it did not
// find, which would overwrite ours if we published in between. Like
// IPC::Transit, a lock older than the wait is taken as stale.
func (t *Transit) lockDir() (func(), error) {
	path := filepath.Join(t.dir, ".lock")
	deadline := time.Now().Add(keyRetry + time.Second)
	for {
		fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err == nil {
			unix.Close(fd)
			return func() { os.Remove(path) }, nil
		}
		if !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("transit: lock %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			os.Remove(path) // stale, as IPC::Transit would decide
			deadline = time.Now().Add(keyRetry)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// wireHeader is a parsed IPC::Transit header.
type wireHeader struct {
	raw    []byte // "L:k=v,...": the whole header as queued
	fields map[string]string
}

var wireKeyRE = regexp.MustCompile(`^[A-Za-z]{1,16}$`)

// parseWireHeader splits an IPC::Transit text into its header and
// payload, as IPC::Transit's receiver does, but strictly: a decimal
// length, ':', that many bytes of k=v pairs separated by ','.
func parseWireHeader(text []byte) (wireHeader, []byte, error) {
	colon := bytes.IndexByte(text, ':')
	if colon <= 0 || colon > 5 {
		return wireHeader{}, nil, fmt.Errorf("%w: no length prefix", ErrBadWireHeader)
	}
	n, err := strconv.Atoi(string(text[:colon]))
	if err != nil || n < 0 || n > maxWireHeader || strconv.Itoa(n) != string(text[:colon]) {
		return wireHeader{}, nil, fmt.Errorf("%w: bad length %q", ErrBadWireHeader, excerpt(text[:colon], 16))
	}
	end := colon + 1 + n
	if end > len(text) {
		return wireHeader{}, nil, fmt.Errorf("%w: length %d beyond the text", ErrBadWireHeader, n)
	}
	h := wireHeader{raw: text[:end], fields: map[string]string{}}
	if n > 0 {
		for _, part := range strings.Split(string(text[colon+1:end]), ",") {
			k, v, ok := strings.Cut(part, "=")
			if !ok || !wireKeyRE.MatchString(k) {
				return wireHeader{}, nil, fmt.Errorf("%w: field %q", ErrBadWireHeader, excerpt([]byte(part), 40))
			}
			if _, dup := h.fields[k]; dup {
				return wireHeader{}, nil, fmt.Errorf("%w: field %s twice", ErrBadWireHeader, k)
			}
			h.fields[k] = v
		}
	}
	return h, text[end:], nil
}

// ipcHeader starts a queue message at IPC::Transit's mtype, 1.
func ipcHeader(buf []byte) []byte {
	buf = append(buf[:0], 0, 0, 0, 0, 0, 0, 0, 0)
	binary.NativeEndian.PutUint64(buf, mtypeTransit)
	return buf
}

// appendWireHeader appends "L:s=json,l=N[,f=PATH]".
func appendWireHeader(buf []byte, payloadLen int, file string) []byte {
	h := "s=json,l=" + strconv.Itoa(payloadLen)
	if file != "" {
		h += ",f=" + file
	}
	buf = strconv.AppendInt(buf, int64(len(h)), 10)
	buf = append(buf, ':')
	return append(buf, h...)
}

// serializerNames are what IPC::Transit's s= values are called.
var serializerNames = map[string]string{
	"sereal": "Sereal", "storable": "Storable", "dumper": "Data::Dumper", "yaml": "YAML",
}

// unsupported says why a message with this header and payload cannot be
// taken (serializer, encryption, remote address), or "".
func (h wireHeader) unsupported(payload []byte) string {
	if v, ok := h.fields["n"]; ok {
		return fmt.Sprintf("IPC::Transit message is encrypted (n=%s nonce header, source S=%s): encryption is not supported",
			excerpt([]byte(v), 40), excerpt([]byte(h.fields["S"]), 64))
	}
	if _, ok := h.fields["S"]; ok {
		return "IPC::Transit message has an encryption source (S=" + excerpt([]byte(h.fields["S"]), 64) + "): encryption is not supported"
	}
	for _, k := range []string{"d", "q", "t"} {
		if v, ok := h.fields[k]; ok {
			return fmt.Sprintf("IPC::Transit message is addressed for remote delivery (%s=%s): remote delivery is not supported",
				k, excerpt([]byte(v), 64))
		}
	}
	switch s, ok := h.fields["s"]; {
	case !ok:
		// IPC::Transit's receiver takes a payload without s= as Sereal
		// when it looks like Sereal (its magic "=srl" or "=\xf3rl").
		if bytes.HasPrefix(payload, []byte("=srl")) || bytes.HasPrefix(payload, []byte("=\xf3rl")) {
			return "IPC::Transit message serialized with Sereal (no s= header, Sereal magic): only JSON is supported"
		}
	case s == "json":
	default:
		name := serializerNames[s]
		if name == "" {
			name = "an unknown serializer"
		}
		return fmt.Sprintf("IPC::Transit message serialized with %s (s=%s): only JSON (s=json) is supported", name, excerpt([]byte(s), 32))
	}
	if l, ok := h.fields["l"]; ok && l != strconv.Itoa(len(payload)) {
		return fmt.Sprintf("IPC::Transit message length l=%s but the payload has %d bytes", excerpt([]byte(l), 32), len(payload))
	}
	return ""
}

var largeNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,200}\.transit$`)

// unlarge reads (and, with remove, removes) the file of an IPC::Transit
// large message (f=PATH), after proving it is one we may take: a
// NAME.transit file directly in IPC::Transit's large-message dir or in
// this queue's spill dir (neither reached through a link), a regular
// file owned by us with one link, within the size limit, whose content
// starts with the queued header. IPC::Transit makes its files 0666, so
// the mode is not asked (docs/operating.md says what that trades).
func (t *Transit) unlarge(queue string, h wireHeader, remove bool) ([]byte, string, error) {
	path := h.fields["f"]
	dir, base := filepath.Split(path)
	dir = filepath.Clean(dir)
	if !filepath.IsAbs(path) || !largeNameRE.MatchString(base) {
		return nil, "", fmt.Errorf("large-message file %q is not an absolute path to a NAME.transit file", excerpt([]byte(path), 120))
	}
	if dir != filepath.Clean(t.opts.LargeMessageDir) && dir != t.absSpillDir(queue) {
		return nil, "", fmt.Errorf("large-message file %q is neither in %s nor in this queue's spill dir", excerpt([]byte(path), 120), t.opts.LargeMessageDir)
	}
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, "", fmt.Errorf("large-message dir %s: %w", dir, err)
	}
	defer unix.Close(dfd)
	fd, err := unix.Openat(dfd, base, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, "", fmt.Errorf("large-message file %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, "", fmt.Errorf("large-message file %s: %w", path, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return nil, "", fmt.Errorf("large-message file %s is not a regular file", path)
	case int(st.Uid) != t.uid:
		return nil, "", fmt.Errorf("large-message file %s is owned by uid %d, not %d", path, st.Uid, t.uid)
	case st.Nlink != 1:
		return nil, "", fmt.Errorf("large-message file %s has %d links", path, st.Nlink)
	case st.Size > int64(t.opts.MaxMessage):
		return nil, "", fmt.Errorf("large-message file %s is %d bytes, over the limit", path, st.Size)
	}
	body, err := io.ReadAll(io.LimitReader(f, int64(t.opts.MaxMessage)+1))
	if err != nil {
		return nil, "", fmt.Errorf("large-message file %s: %w", path, err)
	}
	if !bytes.HasPrefix(body, h.raw) {
		return nil, "", fmt.Errorf("large-message file %s does not start with the queued header", path)
	}
	if remove {
		unix.Unlinkat(dfd, base, 0)
	}
	return body, path, nil
}

// absSpillDir is the queue's spill dir as an absolute path (what an f=
// header names: the receiver's working dir may differ from ours).
func (t *Transit) absSpillDir(queue string) string {
	return filepath.Join(t.layout.absDir, ".spill", queue)
}

// frameLarge writes an IPC::Transit large message: header and payload to
// a new owner-only NAME.transit file in the queue's spill dir, the same
// header (naming the file) to queue. It returns the queue text and the
// file's path.
func (t *Transit) frameLarge(queue string, payload []byte) ([]byte, string, error) {
	name, err := t.spillName(queue)
	if err != nil {
		return nil, "", err
	}
	path := filepath.Join(t.absSpillDir(queue), name+".transit")
	if strings.ContainsAny(path, ",=") {
		return nil, "", fmt.Errorf("%w: large message to %s: path %s contains ',' or '='", ErrUnframeable, queue, path)
	}
	hdr := appendWireHeader(ipcHeader(nil), len(payload), path)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, "", fmt.Errorf("transit: spill: %w", err)
	}
	_, werr := f.Write(hdr[typeSize:])
	if werr == nil {
		_, werr = f.Write(payload)
	}
	if err := errors.Join(werr, f.Close()); err != nil {
		os.Remove(path)
		return nil, "", fmt.Errorf("transit: spill: %w", err)
	}
	return hdr, path, nil
}
