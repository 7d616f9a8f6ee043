package transit

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// A fast JSON codec for the shapes messages have: map[string]any trees of
// objects, arrays, strings, float64, bool and null. It accepts exactly what
// encoding/json accepts and decodes to the same values, and what it writes
// decodes (with either) to the value encoded; object keys are written in
// map order, not sorted. Both directions are checked against encoding/json
// by table and by fuzzing. It is about twice as fast: JSON, not the
// kernel, is the limit on cross-process throughput. Values of other Go
// types are handed to encoding/json. Encoding stops at maxDepth levels (a
// cyclic message would otherwise never end).

// ErrDecode is wrapped by every decoding error.
var ErrDecode = errors.New("invalid JSON message")

const maxDepth = 10000 // encoding/json's nesting limit

// AppendJSON appends the JSON encoding of msg to buf.
func AppendJSON(buf []byte, msg map[string]any) ([]byte, error) {
	return appendValue(buf, msg, 0)
}

func appendValue(buf []byte, v any, depth int) ([]byte, error) {
	if depth > maxDepth {
		return buf, errors.New("transit: message nests too deeply (a cycle?)")
	}
	switch v := v.(type) {
	case nil:
		return append(buf, "null"...), nil
	case string:
		return appendString(buf, v), nil
	case float64:
		return appendFloat(buf, v, 64)
	case bool:
		if v {
			return append(buf, "true"...), nil
		}
		return append(buf, "false"...), nil
	case map[string]any:
		if v == nil {
			return append(buf, "null"...), nil
		}
		buf = append(buf, '{')
		first := true
		for k, e := range v {
			if !first {
				buf = append(buf, ',')
			}
			first = false
			buf = appendString(buf, k)
			buf = append(buf, ':')
			var err error
			if buf, err = appendValue(buf, e, depth+1); err != nil {
				return buf, err
			}
		}
		return append(buf, '}'), nil
	case []any:
		if v == nil {
			return append(buf, "null"...), nil
		}
		buf = append(buf, '[')
		for i, e := range v {
			if i > 0 {
				buf = append(buf, ',')
			}
			var err error
			if buf, err = appendValue(buf, e, depth+1); err != nil {
				return buf, err
			}
		}
		return append(buf, ']'), nil
	case int:
		return strconv.AppendInt(buf, int64(v), 10), nil
	case int64:
		return strconv.AppendInt(buf, v, 10), nil
	case int32:
		return strconv.AppendInt(buf, int64(v), 10), nil
	case uint64:
		return strconv.AppendUint(buf, v, 10), nil
	case float32:
		return appendFloat(buf, float64(v), 32)
	case json.Number:
		if v == "" {
			return append(buf, '0'), nil // as encoding/json writes it
		}
		if !validNumber(string(v)) {
			return buf, fmt.Errorf("transit: invalid number literal %q", string(v))
		}
		return append(buf, v...), nil
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return buf, fmt.Errorf("transit: %w", err)
		}
		return append(buf, b...), nil
	}
}

// appendFloat formats like encoding/json (ES6 number formatting).
func appendFloat(buf []byte, f float64, bits int) ([]byte, error) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return buf, fmt.Errorf("transit: unsupported number %v", f)
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 {
		if bits == 64 && (abs < 1e-6 || abs >= 1e21) || bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	buf = strconv.AppendFloat(buf, f, format, -1, bits)
	if format == 'e' {
		// clean up e-09 to e-9
		n := len(buf)
		if n >= 4 && buf[n-4] == 'e' && buf[n-3] == '-' && buf[n-2] == '0' {
			buf[n-2] = buf[n-1]
			buf = buf[:n-1]
		}
	}
	return buf, nil
}

const hexDigits = "0123456789abcdef"

