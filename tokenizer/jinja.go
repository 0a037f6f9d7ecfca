package tokenizer

// A Jinja2 subset interpreter for chat templates, with the settings
// transformers uses: trim_blocks, lstrip_blocks, loopcontrols, a tojson
// that does not HTML-escape, and raise_exception/strftime_now globals.

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ---- Lexer ----

type tokKind int

const (
	tkText tokKind = iota
	tkBlockBegin
	tkBlockEnd
	tkVarBegin
	tkVarEnd
	tkName
	tkString
	tkInt
	tkFloat
	tkOp
	tkEOF
)

type jtoken struct {
	kind tokKind
	val  string
	pos  int // byte offset in the template, for errors
}

type lexer struct {
	src  string
	toks []jtoken
}

// lexTemplate splits src into text and tag tokens, applying whitespace
// control ('-', '+'), trim_blocks and lstrip_blocks.
func lexTemplate(src string) ([]jtoken, error) {
	// Jinja drops a single trailing newline (keep_trailing_newline=False).
	if strings.HasSuffix(src, "\n") {
		src = strings.TrimSuffix(src, "\n")
		src = strings.TrimSuffix(src, "\r")
	}
	lx := &lexer{src: src}
	pos := 0
	trimNextNewline, lstripNext := false, false
	// lineStarting: the text follows a match that ended with a newline (or
	// the template start), as Jinja's lexer tracks for lstrip_blocks.
	lineStarting := true
	for pos <= len(src) {
		i := indexTagStart(src, pos)
		text := src[pos:]
		if i >= 0 {
			text = src[pos:i]
		}
		if lstripNext {
			orig := text
			text = strings.TrimLeft(text, " \t\n\r\f\v")
			lineStarting = strings.HasSuffix(orig[:len(orig)-len(text)], "\n")
		} else if trimNextNewline {
			lineStarting = false
			if strings.HasPrefix(text, "\r\n") {
				text = text[2:]
				lineStarting = true
			} else if strings.HasPrefix(text, "\n") {
				text = text[1:]
				lineStarting = true
			}
		} else if pos > 0 {
			lineStarting = false
		}
		trimNextNewline, lstripNext = false, false
		if i < 0 {
			if text != "" {
				lx.toks = append(lx.toks, jtoken{kind: tkText, val: text, pos: pos})
			}
			break
		}
		kind := src[i+1] // '{', '%' or '#'
		j := i + 2
		stripBefore, keepBefore := false, false
		if j < len(src) && src[j] == '-' {
			stripBefore = true
			j++
		} else if j < len(src) && src[j] == '+' {
			keepBefore = true
			j++
		}
		switch {
		case stripBefore:
			text = strings.TrimRight(text, " \t\n\r\f\v")
		case (kind == '%' || kind == '#') && !keepBefore:
			// lstrip_blocks: drop spaces/tabs between the line start and the tag.
			k := strings.LastIndexByte(text, '\n')
			line := text[k+1:]
			if strings.Trim(line, " \t") == "" && (k >= 0 || lineStarting) {
				text = text[:k+1]
			}
		}
		if text != "" {
			lx.toks = append(lx.toks, jtoken{kind: tkText, val: text, pos: pos})
		}
		switch kind {
		case '#':
			end := strings.Index(src[j:], "#}")
			if end < 0 {
				return nil, fmt.Errorf("template: unclosed comment at offset %d", i)
			}
			end += j
			if end > j && src[end-1] == '-' {
				lstripNext = true
			} else if end > j && src[end-1] == '+' {
			} else {
				trimNextNewline = true
			}
			pos = end + 2
			continue
		case '%':
			// {% raw %} ... {% endraw %}
			if bodyStart, ok := matchRaw(src, j); ok {
				k := indexEndRaw(src, bodyStart)
				if k < 0 {
					return nil, fmt.Errorf("template: unclosed raw block at offset %d", i)
				}
				body := src[bodyStart:k]
				closeEnd := strings.Index(src[k:], "%}")
				if closeEnd < 0 {
					return nil, fmt.Errorf("template: unclosed endraw tag at offset %d", k)
				}
				tagInner := src[k+2 : k+closeEnd]
				if strings.HasPrefix(tagInner, "-") {
					body = strings.TrimRight(body, " \t\n\r\f\v")
				}
				if body != "" {
					lx.toks = append(lx.toks, jtoken{kind: tkText, val: body, pos: bodyStart})
				}
				if strings.HasSuffix(tagInner, "-") {
					lstripNext = true
				} else {
					trimNextNewline = true
				}
				pos = k + closeEnd + 2
				continue
			}
			lx.toks = append(lx.toks, jtoken{kind: tkBlockBegin, pos: i})
		case '{':
			lx.toks = append(lx.toks, jtoken{kind: tkVarBegin, pos: i})
		}
		closer := "%}"
		if kind == '{' {
			closer = "}}"
		}
		end, stripAfter, keepAfter, err := lx.lexExpr(j, closer)
		if err != nil {
			return nil, err
		}
		if kind == '%' {
			lx.toks = append(lx.toks, jtoken{kind: tkBlockEnd, pos: end})
			if stripAfter {
				lstripNext = true
			} else if !keepAfter {
				trimNextNewline = true
			}
		} else {
			lx.toks = append(lx.toks, jtoken{kind: tkVarEnd, pos: end})
			lstripNext = stripAfter
		}
		pos = end
	}
	lx.toks = append(lx.toks, jtoken{kind: tkEOF, pos: len(src)})
	return lx.toks, nil
}

