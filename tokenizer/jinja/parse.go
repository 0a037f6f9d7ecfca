package jinja

import (
	"fmt"
	"slices"
	"strconv"
)

// ---- AST ----

type node interface{}

type (
	textNode   struct{ s string }
	outputNode struct{ e expr }
	ifNode     struct {
		conds  []expr
		bodies [][]node
		els    []node
	}
	forNode struct {
		targets []string
		iter    expr
		cond    expr
		body    []node
		els     []node
	}
	setNode struct {
		targets []string // one name, or a tuple
		ns, att string   // {% set ns.att = ... %}
		e       expr
		body    []node // block set
	}
	macroNode struct {
		name   string
		params []macroParam
		body   []node
	}
	callBlockNode struct {
		call expr
		body []node
	}
	breakNode    struct{}
	continueNode struct{}
)

type macroParam struct {
	name string
	def  expr
}

type expr interface{}

type (
	literal  struct{ v any }
	nameExpr struct{ name string }
	listExpr struct {
		items []expr
		tuple bool
	}
	dictExpr struct{ keys, vals []expr }
	attrExpr struct {
		obj  expr
		name string
	}
	indexExpr struct{ obj, idx expr }
	sliceExpr struct{ obj, lo, hi, step expr }
	callExpr  struct {
		fn     expr
		args   []expr
		kwargs []kwarg
	}
	filterExpr struct {
		obj    expr
		name   string
		args   []expr
		kwargs []kwarg
	}
	testExpr struct {
		obj  expr
		name string
		args []expr
		neg  bool
	}
	binExpr struct {
		op   string
		l, r expr
	}
	unaryExpr struct {
		op string
		e  expr
	}
	condExpr struct{ cond, yes, no expr }
	cmpExpr  struct {
		first expr
		ops   []string
		rest  []expr
	}
)

type kwarg struct {
	name string
	e    expr
}

// ---- Parser ----

type parser struct {
	toks  []jtoken
	p     int
	depth int // expression/block nesting, bounded so hostile input cannot exhaust the stack
}

const maxNesting = 256

func parseTemplate(src string) ([]node, error) {
	toks, err := lexTemplate(src)
	if err != nil {
		return nil, err
	}
	ps := &parser{toks: toks}
	body, end, err := ps.parseBody()
	if err != nil {
		return nil, err
	}
	if end != "" {
		return nil, ps.errf("unexpected {%% %s %%}", end)
	}
	return body, nil
}

func (ps *parser) peek() jtoken { return ps.toks[ps.p] }
func (ps *parser) next() jtoken {
	t := ps.toks[ps.p]
	if t.kind != tkEOF {
		ps.p++
	}
	return t
}

func (ps *parser) errf(format string, args ...any) error {
	return fmt.Errorf("template offset %d: %s", ps.peek().pos, fmt.Sprintf(format, args...))
}

func (ps *parser) isOp(v string) bool {
	t := ps.peek()
	return t.kind == tkOp && t.val == v
}

func (ps *parser) isName(v string) bool {
	t := ps.peek()
	return t.kind == tkName && t.val == v
}

func (ps *parser) expectOp(v string) error {
	if !ps.isOp(v) {
		return ps.errf("expected %q, found %q", v, ps.peek().val)
	}
	ps.next()
	return nil
}

func (ps *parser) expectName() (string, error) {
	t := ps.peek()
	if t.kind != tkName {
		return "", ps.errf("expected a name, found %q", t.val)
	}
	ps.next()
	return t.val, nil
}

func (ps *parser) expectBlockEnd() error {
	if ps.peek().kind != tkBlockEnd {
		return ps.errf("expected end of block tag, found %q", ps.peek().val)
	}
	ps.next()
	return nil
}

