package jinja

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

func (r *renderer) applyFilter(name string, v any, args []any, kw map[string]any) (any, error) {
	arg := func(i int, key string) (any, bool) {
		if i < len(args) {
			return args[i], true
		}
		if x, ok := kw[key]; ok {
			return x, true
		}
		return nil, false
	}
	switch name {
	case "tojson":
		o := jsonOpts{indent: -1}
		if x, ok := arg(0, "indent"); ok && x != nil {
			n, ok := x.(int64)
			if !ok || n < 0 || n > 64 {
				return nil, fmt.Errorf("tojson: indent must be an integer in [0, 64]")
			}
			o.indent = int(n)
		}
		o.sortKeys = truthy(kw["sort_keys"])
		o.ensureASCII = truthy(kw["ensure_ascii"])
		o.itemSep, o.keySep = ", ", ": "
		if o.indent >= 0 {
			o.itemSep = ","
		}
		if x, ok := kw["separators"]; ok && x != nil {
			seps, err := iterate(x)
			if err != nil || len(seps) != 2 {
				return nil, fmt.Errorf("tojson: separators must be a pair of strings")
			}
			o.itemSep, o.keySep = toStr(seps[0]), toStr(seps[1])
		}
		var b strings.Builder
		if err := writeJSON(&b, v, o, 0); err != nil {
			return nil, err
		}
		return b.String(), nil
	case "length", "count":
		switch x := untuple(v).(type) {
		case string:
			return int64(utf8.RuneCountInString(x)), nil
		case []any:
			return int64(len(x)), nil
		case *jdict:
			return int64(len(x.keys)), nil
		case undefined:
			return int64(0), nil
		}
		return nil, fmt.Errorf("length: %s has no length", typeName(v))
	case "trim":
		return pyStrip(toStr(v), args, true, true), nil
	case "upper":
		return strings.ToUpper(toStr(v)), nil
	case "lower":
		return strings.ToLower(toStr(v)), nil
	case "title":
		return pyTitle(toStr(v)), nil
	case "capitalize":
		return pyCapitalize(toStr(v)), nil
	case "string":
		return toStr(v), nil
	case "safe", "escape", "e", "forceescape":
		if name == "safe" {
			return v, nil
		}
		s := toStr(v)
		s = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&#34;", "'", "&#39;").Replace(s)
		return s, nil
	case "default", "d":
		def, _ := arg(0, "default_value")
		boolean := false
		if x, ok := arg(1, "boolean"); ok {
			boolean = truthy(x)
		}
		if _, isUndef := v.(undefined); isUndef || (boolean && !truthy(v)) {
			if def == nil {
				return "", nil
			}
			return def, nil
		}
		return v, nil
	case "join":
		items, err := iterate(v)
		if err != nil {
			return nil, err
		}
		sep := ""
		if x, ok := arg(0, "d"); ok {
			sep = toStr(x)
		}
		attr, hasAttr := kw["attribute"]
		if !hasAttr && len(args) > 1 {
			attr, hasAttr = args[1], true
		}
		parts := make([]string, len(items))
		for i, it := range items {
			if hasAttr {
				it = getAttr(it, toStr(attr))
			}
			parts[i] = toStr(it)
		}
		return strings.Join(parts, sep), nil
	case "first", "last":
		items, err := iterate(v)
		if err != nil {
			return nil, err
		}
		if len(items) == 0 {
			return undefined{name}, nil
		}
		if name == "first" {
			return items[0], nil
		}
		return items[len(items)-1], nil
	case "list":
		items, err := iterate(v)
		if err != nil {
			return nil, err
		}
		return append([]any{}, items...), nil
	case "reverse":
		if s, ok := v.(string); ok {
			rs := []rune(s)
			for i, j := 0, len(rs)-1; i < j; i, j = i+1, j-1 {
				rs[i], rs[j] = rs[j], rs[i]
			}
			return string(rs), nil
		}
		items, err := iterate(v)
		if err != nil {
			return nil, err
		}
		out := make([]any, len(items))
		for i, x := range items {
			out[len(items)-1-i] = x
		}
		return out, nil
	case "int":
		switch x := v.(type) {
		case int64:
			return x, nil
		case float64:
			return int64(x), nil
		case bool:
			return b2i(x), nil
		case string:
			if n, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64); err == nil {
				return n, nil
			}
			if f, err := strconv.ParseFloat(strings.TrimSpace(x), 64); err == nil {
				return int64(f), nil
			}
		}
		if d, ok := arg(0, "default"); ok {
			return d, nil
		}
		return int64(0), nil
	case "float":
		_, f, _, ok := toNum(v)
		if !ok {
			if s, isStr := v.(string); isStr {
				if g, err := strconv.ParseFloat(strings.TrimSpace(s), 64); err == nil {
					return g, nil
				}
			}
			return 0.0, nil
		}
		return f, nil
	case "abs":
		switch x := v.(type) {
		case int64:
			if x < 0 {
				return -x, nil
			}
			return x, nil
		case float64:
			return math.Abs(x), nil
		}
		return nil, fmt.Errorf("abs: number expected")
	case "round":
		_, f, _, ok := toNum(v)
		if !ok {
			return nil, fmt.Errorf("round: number expected")
		}
		prec := int64(0)
		if x, ok := arg(0, "precision"); ok {
			prec, _ = x.(int64)
		}
		p := math.Pow(10, float64(prec))
		return math.RoundToEven(f*p) / p, nil
	case "replace":
		return pyReplace("replace", toStr(v), args)
	case "items":
		d, ok := v.(*jdict)
		if !ok {
			if _, u := v.(undefined); u {
				return []any{}, nil
			}
			return nil, fmt.Errorf("items: dict expected, got %s", typeName(v))
		}
		return dictMethod(d, "items").(jfunc)(nil, nil)
	case "dictsort":
		d, ok := v.(*jdict)
		if !ok {
			return nil, fmt.Errorf("dictsort: dict expected")
		}
		keys := append([]string{}, d.keys...)
		sort.Strings(keys)
		out := make([]any, len(keys))
		for i, k := range keys {
			out[i] = jtuple{k, d.m[k]}
		}
		return out, nil
	case "map":
		items, err := iterate(v)
		if err != nil {
			return nil, err
		}
		out := make([]any, len(items))
		if a, ok := kw["attribute"]; ok {
			def, hasDef := kw["default"]
			for i, it := range items {
				x := getAttr(it, toStr(a))
				if _, u := x.(undefined); u && hasDef {
					x = def
				}
				out[i] = x
			}
			return out, nil
		}
		if len(args) == 0 {
			return nil, fmt.Errorf("map: filter name or attribute= expected")
		}
		fname := toStr(args[0])
		for i, it := range items {
			x, err := r.applyFilter(fname, it, args[1:], nil)
			if err != nil {
				return nil, err
			}
			out[i] = x
		}
		return out, nil
	case "select", "reject", "selectattr", "rejectattr":
		items, err := iterate(v)
		if err != nil {
			return nil, err
		}
		byAttr := strings.HasSuffix(name, "attr")
		want := strings.HasPrefix(name, "select")
		rest := args
		var attr string
		if byAttr {
			if len(rest) == 0 {
				return nil, fmt.Errorf("%s: attribute expected", name)
			}
			attr = toStr(rest[0])
			rest = rest[1:]
		}
		var out []any
		for _, it := range items {
			x := it
			if byAttr {
				x = getAttr(it, attr)
			}
			var ok bool
			if len(rest) == 0 {
				ok = truthy(x)
			} else {
				if ok, err = r.applyTest(toStr(rest[0]), x, rest[1:]); err != nil {
					return nil, err
				}
			}
			if ok == want {
				out = append(out, it)
			}
		}
		if out == nil {
			out = []any{}
		}
		return out, nil
	case "unique":
		items, err := iterate(v)
		if err != nil {
			return nil, err
		}
		var out []any
		for _, it := range items {
			dup := false
			for _, o := range out {
				if equal(o, it) {
					dup = true
					break
				}
			}
			if !dup {
				out = append(out, it)
			}
		}
		return out, nil
	case "sort":
		items, err := iterate(v)
		if err != nil {
			return nil, err
		}
		out := append([]any{}, items...)
		reverse := truthy(kw["reverse"])
		attr, hasAttr := kw["attribute"]
		var serr error
		sort.SliceStable(out, func(i, j int) bool {
			a, b := out[i], out[j]
			if hasAttr {
				a, b = getAttr(a, toStr(attr)), getAttr(b, toStr(attr))
			}
			if reverse {
				a, b = b, a
			}
			lt, err := compare("<", a, b)
			if err != nil {
				serr = err
			}
			return lt
		})
		return out, serr
	case "indent":
		width := 4
		if x, ok := arg(0, "width"); ok {
			if n, ok := x.(int64); ok {
				if n < 0 || n > 1<<16 {
					return nil, fmt.Errorf("indent: width %d out of range", n)
				}
				width = int(n)
			} else if s, ok := x.(string); ok {
				return indentText(toStr(v), s, kw, args), nil
			}
		}
		return indentText(toStr(v), strings.Repeat(" ", width), kw, args), nil
	case "from_json":
		v, err := decodeOrderedJSON([]byte(toStr(v)))
		if err != nil {
			return nil, fmt.Errorf("from_json: %w", err)
		}
		return v, nil
	case "wordcount":
		return int64(len(strings.Fields(toStr(v)))), nil
	case "center":
		return toStr(v), nil
	case "batch", "slice", "groupby", "xmlattr", "urlize", "filesizeformat", "pprint", "random", "sum", "min", "max", "attr", "format", "striptags", "truncate", "wordwrap", "urlencode":
		return r.lessCommonFilter(name, v, args, kw)
	}
	return nil, fmt.Errorf("template: unsupported filter %q", name)
}

