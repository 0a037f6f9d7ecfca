package tokenizer

import (
	"encoding/json"
	"fmt"
	"regexp"
	"regexp/syntax"
	"strings"
	"unicode"
	"unicode/utf8"
)

// preTokenizer splits one piece of normalized text into smaller pieces,
// passing each (never empty) to emit in order. Streaming through callbacks
// keeps a long prompt from materialising one slice per stage.
type preTokenizer interface {
	split(s string, emit func(string))
}

type preSequence []preTokenizer

func (p preSequence) split(s string, emit func(string)) {
	if len(p) == 0 {
		if s != "" {
			emit(s)
		}
		return
	}
	// Chain the stages: stage i feeds stage i+1.
	stages := make([]func(string), len(p)+1)
	stages[len(p)] = emit
	for i := len(p) - 1; i >= 0; i-- {
		pt, next := p[i], stages[i+1]
		stages[i] = func(piece string) { pt.split(piece, next) }
	}
	stages[0](s)
}

// matcher reports the non-overlapping matches of a Split pattern, left to
// right, with Oniguruma (leftmost-first, backtracking) semantics.
type matcher interface {
	// next returns the first match at or after p, or ok=false.
	next(s string, p int) (lo, hi int, ok bool)
}

type splitBehavior int

const (
	behaviorRemoved splitBehavior = iota
	behaviorIsolated
	behaviorMergedWithPrevious
	behaviorMergedWithNext
	behaviorContiguous
)

type preSplit struct {
	m        matcher
	behavior splitBehavior
	invert   bool
	src      string // the pattern as written (for EncodeReader's cut rules)
	literal  bool   // src is a String pattern, not a Regex
}

// split walks the (range, isMatch) segments covering s, as HF's
// split_off_matches, and applies the behaviour on the fly.
func (p preSplit) split(s string, emit func(string)) {
	if s == "" {
		return
	}
	st := splitState{s: s, emit: emit, behavior: p.behavior, invert: p.invert}
	prev := 0
	if g, ok := p.m.(*genericMatcher); ok && !g.wsTail {
		for _, m := range g.all(s) {
			if m[1] == m[0] {
				continue // empty matches split nothing
			}
			if m[0] > prev {
				st.seg(prev, m[0], false)
			}
			st.seg(m[0], m[1], true)
			prev = m[1]
		}
		if prev < len(s) {
			st.seg(prev, len(s), false)
		}
		if st.open {
			emit(s[st.start:])
		}
		return
	}
	for pos := 0; pos < len(s); {
		lo, hi, ok := p.m.next(s, pos)
		if !ok {
			break
		}
		if lo > prev {
			st.seg(prev, lo, false)
		}
		st.seg(lo, hi, true)
		prev, pos = hi, hi
	}
	if prev < len(s) {
		st.seg(prev, len(s), false)
	}
	if st.open {
		emit(s[st.start:])
	}
}

type splitState struct {
	s               string
	emit            func(string)
	behavior        splitBehavior
	invert          bool
	start           int
	open, openMatch bool
}

func (st *splitState) seg(lo, hi int, isMatch bool) {
	s, emit := st.s, st.emit
	if st.invert {
		isMatch = !isMatch
	}
	switch st.behavior {
	case behaviorIsolated:
		emit(s[lo:hi])
	case behaviorRemoved:
		if !isMatch {
			emit(s[lo:hi])
		}
	case behaviorMergedWithPrevious:
		if isMatch && st.open {
			emit(s[st.start:hi])
			st.open = false
			return
		}
		if st.open {
			emit(s[st.start:lo])
		}
		st.start, st.open = lo, true
		if isMatch {
			emit(s[lo:hi])
			st.open = false
		}
	case behaviorMergedWithNext:
		if isMatch {
			if st.open {
				emit(s[st.start:lo])
			}
			st.start, st.open = lo, true
			return
		}
		if st.open {
			emit(s[st.start:hi])
			st.open = false
		} else {
			emit(s[lo:hi])
		}
	case behaviorContiguous:
		if st.open && isMatch && st.openMatch {
			return
		}
		if st.open {
			emit(s[st.start:lo])
		}
		st.start, st.open, st.openMatch = lo, true, isMatch
	}
}

// preByteLevel maps bytes to the GPT-2 printable alphabet. When it is the
// last pre-tokenizer the mapping is folded into the model (which then works
// on raw bytes) and mapBytes is false.
type preByteLevel struct {
	addPrefixSpace bool
	useRegex       bool
	mapBytes       bool
	re             matcher
}