// parseBody parses nodes until an end-ish block tag, which it returns
// (the tag's keyword, with the parser positioned after the keyword).
func (ps *parser) parseBody() ([]node, string, error) {
	ps.depth++
	defer func() { ps.depth-- }()
	if ps.depth > maxNesting {
		return nil, "", ps.errf("blocks nested too deeply")
	}
	var out []node
	for {
		t := ps.peek()
		switch t.kind {
		case tkEOF:
			return out, "", nil
		case tkText:
			ps.next()
			out = append(out, textNode{t.val})
		case tkVarBegin:
			ps.next()
			e, err := ps.parseExpr()
			if err != nil {
				return nil, "", err
			}
			if ps.peek().kind != tkVarEnd {
				return nil, "", ps.errf("expected }}, found %q", ps.peek().val)
			}
			ps.next()
			out = append(out, outputNode{e})
		case tkBlockBegin:
			ps.next()
			kw, err := ps.expectName()
			if err != nil {
				return nil, "", err
			}
			switch kw {
			case "if", "for", "set", "macro", "call":
				n, err := ps.parseBlockTag(kw)
				if err != nil {
					return nil, "", err
				}
				out = append(out, n)
			case "break", "continue":
				if err := ps.expectBlockEnd(); err != nil {
					return nil, "", err
				}
				if kw == "break" {
					out = append(out, breakNode{})
				} else {
					out = append(out, continueNode{})
				}
			case "generation":
				// transformers' assistant-mask marker: render the body.
				if err := ps.expectBlockEnd(); err != nil {
					return nil, "", err
				}
				body, end, err := ps.parseBody()
				if err != nil {
					return nil, "", err
				}
				if end != "endgeneration" {
					return nil, "", ps.errf("expected endgeneration")
				}
				if err := ps.expectBlockEnd(); err != nil {
					return nil, "", err
				}
				out = append(out, body...)
			case "elif", "else", "endif", "endfor", "endmacro", "endset", "endcall", "endgeneration":
				return out, kw, nil
			default:
				return nil, "", ps.errf("unsupported tag {%% %s %%}", kw)
			}
		default:
			return nil, "", ps.errf("unexpected token %q", t.val)
		}
	}
}

// parseBlockTag parses the tag kw (one that opens a block or sets a
// variable) after its name.
func (ps *parser) parseBlockTag(kw string) (node, error) {
	switch kw {
	case "if":
		return ps.parseIf()
	case "for":
		return ps.parseFor()
	case "set":
		return ps.parseSet()
	case "macro":
		return ps.parseMacro()
	case "call":
		return ps.parseCallBlock()
	}
	return nil, ps.errf("unsupported tag {%% %s %%}", kw)
}

func (ps *parser) parseIf() (node, error) {
	n := &ifNode{}
	for {
		cond, err := ps.parseExpr()
		if err != nil {
			return nil, err
		}
		if err := ps.expectBlockEnd(); err != nil {
			return nil, err
		}
		body, end, err := ps.parseBody()
		if err != nil {
			return nil, err
		}
		n.conds = append(n.conds, cond)
		n.bodies = append(n.bodies, body)
		switch end {
		case "elif":
			continue
		case "else":
			if n.els, err = ps.closedBody("endif", func(found string) error {
				return ps.errf("expected endif, found %q", found)
			}); err != nil {
				return nil, err
			}
			return n, ps.expectBlockEnd()
		case "endif":
			return n, ps.expectBlockEnd()
		default:
			return nil, ps.errf("unclosed if (found %q)", end)
		}
	}
}

func (ps *parser) parseFor() (node, error) {
	n := &forNode{}
	for {
		name, err := ps.expectName()
		if err != nil {
			return nil, err
		}
		n.targets = append(n.targets, name)
		if !ps.isOp(",") {
			break
		}
		ps.next()
	}
	if !ps.isName("in") {
		return nil, ps.errf("expected 'in' in for")
	}
	ps.next()
	it, err := ps.parseOr() // no conditional expression: 'if' filters
	if err != nil {
		return nil, err
	}
	n.iter = it
	if ps.isName("if") {
		ps.next()
		if n.cond, err = ps.parseOr(); err != nil {
			return nil, err
		}
	}
	if ps.isName("recursive") {
		return nil, ps.errf("recursive loops are unsupported")
	}
	if err := ps.expectBlockEnd(); err != nil {
		return nil, err
	}
	body, end, err := ps.parseBody()
	if err != nil {
		return nil, err
	}
	n.body = body
	if end == "else" {
		if err := ps.expectBlockEnd(); err != nil {
			return nil, err
		}
		if n.els, end, err = ps.parseBody(); err != nil {
			return nil, err
		}
	}
	if end != "endfor" {
		return nil, ps.errf("unclosed for (found %q)", end)
	}
	return n, ps.expectBlockEnd()
}

func (ps *parser) parseSet() (node, error) {
	n := &setNode{}
	name, err := ps.expectName()
	if err != nil {
		return nil, err
	}
	if ps.isOp(".") {
		ps.next()
		att, err := ps.expectName()
		if err != nil {
			return nil, err
		}
		n.ns, n.att = name, att
	} else {
		n.targets = []string{name}
		for ps.isOp(",") {
			ps.next()
			nm, err := ps.expectName()
			if err != nil {
				return nil, err
			}
			n.targets = append(n.targets, nm)
		}
	}
	if ps.peek().kind == tkBlockEnd && n.ns == "" && len(n.targets) == 1 {
		if n.body, err = ps.closedBody("endset", func(string) error {
			return ps.errf("unclosed set block")
		}); err != nil {
			return nil, err
		}
		return n, ps.expectBlockEnd()
	}
	if err := ps.expectOp("="); err != nil {
		return nil, err
	}
	if n.e, err = ps.parseTuple(); err != nil {
		return nil, err
	}
	return n, ps.expectBlockEnd()
}