func indentText(s, pad string, kw map[string]any, args []any) string {
	first := truthy(kw["first"])
	if len(args) > 1 {
		first = truthy(args[1])
	}
	blank := truthy(kw["blank"])
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if i == 0 && !first {
			continue
		}
		if l == "" && !blank {
			continue
		}
		lines[i] = pad + l
	}
	return strings.Join(lines, "\n")
}

func (r *renderer) lessCommonFilter(name string, v any, args []any, kw map[string]any) (any, error) {
	switch name {
	case "sum", "min", "max":
		items, err := iterate(v)
		if err != nil {
			return nil, err
		}
		if name == "sum" {
			var acc any = int64(0)
			for _, it := range items {
				if a, ok := kw["attribute"]; ok {
					it = getAttr(it, toStr(a))
				}
				if acc, err = binOp("+", acc, it); err != nil {
					return nil, err
				}
			}
			return acc, nil
		}
		if len(items) == 0 {
			return undefined{name}, nil
		}
		best := items[0]
		for _, it := range items[1:] {
			lt, err := compare("<", it, best)
			if err != nil {
				return nil, err
			}
			if lt == (name == "min") {
				best = it
			}
		}
		return best, nil
	case "attr":
		if len(args) != 1 {
			return nil, fmt.Errorf("attr: one argument expected")
		}
		return getAttr(v, toStr(args[0])), nil
	case "format":
		// printf-style formatting with %s/%d only.
		s := toStr(v)
		var b strings.Builder
		k := 0
		for i := 0; i < len(s); i++ {
			if s[i] == '%' && i+1 < len(s) {
				switch s[i+1] {
				case 's', 'd':
					if k < len(args) {
						b.WriteString(toStr(args[k]))
						k++
					}
					i++
					continue
				case '%':
					b.WriteByte('%')
					i++
					continue
				}
			}
			b.WriteByte(s[i])
		}
		return b.String(), nil
	case "truncate":
		s := toStr(v)
		n := 255
		if len(args) > 0 {
			if x, ok := args[0].(int64); ok {
				n = int(x)
			}
		}
		if rs := []rune(s); len(rs) > n {
			return string(rs[:n]) + "...", nil
		}
		return s, nil
	}
	return nil, fmt.Errorf("template: unsupported filter %q", name)
}

