package transit

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// sameAsStdlib checks DecodeJSON against encoding/json on one input: both
// accept with equal values, or both reject.
func sameAsStdlib(t *testing.T, in []byte) {
	t.Helper()
	var want map[string]any
	werr := json.Unmarshal(in, &want)
	if werr == nil && want == nil { // "null" decodes to a nil map; not a message
		werr = errors.New("null")
	}
	got, gerr := DecodeJSON(in)
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("input %q: encoding/json err %v, ours %v", in, werr, gerr)
	}
	if gerr != nil {
		if !errors.Is(gerr, ErrDecode) {
			t.Fatalf("input %q: error %v does not wrap ErrDecode", in, gerr)
		}
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("input %q:\n ours %#v\n want %#v", in, got, want)
	}
	// And our encoding of it decodes back the same with encoding/json.
	enc, err := AppendJSON(nil, got)
	if err != nil {
		t.Fatalf("encode %#v: %v", got, err)
	}
	var back map[string]any
	if err := json.Unmarshal(enc, &back); err != nil || !reflect.DeepEqual(back, want) {
		t.Fatalf("round trip of %q via %q: %v %#v", in, enc, err, back)
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
	deep := strings.Repeat(`{"a":`, maxDepth+5) + "1" + strings.Repeat("}", maxDepth+5)
	if _, err := DecodeJSON([]byte(deep)); !errors.Is(err, ErrDecode) {
		t.Fatalf("nesting beyond %d: %v", maxDepth, err)
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
