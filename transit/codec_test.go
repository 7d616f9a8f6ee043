package transit

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// sameAsStdlib checks DecodeJSON against encoding/json on one input: both
// accept with equal values, or both reject.
func sameAsStdlib(t *testing.T, in []byte) {
	t.Helper()
	if len(in) > 200 { // keep failure messages readable
		defer func() {
			if t.Failed() {
				t.Logf("(input was %d bytes)", len(in))
			}
		}()
	}
	var want map[string]any
	werr := json.Unmarshal(in, &want)
	if werr == nil && want == nil { // "null" decodes to a nil map; not a message
		werr = errors.New("null")
	}
	got, gerr := DecodeJSON(in)
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("input %.200q: encoding/json err %v, ours %v", in, werr, gerr)
	}
	// A batch's decoder takes keys from a cache: the same result, with
	// the cache empty and then filled by the same keys.
	keys := keyCache{}
	for range 2 {
		cached, cerr := decodeJSON(in, keys)
		if (cerr == nil) != (gerr == nil) || !reflect.DeepEqual(cached, got) {
			t.Fatalf("input %.200q: with a key cache %v (%v), without %v (%v)", in, cached, cerr, got, gerr)
		}
	}
	if gerr != nil {
		if !errors.Is(gerr, ErrDecode) {
			t.Fatalf("input %q: error %v does not wrap ErrDecode", in, gerr)
		}
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("input %.200q:\n ours %.200v\n want %.200v", in, got, want)
	}
	// And our encoding of it decodes back the same with encoding/json.
	enc, err := AppendJSON(nil, got)
	if err != nil {
		t.Fatalf("encode %#v: %v", got, err)
	}
	var back map[string]any
	if err := json.Unmarshal(enc, &back); err != nil || !reflect.DeepEqual(back, want) {
		t.Fatalf("round trip of %.200q via %.200q: %v", in, enc, err)
	}
}

var codecCases = []string{
	`{}`, ` { } `, `{"a":1}`, `{"a":-0.5e-3,"b":1E+2,"c":0,"d":-0}`,
	`{"s":"plain","e":"esc \" \\ \/ \b \f \n \r \t","u":"\u00e9\u2028\ud83d\ude00"}`,
	`{"lone":"\ud83d","bad":"\udc00x","mix":"\ud83dabc"}`,
	`{"n":null,"t":true,"f":false,"arr":[],"nested":{"x":[1,{"y":[null]}]}}`,
	`{"dup":1,"dup":2}`, "{\"utf8\":\"h\xc3\xa9llo \xe2\x82\xac\"}", "{\"badutf8\":\"a\xffb\"}",
	`{"big":1e308,"small":5e-324,"int":12345678901234567890}`,
	// rejected
	``, `null`, `[]`, `"s"`, `1`, `{"a":}`, `{"a":1,}`, `{"a" 1}`, `{a:1}`, `{"a":01}`, `{"a":1.}`,
	`{"a":.5}`, `{"a":1e}`, `{"a":-}`, `{"a":+1}`, `{"a":1e999}`, `{"a":tru}`, `{"a":nul}`,
	"{\"a\":\"\x01\"}", `{"a":"\x"}`, `{"a":"\u12"}`, `{"a":"unterminated}`, `{"a":[1,2}`,
	`{"a":1} x`, `{"a":1}}`, `{"a":[1 2]}`,
}

func TestCodecMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	for _, c := range codecCases {
		sameAsStdlib(t, []byte(c))
	}
	for _, depth := range []int{maxDepth - 1, maxDepth, maxDepth + 1} {
		for _, inner := range []string{"1", "{}", "[]"} {
			sameAsStdlib(t, []byte(strings.Repeat(`{"a":`, depth)+inner+strings.Repeat("}", depth)))
		}
	}
}