func (r *renderer) applyTest(name string, v any, args []any) (bool, error) {
	arg0 := func() (any, error) {
		if len(args) == 0 {
			return nil, fmt.Errorf("test %q: argument expected", name)
		}
		return args[0], nil
	}
	switch name {
	case "defined":
		_, u := v.(undefined)
		return !u, nil
	case "undefined":
		_, u := v.(undefined)
		return u, nil
	case "none":
		return v == nil, nil
	case "string":
		_, ok := v.(string)
		return ok, nil
	case "number":
		switch v.(type) {
		case int64, float64:
			return true, nil
		}
		return false, nil
	case "integer":
		_, ok := v.(int64)
		return ok, nil
	case "float":
		_, ok := v.(float64)
		return ok, nil
	case "boolean":
		_, ok := v.(bool)
		return ok, nil
	case "true":
		b, ok := v.(bool)
		return ok && b, nil
	case "false":
		b, ok := v.(bool)
		return ok && !b, nil
	case "mapping":
		switch v.(type) {
		case *jdict:
			return true, nil
		}
		return false, nil
	case "sequence":
		switch untuple(v).(type) {
		case []any, string, *jdict:
			return true, nil
		}
		return false, nil
	case "iterable":
		switch untuple(v).(type) {
		case []any, string, *jdict:
			return true, nil
		}
		return false, nil
	case "callable":
		switch v.(type) {
		case jfunc, *jmacro:
			return true, nil
		}
		return false, nil
	case "odd", "even", "divisibleby":
		n, ok := v.(int64)
		if !ok {
			return false, fmt.Errorf("test %q: integer expected", name)
		}
		switch name {
		case "odd":
			return n%2 != 0, nil
		case "even":
			return n%2 == 0, nil
		}
		a, err := arg0()
		if err != nil {
			return false, err
		}
		d, ok := a.(int64)
		if !ok || d == 0 {
			return false, fmt.Errorf("divisibleby: non-zero integer expected")
		}
		return n%d == 0, nil
	case "lower":
		s, ok := v.(string)
		return ok && strings.ToLower(s) == s, nil
	case "upper":
		s, ok := v.(string)
		return ok && strings.ToUpper(s) == s, nil
	case "eq", "equalto", "==", "sameas":
		a, err := arg0()
		if err != nil {
			return false, err
		}
		return equal(v, a), nil
	case "ne", "!=":
		a, err := arg0()
		if err != nil {
			return false, err
		}
		return !equal(v, a), nil
	case "lt", "<", "le", "<=", "gt", ">", "ge", ">=", "lessthan", "greaterthan":
		a, err := arg0()
		if err != nil {
			return false, err
		}
		op := map[string]string{"lt": "<", "lessthan": "<", "le": "<=", "gt": ">", "greaterthan": ">", "ge": ">="}[name]
		if op == "" {
			op = name
		}
		return compare(op, v, a)
	case "in":
		a, err := arg0()
		if err != nil {
			return false, err
		}
		return contains(a, v)
	}
	return false, fmt.Errorf("template: unsupported test %q", name)
}

