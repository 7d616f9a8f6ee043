// Package httpclient is the built-in HTTPClient task: each message
// describes an HTTP request (method, url, headers, body, timeout); the
// task makes it and emits the response (status, headers, body bounded, the
// body decoded as JSON when asked).
//
// Only hosts its config allows are reached: a request or a redirect to any
// other host is refused before a connection is made, and the dialer checks
// the address once more, so no path (a proxy from the environment, a
// redirect) leads elsewhere.
//
// A request is made inside the task's message handler, one at a time, so
// the response emitted belongs to the message's lineage: the message
// leaves its queue only once its response is out (see docs/decisions.md).
package httpclient

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/multimodule/multimodule/runtime"
	"github.com/multimodule/multimodule/tasks/internal/taskconf"
)

// Kind is the task's registered kind.
const Kind = "builtin.HTTPClient"

// Description is the one line --list-kinds shows.
const Description = "makes the HTTP request a message describes, to allowed hosts only, and emits the response (body bounded, JSON decoded on request)"

// ConfigSchema is the CUE definition #Config of the task's config.
//
//go:embed httpclient.cue
var ConfigSchema string

// Errors of a request, each wrapped with what happened.
var (
	ErrNotAllowed = errors.New("host not allowed by the task's config")
	ErrRequest    = errors.New("message is not a valid request")
)

const (
	defaultTimeout      = 30 * time.Second
	defaultMaxTimeout   = 300 * time.Second
	defaultMaxBody      = 1 << 20
	defaultMaxRedirects = 10
)

// rule is one entry of allow.
type rule struct {
	host string // lower case; for a wildcard, the suffix with its dot
	any  bool   // "*." prefix: subdomains of host
	port string // "" for any port
}

func parseRule(s string) (rule, error) {
	host, port := s, ""
	if h, p, err := net.SplitHostPort(s); err == nil {
		host, port = h, p
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return rule{}, fmt.Errorf("bad port in %q", s)
		}
	}
	host = strings.ToLower(strings.Trim(host, "[]"))
	r := rule{host: host, port: port}
	if rest, ok := strings.CutPrefix(host, "*."); ok {
		r.any, r.host = true, "."+rest
	}
	if r.host == "" || r.host == "." || strings.ContainsAny(r.host, "*/ @") {
		return rule{}, fmt.Errorf("want host, host:port or *.domain[:port], got %q", s)
	}
	return r, nil
}

func (r rule) match(host, port string) bool {
	if r.port != "" && r.port != port {
		return false
	}
	if r.any {
		return strings.HasSuffix(host, r.host)
	}
	return host == r.host
}

type config struct {
	allow        []rule
	allowText    []string // as written, for errors
	timeout      time.Duration
	maxTimeout   time.Duration
	maxBody      int
	maxRedirects int
	to           string
}

// allowed checks a request's URL against the allow list.
func (c *config) allowed(u *url.URL) error {
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%w: scheme %q (want http or https)", ErrNotAllowed, u.Scheme)
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return c.allowedAddr(u.Hostname(), port)
}

func (c *config) allowedAddr(host, port string) error {
	host = strings.ToLower(host)
	for _, r := range c.allow {
		if r.match(host, port) {
			return nil
		}
	}
	return fmt.Errorf("%w: %s (allow: %s)", ErrNotAllowed, net.JoinHostPort(host, port), strings.Join(c.allowText, ", "))
}

// HTTPClient is the task. It is stateless: a response is out before its
// message leaves its queue.
type HTTPClient struct {
	cfg       *config
	client    *http.Client
	transport *http.Transport
}

// New makes an HTTPClient.
func New() runtime.Task { return &HTTPClient{} }

// CheckConfig validates a config as SetConfig would.
func CheckConfig(c map[string]any) error {
	_, err := parseConfig(c)
	return err
}

func parseConfig(c map[string]any) (*config, error) {
	r := taskconf.New(c)
	r.Only("allow", "timeout", "max_timeout", "max_body", "max_redirects", "to")
	cfg := &config{
		allowText:    r.Strings("allow"),
		timeout:      r.Seconds("timeout", defaultTimeout, time.Hour),
		maxTimeout:   r.Seconds("max_timeout", defaultMaxTimeout, time.Hour),
		maxBody:      r.Int("max_body", defaultMaxBody, 0, 64<<20),
		maxRedirects: r.Int("max_redirects", defaultMaxRedirects, 0, 20),
		to:           r.String("to", ""),
	}
	if r.Has("to") && cfg.to == "" {
		r.Fail("to", "must not be empty")
	}
	if err := r.Err(); err != nil {
		return nil, err
	}
	if len(cfg.allowText) == 0 {
		return nil, taskconf.Errorf([]string{"allow"}, "required: at least one host requests may go to")
	}
	for i, s := range cfg.allowText {
		ru, err := parseRule(s)
		if err != nil {
			return nil, taskconf.Errorf([]string{"allow", strconv.Itoa(i)}, "%v", err)
		}
		cfg.allow = append(cfg.allow, ru)
	}
	cfg.timeout = min(cfg.timeout, cfg.maxTimeout)
	return cfg, nil
}

// SetConfig takes the config and makes the task's own client.
func (h *HTTPClient) SetConfig(_ runtime.Context, c map[string]any) error {
	cfg, err := parseConfig(c)
	if err != nil {
		return err
	}
	if h.transport != nil {
		h.transport.CloseIdleConnections()
	}
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	h.transport = &http.Transport{
		// No proxy from the environment: the allow list is about where
		// connections go, and a proxy would be somewhere else.
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			// Checked again here, whatever led to this address.
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, fmt.Errorf("%w: %s", ErrNotAllowed, addr)
			}
			if err := cfg.allowedAddr(host, port); err != nil {
				return nil, err
			}
			return dialer.DialContext(ctx, network, addr)
		},
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	h.client = &http.Client{
		Transport: h.transport,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > cfg.maxRedirects {
				return fmt.Errorf("stopped after %d redirects", cfg.maxRedirects)
			}
			if err := cfg.allowed(req.URL); err != nil {
				return fmt.Errorf("redirect to %s: %w", req.URL.Redacted(), err)
			}
			return nil
		},
	}
	h.cfg = cfg
	return nil
}

