package jinja

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Template values: nil (None), undefined, bool, int64, float64, string,
// []any, *jdict, *jnamespace, *jmacro, jfunc.

type undefined struct{ name string }

// jdict is an insertion-ordered string-keyed dict (Python dict order
// matters for tojson and items()).
type jdict struct {
	keys []string
	m    map[string]any
}

func newDict() *jdict { return &jdict{m: map[string]any{}} }

func (d *jdict) set(k string, v any) {
	if _, ok := d.m[k]; !ok {
		d.keys = append(d.keys, k)
	}
	d.m[k] = v
}

func (d *jdict) get(k string) (any, bool) {
	v, ok := d.m[k]
	return v, ok
}

type jnamespace struct{ d *jdict }

// jtuple is a Python tuple: a list everywhere except in repr ("(a, b)").
type jtuple []any

// untuple lets list code handle tuples.
func untuple(v any) any {
	if t, ok := v.(jtuple); ok {
		return []any(t)
	}
	return v
}

type jfunc func(args []any, kwargs map[string]any) (any, error)

type jmacro struct {
	n    *macroNode
	root *scope
	r    *renderer
}

// Message is one chat turn. Render shows it to the template as a dict with
// role then content, in that order (tojson and items() see the order); the
// tokenizer package's Message is this type.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Template is a parsed Jinja template.
type Template struct {
	body []node
}

// Parse parses a Jinja2 chat template.
func Parse(src string) (*Template, error) {
	body, err := parseTemplate(src)
	if err != nil {
		return nil, err
	}
	return &Template{body: body}, nil
}

// maxRenderSteps bounds template execution so a hostile template cannot
// loop forever (range(10**9)) or render unbounded output.
const (
	maxRenderSteps  = 2_000_000
	maxRenderOutput = 64 << 20
)

// Render executes the template with vars (Go values: nil, bool, ints,
// floats, string, []any, []map[string]any, map[string]any, []string).
func (t *Template) Render(vars map[string]any) (string, error) {
	r := &renderer{}
	root := &scope{vars: map[string]any{}}
	for k, v := range builtinGlobals(r) {
		root.vars[k] = v
	}
	for k, v := range vars {
		root.vars[k] = fromGo(v)
	}
	var b strings.Builder
	if err := r.exec(t.body, root, &b); err != nil {
		if errors.Is(err, errBreak) || errors.Is(err, errContinue) {
			return "", fmt.Errorf("template: break/continue outside a loop")
		}
		return "", err
	}
	return b.String(), nil
}

// fromGo converts Go values to template values.
func fromGo(v any) any {
	switch x := v.(type) {
	case nil, bool, int64, float64, string, *jdict, *jnamespace, jfunc, undefined:
		return x
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n
		}
		f, _ := x.Float64()
		return f
	case int:
		return int64(x)
	case int32:
		return int64(x)
	case uint32:
		return int64(x)
	case float32:
		return float64(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = fromGo(e)
		}
		return out
	case []string:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = e
		}
		return out
	case []map[string]any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = fromGo(e)
		}
		return out
	case map[string]any:
		d := newDict()
		for _, k := range slices.Sorted(maps.Keys(x)) { // Go maps are unordered: be deterministic
			d.set(k, fromGo(x[k]))
		}
		return d
	case []Message:
		out := make([]any, len(x))
		for i, m := range x {
			out[i] = fromGo(m)
		}
		return out
	case Message:
		d := newDict()
		d.set("role", x.Role)
		d.set("content", x.Content)
		return d
	}
	return fmt.Sprint(v)
}

type scope struct {
	vars   map[string]any
	parent *scope
}

func (s *scope) lookup(name string) (any, bool) {
	for c := s; c != nil; c = c.parent {
		if v, ok := c.vars[name]; ok {
			return v, true
		}
	}
	return nil, false
}

var (
	errBreak    = errors.New("break")
	errContinue = errors.New("continue")
)

type renderer struct {
	steps int
	out   int
	calls int // macro call depth
}

func (r *renderer) tick() error {
	r.steps++
	if r.steps > maxRenderSteps {
		return fmt.Errorf("template: execution step limit exceeded")
	}
	return nil
}

func (r *renderer) write(b *strings.Builder, s string) error {
	r.out += len(s)
	if r.out > maxRenderOutput {
		return fmt.Errorf("template: output limit exceeded")
	}
	b.WriteString(s)
	return nil
}

func (r *renderer) exec(nodes []node, sc *scope, b *strings.Builder) error {
	for _, n := range nodes {
		if err := r.tick(); err != nil {
			return err
		}
		switch n := n.(type) {
		case textNode:
			if err := r.write(b, n.s); err != nil {
				return err
			}
		case outputNode:
			v, err := r.eval(n.e, sc)
			if err != nil {
				return err
			}
			if err := r.write(b, toStr(v)); err != nil {
				return err
			}
		case *ifNode:
			done := false
			for i, c := range n.conds {
				v, err := r.eval(c, sc)
				if err != nil {
					return err
				}
				if truthy(v) {
					if err := r.exec(n.bodies[i], sc, b); err != nil {
						return err
					}
					done = true
					break
				}
			}
			if !done && n.els != nil {
				if err := r.exec(n.els, sc, b); err != nil {
					return err
				}
			}
		case *forNode:
			if err := r.execFor(n, sc, b); err != nil {
				return err
			}
		case *setNode:
			if err := r.execSet(n, sc); err != nil {
				return err
			}
		case *macroNode:
			sc.vars[n.name] = &jmacro{n: n, root: sc, r: r}
		case *callBlockNode:
			caller := jfunc(func(args []any, kwargs map[string]any) (any, error) {
				var cb strings.Builder
				if err := r.exec(n.body, &scope{vars: map[string]any{}, parent: sc}, &cb); err != nil {
					return nil, err
				}
				return cb.String(), nil
			})
			inner := &scope{vars: map[string]any{"caller": caller}, parent: sc}
			v, err := r.eval(n.call, inner)
			if err != nil {
				return err
			}
			if err := r.write(b, toStr(v)); err != nil {
				return err
			}
		case breakNode:
			return errBreak
		case continueNode:
			return errContinue
		default:
			return fmt.Errorf("template: unknown node %T", n)
		}
	}
	return nil
}

