package httpclient_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/tasks/httpclient"
)

// server is an httptest server on 127.0.0.1 that counts its requests.
type server struct {
	*httptest.Server
	hits atomic.Int64
}

func newServer(t *testing.T, h http.HandlerFunc) *server {
	s := &server{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		h(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *server) hostPort() string { return strings.TrimPrefix(s.URL, "http://") }

// echo answers with what it got, as JSON.
func echo(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Add("X-Multi", "a")
	w.Header().Add("X-Multi", "b")
	w.WriteHeader(http.StatusTeapot)
	json.NewEncoder(w).Encode(map[string]any{"method": r.Method, "path": r.URL.Path,
		"token": r.Header.Get("X-Token"), "ctype": r.Header.Get("Content-Type"), "body": string(body)})
}

func only(t *testing.T, h *mmtest.Harness) map[string]any {
	t.Helper()
	if len(h.Emitted) != 1 {
		t.Fatalf("emitted %d messages, want 1: %v", len(h.Emitted), h.Emitted)
	}
	return h.Emitted[0]
}

func TestRequestAndResponse(t *testing.T) {
	s := newServer(t, echo)
	h := mmtest.New(t, "H", httpclient.New(), mmtest.Config(map[string]any{"allow": []any{s.hostPort()}}))
	err := h.Message(map[string]any{"url": s.URL + "/x", "method": "post", "headers": map[string]any{"X-Token": "t1"},
		"body": map[string]any{"a": 1.0}, "json": true, "id": "r1"})
	if err != nil {
		t.Fatal(err)
	}
	res := only(t, h)
	got, _ := res["json"].(map[string]any)
	if res["status"] != http.StatusTeapot || res["source"] != "H" || res["body_truncated"] != false ||
		got["method"] != "POST" || got["path"] != "/x" || got["token"] != "t1" ||
		got["ctype"] != "application/json" || got["body"] != `{"a":1}` {
		t.Fatalf("result %v", res)
	}
	hs := res["headers"].(map[string]any)
	if hs["Content-Type"] != "application/json" || len(hs["X-Multi"].([]any)) != 2 {
		t.Fatalf("headers %v", hs)
	}
	if res["request"].(map[string]any)["id"] != "r1" {
		t.Fatalf("request %v", res["request"])
	}
}

// TestOnlyAllowedHosts: another port, another name for the same host, a
// scheme other than http(s) and a redirect to a host not allowed are all
// refused before anything connects.
func TestOnlyAllowedHosts(t *testing.T) {
	other := newServer(t, echo)
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/away":
			http.Redirect(w, r, other.URL+"/stolen", http.StatusFound)
		case "/here":
			http.Redirect(w, r, "/landed", http.StatusFound)
		default:
			io.WriteString(w, "ok "+r.URL.Path)
		}
	})
	h := mmtest.New(t, "H", httpclient.New(), mmtest.Config(map[string]any{
		"allow": []any{s.hostPort(), "*.example.com"}, "to": "Out"}))
	for _, u := range []string{
		other.URL + "/",
		strings.Replace(s.URL, "127.0.0.1", "localhost", 1) + "/",
		"file:///etc/passwd",
		"http://example.com/", // *.example.com is its subdomains only
		s.URL + "/away",
	} {
		h.Sent = nil
		err := h.Message(map[string]any{"url": u})
		if !errors.Is(err, httpclient.ErrNotAllowed) {
			t.Fatalf("%s: err %v", u, err)
		}
		if len(h.Sent) != 1 || h.Sent[0].Queue != "Out" || !strings.Contains(h.Sent[0].Msg["error"].(string), "not allowed") {
			t.Fatalf("%s: sent %v", u, h.Sent)
		}
	}
	if n := other.hits.Load(); n != 0 {
		t.Fatalf("the host not allowed got %d requests", n)
	}
	// A redirect within the allowed host is followed.
	h.Sent = nil
	if err := h.Message(map[string]any{"url": s.URL + "/here"}); err != nil {
		t.Fatal(err)
	}
	if res := h.Sent[0].Msg; res["body"] != "ok /landed" || res["url"] != s.URL+"/landed" {
		t.Fatalf("result %v", res)
	}
}

func TestBodyBoundedAndTimeout(t *testing.T) {
	release := make(chan struct{})
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
		w.Write([]byte(strings.Repeat("z", 5<<20)))
	})
	defer close(release)
	h := mmtest.New(t, "H", httpclient.New(), mmtest.Config(map[string]any{"allow": []any{s.hostPort()}, "max_body": 1000.0}))
	if err := h.Message(map[string]any{"url": s.URL + "/big", "json": true}); err != nil {
		t.Fatal(err)
	}
	res := only(t, h)
	if len(res["body"].(string)) != 1000 || res["body_truncated"] != true || res["json_error"] == nil || res["json"] != nil {
		t.Fatalf("result: %d bytes, %v %v", len(res["body"].(string)), res["body_truncated"], res["json_error"])
	}
	h.Reset()
	err := h.Message(map[string]any{"url": s.URL + "/slow", "timeout": 0.2})
	if err == nil || !strings.Contains(only(t, h)["error"].(string), "deadline exceeded") {
		t.Fatalf("err %v, result %v", err, h.Emitted)
	}
}

func TestBadRequestsAndConfig(t *testing.T) {
	h := mmtest.New(t, "H", httpclient.New(), mmtest.Config(map[string]any{"allow": []any{"127.0.0.1:1"}}))
	for _, m := range []map[string]any{
		{},
		{"url": 5.0},
		{"url": "http://127.0.0.1:1/", "method": "GE T"},
		{"url": "http://127.0.0.1:1/", "headers": "x"},
		{"url": "http://127.0.0.1:1/", "timeout": -1.0},
	} {
		if err := h.Message(m); !errors.Is(err, httpclient.ErrRequest) {
			t.Errorf("%v: %v", m, err)
		}
	}
	for _, c := range []map[string]any{
		{},
		{"allow": []any{}},
		{"allow": []any{"a:99999"}},
		{"allow": []any{"*"}},
		{"allow": []any{"x"}, "max_body": -1.0},
		{"allow": []any{"x"}, "proxy": "y"},
	} {
		var located interface{ ConfigPath() []string }
		if err := httpclient.CheckConfig(c); !errors.As(err, &located) {
			t.Errorf("%v: %v", c, err)
		}
	}
	if err := httpclient.CheckConfig(map[string]any{"allow": []any{"*.example.com:443", "[::1]:80", "localhost"}}); err != nil {
		t.Fatal(err)
	}
}