func (ps *parser) parseMacro() (node, error) {
	name, err := ps.expectName()
	if err != nil {
		return nil, err
	}
	n := &macroNode{name: name}
	if err := ps.expectOp("("); err != nil {
		return nil, err
	}
	if err := ps.commaSeq(")", "macro parameters", func() error {
		pn, err := ps.expectName()
		if err != nil {
			return err
		}
		p := macroParam{name: pn}
		if ps.isOp("=") {
			ps.next()
			if p.def, err = ps.parseExpr(); err != nil {
				return err
			}
		}
		n.params = append(n.params, p)
		return nil
	}); err != nil {
		return nil, err
	}
	if n.body, err = ps.closedBody("endmacro", func(string) error {
		return ps.errf("unclosed macro %s", name)
	}); err != nil {
		return nil, err
	}
	return n, ps.expectBlockEnd()
}

func (ps *parser) parseCallBlock() (node, error) {
	e, err := ps.parseExpr()
	if err != nil {
		return nil, err
	}
	body, err := ps.closedBody("endcall", func(string) error {
		return ps.errf("unclosed call block")
	})
	if err != nil {
		return nil, err
	}
	return &callBlockNode{call: e, body: body}, ps.expectBlockEnd()
}

// closedBody reads the "%}" that ends an opening tag, the body, and the
// end tag's keyword, which must be want (else the error is unclosed(found)).
// The end tag's own "%}" is left to the caller.
func (ps *parser) closedBody(want string, unclosed func(found string) error) ([]node, error) {
	if err := ps.expectBlockEnd(); err != nil {
		return nil, err
	}
	body, end, err := ps.parseBody()
	if err != nil {
		return nil, err
	}
	if end != want {
		return nil, unclosed(end)
	}
	return body, nil
}

// parseTuple parses "a, b" as a list (used by set).
func (ps *parser) parseTuple() (expr, error) {
	e, err := ps.parseExpr()
	if err != nil || !ps.isOp(",") {
		return e, err
	}
	items := []expr{e}
	for ps.isOp(",") {
		ps.next()
		x, err := ps.parseExpr()
		if err != nil {
			return nil, err
		}
		items = append(items, x)
	}
	return &listExpr{items: items, tuple: true}, nil
}

func (ps *parser) parseExpr() (expr, error) {
	ps.depth++
	defer func() { ps.depth-- }()
	if ps.depth > maxNesting {
		return nil, ps.errf("expression nested too deeply")
	}
	e, err := ps.parseOr()
	if err != nil {
		return nil, err
	}
	for ps.isName("if") {
		ps.next()
		cond, err := ps.parseOr()
		if err != nil {
			return nil, err
		}
		var no expr
		if ps.isName("else") {
			ps.next()
			if no, err = ps.parseExpr(); err != nil {
				return nil, err
			}
		}
		e = &condExpr{cond: cond, yes: e, no: no}
	}
	return e, nil
}

func (ps *parser) parseOr() (expr, error) {
	return ps.leftAssoc(ps.parseAnd, tkName, "or")
}

func (ps *parser) parseAnd() (expr, error) {
	return ps.leftAssoc(ps.parseNot, tkName, "and")
}

func (ps *parser) parseNot() (expr, error) {
	if ps.isName("not") {
		ps.depth++
		defer func() { ps.depth-- }()
		if ps.depth > maxNesting {
			return nil, ps.errf("expression nested too deeply")
		}
		ps.next()
		e, err := ps.parseNot()
		return &unaryExpr{op: "not", e: e}, err
	}
	return ps.parseCompare()
}

func (ps *parser) parseCompare() (expr, error) {
	first, err := ps.parseMath1()
	if err != nil {
		return nil, err
	}
	c := &cmpExpr{first: first}
	for {
		t := ps.peek()
		var op string
		switch {
		case t.kind == tkOp && (t.val == "==" || t.val == "!=" || t.val == "<" || t.val == ">" || t.val == "<=" || t.val == ">="):
			op = t.val
			ps.next()
		case t.kind == tkName && t.val == "in":
			op = "in"
			ps.next()
		case t.kind == tkName && t.val == "not" && ps.toks[ps.p+1].kind == tkName && ps.toks[ps.p+1].val == "in":
			op = "not in"
			ps.next()
			ps.next()
		default:
			if len(c.ops) == 0 {
				return first, nil
			}
			return c, nil
		}
		r, err := ps.parseMath1()
		if err != nil {
			return nil, err
		}
		c.ops = append(c.ops, op)
		c.rest = append(c.rest, r)
	}
}

