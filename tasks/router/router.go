// Package router is the built-in Router task: it forwards messages to
// queues by their content.
//
// Config (checked by the CUE definition in router.cue before the task
// sees it, and again by SetConfig):
//
//	routes: [...{
//		match:          {...}       // see message.Matcher; {} matches everything
//		transform?:     {...}       // see message.Transform; applied in place
//		forwards?:      [...{qname: string}]
//		short_circuit?: bool        // stop after this route when it matches
//	}]
//
// Every route is checked in order against the message as earlier matching
// routes transformed it. Each forward receives its own copy of the message.
//
// A message carrying a non-empty static_forwards array skips the routes: it
// travels an itinerary it carries itself. The first hop (an array of
// {forward: {qname}, transform?, log_history?}) is taken off the itinerary
// and each record of it receives a copy of the message, transformed by the
// record's transform, with the record appended to
// .static_forwards_log.forward_history when log_history is true. The
// receiving tasks emit the message again to continue the journey.
package router

import (
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/runtime"
	"github.com/multimodule/multimodule/transit"
)

// Kind is the Router's registered kind.
const Kind = "builtin.Router"

// ConfigSchema is the CUE definition #Config of the Router's config.
//
//go:embed router.cue
var ConfigSchema string

// ErrBadConfig is wrapped by every config error.
var ErrBadConfig = errors.New("router config")

// ConfigError locates a problem in the Router's config, so the config
// loader can point at the line.
type ConfigError struct {
	Path []string // e.g. routes, 0, match
	Err  error
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("%v: %s: %v", ErrBadConfig, strings.Join(e.Path, "."), e.Err)
}

func (e *ConfigError) Unwrap() []error { return []error{ErrBadConfig, e.Err} }

// ConfigPath is the path of the offending value inside the config.
func (e *ConfigError) ConfigPath() []string { return e.Path }

func configErr(err error, path ...string) error { return &ConfigError{Path: path, Err: err} }

// ErrBadStaticForwards is returned for a malformed itinerary in a message.
var ErrBadStaticForwards = errors.New("malformed static_forwards")

// Router is the routing task.
type Router struct {
	routes   []route
	unrouted uint64
	// logged is when the log channel last heard of unrouted messages, and
	// unlogged how many came since: a flood of them must not flood the log.
	logged   time.Time
	unlogged uint64
}

// unroutedTotal counts the messages every Router of this process matched
// no route for, for the daemon's metrics.
var unroutedTotal atomic.Uint64

// UnroutedTotal is how many messages the Routers of this process matched
// no route for.
func UnroutedTotal() uint64 { return unroutedTotal.Load() }

// unroutedLogEvery is the least time between two log lines about
// unrouted messages.
const unroutedLogEvery = time.Second

type route struct {
	match        *message.Matcher
	transform    *message.Transform
	forwards     []string
	shortCircuit bool
}

// New makes a Router with no routes.
func New() runtime.Task { return &Router{} }

// ForwardsMessages: what the Router sends are the messages it handles, so
// they keep counting their hops (runtime.Forwarder).
func (*Router) ForwardsMessages() {}

// SetConfig replaces the routes; on error the old routes stay.
func (r *Router) SetConfig(_ runtime.Context, config map[string]any) error {
	routes, err := parseRoutes(config)
	if err != nil {
		return err
	}
	r.routes = routes
	return nil
}

func parseRoutes(config map[string]any) ([]route, error) {
	for k := range config {
		if k != "routes" {
			return nil, configErr(errors.New("unknown field (want routes)"), k)
		}
	}
	raw, ok := config["routes"]
	if !ok {
		return nil, nil
	}
	list, ok := raw.([]any)
	if !ok {
		return nil, configErr(fmt.Errorf("want a list, got %T", raw), "routes")
	}
	routes := make([]route, 0, len(list))
	for i, x := range list {
		rt, err := parseRoute(x, "routes", strconv.Itoa(i))
		if err != nil {
			return nil, err
		}
		routes = append(routes, rt)
	}
	return routes, nil
}

func parseRoute(x any, path ...string) (route, error) {
	var rt route
	m, ok := x.(map[string]any)
	if !ok {
		return rt, configErr(fmt.Errorf("want an object, got %T", x), path...)
	}
	for k, v := range m {
		var err error
		switch k {
		case "match":
			pat, isMap := v.(map[string]any)
			if !isMap {
				err = fmt.Errorf("want an object, got %T", v)
				break
			}
			if sub, serr := checkPattern(pat); serr != nil {
				return rt, configErr(serr, append(append(path, k), sub...)...)
			}
			rt.match, err = message.Compile(pat)
		case "transform":
			t, isMap := v.(map[string]any)
			if !isMap {
				err = fmt.Errorf("want an object, got %T", v)
				break
			}
			if sub, serr := checkTransform(t); serr != nil {
				return rt, configErr(serr, append(append(path, k), sub...)...)
			}
			rt.transform, err = message.CompileTransform(t)
		case "forwards":
			rt.forwards, err = parseForwards(v)
		case "short_circuit":
			b, isBool := v.(bool)
			if !isBool {
				err = fmt.Errorf("want true or false, got %T", v)
			}
			rt.shortCircuit = b
		default:
			err = errors.New("unknown field (want match, transform, forwards, short_circuit)")
		}
		if err != nil {
			return rt, configErr(err, append(path, k)...)
		}
	}
	if rt.match == nil {
		return rt, configErr(errors.New("match is required ({} matches everything)"), path...)
	}
	return rt, nil
}

func parseForwards(v any) ([]string, error) {
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("want a list, got %T", v)
	}
	out := make([]string, 0, len(list))
	for i, f := range list {
		q, err := forwardQname(f)
		if err != nil {
			return nil, fmt.Errorf("[%d]: %w", i, err)
		}
		out = append(out, q)
	}
	return out, nil
}