func (r *renderer) execFor(n *forNode, sc *scope, b *strings.Builder) error {
	it, err := r.eval(n.iter, sc)
	if err != nil {
		return err
	}
	items, err := iterate(it)
	if err != nil {
		return err
	}
	if n.cond != nil { // {% for x in xs if cond %} filters before loop.* is computed
		var kept []any
		for _, item := range items {
			inner := &scope{vars: map[string]any{}, parent: sc}
			if err := bindTargets(inner, n.targets, item); err != nil {
				return err
			}
			v, err := r.eval(n.cond, inner)
			if err != nil {
				return err
			}
			if truthy(v) {
				kept = append(kept, item)
			}
		}
		items = kept
	}
	if len(items) == 0 {
		if n.els != nil {
			return r.exec(n.els, sc, b)
		}
		return nil
	}
	for i, item := range items {
		inner := &scope{vars: map[string]any{}, parent: sc}
		if err := bindTargets(inner, n.targets, item); err != nil {
			return err
		}
		loop := newDict()
		loop.set("index0", int64(i))
		loop.set("index", int64(i+1))
		loop.set("revindex0", int64(len(items)-1-i))
		loop.set("revindex", int64(len(items)-i))
		loop.set("first", i == 0)
		loop.set("last", i == len(items)-1)
		loop.set("length", int64(len(items)))
		if i > 0 {
			loop.set("previtem", items[i-1])
		} else {
			loop.set("previtem", undefined{"previtem"})
		}
		if i+1 < len(items) {
			loop.set("nextitem", items[i+1])
		} else {
			loop.set("nextitem", undefined{"nextitem"})
		}
		idx := i
		loop.set("cycle", jfunc(func(args []any, _ map[string]any) (any, error) {
			if len(args) == 0 {
				return nil, fmt.Errorf("loop.cycle: no arguments")
			}
			return args[idx%len(args)], nil
		}))
		inner.vars["loop"] = loop
		err := r.exec(n.body, inner, b)
		if errors.Is(err, errBreak) {
			break
		}
		if err != nil && !errors.Is(err, errContinue) {
			return err
		}
	}
	return nil
}

func bindTargets(sc *scope, targets []string, item any) error {
	if len(targets) == 1 {
		sc.vars[targets[0]] = item
		return nil
	}
	parts, err := iterate(item)
	if err != nil || len(parts) != len(targets) {
		return fmt.Errorf("template: cannot unpack %s into %d names", typeName(item), len(targets))
	}
	for i, t := range targets {
		sc.vars[t] = parts[i]
	}
	return nil
}

func (r *renderer) execSet(n *setNode, sc *scope) error {
	var v any
	if n.body != nil {
		var b strings.Builder
		if err := r.exec(n.body, sc, &b); err != nil {
			return err
		}
		v = b.String()
	} else {
		var err error
		if v, err = r.eval(n.e, sc); err != nil {
			return err
		}
	}
	if n.ns != "" {
		obj, _ := sc.lookup(n.ns)
		ns, ok := obj.(*jnamespace)
		if !ok {
			return fmt.Errorf("template: cannot assign attribute on %s %q (not a namespace)", typeName(obj), n.ns)
		}
		ns.d.set(n.att, v)
		return nil
	}
	return bindTargets(sc, n.targets, v)
}

func typeName(v any) string {
	if _, ok := v.(jtuple); ok {
		return "tuple"
	}
	switch v.(type) {
	case nil:
		return "none"
	case undefined:
		return "undefined"
	case bool:
		return "bool"
	case int64:
		return "int"
	case float64:
		return "float"
	case string:
		return "string"
	case []any:
		return "list"
	case *jdict:
		return "dict"
	case *jnamespace:
		return "namespace"
	case *jmacro, jfunc:
		return "function"
	}
	return fmt.Sprintf("%T", v)
}

func truthy(v any) bool {
	switch x := untuple(v).(type) {
	case nil, undefined:
		return false
	case bool:
		return x
	case int64:
		return x != 0
	case float64:
		return x != 0
	case string:
		return x != ""
	case []any:
		return len(x) > 0
	case *jdict:
		return len(x.keys) > 0
	}
	return true
}

// toStr renders a value as Jinja's str() would.
func toStr(v any) string {
	switch x := v.(type) {
	case nil:
		return "None"
	case undefined:
		return ""
	case string:
		return x
	case bool:
		if x {
			return "True"
		}
		return "False"
	}
	return repr(v)
}

// repr is Python's repr for template values.
func repr(v any) string { return reprDepth(v, 0) }