func indexTagStart(s string, from int) int {
	for i := from; i+1 < len(s); i++ {
		if s[i] == '{' && (s[i+1] == '{' || s[i+1] == '%' || s[i+1] == '#') {
			return i
		}
	}
	return -1
}

// matchRaw recognises "raw %}" (with optional whitespace/-) at j and
// returns where the raw body starts.
func matchRaw(src string, j int) (int, bool) {
	k := j
	for k < len(src) && (src[k] == ' ' || src[k] == '\t' || src[k] == '\n') {
		k++
	}
	if !strings.HasPrefix(src[k:], "raw") {
		return 0, false
	}
	k += 3
	for k < len(src) && (src[k] == ' ' || src[k] == '\t' || src[k] == '\n') {
		k++
	}
	strip := false
	if k < len(src) && src[k] == '-' {
		strip = true
		k++
	}
	if !strings.HasPrefix(src[k:], "%}") {
		return 0, false
	}
	body := k + 2
	if strip {
		for body < len(src) && strings.ContainsRune(" \t\n\r", rune(src[body])) {
			body++
		}
	}
	return body, true
}

func indexEndRaw(src string, from int) int {
	for i := from; ; {
		k := strings.Index(src[i:], "{%")
		if k < 0 {
			return -1
		}
		k += i
		inner := strings.TrimLeft(src[k+2:], "-+ \t\n")
		if strings.HasPrefix(inner, "endraw") {
			return k
		}
		i = k + 2
	}
}

var jinjaOps = []string{"**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">", "=", "(", ")", "[", "]", "{", "}", ".", ",", ":", "|"}

// lexExpr tokenizes a tag body from j up to closer; it returns the offset
// after the closer and whether the closer carried '-' or '+'.
func (lx *lexer) lexExpr(j int, closer string) (int, bool, bool, error) {
	src := lx.src
	depth := 0
	for j < len(src) {
		c := src[j]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			j++
			continue
		case depth == 0 && (strings.HasPrefix(src[j:], "-"+closer) || strings.HasPrefix(src[j:], "+"+closer)):
			return j + 1 + len(closer), c == '-', c == '+', nil
		case depth == 0 && strings.HasPrefix(src[j:], closer):
			return j + len(closer), false, false, nil
		case c == '\'' || c == '"':
			s, n, err := lexString(src[j:])
			if err != nil {
				return 0, false, false, fmt.Errorf("template offset %d: %w", j, err)
			}
			lx.toks = append(lx.toks, jtoken{kind: tkString, val: s, pos: j})
			j += n
			continue
		case c >= '0' && c <= '9':
			k := j
			for k < len(src) && (src[k] >= '0' && src[k] <= '9' || src[k] == '_') {
				k++
			}
			kind := tkInt
			if k+1 < len(src) && src[k] == '.' && src[k+1] >= '0' && src[k+1] <= '9' {
				kind = tkFloat
				k++
				for k < len(src) && (src[k] >= '0' && src[k] <= '9' || src[k] == '_') {
					k++
				}
			}
			if k < len(src) && (src[k] == 'e' || src[k] == 'E') {
				m := k + 1
				if m < len(src) && (src[m] == '+' || src[m] == '-') {
					m++
				}
				if m < len(src) && src[m] >= '0' && src[m] <= '9' {
					kind = tkFloat
					k = m
					for k < len(src) && src[k] >= '0' && src[k] <= '9' {
						k++
					}
				}
			}
			lx.toks = append(lx.toks, jtoken{kind: kind, val: strings.ReplaceAll(src[j:k], "_", ""), pos: j})
			j = k
			continue
		case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
			k := j
			for k < len(src) && (src[k] == '_' || src[k] >= 'a' && src[k] <= 'z' || src[k] >= 'A' && src[k] <= 'Z' || src[k] >= '0' && src[k] <= '9') {
				k++
			}
			lx.toks = append(lx.toks, jtoken{kind: tkName, val: src[j:k], pos: j})
			j = k
			continue
		}
		matched := false
		for _, op := range jinjaOps {
			if strings.HasPrefix(src[j:], op) {
				switch op {
				case "(", "[", "{":
					depth++
				case ")", "]", "}":
					depth--
				}
				lx.toks = append(lx.toks, jtoken{kind: tkOp, val: op, pos: j})
				j += len(op)
				matched = true
				break
			}
		}
		if !matched {
			return 0, false, false, fmt.Errorf("template offset %d: unexpected character %q", j, c)
		}
	}
	return 0, false, false, fmt.Errorf("template: missing %q", closer)
}