func forwardQname(f any) (string, error) {
	fm, ok := f.(map[string]any)
	if !ok {
		return "", fmt.Errorf("a forward is an object {qname: string}, got %T", f)
	}
	q, ok := fm["qname"].(string)
	if !ok || q == "" {
		return "", errors.New("a forward needs a non-empty qname")
	}
	return q, nil
}

// Message routes one message. Forwarding errors are returned, except for
// out-of-band records (-o error:router): an error about one would be
// routed again and fail again, forever.
func (r *Router) Message(ctx runtime.Context, msg runtime.Message) error {
	err := r.route(ctx, msg)
	if _, oob := msg[runtime.OOBMarker]; oob {
		return nil
	}
	return err
}

func (r *Router) route(ctx runtime.Context, msg runtime.Message) error {
	if sf, ok := msg["static_forwards"]; ok {
		hops, isList := sf.([]any)
		if !isList {
			return fmt.Errorf("%w: want a list of hops, got %T", ErrBadStaticForwards, sf)
		}
		if len(hops) > 0 {
			return r.static(ctx, msg, hops)
		}
	}
	var pending []string
	var errs []error
	routed := false
	for _, rt := range r.routes {
		if !rt.match.Match(msg) {
			continue
		}
		routed = true
		if rt.transform != nil {
			// Earlier forwards get the message as it was before this change.
			errs = send(ctx, msg, pending, false, errs)
			pending = pending[:0]
			rt.transform.Apply(msg)
		}
		pending = append(pending, rt.forwards...)
		if rt.shortCircuit {
			break
		}
	}
	if !routed {
		r.unrouted++
		unroutedTotal.Add(1)
		if _, oob := msg[runtime.OOBMarker]; !oob {
			ctx.Debug("unrouted message", "message", transit.Excerpt(msg), "unrouted_total", r.unrouted)
			r.logUnrouted(ctx, msg)
		}
		return nil
	}
	return joinBounded(send(ctx, msg, pending, true, errs))
}

// logUnrouted tells the log channel about unrouted messages, at most once
// a second with how many came since the last line and the latest one (an
// operator who sees nothing under -d debug learns that routes miss).
func (r *Router) logUnrouted(ctx runtime.Context, msg runtime.Message) {
	r.unlogged++
	if now := time.Now(); now.Sub(r.logged) >= unroutedLogEvery {
		ctx.Log("unrouted messages", "count", r.unlogged, "unrouted_total", r.unrouted, "latest", transit.Excerpt(msg))
		r.logged, r.unlogged = now, 0
	}
}

// maxErrors is how many of a message's failed forwards its error names:
// a message may fan out to thousands of queues, and its error is logged.
const maxErrors = 3

// joinBounded joins the first maxErrors errors and counts the rest.
func joinBounded(errs []error) error {
	if len(errs) <= maxErrors {
		return errors.Join(errs...)
	}
	return errors.Join(append(errs[:maxErrors:maxErrors], fmt.Errorf("and %d more failed forwards", len(errs)-maxErrors))...)
}

// send delivers copies of msg to qnames. With handOver the last one gets
// msg itself: the Router is done with it.
func send(ctx runtime.Context, msg runtime.Message, qnames []string, handOver bool, errs []error) []error {
	for i, q := range qnames {
		m := msg
		if !handOver || i < len(qnames)-1 {
			m = message.DeepCopy(msg).(map[string]any)
		}
		if err := ctx.Send(q, m); err != nil {
			errs = append(errs, fmt.Errorf("forward to %s: %w", q, err))
		}
	}
	return errs
}

// static follows the itinerary the message carries.
func (r *Router) static(ctx runtime.Context, msg runtime.Message, hops []any) error {
	hop, ok := hops[0].([]any)
	if !ok {
		return fmt.Errorf("%w: each hop is a list of {forward: {qname}}, got %T", ErrBadStaticForwards, hops[0])
	}
	if len(hops) == 1 {
		delete(msg, "static_forwards")
	} else {
		msg["static_forwards"] = hops[1:]
	}
	var errs []error
	for i, x := range hop {
		rec, ok := x.(map[string]any)
		if !ok {
			errs = append(errs, fmt.Errorf("%w: record %d: want an object, got %T", ErrBadStaticForwards, i, x))
			continue
		}
		q, err := forwardQname(rec["forward"])
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: record %d: %w", ErrBadStaticForwards, i, err))
			continue
		}
		m := message.DeepCopy(msg).(map[string]any)
		if lh, _ := rec["log_history"].(bool); lh {
			logRec, _ := m[".static_forwards_log"].(map[string]any)
			if logRec == nil {
				logRec = map[string]any{}
				m[".static_forwards_log"] = logRec
			}
			hist, _ := logRec["forward_history"].([]any)
			logRec["forward_history"] = append(hist, message.DeepCopy(rec))
		}
		if tr, ok := rec["transform"].(map[string]any); ok {
			t, err := message.CompileTransform(tr)
			if err != nil {
				errs = append(errs, fmt.Errorf("%w: record %d: %w", ErrBadStaticForwards, i, err))
				continue
			}
			t.Apply(m)
		}
		if err := ctx.Send(q, m); err != nil {
			errs = append(errs, fmt.Errorf("static forward to %s: %w", q, err))
		}
	}
	return joinBounded(errs)
}

// CheckConfig validates a Router config beyond what its CUE definition can
// say (regexps compile, operators are known). The schema runs it at load.
func CheckConfig(config map[string]any) error {
	_, err := parseRoutes(config)
	return err
}