// appendString quotes s as encoding/json does, HTML-safe escapes included.
func appendString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&' {
				i++
				continue
			}
			buf = append(buf, s[start:i]...)
			switch b {
			case '\\', '"':
				buf = append(buf, '\\', b)
			case '\b':
				buf = append(buf, '\\', 'b')
			case '\f':
				buf = append(buf, '\\', 'f')
			case '\n':
				buf = append(buf, '\\', 'n')
			case '\r':
				buf = append(buf, '\\', 'r')
			case '\t':
				buf = append(buf, '\\', 't')
			default:
				buf = append(buf, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			buf = append(buf, s[start:i]...)
			buf = append(buf, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			buf = append(buf, s[start:i]...)
			buf = append(buf, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}

// DecodeJSON parses one JSON object, as encoding/json would into a
// map[string]any.
func DecodeJSON(data []byte) (map[string]any, error) {
	return decodeJSON(data, nil)
}

// keyCache hands out one string per distinct object key: the messages of
// a batch mostly share their keys, which are then made once for the batch
// instead of once a message (a third of a small message's allocations).
type keyCache map[string]string

// maxCachedKeys bounds a keyCache, and maxCachedKey the keys it keeps:
// keys are mostly few and short, and a hostile batch must not make it a
// copy of itself.
const maxCachedKeys, maxCachedKey = 64, 64

func (c keyCache) key(b []byte) string {
	if s, ok := c[string(b)]; ok { // the lookup does not copy b
		return s
	}
	s := string(b)
	if len(c) < maxCachedKeys && len(b) <= maxCachedKey {
		c[s] = s
	}
	return s
}

// decodeJSON is DecodeJSON taking keys from keys, when not nil.
func decodeJSON(data []byte, keys keyCache) (map[string]any, error) {
	d := decoder{data: data, keys: keys}
	d.skipSpace()
	if d.i >= len(d.data) || d.data[d.i] != '{' {
		return nil, d.errorf("a message must be a JSON object")
	}
	v, err := d.value(0)
	if err != nil {
		return nil, err
	}
	d.skipSpace()
	if d.i != len(d.data) {
		return nil, d.errorf("unexpected data after the object")
	}
	return v.(map[string]any), nil
}

type decoder struct {
	data []byte
	i    int
	keys keyCache
}

func (d *decoder) errorf(format string, args ...any) error {
	return fmt.Errorf("%w: offset %d: %s", ErrDecode, d.i, fmt.Sprintf(format, args...))
}

func (d *decoder) skipSpace() {
	for d.i < len(d.data) {
		switch d.data[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// value parses one value; depth counts the containers around it, and a
// container deeper than maxDepth is an error, as in encoding/json.
func (d *decoder) value(depth int) (any, error) {
	d.skipSpace()
	if d.i >= len(d.data) {
		return nil, d.errorf("unexpected end")
	}
	if c := d.data[d.i]; (c == '{' || c == '[') && depth+1 > maxDepth {
		return nil, d.errorf("nested too deeply")
	}
	switch c := d.data[d.i]; {
	case c == '{':
		d.i++
		m := map[string]any{}
		d.skipSpace()
		if d.i < len(d.data) && d.data[d.i] == '}' {
			d.i++
			return m, nil
		}
		for {
			d.skipSpace()
			if d.i >= len(d.data) || d.data[d.i] != '"' {
				return nil, d.errorf("expected a string key")
			}
			k, err := d.key()
			if err != nil {
				return nil, err
			}
			d.skipSpace()
			if d.i >= len(d.data) || d.data[d.i] != ':' {
				return nil, d.errorf("expected ':'")
			}
			d.i++
			v, err := d.value(depth + 1)
			if err != nil {
				return nil, err
			}
			m[k] = v
			d.skipSpace()
			if d.i >= len(d.data) {
				return nil, d.errorf("unexpected end in object")
			}
			if d.data[d.i] == ',' {
				d.i++
				continue
			}
			if d.data[d.i] == '}' {
				d.i++
				return m, nil
			}
			return nil, d.errorf("expected ',' or '}'")
		}
	case c == '[':
		d.i++
		a := []any{}
		d.skipSpace()
		if d.i < len(d.data) && d.data[d.i] == ']' {
			d.i++
			return a, nil
		}
		for {
			v, err := d.value(depth + 1)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
			d.skipSpace()
			if d.i >= len(d.data) {
				return nil, d.errorf("unexpected end in array")
			}
			if d.data[d.i] == ',' {
				d.i++
				continue
			}
			if d.data[d.i] == ']' {
				d.i++
				return a, nil
			}
			return nil, d.errorf("expected ',' or ']'")
		}
	case c == '"':
		return d.str()
	case c == 't':
		return d.literal("true", true)
	case c == 'f':
		return d.literal("false", false)
	case c == 'n':
		return d.literal("null", nil)
	case c == '-' || (c >= '0' && c <= '9'):
		return d.number()
	}
	return nil, d.errorf("unexpected character %q", d.data[d.i])
}

func (d *decoder) literal(word string, v any) (any, error) {
	if len(d.data)-d.i < len(word) || string(d.data[d.i:d.i+len(word)]) != word {
		return nil, d.errorf("invalid literal")
	}
	d.i += len(word)
	return v, nil
}

// validNumber checks s against the JSON number grammar.
func validNumber(s string) bool {
	d := decoder{data: []byte(s)}
	if s == "" || (s[0] != '-' && (s[0] < '0' || s[0] > '9')) {
		return false
	}
	end, ok := d.scanNumber()
	return ok && end == len(s)
}

// scanNumber checks the JSON number grammar from d.i and returns where
// the number ends.
func (d *decoder) scanNumber() (int, bool) {
	p := d.data
	i := d.i
	if p[i] == '-' {
		i++
	}
	switch {
	case i < len(p) && p[i] == '0':
		i++
	case i < len(p) && p[i] >= '1' && p[i] <= '9':
		for i < len(p) && p[i] >= '0' && p[i] <= '9' {
			i++
		}
	default:
		return i, false
	}
	if i < len(p) && p[i] == '.' {
		i++
		if i >= len(p) || p[i] < '0' || p[i] > '9' {
			return i, false
		}
		for i < len(p) && p[i] >= '0' && p[i] <= '9' {
			i++
		}
	}
	if i < len(p) && (p[i] == 'e' || p[i] == 'E') {
		i++
		if i < len(p) && (p[i] == '+' || p[i] == '-') {
			i++
		}
		if i >= len(p) || p[i] < '0' || p[i] > '9' {
			return i, false
		}
		for i < len(p) && p[i] >= '0' && p[i] <= '9' {
			i++
		}
	}
	return i, true
}

// number checks the JSON number grammar, then parses as float64.
func (d *decoder) number() (any, error) {
	start := d.i
	p := d.data
	i, ok := d.scanNumber()
	if !ok {
		d.i = i
		return nil, d.errorf("invalid number")
	}
	d.i = i
	f, err := strconv.ParseFloat(string(p[start:i]), 64)
	if err != nil {
		return nil, d.errorf("number %s out of range", excerpt(p[start:i], 64))
	}
	return f, nil
}

// key parses an object's key: str, through the key cache when there is
// one.
func (d *decoder) key() (string, error) {
	if d.keys == nil {
		return d.str()
	}
	if b, ok := d.plain(); ok {
		return d.keys.key(b), nil
	}
	return d.escaped()
}

// plain takes the quoted string starting at d.i when it has no escapes
// and is valid UTF-8: its text is then the data between the quotes.
func (d *decoder) plain() ([]byte, bool) {
	for i := d.i + 1; i < len(d.data); i++ {
		c := d.data[i]
		if c == '"' {
			b := d.data[d.i+1 : i]
			if !utf8.Valid(b) {
				return nil, false
			}
			d.i = i + 1
			return b, true
		}
		if c == '\\' || c < 0x20 {
			return nil, false
		}
	}
	return nil, false
}

// str parses a quoted string starting at d.i.
func (d *decoder) str() (string, error) {
	if b, ok := d.plain(); ok {
		return string(b), nil
	}
	return d.escaped()
}

// escaped parses a quoted string starting at d.i that plain did not take:
// one with escapes or bytes that are not UTF-8.
func (d *decoder) escaped() (string, error) {
	d.i++ // opening quote
	start := d.i
	var out []byte
	i := start
	for {
		if i >= len(d.data) {
			d.i = i
			return "", d.errorf("unterminated string")
		}
		c := d.data[i]
		switch {
		case c == '"':
			d.i = i + 1
			return string(out), nil
		case c < 0x20:
			d.i = i
			return "", d.errorf("control character in string")
		case c == '\\':
			i++
			if i >= len(d.data) {
				d.i = i
				return "", d.errorf("unterminated string")
			}
			switch e := d.data[i]; e {
			case '"', '\\', '/':
				out = append(out, e)
				i++
			case 'b':
				out = append(out, '\b')
				i++
			case 'f':
				out = append(out, '\f')
				i++
			case 'n':
				out = append(out, '\n')
				i++
			case 'r':
				out = append(out, '\r')
				i++
			case 't':
				out = append(out, '\t')
				i++
			case 'u':
				r, ok := hex4(d.data, i+1)
				if !ok {
					d.i = i
					return "", d.errorf("invalid \\u escape")
				}
				i += 5
				if utf16.IsSurrogate(r) {
					r2, ok2 := rune(-1), false
					if i+1 < len(d.data) && d.data[i] == '\\' && d.data[i+1] == 'u' {
						r2, ok2 = hex4(d.data, i+2)
					}
					if dec := utf16.DecodeRune(r, r2); ok2 && dec != utf8.RuneError {
						i += 6
						r = dec
					} else {
						r = utf8.RuneError
					}
				}
				out = utf8.AppendRune(out, r)
			default:
				d.i = i
				return "", d.errorf("invalid escape")
			}
		case c < utf8.RuneSelf:
			out = append(out, c)
			i++
		default:
			r, size := utf8.DecodeRune(d.data[i:])
			if r == utf8.RuneError && size == 1 {
				out = append(out, "\uFFFD"...)
			} else {
				out = append(out, d.data[i:i+size]...)
			}
			i += size
		}
	}
}

func hex4(p []byte, i int) (rune, bool) {
	if i+4 > len(p) {
		return 0, false
	}
	var r rune
	for _, c := range p[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r*16 + rune(c)
	}
	return r, true
}