// jsonOpts are the json.dumps arguments transformers' tojson passes on.
type jsonOpts struct {
	indent          int // -1: no newlines (Python's indent=None)
	sortKeys        bool
	ensureASCII     bool
	itemSep, keySep string
}

// writeJSON writes v like Python's json.dumps(v, ensure_ascii=False,
// indent=..., separators=..., sort_keys=...) (transformers' tojson).
func writeJSON(b *strings.Builder, v any, o jsonOpts, depth int) error {
	v = untuple(v)
	if depth > 200 {
		return fmt.Errorf("tojson: nesting too deep")
	}
	nl := func(d int) {
		if o.indent >= 0 {
			b.WriteByte('\n')
			b.WriteString(strings.Repeat(" ", o.indent*d))
		}
	}
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
	case undefined:
		return fmt.Errorf("tojson: value %q is undefined", x.name)
	case bool:
		if x {
			b.WriteString("true")
		} else {
			b.WriteString("false")
		}
	case int64:
		b.WriteString(strconv.FormatInt(x, 10))
	case float64:
		switch {
		case math.IsNaN(x):
			b.WriteString("NaN")
		case math.IsInf(x, 1):
			b.WriteString("Infinity")
		case math.IsInf(x, -1):
			b.WriteString("-Infinity")
		default:
			b.WriteString(pyFloat(x))
		}
	case string:
		writeJSONString(b, x, o.ensureASCII)
	case []any:
		if len(x) == 0 {
			b.WriteString("[]")
			return nil
		}
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteString(o.itemSep)
			}
			nl(depth + 1)
			if err := writeJSON(b, e, o, depth+1); err != nil {
				return err
			}
		}
		nl(depth)
		b.WriteByte(']')
	case *jdict:
		if len(x.keys) == 0 {
			b.WriteString("{}")
			return nil
		}
		keys := x.keys
		if o.sortKeys {
			keys = append([]string{}, keys...)
			sort.Strings(keys)
		}
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteString(o.itemSep)
			}
			nl(depth + 1)
			writeJSONString(b, k, o.ensureASCII)
			b.WriteString(o.keySep)
			if err := writeJSON(b, x.m[k], o, depth+1); err != nil {
				return err
			}
		}
		nl(depth)
		b.WriteByte('}')
	case *jnamespace:
		return writeJSON(b, x.d, o, depth)
	default:
		return fmt.Errorf("tojson: cannot serialise %s", typeName(v))
	}
	return nil
}