// lexString reads a Python string literal with backslash escapes.
func lexString(s string) (string, int, error) {
	q := s[0]
	var b strings.Builder
	for i := 1; i < len(s); {
		c := s[i]
		if c == q {
			return b.String(), i + 1, nil
		}
		if c != '\\' || i+1 >= len(s) {
			b.WriteByte(c)
			i++
			continue
		}
		e := s[i+1]
		i += 2
		switch e {
		case 'n':
			b.WriteByte('\n')
		case 't':
			b.WriteByte('\t')
		case 'r':
			b.WriteByte('\r')
		case '\\', '\'', '"':
			b.WriteByte(e)
		case '0':
			b.WriteByte(0)
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'v':
			b.WriteByte('\v')
		case '\n':
		case 'x', 'u', 'U':
			n := map[byte]int{'x': 2, 'u': 4, 'U': 8}[e]
			if i+n > len(s) {
				return "", 0, fmt.Errorf("bad \\%c escape", e)
			}
			v, err := strconv.ParseUint(s[i:i+n], 16, 32)
			if err != nil || !utf8.ValidRune(rune(v)) {
				return "", 0, fmt.Errorf("bad \\%c escape", e)
			}
			b.WriteRune(rune(v))
			i += n
		default:
			b.WriteByte('\\')
			b.WriteByte(e)
		}
	}
	return "", 0, fmt.Errorf("unterminated string")
}

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
			case "if":
				n, err := ps.parseIf()
				if err != nil {
					return nil, "", err
				}
				out = append(out, n)
			case "for":
				n, err := ps.parseFor()
				if err != nil {
					return nil, "", err
				}
				out = append(out, n)
			case "set":
				n, err := ps.parseSet()
				if err != nil {
					return nil, "", err
				}
				out = append(out, n)
			case "macro":
				n, err := ps.parseMacro()
				if err != nil {
					return nil, "", err
				}
				out = append(out, n)
			case "call":
				n, err := ps.parseCallBlock()
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
			if err := ps.expectBlockEnd(); err != nil {
				return nil, err
			}
			els, end2, err := ps.parseBody()
			if err != nil {
				return nil, err
			}
			if end2 != "endif" {
				return nil, ps.errf("expected endif, found %q", end2)
			}
			n.els = els
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
		ps.next()
		body, end, err := ps.parseBody()
		if err != nil {
			return nil, err
		}
		if end != "endset" {
			return nil, ps.errf("unclosed set block")
		}
		n.body = body
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
	for !ps.isOp(")") {
		pn, err := ps.expectName()
		if err != nil {
			return nil, err
		}
		p := macroParam{name: pn}
		if ps.isOp("=") {
			ps.next()
			if p.def, err = ps.parseExpr(); err != nil {
				return nil, err
			}
		}
		n.params = append(n.params, p)
		if ps.isOp(",") {
			ps.next()
		} else if !ps.isOp(")") {
			return nil, ps.errf("expected , or ) in macro parameters")
		}
	}
	ps.next()
	if err := ps.expectBlockEnd(); err != nil {
		return nil, err
	}
	body, end, err := ps.parseBody()
	if err != nil {
		return nil, err
	}
	if end != "endmacro" {
		return nil, ps.errf("unclosed macro %s", name)
	}
	n.body = body
	return n, ps.expectBlockEnd()
}

func (ps *parser) parseCallBlock() (node, error) {
	e, err := ps.parseExpr()
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
	if end != "endcall" {
		return nil, ps.errf("unclosed call block")
	}
	return &callBlockNode{call: e, body: body}, ps.expectBlockEnd()
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
			for !ps.isOp("]") {
				x, err := ps.parseExpr()
				if err != nil {
					return nil, err
				}
				l.items = append(l.items, x)
				if ps.isOp(",") {
					ps.next()
				} else if !ps.isOp("]") {
					return nil, ps.errf("expected , or ] in list")
				}
			}
			ps.next()
			return l, nil
		case "{":
			d := &dictExpr{}
			for !ps.isOp("}") {
				k, err := ps.parseExpr()
				if err != nil {
					return nil, err
				}
				if err := ps.expectOp(":"); err != nil {
					return nil, err
				}
				v, err := ps.parseExpr()
				if err != nil {
					return nil, err
				}
				d.keys = append(d.keys, k)
				d.vals = append(d.vals, v)
				if ps.isOp(",") {
					ps.next()
				} else if !ps.isOp("}") {
					return nil, ps.errf("expected , or } in dict")
				}
			}
			ps.next()
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
	for !ps.isOp(")") {
		if ps.peek().kind == tkName && ps.toks[ps.p+1].kind == tkOp && ps.toks[ps.p+1].val == "=" {
			name := ps.next().val
			ps.next()
			x, err := ps.parseExpr()
			if err != nil {
				return nil, nil, err
			}
			kwargs = append(kwargs, kwarg{name, x})
		} else {
			x, err := ps.parseExpr()
			if err != nil {
				return nil, nil, err
			}
			args = append(args, x)
		}
		if ps.isOp(",") {
			ps.next()
		} else if !ps.isOp(")") {
			return nil, nil, ps.errf("expected , or ) in call")
		}
	}
	ps.next()
	return args, kwargs, nil
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
