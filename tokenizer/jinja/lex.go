package jinja

import (
	"fmt"
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