func (p preByteLevel) split(s string, emit func(string)) {
	if s == "" {
		return
	}
	if p.addPrefixSpace && !strings.HasPrefix(s, " ") {
		s = " " + s
	}
	out := emit
	if p.mapBytes {
		out = func(piece string) { emit(bytesToUnicode(piece)) }
	}
	if p.useRegex {
		preSplit{m: p.re, behavior: behaviorIsolated}.split(s, out)
	} else {
		out(s)
	}
}

// preDigits splits digits from non-digits (and each digit alone when
// individual).
type preDigits struct{ individual bool }

func (p preDigits) split(s string, emit func(string)) {
	start, prevDigit := 0, false
	for i, r := range s {
		d := unicode.IsDigit(r)
		if i > start && (d != prevDigit || (d && p.individual)) {
			emit(s[start:i])
			start = i
		}
		prevDigit = d
	}
	if start < len(s) {
		emit(s[start:])
	}
}

// preMetaspace replaces spaces with the replacement char, optionally
// prepends it, and optionally splits before each replacement char.
type preMetaspace struct {
	replacement string
	prepend     string // "always", "first", "never"
	splitOn     bool
}

func (p preMetaspace) split(s string, emit func(string)) {
	if s == "" {
		return
	}
	s = strings.ReplaceAll(s, " ", p.replacement)
	if (p.prepend == "always" || p.prepend == "first") && !strings.HasPrefix(s, p.replacement) {
		s = p.replacement + s
	}
	if !p.splitOn {
		emit(s)
		return
	}
	// MergedWithNext on the replacement char: each piece starts with it.
	start := 0
	for start < len(s) {
		i := strings.Index(s[start+1:], p.replacement)
		if i < 0 {
			break
		}
		emit(s[start : start+1+i])
		start += 1 + i
	}
	if start < len(s) {
		emit(s[start:])
	}
}

// metaspaceNotFirst returns p with Metaspace "first" prepending turned off
// (for text that does not start the input), or nil when p has none.
func metaspaceNotFirst(p preTokenizer) preTokenizer {
	switch x := p.(type) {
	case preMetaspace:
		if x.prepend == "first" {
			x.prepend = "never"
			return x
		}
	case preSequence:
		var out preSequence
		changed := false
		for _, sub := range x {
			if n := metaspaceNotFirst(sub); n != nil {
				out = append(out, n)
				changed = true
			} else {
				out = append(out, sub)
			}
		}
		if changed {
			return out
		}
	}
	return nil
}

// preWhitespaceSplit splits on whitespace, dropping it.
type preWhitespaceSplit struct{}

func (preWhitespaceSplit) split(s string, emit func(string)) {
	for _, f := range strings.FieldsFunc(s, isSpace) {
		emit(f)
	}
}

type rawPreTokenizer struct {
	Type           string            `json:"type"`
	Pretokenizers  []json.RawMessage `json:"pretokenizers"`
	Pattern        pattern           `json:"pattern"`
	Behavior       string            `json:"behavior"`
	Invert         bool              `json:"invert"`
	AddPrefixSpace *bool             `json:"add_prefix_space"`
	UseRegex       *bool             `json:"use_regex"`
	Individual     bool              `json:"individual_digits"`
	Replacement    string            `json:"replacement"`
	PrependScheme  string            `json:"prepend_scheme"`
	Split          *bool             `json:"split"`
}

// gpt2Pattern is the ByteLevel pre-tokenizer's built-in regex.
const gpt2Pattern = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