func (ps *parser) parseMath1() (expr, error) {
	return ps.leftAssoc(ps.parseConcat, tkOp, "+", "-")
}

func (ps *parser) parseConcat() (expr, error) {
	return ps.leftAssoc(ps.parseMath2, tkOp, "~")
}

func (ps *parser) parseMath2() (expr, error) {
	return ps.leftAssoc(ps.parsePow, tkOp, "*", "/", "//", "%")
}

func (ps *parser) parsePow() (expr, error) {
	return ps.leftAssoc(func() (expr, error) { return ps.parseUnary(true) }, tkOp, "**")
}

// leftAssoc parses one left-associative binary precedence level: operands
// from sub joined by any of ops (tokens of kind).
func (ps *parser) leftAssoc(sub func() (expr, error), kind tokKind, ops ...string) (expr, error) {
	l, err := sub()
	for err == nil {
		t := ps.peek()
		if t.kind != kind || !slices.Contains(ops, t.val) {
			break
		}
		ps.next()
		var r expr
		r, err = sub()
		l = &binExpr{op: t.val, l: l, r: r}
	}
	return l, err
}

func (ps *parser) parseUnary(withFilter bool) (expr, error) {
	ps.depth++
	defer func() { ps.depth-- }()
	if ps.depth > maxNesting {
		return nil, ps.errf("expression nested too deeply")
	}
	var e expr
	var err error
	switch {
	case ps.isOp("-"):
		ps.next()
		x, err := ps.parseUnary(false)
		if err != nil {
			return nil, err
		}
		e = &unaryExpr{op: "-", e: x}
	case ps.isOp("+"):
		ps.next()
		if e, err = ps.parseUnary(false); err != nil {
			return nil, err
		}
	default:
		if e, err = ps.parsePrimary(); err != nil {
			return nil, err
		}
	}
	if e, err = ps.parsePostfix(e); err != nil {
		return nil, err
	}
	if withFilter {
		return ps.parseFilterExpr(e)
	}
	return e, nil
}

func (ps *parser) parsePrimary() (expr, error) {
	start := ps.p
	t := ps.next()
	switch t.kind {
	case tkName:
		switch t.val {
		case "true", "True":
			return &literal{true}, nil
		case "false", "False":
			return &literal{false}, nil
		case "none", "None":
			return &literal{nil}, nil
		}
		return &nameExpr{t.val}, nil
	case tkString:
		s := t.val
		for ps.peek().kind == tkString { // adjacent literals concatenate
			s += ps.next().val
		}
		return &literal{s}, nil
	case tkInt:
		v, err := strconv.ParseInt(t.val, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("template offset %d: %w", t.pos, err)
		}
		return &literal{v}, nil
	case tkFloat:
		v, err := strconv.ParseFloat(t.val, 64)
		if err != nil {
			return nil, fmt.Errorf("template offset %d: %w", t.pos, err)
		}
		return &literal{v}, nil
	case tkOp:
		switch t.val {
		case "(":
			if ps.isOp(")") {
				ps.next()
				return &listExpr{tuple: true}, nil
			}
			e, err := ps.parseExpr()
			if err != nil {
				return nil, err
			}
			if ps.isOp(",") { // tuple
				items := []expr{e}
				for ps.isOp(",") {
					ps.next()
					if ps.isOp(")") {
						break
					}
					x, err := ps.parseExpr()
					if err != nil {
						return nil, err
					}
					items = append(items, x)
				}
				e = &listExpr{items: items, tuple: true}
			}
			return e, ps.expectOp(")")
		case "[":
			l := &listExpr{}
			err := ps.commaSeq("]", "list", func() error {
				x, err := ps.parseExpr()
				if err != nil {
					return err
				}
				l.items = append(l.items, x)
				return nil
			})
			if err != nil {
				return nil, err
			}
			return l, nil
		case "{":
			d := &dictExpr{}
			err := ps.commaSeq("}", "dict", func() error {
				k, err := ps.parseExpr()
				if err != nil {
					return err
				}
				if err := ps.expectOp(":"); err != nil {
					return err
				}
				v, err := ps.parseExpr()
				if err != nil {
					return err
				}
				d.keys = append(d.keys, k)
				d.vals = append(d.vals, v)
				return nil
			})
			if err != nil {
				return nil, err
			}
			return d, nil
		}
	}
	ps.p = start
	return nil, ps.errf("unexpected %q in expression", t.val)
}