func reprDepth(v any, depth int) string {
	if depth > 100 {
		return "..." // self-referencing namespaces
	}
	switch x := v.(type) {
	case nil:
		return "None"
	case undefined:
		return ""
	case bool:
		return toStr(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return pyFloat(x)
	case string:
		q := "'"
		if strings.Contains(x, "'") && !strings.Contains(x, `"`) {
			q = `"`
		}
		var b strings.Builder
		b.WriteString(q)
		for _, r := range x {
			switch {
			case r == '\\':
				b.WriteString(`\\`)
			case string(r) == q:
				b.WriteString(`\` + q)
			case r == '\n':
				b.WriteString(`\n`)
			case r == '\r':
				b.WriteString(`\r`)
			case r == '\t':
				b.WriteString(`\t`)
			case r < 0x20 || r == 0x7f:
				fmt.Fprintf(&b, `\x%02x`, r)
			default:
				b.WriteRune(r)
			}
		}
		b.WriteString(q)
		return b.String()
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = reprDepth(e, depth+1)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case *jdict:
		parts := make([]string, len(x.keys))
		for i, k := range x.keys {
			parts[i] = repr(k) + ": " + reprDepth(x.m[k], depth+1)
		}
		return "{" + strings.Join(parts, ", ") + "}"
	case *jnamespace:
		return "<Namespace " + reprDepth(x.d, depth+1) + ">"
	case jtuple:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = reprDepth(e, depth+1)
		}
		if len(parts) == 1 {
			return "(" + parts[0] + ",)"
		}
		return "(" + strings.Join(parts, ", ") + ")"
	}
	return fmt.Sprint(v)
}

func pyFloat(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	case math.IsNaN(f):
		return "nan"
	}
	a := math.Abs(f)
	if a != 0 && (a >= 1e16 || a < 1e-4) {
		s := strconv.FormatFloat(f, 'e', -1, 64)
		// Python writes 1e+16, Go 1e+16; Python pads exponents to 2 digits.
		return s
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.Contains(s, ".") {
		s += ".0"
	}
	return s
}

// iterate lists the items of a value for for-loops and filters.
func iterate(v any) ([]any, error) {
	switch x := untuple(v).(type) {
	case []any:
		return x, nil
	case *jdict:
		out := make([]any, len(x.keys))
		for i, k := range x.keys {
			out[i] = k
		}
		return out, nil
	case string:
		out := make([]any, 0, len(x))
		for _, r := range x {
			out = append(out, string(r))
		}
		return out, nil
	case undefined, nil:
		if _, ok := v.(undefined); ok {
			return nil, nil // iterating undefined yields nothing in Jinja
		}
	}
	return nil, fmt.Errorf("template: %s is not iterable", typeName(v))
}

func (r *renderer) eval(e expr, sc *scope) (any, error) {
	if err := r.tick(); err != nil {
		return nil, err
	}
	switch e := e.(type) {
	case *literal:
		return e.v, nil
	case *nameExpr:
		if v, ok := sc.lookup(e.name); ok {
			return v, nil
		}
		return undefined{e.name}, nil
	case *listExpr:
		out := make([]any, len(e.items))
		for i, it := range e.items {
			v, err := r.eval(it, sc)
			if err != nil {
				return nil, err
			}
			out[i] = v
		}
		if e.tuple {
			return jtuple(out), nil
		}
		return out, nil
	case *dictExpr:
		d := newDict()
		for i := range e.keys {
			k, err := r.eval(e.keys[i], sc)
			if err != nil {
				return nil, err
			}
			v, err := r.eval(e.vals[i], sc)
			if err != nil {
				return nil, err
			}
			ks, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("template: dict keys must be strings, got %s", typeName(k))
			}
			d.set(ks, v)
		}
		return d, nil
	case *attrExpr:
		obj, err := r.eval(e.obj, sc)
		if err != nil {
			return nil, err
		}
		return getAttr(obj, e.name), nil
	case *indexExpr:
		obj, err := r.eval(e.obj, sc)
		if err != nil {
			return nil, err
		}
		idx, err := r.eval(e.idx, sc)
		if err != nil {
			return nil, err
		}
		return getItem(obj, idx)
	case *sliceExpr:
		return r.evalSlice(e, sc)
	case *callExpr:
		fn, args, kwargs, err := r.evalApplied(e.fn, e.args, e.kwargs, sc)
		if err != nil {
			return nil, err
		}
		return r.call(fn, args, kwargs)
	case *filterExpr:
		obj, args, kwargs, err := r.evalApplied(e.obj, e.args, e.kwargs, sc)
		if err != nil {
			return nil, err
		}
		return r.applyFilter(e.name, obj, args, kwargs)
	case *testExpr:
		obj, args, _, err := r.evalApplied(e.obj, e.args, nil, sc)
		if err != nil {
			return nil, err
		}
		ok, err := r.applyTest(e.name, obj, args)
		if err != nil {
			return nil, err
		}
		return ok != e.neg, nil
	case *unaryExpr:
		v, err := r.eval(e.e, sc)
		if err != nil {
			return nil, err
		}
		if e.op == "not" {
			return !truthy(v), nil
		}
		switch x := v.(type) {
		case int64:
			return -x, nil
		case float64:
			return -x, nil
		case bool:
			return -b2i(x), nil
		}
		return nil, fmt.Errorf("template: bad operand for unary -: %s", typeName(v))
	case *binExpr:
		l, err := r.eval(e.l, sc)
		if err != nil {
			return nil, err
		}
		switch e.op {
		case "and":
			if !truthy(l) {
				return l, nil
			}
			return r.eval(e.r, sc)
		case "or":
			if truthy(l) {
				return l, nil
			}
			return r.eval(e.r, sc)
		}
		rv, err := r.eval(e.r, sc)
		if err != nil {
			return nil, err
		}
		return binOp(e.op, l, rv)
	case *condExpr:
		c, err := r.eval(e.cond, sc)
		if err != nil {
			return nil, err
		}
		if truthy(c) {
			return r.eval(e.yes, sc)
		}
		if e.no == nil {
			return undefined{}, nil
		}
		return r.eval(e.no, sc)
	case *cmpExpr:
		l, err := r.eval(e.first, sc)
		if err != nil {
			return nil, err
		}
		for i, op := range e.ops {
			rv, err := r.eval(e.rest[i], sc)
			if err != nil {
				return nil, err
			}
			ok, err := compare(op, l, rv)
			if err != nil {
				return nil, err
			}
			if !ok {
				return false, nil
			}
			l = rv
		}
		return true, nil
	}
	return nil, fmt.Errorf("template: unknown expression %T", e)
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// evalApplied evaluates what a call, filter or test applies to, then its
// arguments, in that order (the order errors surface in).
func (r *renderer) evalApplied(head expr, args []expr, kwargs []kwarg, sc *scope) (any, []any, map[string]any, error) {
	v, err := r.eval(head, sc)
	if err != nil {
		return nil, nil, nil, err
	}
	a, kw, err := r.evalArgs(args, kwargs, sc)
	if err != nil {
		return nil, nil, nil, err
	}
	return v, a, kw, nil
}

func (r *renderer) evalArgs(args []expr, kwargs []kwarg, sc *scope) ([]any, map[string]any, error) {
	out := make([]any, len(args))
	for i, a := range args {
		v, err := r.eval(a, sc)
		if err != nil {
			return nil, nil, err
		}
		out[i] = v
	}
	var kw map[string]any
	if len(kwargs) > 0 {
		kw = map[string]any{}
		for _, k := range kwargs {
			v, err := r.eval(k.e, sc)
			if err != nil {
				return nil, nil, err
			}
			kw[k.name] = v
		}
	}
	return out, kw, nil
}

func (r *renderer) evalSlice(e *sliceExpr, sc *scope) (any, error) {
	obj, err := r.eval(e.obj, sc)
	if err != nil {
		return nil, err
	}
	bound := func(x expr) (*int64, error) {
		if x == nil {
			return nil, nil
		}
		v, err := r.eval(x, sc)
		if err != nil {
			return nil, err
		}
		if v == nil {
			return nil, nil
		}
		n, ok := v.(int64)
		if !ok {
			return nil, fmt.Errorf("template: slice indices must be integers")
		}
		return &n, nil
	}
	lo, err := bound(e.lo)
	if err != nil {
		return nil, err
	}
	hi, err := bound(e.hi)
	if err != nil {
		return nil, err
	}
	st, err := bound(e.step)
	if err != nil {
		return nil, err
	}
	var items []any
	isStr := false
	switch x := untuple(obj).(type) {
	case []any:
		items = x
	case string:
		isStr = true
		items, _ = iterate(x)
	default:
		return nil, fmt.Errorf("template: cannot slice %s", typeName(obj))
	}
	idx := pySliceIndices(len(items), lo, hi, st)
	if idx == nil && st != nil && *st == 0 {
		return nil, fmt.Errorf("template: slice step cannot be zero")
	}
	if isStr {
		var b strings.Builder
		for _, i := range idx {
			b.WriteString(items[i].(string))
		}
		return b.String(), nil
	}
	out := make([]any, len(idx))
	for k, i := range idx {
		out[k] = items[i]
	}
	return out, nil
}

// pySliceIndices follows Python's slice.indices.
func pySliceIndices(n int, lo, hi, st *int64) []int {
	step := int64(1)
	if st != nil {
		step = *st
	}
	if step == 0 {
		return nil
	}
	N := int64(n)
	clamp := func(p *int64, def, lower, upper int64) int64 {
		if p == nil {
			return def
		}
		v := *p
		if v < 0 {
			v += N
			if v < lower {
				v = lower
			}
		} else if v > upper {
			v = upper
		}
		return v
	}
	var start, stop int64
	if step > 0 {
		start = clamp(lo, 0, 0, N)
		stop = clamp(hi, N, 0, N)
	} else {
		start = clamp(lo, N-1, -1, N-1)
		stop = clamp(hi, -1, -1, N-1)
	}
	out := []int{}
	for i := start; (step > 0 && i < stop) || (step < 0 && i > stop); i += step {
		out = append(out, int(i))
	}
	return out
}

func getAttr(obj any, name string) any {
	switch x := untuple(obj).(type) {
	case *jdict:
		if m := dictMethod(x, name); m != nil {
			return m
		}
		if v, ok := x.get(name); ok {
			return v
		}
	case *jnamespace:
		if v, ok := x.d.get(name); ok {
			return v
		}
	case string:
		if m := strMethod(x, name); m != nil {
			return m
		}
	case []any:
		if m := listMethod(x, name); m != nil {
			return m
		}
	}
	return undefined{name}
}

func getItem(obj, idx any) (any, error) {
	switch x := untuple(obj).(type) {
	case *jdict:
		if k, ok := idx.(string); ok {
			if v, ok := x.get(k); ok {
				return v, nil
			}
			if m := dictMethod(x, k); m != nil {
				return m, nil
			}
		}
		return undefined{fmt.Sprint(idx)}, nil
	case *jnamespace:
		if k, ok := idx.(string); ok {
			if v, ok := x.d.get(k); ok {
				return v, nil
			}
		}
		return undefined{fmt.Sprint(idx)}, nil
	case []any:
		i, ok := idx.(int64)
		if !ok {
			if s, ok := idx.(string); ok {
				return getAttr(x, s), nil
			}
			return nil, fmt.Errorf("template: list indices must be integers, not %s", typeName(idx))
		}
		if i < 0 {
			i += int64(len(x))
		}
		if i < 0 || i >= int64(len(x)) {
			return undefined{"index"}, nil
		}
		return x[i], nil
	case string:
		i, ok := idx.(int64)
		if !ok {
			if s, ok := idx.(string); ok {
				return getAttr(x, s), nil
			}
			return nil, fmt.Errorf("template: string indices must be integers")
		}
		rs := []rune(x)
		if i < 0 {
			i += int64(len(rs))
		}
		if i < 0 || i >= int64(len(rs)) {
			return undefined{"index"}, nil
		}
		return string(rs[i]), nil
	case undefined:
		return undefined{x.name}, nil
	}
	return undefined{fmt.Sprint(idx)}, nil
}

func (r *renderer) call(fn any, args []any, kwargs map[string]any) (any, error) {
	switch f := fn.(type) {
	case jfunc:
		return f(args, kwargs)
	case *jmacro:
		return f.invoke(args, kwargs)
	case undefined:
		return nil, fmt.Errorf("template: %q is undefined and cannot be called", f.name)
	}
	return nil, fmt.Errorf("template: %s is not callable", typeName(fn))
}

func (m *jmacro) invoke(args []any, kwargs map[string]any) (any, error) {
	m.r.calls++
	defer func() { m.r.calls-- }()
	if m.r.calls > maxNesting {
		return nil, fmt.Errorf("template: macro %s: recursion too deep", m.n.name)
	}
	sc := &scope{vars: map[string]any{}, parent: m.root}
	for i, p := range m.n.params {
		switch {
		case i < len(args):
			sc.vars[p.name] = args[i]
		case hasKey(kwargs, p.name):
			sc.vars[p.name] = kwargs[p.name]
		case p.def != nil:
			v, err := m.r.eval(p.def, sc)
			if err != nil {
				return nil, err
			}
			sc.vars[p.name] = v
		default:
			sc.vars[p.name] = undefined{p.name}
		}
	}
	if len(args) > len(m.n.params) {
		sc.vars["varargs"] = args[len(m.n.params):]
	}
	var b strings.Builder
	if err := m.r.exec(m.n.body, sc, &b); err != nil {
		return nil, err
	}
	return b.String(), nil
}

func builtinGlobals(r *renderer) map[string]any {
	return map[string]any{
		"namespace": jfunc(func(args []any, kwargs map[string]any) (any, error) {
			d := newDict()
			for _, a := range args {
				if ad, ok := a.(*jdict); ok {
					for _, k := range ad.keys {
						d.set(k, ad.m[k])
					}
				}
			}
			for _, k := range slices.Sorted(maps.Keys(kwargs)) {
				d.set(k, kwargs[k])
			}
			return &jnamespace{d: d}, nil
		}),
		"range": jfunc(func(args []any, _ map[string]any) (any, error) {
			var lo, hi, st int64 = 0, 0, 1
			ints := make([]int64, len(args))
			for i, a := range args {
				n, ok := a.(int64)
				if !ok {
					return nil, fmt.Errorf("range: integer arguments expected")
				}
				ints[i] = n
			}
			switch len(ints) {
			case 1:
				hi = ints[0]
			case 2:
				lo, hi = ints[0], ints[1]
			case 3:
				lo, hi, st = ints[0], ints[1], ints[2]
			default:
				return nil, fmt.Errorf("range: 1 to 3 arguments expected")
			}
			if st == 0 {
				return nil, fmt.Errorf("range: step must not be zero")
			}
			if n := (hi - lo) / st; n > maxRenderSteps {
				return nil, fmt.Errorf("range: %d items is too many", n)
			}
			var out []any
			for i := lo; (st > 0 && i < hi) || (st < 0 && i > hi); i += st {
				if err := r.tick(); err != nil {
					return nil, err
				}
				out = append(out, i)
			}
			return out, nil
		}),
		"dict": jfunc(func(args []any, kwargs map[string]any) (any, error) {
			d := newDict()
			for _, k := range slices.Sorted(maps.Keys(kwargs)) {
				d.set(k, kwargs[k])
			}
			return d, nil
		}),
		"raise_exception": jfunc(func(args []any, _ map[string]any) (any, error) {
			msg := "raise_exception called"
			if len(args) > 0 {
				msg = toStr(args[0])
			}
			return nil, fmt.Errorf("template: %s", msg)
		}),
		"strftime_now": jfunc(func(args []any, _ map[string]any) (any, error) {
			if len(args) != 1 {
				return nil, fmt.Errorf("strftime_now: one format argument expected")
			}
			return strftime(time.Now(), toStr(args[0])), nil
		}),
	}
}

// strftime supports the directives chat templates use for dates.
func strftime(t time.Time, f string) string {
	var b strings.Builder
	for i := 0; i < len(f); i++ {
		if f[i] != '%' || i+1 >= len(f) {
			b.WriteByte(f[i])
			continue
		}
		i++
		switch f[i] {
		case 'Y':
			b.WriteString(t.Format("2006"))
		case 'm':
			b.WriteString(t.Format("01"))
		case 'd':
			b.WriteString(t.Format("02"))
		case 'B':
			b.WriteString(t.Format("January"))
		case 'b':
			b.WriteString(t.Format("Jan"))
		case 'H':
			b.WriteString(t.Format("15"))
		case 'M':
			b.WriteString(t.Format("04"))
		case 'S':
			b.WriteString(t.Format("05"))
		case 'A':
			b.WriteString(t.Format("Monday"))
		case 'a':
			b.WriteString(t.Format("Mon"))
		case 'y':
			b.WriteString(t.Format("06"))
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(f[i])
		}
	}
	return b.String()
}

func toNum(v any) (int64, float64, bool, bool) {
	switch x := v.(type) {
	case int64:
		return x, float64(x), false, true
	case float64:
		return 0, x, true, true
	case bool:
		return b2i(x), float64(b2i(x)), false, true
	}
	return 0, 0, false, false
}

func binOp(op string, l, r any) (any, error) {
	tooBig := fmt.Errorf("template: value exceeds %d bytes", maxRenderOutput)
	if op == "~" {
		ls, rs := toStr(l), toStr(r)
		if len(ls)+len(rs) > maxRenderOutput {
			return nil, tooBig
		}
		return ls + rs, nil
	}
	switch op {
	case "+":
		if ls, ok := l.(string); ok {
			if rs, ok := r.(string); ok {
				if len(ls)+len(rs) > maxRenderOutput {
					return nil, tooBig
				}
				return ls + rs, nil
			}
		}
		if ll, ok := untuple(l).([]any); ok {
			if rl, ok := untuple(r).([]any); ok {
				if len(ll)+len(rl) > maxRenderOutput/16 {
					return nil, tooBig
				}
				out := append(append([]any{}, ll...), rl...)
				return out, nil
			}
		}
	case "%":
		if s, ok := l.(string); ok {
			return pyPercent(s, r)
		}
	case "*":
		if s, ok := l.(string); ok {
			if n, ok := r.(int64); ok {
				if n < 0 {
					n = 0
				}
				if len(s) > 0 && n > maxRenderOutput/int64(len(s)) {
					return nil, fmt.Errorf("template: string repetition too large")
				}
				return strings.Repeat(s, int(n)), nil
			}
		}
	}
	li, lf, lfl, ok1 := toNum(l)
	ri, rf, rfl, ok2 := toNum(r)
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("template: unsupported operand types for %s: %s and %s", op, typeName(l), typeName(r))
	}
	isFloat := lfl || rfl
	switch op {
	case "+":
		if isFloat {
			return lf + rf, nil
		}
		return li + ri, nil
	case "-":
		if isFloat {
			return lf - rf, nil
		}
		return li - ri, nil
	case "*":
		if isFloat {
			return lf * rf, nil
		}
		return li * ri, nil
	case "/":
		if rf == 0 {
			return nil, fmt.Errorf("template: division by zero")
		}
		return lf / rf, nil
	case "//":
		if rf == 0 {
			return nil, fmt.Errorf("template: division by zero")
		}
		if isFloat {
			return math.Floor(lf / rf), nil
		}
		q := li / ri
		if (li%ri != 0) && ((li < 0) != (ri < 0)) {
			q--
		}
		return q, nil
	case "%":
		if rf == 0 {
			return nil, fmt.Errorf("template: modulo by zero")
		}
		if isFloat {
			m := math.Mod(lf, rf)
			if m != 0 && (m < 0) != (rf < 0) {
				m += rf
			}
			return m, nil
		}
		m := li % ri
		if m != 0 && (m < 0) != (ri < 0) {
			m += ri
		}
		return m, nil
	case "**":
		if !isFloat && ri >= 0 {
			res := int64(1)
			for k := int64(0); k < ri && k < 64; k++ {
				res *= li
			}
			return res, nil
		}
		return math.Pow(lf, rf), nil
	}
	return nil, fmt.Errorf("template: unknown operator %s", op)
}

func equal(a, b any) bool {
	a, b = untuple(a), untuple(b)
	if ai, af, _, ok := toNum(a); ok {
		if bi, bf, _, ok := toNum(b); ok {
			_ = ai
			_ = bi
			return af == bf
		}
		return false
	}
	switch x := a.(type) {
	case nil:
		return b == nil
	case undefined:
		_, ok := b.(undefined)
		return ok
	case string:
		y, ok := b.(string)
		return ok && x == y
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !equal(x[i], y[i]) {
				return false
			}
		}
		return true
	case *jdict:
		y, ok := b.(*jdict)
		if !ok || len(x.keys) != len(y.keys) {
			return false
		}
		for k, v := range x.m {
			w, ok := y.m[k]
			if !ok || !equal(v, w) {
				return false
			}
		}
		return true
	}
	return a == b
}

func compare(op string, l, r any) (bool, error) {
	switch op {
	case "==":
		return equal(l, r), nil
	case "!=":
		return !equal(l, r), nil
	case "in", "not in":
		in, err := contains(r, l)
		if err != nil {
			return false, err
		}
		return in == (op == "in"), nil
	}
	var c int
	if ls, ok := l.(string); ok {
		rs, ok := r.(string)
		if !ok {
			return false, fmt.Errorf("template: cannot compare string and %s", typeName(r))
		}
		c = strings.Compare(ls, rs)
	} else {
		_, lf, _, ok1 := toNum(l)
		_, rf, _, ok2 := toNum(r)
		if !ok1 || !ok2 {
			return false, fmt.Errorf("template: cannot compare %s and %s", typeName(l), typeName(r))
		}
		switch {
		case lf < rf:
			c = -1
		case lf > rf:
			c = 1
		}
	}
	switch op {
	case "<":
		return c < 0, nil
	case ">":
		return c > 0, nil
	case "<=":
		return c <= 0, nil
	case ">=":
		return c >= 0, nil
	}
	return false, fmt.Errorf("template: unknown comparison %s", op)
}

func contains(container, item any) (bool, error) {
	switch c := untuple(container).(type) {
	case string:
		s, ok := item.(string)
		if !ok {
			return false, fmt.Errorf("template: 'in <string>' requires a string, not %s", typeName(item))
		}
		return strings.Contains(c, s), nil
	case []any:
		for _, x := range c {
			if equal(x, item) {
				return true, nil
			}
		}
		return false, nil
	case *jdict:
		s, ok := item.(string)
		if !ok {
			return false, nil
		}
		_, found := c.m[s]
		return found, nil
	case undefined:
		return false, nil
	}
	return false, fmt.Errorf("template: argument of type %s is not iterable", typeName(container))
}

// ---- methods ----

func dictMethod(d *jdict, name string) any {
	switch name {
	case "items":
		return jfunc(func([]any, map[string]any) (any, error) {
			out := make([]any, len(d.keys))
			for i, k := range d.keys {
				out[i] = jtuple{k, d.m[k]}
			}
			return out, nil
		})
	case "keys":
		return jfunc(func([]any, map[string]any) (any, error) {
			out := make([]any, len(d.keys))
			for i, k := range d.keys {
				out[i] = k
			}
			return out, nil
		})
	case "values":
		return jfunc(func([]any, map[string]any) (any, error) {
			out := make([]any, len(d.keys))
			for i, k := range d.keys {
				out[i] = d.m[k]
			}
			return out, nil
		})
	case "get":
		return jfunc(func(args []any, _ map[string]any) (any, error) {
			if len(args) == 0 {
				return nil, fmt.Errorf("dict.get: key expected")
			}
			if k, ok := args[0].(string); ok {
				if v, ok := d.m[k]; ok {
					return v, nil
				}
			}
			if len(args) > 1 {
				return args[1], nil
			}
			return nil, nil
		})
	}
	return nil
}

func listMethod(l []any, name string) any {
	switch name {
	case "index":
		return jfunc(func(args []any, _ map[string]any) (any, error) {
			if len(args) != 1 {
				return nil, fmt.Errorf("list.index: one argument expected")
			}
			for i, x := range l {
				if equal(x, args[0]) {
					return int64(i), nil
				}
			}
			return nil, fmt.Errorf("template: %s is not in list", repr(args[0]))
		})
	case "count":
		return jfunc(func(args []any, _ map[string]any) (any, error) {
			n := int64(0)
			for _, x := range l {
				if len(args) > 0 && equal(x, args[0]) {
					n++
				}
			}
			return n, nil
		})
	}
	return nil
}

func strArg(args []any, i int) (string, bool) {
	if i >= len(args) || args[i] == nil {
		return "", false
	}
	if _, ok := args[i].(undefined); ok {
		return "", false
	}
	return toStr(args[i]), true
}

func pyStrip(s string, args []any, left, right bool) string {
	chars, ok := strArg(args, 0)
	f := unicode.IsSpace
	if ok {
		f = func(r rune) bool { return strings.ContainsRune(chars, r) }
	}
	if left {
		s = strings.TrimLeftFunc(s, f)
	}
	if right {
		s = strings.TrimRightFunc(s, f)
	}
	return s
}

func strMethod(s string, name string) any {
	m := func(f func(args []any, kw map[string]any) (any, error)) any { return jfunc(f) }
	switch name {
	case "strip":
		return m(func(a []any, _ map[string]any) (any, error) { return pyStrip(s, a, true, true), nil })
	case "lstrip":
		return m(func(a []any, _ map[string]any) (any, error) { return pyStrip(s, a, true, false), nil })
	case "rstrip":
		return m(func(a []any, _ map[string]any) (any, error) { return pyStrip(s, a, false, true), nil })
	case "upper":
		return m(func([]any, map[string]any) (any, error) { return strings.ToUpper(s), nil })
	case "lower":
		return m(func([]any, map[string]any) (any, error) { return strings.ToLower(s), nil })
	case "title":
		return m(func([]any, map[string]any) (any, error) { return pyTitle(s), nil })
	case "capitalize":
		return m(func([]any, map[string]any) (any, error) { return pyCapitalize(s), nil })
	case "startswith", "endswith":
		return m(func(a []any, _ map[string]any) (any, error) {
			if len(a) == 0 {
				return nil, fmt.Errorf("str.%s: argument expected", name)
			}
			var cands []any
			if l, ok := untuple(a[0]).([]any); ok {
				cands = l
			} else {
				cands = []any{a[0]}
			}
			for _, c := range cands {
				p, ok := c.(string)
				if !ok {
					return nil, fmt.Errorf("str.%s: string argument expected", name)
				}
				if name == "startswith" && strings.HasPrefix(s, p) || name == "endswith" && strings.HasSuffix(s, p) {
					return true, nil
				}
			}
			return false, nil
		})
	case "split", "rsplit":
		return m(func(a []any, kw map[string]any) (any, error) {
			sep, hasSep := strArg(a, 0)
			if v, ok := kw["sep"]; ok && v != nil {
				sep, hasSep = toStr(v), true
			}
			maxsplit := int64(-1)
			if len(a) > 1 {
				if n, ok := a[1].(int64); ok {
					maxsplit = n
				}
			}
			if v, ok := kw["maxsplit"].(int64); ok {
				maxsplit = v
			}
			var parts []string
			switch {
			case hasSep && sep == "":
				return nil, fmt.Errorf("str.split: empty separator")
			case hasSep && name == "split":
				parts = strings.SplitN(s, sep, splitN(maxsplit))
			case hasSep:
				parts = rsplitN(s, sep, maxsplit)
			default:
				parts = strings.Fields(s)
				if maxsplit >= 0 && int64(len(parts)) > maxsplit+1 {
					// Python keeps the remainder (left-trimmed) as the last part.
					rest := s
					var out []string
					for k := int64(0); k < maxsplit; k++ {
						rest = strings.TrimLeftFunc(rest, unicode.IsSpace)
						i := strings.IndexFunc(rest, unicode.IsSpace)
						out = append(out, rest[:i])
						rest = rest[i:]
					}
					parts = append(out, strings.TrimLeftFunc(rest, unicode.IsSpace))
				}
			}
			out := make([]any, len(parts))
			for i, p := range parts {
				out[i] = p
			}
			return out, nil
		})
	case "format":
		return m(func(a []any, kw map[string]any) (any, error) { return pyFormat(s, a, kw) })
	case "splitlines":
		return m(func([]any, map[string]any) (any, error) {
			var out []any
			for _, l := range strings.Split(strings.TrimSuffix(strings.ReplaceAll(s, "\r\n", "\n"), "\n"), "\n") {
				out = append(out, l)
			}
			if s == "" {
				out = []any{}
			}
			return out, nil
		})
	case "replace":
		return m(func(a []any, _ map[string]any) (any, error) {
			return pyReplace("str.replace", s, a)
		})
	case "find":
		return m(func(a []any, _ map[string]any) (any, error) {
			sub, _ := strArg(a, 0)
			i := strings.Index(s, sub)
			if i < 0 {
				return int64(-1), nil
			}
			return int64(utf8.RuneCountInString(s[:i])), nil
		})
	case "count":
		return m(func(a []any, _ map[string]any) (any, error) {
			sub, _ := strArg(a, 0)
			return int64(strings.Count(s, sub)), nil
		})
	case "join":
		return m(func(a []any, _ map[string]any) (any, error) {
			if len(a) != 1 {
				return nil, fmt.Errorf("str.join: one argument expected")
			}
			items, err := iterate(a[0])
			if err != nil {
				return nil, err
			}
			parts := make([]string, len(items))
			for i, x := range items {
				parts[i] = toStr(x)
			}
			return strings.Join(parts, s), nil
		})
	case "isdigit", "isalpha", "isspace", "isupper", "islower":
		return m(func([]any, map[string]any) (any, error) {
			if s == "" {
				return false, nil
			}
			for _, r := range s {
				ok := false
				switch name {
				case "isdigit":
					ok = unicode.IsDigit(r)
				case "isalpha":
					ok = unicode.IsLetter(r)
				case "isspace":
					ok = unicode.IsSpace(r)
				case "isupper":
					ok = !unicode.IsLower(r)
				case "islower":
					ok = !unicode.IsUpper(r)
				}
				if !ok {
					return false, nil
				}
			}
			return true, nil
		})
	}
	return nil
}

// pyReplace is str.replace(old, new[, count]) for the method and the
// filter; what names the caller in errors.
func pyReplace(what, s string, args []any) (any, error) {
	if len(args) < 2 {
		return nil, fmt.Errorf("%s: two arguments expected", what)
	}
	n := -1
	if len(args) > 2 {
		if c, ok := args[2].(int64); ok {
			n = int(c)
		}
	}
	return strings.Replace(s, toStr(args[0]), toStr(args[1]), n), nil
}

func splitN(maxsplit int64) int {
	if maxsplit < 0 {
		return -1
	}
	return int(maxsplit) + 1
}

func rsplitN(s, sep string, maxsplit int64) []string {
	if maxsplit < 0 {
		return strings.Split(s, sep)
	}
	var out []string
	for k := int64(0); k < maxsplit; k++ {
		i := strings.LastIndex(s, sep)
		if i < 0 {
			break
		}
		out = append([]string{s[i+len(sep):]}, out...)
		s = s[:i]
	}
	return append([]string{s}, out...)
}

func pyTitle(s string) string {
	var b strings.Builder
	prevCased := false
	for _, r := range s {
		if prevCased {
			b.WriteRune(unicode.ToLower(r))
		} else {
			b.WriteRune(unicode.ToTitle(r))
		}
		prevCased = unicode.IsLetter(r)
	}
	return b.String()
}

func pyCapitalize(s string) string {
	if s == "" {
		return s
	}
	r, n := utf8.DecodeRuneInString(s)
	return string(unicode.ToUpper(r)) + strings.ToLower(s[n:])
}

func hasKey(m map[string]any, k string) bool {
	_, ok := m[k]
	return ok
}

// pyPercent is Python's printf-style str % args for %s, %d, %i, %r, %%.
func pyPercent(f string, arg any) (any, error) {
	args := []any{arg}
	if t, ok := arg.(jtuple); ok {
		args = t
	}
	var b strings.Builder
	k := 0
	for i := 0; i < len(f); i++ {
		if f[i] != '%' {
			b.WriteByte(f[i])
			continue
		}
		if i+1 >= len(f) {
			return nil, fmt.Errorf("template: incomplete format")
		}
		i++
		if f[i] == '%' {
			b.WriteByte('%')
			continue
		}
		if k >= len(args) {
			return nil, fmt.Errorf("template: not enough arguments for format string")
		}
		switch f[i] {
		case 's':
			b.WriteString(toStr(args[k]))
		case 'r':
			b.WriteString(repr(args[k]))
		case 'd', 'i':
			n, _, isFloat, ok := toNum(args[k])
			if !ok {
				return nil, fmt.Errorf("template: %%d format: a number is required, not %s", typeName(args[k]))
			}
			if isFloat {
				_, fl, _, _ := toNum(args[k])
				n = int64(fl)
			}
			b.WriteString(strconv.FormatInt(n, 10))
		default:
			return nil, fmt.Errorf("template: unsupported format character %q", f[i])
		}
		k++
	}
	if k < len(args) {
		return nil, fmt.Errorf("template: not all arguments converted during string formatting")
	}
	return b.String(), nil
}

// pyFormat is str.format for {}, {0} and {name} fields (no format specs).
func pyFormat(f string, args []any, kw map[string]any) (any, error) {
	var b strings.Builder
	auto := 0
	for i := 0; i < len(f); i++ {
		c := f[i]
		switch {
		case c == '{' && i+1 < len(f) && f[i+1] == '{':
			b.WriteByte('{')
			i++
		case c == '}' && i+1 < len(f) && f[i+1] == '}':
			b.WriteByte('}')
			i++
		case c == '{':
			j := strings.IndexByte(f[i:], '}')
			if j < 0 {
				return nil, fmt.Errorf("template: str.format: unclosed field")
			}
			name := f[i+1 : i+j]
			var v any
			switch {
			case name == "":
				if auto >= len(args) {
					return nil, fmt.Errorf("template: str.format: missing argument %d", auto)
				}
				v = args[auto]
				auto++
			case name[0] >= '0' && name[0] <= '9':
				n, err := strconv.Atoi(name)
				if err != nil || n >= len(args) {
					return nil, fmt.Errorf("template: str.format: bad field {%s}", name)
				}
				v = args[n]
			default:
				x, ok := kw[name]
				if !ok {
					return nil, fmt.Errorf("template: str.format: missing field {%s}", name)
				}
				v = x
			}
			b.WriteString(toStr(v))
			i += j
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}