func writeJSONString(b *strings.Builder, s string, ensureASCII bool) {
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		default:
			switch {
			case r < 0x20 || ensureASCII && r == 0x7f:
				fmt.Fprintf(b, `\u%04x`, r)
			case ensureASCII && r > 0xffff:
				r -= 0x10000
				fmt.Fprintf(b, `\u%04x\u%04x`, 0xd800+(r>>10), 0xdc00+(r&0x3ff))
			case ensureASCII && r > 0x7f:
				fmt.Fprintf(b, `\u%04x`, r)
			default:
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
}

// decodeOrderedJSON decodes JSON into template values keeping object key
// order (Python's json.loads does).
func decodeOrderedJSON(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := decodeJSONValue(dec, 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err == nil {
		return nil, fmt.Errorf("trailing data after JSON value")
	}
	return v, nil
}

func decodeJSONValue(dec *json.Decoder, depth int) (any, error) {
	if depth > 200 {
		return nil, fmt.Errorf("JSON nesting too deep")
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch x := tok.(type) {
	case json.Delim:
		switch x {
		case '{':
			d := newDict()
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				k, ok := kt.(string)
				if !ok {
					return nil, fmt.Errorf("object key is not a string")
				}
				v, err := decodeJSONValue(dec, depth+1)
				if err != nil {
					return nil, err
				}
				d.set(k, v)
			}
			if _, err := dec.Token(); err != nil {
				return nil, err
			}
			return d, nil
		case '[':
			out := []any{}
			for dec.More() {
				v, err := decodeJSONValue(dec, depth+1)
				if err != nil {
					return nil, err
				}
				out = append(out, v)
			}
			if _, err := dec.Token(); err != nil {
				return nil, err
			}
			return out, nil
		}
		return nil, fmt.Errorf("unexpected %v", x)
	case json.Number:
		return fromGo(x), nil
	default:
		return x, nil // string, bool, nil
	}
}