func parsePreTokenizer(raw json.RawMessage) (preTokenizer, error) {
	if isNull(raw) {
		return nil, nil
	}
	var r rawPreTokenizer
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("pre_tokenizer: %w", err)
	}
	switch r.Type {
	case "Sequence":
		var seq preSequence
		for i, sub := range r.Pretokenizers {
			p, err := parsePreTokenizer(sub)
			if err != nil {
				return nil, fmt.Errorf("pre_tokenizer Sequence[%d]: %w", i, err)
			}
			if p != nil {
				seq = append(seq, p)
			}
		}
		return seq, nil
	case "Split":
		var m matcher
		var src string
		switch {
		case r.Pattern.String != nil:
			if *r.Pattern.String == "" {
				return nil, fmt.Errorf("pre_tokenizer Split: empty string pattern")
			}
			m, src = stringMatcher(*r.Pattern.String), *r.Pattern.String
		case r.Pattern.Regex != nil:
			var err error
			src = *r.Pattern.Regex
			if m, err = newRegexMatcher(*r.Pattern.Regex); err != nil {
				return nil, fmt.Errorf("pre_tokenizer Split: %w", err)
			}
		default:
			return nil, fmt.Errorf("pre_tokenizer Split: missing pattern")
		}
		b, err := parseBehavior(r.Behavior)
		if err != nil {
			return nil, fmt.Errorf("pre_tokenizer Split: %w", err)
		}
		return preSplit{m: m, behavior: b, invert: r.Invert, src: src, literal: r.Pattern.String != nil}, nil
	case "ByteLevel":
		p := preByteLevel{addPrefixSpace: true, useRegex: true, mapBytes: true}
		if r.AddPrefixSpace != nil {
			p.addPrefixSpace = *r.AddPrefixSpace
		}
		if r.UseRegex != nil {
			p.useRegex = *r.UseRegex
		}
		if p.useRegex {
			m, err := newRegexMatcher(gpt2Pattern)
			if err != nil {
				return nil, fmt.Errorf("pre_tokenizer ByteLevel: %w", err)
			}
			p.re = m
		}
		return p, nil
	case "Digits":
		return preDigits{individual: r.Individual}, nil
	case "Metaspace":
		p := preMetaspace{replacement: r.Replacement, prepend: r.PrependScheme, splitOn: true}
		if p.replacement == "" {
			p.replacement = "▁"
		}
		if p.prepend == "" {
			p.prepend = "always"
			if r.AddPrefixSpace != nil && !*r.AddPrefixSpace {
				p.prepend = "never"
			}
		}
		if r.Split != nil {
			p.splitOn = *r.Split
		}
		return p, nil
	case "WhitespaceSplit":
		return preWhitespaceSplit{}, nil
	case "":
		return nil, fmt.Errorf("pre_tokenizer: missing type")
	}
	return nil, fmt.Errorf("pre_tokenizer %q: unsupported", r.Type)
}

func parseBehavior(s string) (splitBehavior, error) {
	switch s {
	case "Removed":
		return behaviorRemoved, nil
	case "Isolated":
		return behaviorIsolated, nil
	case "MergedWithPrevious":
		return behaviorMergedWithPrevious, nil
	case "MergedWithNext":
		return behaviorMergedWithNext, nil
	case "Contiguous":
		return behaviorContiguous, nil
	}
	return 0, fmt.Errorf("behavior %q: unsupported", s)
}

// stringMatcher matches a literal string.
type stringMatcher string

func (m stringMatcher) next(s string, p int) (int, int, bool) {
	i := strings.Index(s[p:], string(m))
	if i < 0 {
		return 0, 0, false
	}
	return p + i, p + i + len(m), true
}

// ---- Regex matchers ----