func TestEncodeGoValues(t *testing.T) {
	t.Parallel()
	type point struct{ X, Y int }
	msg := map[string]any{"i": 3, "i64": int64(-4), "u": uint64(5), "f32": float32(0.1),
		"strs": []string{"a"}, "pt": point{1, 2}, "num": json.Number("7.5"), "html": "<a&b>"}
	enc, err := AppendJSON(nil, msg)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(msg)
	var a, b map[string]any
	json.Unmarshal(enc, &a)
	json.Unmarshal(want, &b)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("ours %s\nwant %s", enc, want)
	}
	cyc := map[string]any{}
	cyc["self"] = cyc
	if _, err := AppendJSON(nil, cyc); err == nil {
		t.Fatal("a cyclic message must be an error, not a stack overflow")
	}
	if _, err := AppendJSON(nil, map[string]any{"nan": 0.0 / zero()}); err == nil {
		t.Fatal("NaN must be an error")
	}
}

func zero() float64 { return 0 }

func TestEncodeEdgeCases(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   map[string]any
		want string
		err  bool
	}{
		{map[string]any{"m": map[string]any(nil)}, `{"m":null}`, false},
		{map[string]any{"a": []any(nil)}, `{"a":null}`, false},
		{map[string]any{"n": json.Number("")}, `{"n":0}`, false},
		{map[string]any{"n": json.Number("-1.5e3")}, `{"n":-1.5e3}`, false},
		{map[string]any{"n": json.Number("Inf")}, "", true},
		{map[string]any{"n": json.Number("+1")}, "", true},
		{map[string]any{"n": json.Number(".5")}, "", true},
	}
	for _, tt := range tests {
		got, err := AppendJSON(nil, tt.in)
		if (err != nil) != tt.err || (!tt.err && string(got) != tt.want) {
			t.Errorf("%v: got %s %v, want %s (error %v)", tt.in, got, err, tt.want, tt.err)
		}
		if !tt.err {
			std, _ := json.Marshal(tt.in)
			if string(std) != tt.want {
				t.Errorf("encoding/json writes %s, the test wants %s", std, tt.want)
			}
		}
	}
}

// FuzzEncode: whatever encoding/json decodes, our encoding of it decodes
// back (with encoding/json) to the same value.
func FuzzEncode(f *testing.F) {
	for _, c := range codecCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var v map[string]any
		if json.Unmarshal(in, &v) != nil || v == nil {
			return
		}
		enc, err := AppendJSON(nil, v)
		if err != nil {
			t.Fatalf("encode %#v: %v", v, err)
		}
		var back map[string]any
		if err := json.Unmarshal(enc, &back); err != nil || !reflect.DeepEqual(back, v) {
			t.Fatalf("%q encoded as %q decodes to %#v (%v)", in, enc, back, err)
		}
	})
}

func FuzzCodec(f *testing.F) {
	for _, c := range codecCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, in []byte) { sameAsStdlib(t, in) })
}

var benchMsg = map[string]any{"ct": 12345.0, "outstr": "howdy", "source": "Example1",
	".ipc_transit_meta": map[string]any{"send_ts": 1764190000.123456}}

// BenchmarkCodec compares our encode+decode of a small message with
// encoding/json's, in the same run.
func BenchmarkCodec(b *testing.B) {
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			buf, _ := json.Marshal(benchMsg)
			var m map[string]any
			json.Unmarshal(buf, &m)
		}
	})
	b.Run("transit", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf, _ = AppendJSON(buf[:0], benchMsg)
			DecodeJSON(buf)
		}
	})
}

// A batch of messages with ever new keys, or long ones, does not grow the
// key cache past its bound.
func TestKeyCacheIsBounded(t *testing.T) {
	t.Parallel()
	keys := keyCache{}
	var b strings.Builder
	b.WriteString(`{"` + strings.Repeat("k", maxCachedKey+1) + `":0`)
	for i := range 1000 {
		fmt.Fprintf(&b, `,"k%d":%d`, i, i)
	}
	b.WriteString("}")
	m, err := decodeJSON([]byte(b.String()), keys)
	if err != nil || len(m) != 1001 {
		t.Fatalf("decoded %d keys, %v", len(m), err)
	}
	if len(keys) != maxCachedKeys {
		t.Fatalf("cache holds %d keys, want %d", len(keys), maxCachedKeys)
	}
	if _, ok := keys[strings.Repeat("k", maxCachedKey+1)]; ok {
		t.Fatal("a key longer than maxCachedKey was cached")
	}
}