// Stop closes the connections kept for reuse.
func (h *HTTPClient) Stop(runtime.Context) {
	if h.transport != nil {
		h.transport.CloseIdleConnections()
	}
}

// Message makes the request msg describes and emits the response. A
// request refused, malformed or failed (no response) is the message's
// error, and the emitted result says so in "error"; an HTTP error status
// is a response like any other.
func (h *HTTPClient) Message(ctx runtime.Context, msg runtime.Message) error {
	res := map[string]any{"request": request(msg)}
	err := h.do(msg, res)
	if err != nil {
		res["error"] = err.Error()
	}
	if h.cfg.to == "" {
		ctx.Emit(res)
	} else if serr := ctx.Send(h.cfg.to, res); serr != nil {
		ctx.Error("httpclient: response not sent", "to", h.cfg.to, "error", serr)
	}
	return err
}

// request is the message without its transport metadata, for the result.
func request(msg runtime.Message) map[string]any {
	out := maps.Clone(msg)
	delete(out, runtime.MetaKey)
	return out
}

// do makes the request and fills res with the response.
func (h *HTTPClient) do(msg runtime.Message, res map[string]any) error {
	req, decode, cancel, err := h.newRequest(msg)
	if err != nil {
		return err
	}
	defer cancel()
	began := time.Now()
	resp, err := h.client.Do(req)
	if err != nil {
		res["duration"] = time.Since(began).Seconds()
		return fmt.Errorf("httpclient: %s %s: %w", req.Method, req.URL.Redacted(), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, int64(h.cfg.maxBody)+1))
	res["duration"] = time.Since(began).Seconds()
	res["status"] = resp.StatusCode
	res["url"] = resp.Request.URL.Redacted()
	res["headers"] = headers(resp.Header)
	if err != nil {
		return fmt.Errorf("httpclient: reading the body of %s: %w", req.URL.Redacted(), err)
	}
	truncated := len(body) > h.cfg.maxBody
	if truncated {
		body = body[:h.cfg.maxBody]
	}
	res["body"], res["body_truncated"] = string(body), truncated
	if decode {
		var v any
		switch err := json.Unmarshal(body, &v); {
		case truncated:
			res["json_error"] = fmt.Sprintf("body longer than max_body (%d bytes): not decoded", h.cfg.maxBody)
		case err != nil:
			res["json_error"] = err.Error()
		default:
			res["json"] = v
		}
	}
	return nil
}

// newRequest reads the request from msg: url (required), method (GET),
// headers (strings or lists of strings), body (a string as is, anything
// else as JSON), timeout (seconds, at most max_timeout), json (decode the
// response body). The URL is checked against allow here, before anything
// connects.
func (h *HTTPClient) newRequest(msg runtime.Message) (*http.Request, bool, context.CancelFunc, error) {
	bad := func(format string, args ...any) (*http.Request, bool, context.CancelFunc, error) {
		return nil, false, nil, fmt.Errorf("%w: %s", ErrRequest, fmt.Sprintf(format, args...))
	}
	raw, ok := msg["url"].(string)
	if !ok || raw == "" {
		return bad("want a url string")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return bad("url: %v", err)
	}
	if err := h.cfg.allowed(u); err != nil {
		return nil, false, nil, err
	}
	method := "GET"
	if v, ok := msg["method"]; ok {
		if method, ok = v.(string); !ok || method == "" || strings.ContainsAny(method, " \t\r\n") {
			return bad("method must be a word such as GET or POST")
		}
		method = strings.ToUpper(method)
	}
	timeout := h.cfg.timeout
	if v, ok := msg["timeout"]; ok {
		f, isNum := v.(float64)
		if !isNum || f <= 0 {
			return bad("timeout must be seconds above 0")
		}
		timeout = min(time.Duration(f*float64(time.Second)), h.cfg.maxTimeout)
	}
	decode, _ := msg["json"].(bool)
	var body io.Reader
	jsonBody := false
	switch b := msg["body"].(type) {
	case nil:
	case string:
		body = strings.NewReader(b)
	default:
		enc, err := json.Marshal(b)
		if err != nil {
			return bad("body: %v", err)
		}
		body, jsonBody = bytes.NewReader(enc), true
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		cancel()
		return bad("%v", err)
	}
	if hs, ok := msg["headers"]; ok {
		obj, isObj := hs.(map[string]any)
		if !isObj {
			cancel()
			return bad("headers must be an object")
		}
		for k, v := range obj {
			switch x := v.(type) {
			case string:
				req.Header.Add(k, x)
			case []any:
				for _, e := range x {
					s, isStr := e.(string)
					if !isStr {
						cancel()
						return bad("header %s: want strings", k)
					}
					req.Header.Add(k, s)
				}
			default:
				cancel()
				return bad("header %s: want a string or a list of strings", k)
			}
		}
	}
	if jsonBody && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, decode, cancel, nil
}

// headers are the response's headers: a string each, or a list when the
// header came more than once (Set-Cookie cannot be joined).
func headers(h http.Header) map[string]any {
	out := make(map[string]any, len(h))
	for k, vs := range h {
		if len(vs) == 1 {
			out[k] = vs[0]
		} else {
			list := make([]any, len(vs))
			for i, v := range vs {
				list[i] = v
			}
			out[k] = list
		}
	}
	return out
}