// Patterns of real checkpoints, scanned by hand: they use the look-ahead
// `\s+(?!\S)` that Go's regexp cannot express, and a scanner is faster.
const (
	deepseekV3Digits = `\p{N}{1,3}`
	deepseekV3CJK    = "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+"
	deepseekV3Main   = "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"
	qwen2Pattern     = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	llama3Pattern    = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// newRegexMatcher picks a hand-written scanner for known patterns and
// otherwise compiles the pattern with Go's regexp after translating
// Oniguruma's Unicode classes; a trailing `\s+(?!\S)|\s+` (the only
// look-ahead real tokenizers use) is handled by hand.
func newRegexMatcher(pat string) (matcher, error) {
	switch pat {
	case deepseekV3Digits:
		return scanMatcher(scanDigits3), nil
	case deepseekV3CJK:
		return scanMatcher(scanCJK), nil
	case deepseekV3Main:
		return scanMatcher(scanDeepSeekV3), nil
	case qwen2Pattern:
		return scanMatcher(func(s string, p int) int { return scanQwen(s, p, 1) }), nil
	case llama3Pattern:
		return scanMatcher(func(s string, p int) int { return scanQwen(s, p, 3) }), nil
	}
	return newGenericMatcher(pat)
}

// scanMatcher wraps a function returning the end of the match starting at
// p, or -1; the search tries each start position in turn like Oniguruma.
type scanMatcher func(s string, p int) int

func (sm scanMatcher) next(s string, p int) (int, int, bool) {
	for p < len(s) {
		if e := sm(s, p); e > p {
			return p, e, true
		}
		if s[p] < utf8.RuneSelf {
			p++
			continue
		}
		_, n := utf8.DecodeRuneInString(s[p:])
		p += n
	}
	return 0, 0, false
}

// Character classes with Oniguruma's Unicode meaning, looked up in a BMP
// table (the unicode package's range search dominated pre-tokenization).
const (
	clsL uint8 = 1 << iota
	clsN
	clsM
	clsP
	clsS
	clsSpace
)

// bmpClass is built once at init from the unicode range tables and never
// written afterwards.
var bmpClass = func() *[0x10000]uint8 {
	t := new([0x10000]uint8)
	set := func(tab *unicode.RangeTable, bit uint8) {
		for _, r := range tab.R16 {
			for c := uint32(r.Lo); c <= uint32(r.Hi); c += uint32(r.Stride) {
				t[c] |= bit
			}
		}
	}
	set(unicode.L, clsL)
	set(unicode.N, clsN)
	set(unicode.M, clsM)
	set(unicode.P, clsP)
	set(unicode.S, clsS)
	set(unicode.White_Space, clsSpace)
	return t
}()

func hasClass(r rune, bit uint8, slow func(rune) bool) bool {
	if uint32(r) < 0x10000 {
		return bmpClass[r]&bit != 0
	}
	return r >= 0 && slow(r)
}

func isSpace(r rune) bool { return hasClass(r, clsSpace, unicode.IsSpace) }
func isL(r rune) bool     { return hasClass(r, clsL, unicode.IsLetter) }
func isN(r rune) bool     { return hasClass(r, clsN, unicode.IsNumber) }
func isM(r rune) bool     { return hasClass(r, clsM, unicode.IsMark) }
func isP(r rune) bool     { return hasClass(r, clsP, unicode.IsPunct) }
func isS(r rune) bool     { return hasClass(r, clsS, unicode.IsSymbol) }
func isCRLF(r rune) bool  { return r == '\r' || r == '\n' }

func decodeAt(s string, p int) (rune, int) {
	if p >= len(s) {
		return -1, 0
	}
	if c := s[p]; c < utf8.RuneSelf {
		return rune(c), 1
	}
	return utf8.DecodeRuneInString(s[p:])
}

// run advances over runes satisfying f.
func run(s string, p int, f func(rune) bool) int {
	for p < len(s) {
		r, n := decodeAt(s, p)
		if !f(r) {
			break
		}
		p += n
	}
	return p
}

func scanDigits3(s string, p int) int {
	e := p
	for k := 0; k < 3; k++ {
		r, n := decodeAt(s, e)
		if n == 0 || !isN(r) {
			break
		}
		e += n
	}
	return e
}

func isDeepSeekCJK(r rune) bool {
	return r >= 0x4e00 && r <= 0x9fa5 || r >= 0x3040 && r <= 0x309f || r >= 0x30a0 && r <= 0x30ff
}

func scanCJK(s string, p int) int { return run(s, p, isDeepSeekCJK) }

// scanWhitespaceTail implements `\s*[\r\n]+|\s+(?!\S)|\s+` at p.
func scanWhitespaceTail(s string, p int) int {
	r, _ := decodeAt(s, p)
	if !isSpace(r) {
		return -1
	}
	e := run(s, p, isSpace)
	// \s*[\r\n]+ : the match ends after the last CR/LF of the run.
	last := -1
	for q := p; q < e; {
		r, n := decodeAt(s, q)
		if isCRLF(r) {
			last = q + n
		}
		q += n
	}
	if last > 0 {
		return last
	}
	// \s+(?!\S)
	if e == len(s) {
		return e
	}
	_, lastN := utf8.DecodeLastRuneInString(s[p:e])
	if e-lastN > p {
		return e - lastN
	}
	// \s+
	return e
}

func isDeepSeekLM(r rune) bool { return isL(r) || isM(r) }

// scanDeepSeekV3 implements deepseekV3Main.
func scanDeepSeekV3(s string, p int) int {
	c, n := decodeAt(s, p)
	// [!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+
	if c < utf8.RuneSelf && asciiPunctOrSym(c) {
		e := run(s, p+n, func(r rune) bool { return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' })
		if e > p+n {
			return e
		}
	}
	// [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+
	if !isCRLF(c) && !isL(c) && !isP(c) && !isS(c) {
		if e := run(s, p+n, isDeepSeekLM); e > p+n {
			return e
		}
	}
	if isDeepSeekLM(c) {
		return run(s, p, isDeepSeekLM)
	}
	// ?[\p{P}\p{S}]+[\r\n]*
	isPS := func(r rune) bool { return isP(r) || isS(r) }
	q := p
	if c == ' ' {
		if r, _ := decodeAt(s, p+1); isPS(r) {
			q = p + 1
		}
	}
	if r, _ := decodeAt(s, q); isPS(r) {
		e := run(s, q, isPS)
		return run(s, e, isCRLF)
	}
	return scanWhitespaceTail(s, p)
}

// asciiPunctOrSym is the class [!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~].
func asciiPunctOrSym(c rune) bool {
	return c >= '!' && c <= '/' || c >= ':' && c <= '@' || c >= '[' && c <= '`' || c >= '{' && c <= '~'
}

// scanQwen implements qwen2Pattern (maxDigits 1) and llama3Pattern (3).
func scanQwen(s string, p int, maxDigits int) int {
	c, n := decodeAt(s, p)
	// (?i:'s|'t|'re|'ve|'m|'ll|'d)
	if c == '\'' {
		r1, n1 := decodeAt(s, p+1)
		switch r1 {
		case 's', 'S', 'ſ', 't', 'T', 'm', 'M', 'd', 'D':
			return p + 1 + n1
		}
		if l := lowerASCII(r1); l == 'r' || l == 'v' || l == 'l' {
			r2, n2 := decodeAt(s, p+1+n1)
			want := 'e'
			if l == 'l' {
				want = 'l'
			}
			if lowerASCII(r2) == want {
				return p + 1 + n1 + n2
			}
		}
	}
	// [^\r\n\p{L}\p{N}]?\p{L}+
	if !isCRLF(c) && !isL(c) && !isN(c) {
		if e := run(s, p+n, isL); e > p+n {
			return e
		}
	}
	if isL(c) {
		return run(s, p, isL)
	}
	// \p{N} or \p{N}{1,3}
	if isN(c) {
		e := p
		for k := 0; k < maxDigits; k++ {
			r, m := decodeAt(s, e)
			if m == 0 || !isN(r) {
				break
			}
			e += m
		}
		return e
	}
	// ?[^\s\p{L}\p{N}]+[\r\n]*
	isOther := func(r rune) bool { return r >= 0 && !isSpace(r) && !isL(r) && !isN(r) }
	q := p
	if c == ' ' {
		if r, _ := decodeAt(s, p+1); isOther(r) {
			q = p + 1
		}
	}
	if r, _ := decodeAt(s, q); isOther(r) {
		e := run(s, q, isOther)
		return run(s, e, isCRLF)
	}
	return scanWhitespaceTail(s, p)
}

func lowerASCII(r rune) rune {
	if r >= 'A' && r <= 'Z' {
		return r + 'a' - 'A'
	}
	return r
}

// genericMatcher runs other patterns with Go's regexp. Without the
// `\s+(?!\S)|\s+` tail it searches the whole piece at once (so ^, $ and \b
// see their context); with the tail, the head is tried anchored at each
// position and the whitespace alternatives are handled by hand.
type genericMatcher struct {
	re     *regexp.Regexp // whole pattern, when there is no tail
	head   *regexp.Regexp // \A(?:head), when there is a tail
	wsTail bool
}

const wsLookaheadTail = `|\s+(?!\S)|\s+`

func newGenericMatcher(pat string) (matcher, error) {
	g := &genericMatcher{}
	head := pat
	switch {
	case strings.HasSuffix(pat, wsLookaheadTail):
		g.wsTail, head = true, strings.TrimSuffix(pat, wsLookaheadTail)
	case pat == `\s+(?!\S)|\s+`:
		g.wsTail, head = true, ""
	}
	var err error
	if !g.wsTail {
		goPat, err := translateOniguruma(pat)
		if err != nil {
			return nil, err
		}
		if cr, ok := newClassRunMatcher(goPat); ok {
			return cr, nil
		}
		g.re, err = compileOniguruma(pat)
		return g, err
	}
	if head == "" {
		return g, nil
	}
	if usesLeftContext(head) {
		return nil, fmt.Errorf("regex %q: ^, \\b or \\B together with the \\s+(?!\\S) look-ahead are unsupported", pat)
	}
	g.head, err = compileOniguruma(`\A(?:` + head + `)`)
	return g, err
}

// usesLeftContext reports an unescaped ^, \b or \B outside a class: they
// need the text before the anchored attempt.
func usesLeftContext(pat string) bool {
	inClass := false
	for i := 0; i < len(pat); i++ {
		switch c := pat[i]; {
		case c == '\\' && i+1 < len(pat):
			if !inClass && (pat[i+1] == 'b' || pat[i+1] == 'B') {
				return true
			}
			i++
		case c == '[':
			inClass = true
		case c == ']':
			inClass = false
		case c == '^' && !inClass:
			return true
		}
	}
	return false
}

// all returns every match over the whole piece (no tail).
func (g *genericMatcher) all(s string) [][2]int {
	locs := g.re.FindAllStringIndex(s, -1)
	out := make([][2]int, len(locs))
	for i, l := range locs {
		out[i] = [2]int{l[0], l[1]}
	}
	return out
}

func (g *genericMatcher) next(s string, p int) (int, int, bool) {
	if !g.wsTail {
		for _, m := range g.all(s) {
			if m[0] >= p && m[1] > m[0] {
				return m[0], m[1], true
			}
		}
		return 0, 0, false
	}
	return scanMatcher(func(s string, p int) int {
		if g.head != nil {
			if loc := g.head.FindStringIndex(s[p:]); loc != nil && loc[1] > 0 {
				return p + loc[1]
			}
		}
		r, _ := decodeAt(s, p)
		if !isSpace(r) {
			return -1
		}
		e := run(s, p, isSpace)
		if e == len(s) {
			return e
		}
		_, lastN := utf8.DecodeLastRuneInString(s[p:e])
		if e-lastN > p {
			return e - lastN
		}
		return e
	}).next(s, p)
}

// compileOniguruma compiles an Oniguruma pattern with Go's regexp after
// giving \s, \S, \d, \w their Unicode meanings. Look-around and
// back-references are rejected with a clear error.
func compileOniguruma(pat string) (*regexp.Regexp, error) {
	goPat, err := translateOniguruma(pat)
	if err != nil {
		return nil, err
	}
	re, err := regexp.Compile(goPat)
	if err != nil {
		return nil, fmt.Errorf("regex %q: %w", pat, err)
	}
	return re, nil
}

// translateOniguruma rewrites an Oniguruma pattern into Go syntax.
func translateOniguruma(pat string) (string, error) {
	for _, bad := range []string{"(?=", "(?!", "(?<=", "(?<!", "(?>", `\k<`} {
		if strings.Contains(pat, bad) {
			return "", fmt.Errorf("regex %q: look-around/atomic groups are unsupported outside the known DeepSeek/Qwen/Llama-3/GPT-2 patterns", pat)
		}
	}
	var b strings.Builder
	inClass := false
	for i := 0; i < len(pat); i++ {
		c := pat[i]
		if c == '\\' && i+1 < len(pat) {
			d := pat[i+1]
			i++
			switch d {
			case 's':
				if inClass {
					b.WriteString(`\s\x{0B}\x{85}\p{Z}`)
				} else {
					b.WriteString(`[\s\x{0B}\x{85}\p{Z}]`)
				}
				continue
			case 'S':
				if inClass {
					return "", fmt.Errorf("regex %q: \\S inside a class is unsupported", pat)
				}
				b.WriteString(`[^\s\x{0B}\x{85}\p{Z}]`)
				continue
			case 'd':
				b.WriteString(`\p{Nd}`)
				continue
			case 'w':
				if inClass {
					b.WriteString(`\p{L}\p{M}\p{Nd}\p{Pc}`)
				} else {
					b.WriteString(`[\p{L}\p{M}\p{Nd}\p{Pc}]`)
				}
				continue
			}
			b.WriteByte('\\')
			b.WriteByte(d)
			continue
		}
		switch c {
		case '^', '$':
			if !inClass {
				// Ruby syntax: ^ and $ are line anchors.
				b.WriteString("(?m:" + string(c) + ")")
				continue
			}
		case '[':
			if !inClass {
				inClass = true
				b.WriteByte(c)
				// a leading ] or ^] is literal
				if i+1 < len(pat) && pat[i+1] == '^' {
					b.WriteByte('^')
					i++
				}
				if i+1 < len(pat) && pat[i+1] == ']' {
					b.WriteString(`\]`)
					i++
				}
				continue
			}
			b.WriteString(`\[`)
			continue
		case ']':
			inClass = false
		}
		b.WriteByte(c)
	}
	if _, err := syntax.Parse(b.String(), syntax.Perl); err != nil {
		return "", fmt.Errorf("regex %q: %w", pat, err)
	}
	return b.String(), nil
}