func (ps *parser) parsePostfix(e expr) (expr, error) {
	for {
		switch {
		case ps.isOp("."):
			ps.next()
			t := ps.next()
			if t.kind != tkName && t.kind != tkInt {
				return nil, ps.errf("expected attribute name after '.'")
			}
			if t.kind == tkInt {
				n, _ := strconv.ParseInt(t.val, 10, 64)
				e = &indexExpr{obj: e, idx: &literal{n}}
			} else {
				e = &attrExpr{obj: e, name: t.val}
			}
		case ps.isOp("["):
			ps.next()
			var parts [3]expr
			isSlice := false
			k := 0
			for {
				if ps.isOp(":") {
					isSlice = true
					ps.next()
					k++
					if k > 2 {
						return nil, ps.errf("bad slice")
					}
					continue
				}
				if ps.isOp("]") {
					break
				}
				x, err := ps.parseExpr()
				if err != nil {
					return nil, err
				}
				parts[k] = x
			}
			ps.next()
			if isSlice {
				e = &sliceExpr{obj: e, lo: parts[0], hi: parts[1], step: parts[2]}
			} else {
				if parts[0] == nil {
					return nil, ps.errf("empty subscript")
				}
				e = &indexExpr{obj: e, idx: parts[0]}
			}
		case ps.isOp("("):
			ps.next()
			args, kwargs, err := ps.parseArgs()
			if err != nil {
				return nil, err
			}
			e = &callExpr{fn: e, args: args, kwargs: kwargs}
		default:
			return e, nil
		}
	}
}

// parseArgs parses call arguments after '(' through ')'.
func (ps *parser) parseArgs() ([]expr, []kwarg, error) {
	var args []expr
	var kwargs []kwarg
	err := ps.commaSeq(")", "call", func() error {
		if ps.peek().kind == tkName && ps.toks[ps.p+1].kind == tkOp && ps.toks[ps.p+1].val == "=" {
			name := ps.next().val
			ps.next()
			x, err := ps.parseExpr()
			if err != nil {
				return err
			}
			kwargs = append(kwargs, kwarg{name, x})
			return nil
		}
		x, err := ps.parseExpr()
		if err != nil {
			return err
		}
		args = append(args, x)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return args, kwargs, nil
}

// commaSeq parses items separated by commas (a trailing one allowed) up to
// and including the operator close; what names the construct in errors.
func (ps *parser) commaSeq(close, what string, item func() error) error {
	for !ps.isOp(close) {
		if err := item(); err != nil {
			return err
		}
		if ps.isOp(",") {
			ps.next()
		} else if !ps.isOp(close) {
			return ps.errf("expected , or %s in %s", close, what)
		}
	}
	ps.next()
	return nil
}

func (ps *parser) parseFilterExpr(e expr) (expr, error) {
	for {
		switch {
		case ps.isOp("|"):
			ps.next()
			name, err := ps.expectName()
			if err != nil {
				return nil, err
			}
			f := &filterExpr{obj: e, name: name}
			if ps.isOp("(") {
				ps.next()
				if f.args, f.kwargs, err = ps.parseArgs(); err != nil {
					return nil, err
				}
			}
			e = f
			var perr error
			if e, perr = ps.parsePostfix(e); perr != nil {
				return nil, perr
			}
		case ps.isName("is"):
			ps.next()
			t := &testExpr{obj: e}
			if ps.isName("not") {
				ps.next()
				t.neg = true
			}
			tt := ps.next()
			switch tt.kind {
			case tkName:
				t.name = tt.val
			case tkOp:
				if tt.val == "==" || tt.val == "!=" || tt.val == "<" || tt.val == ">" || tt.val == "<=" || tt.val == ">=" {
					t.name = tt.val
					break
				}
				fallthrough
			default:
				return nil, ps.errf("expected test name after 'is'")
			}
			if ps.isOp("(") {
				ps.next()
				args, _, err := ps.parseArgs()
				if err != nil {
					return nil, err
				}
				t.args = args
			} else if k := ps.peek(); k.kind == tkString || k.kind == tkInt || k.kind == tkFloat ||
				(k.kind == tkName && !isKeyword(k.val)) {
				arg, err := ps.parseUnary(false)
				if err != nil {
					return nil, err
				}
				t.args = []expr{arg}
			}
			e = t
		default:
			return e, nil
		}
	}
}

func isKeyword(s string) bool {
	switch s {
	case "and", "or", "not", "in", "is", "if", "else", "recursive":
		return true
	}
	return false
}
