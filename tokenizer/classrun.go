package tokenizer

import (
	"regexp/syntax"
	"sort"
	"unicode/utf8"
)

// classRunMatcher runs Split patterns of the shape A?B+, B+, B or B{m,n}
// (A, B character classes) without a regexp engine: the Split patterns of
// older tokenizers (deepseek-llm, deepseek-coder) are sequences of these,
// and Go's regexp spends most of its time on their large classes.
// Leftmost-first semantics: the optional A is taken when B can follow it.
type classRunMatcher struct {
	opt      *runeClass // nil when the pattern has no A?
	main     *runeClass
	min, max int // repetition of B; max < 0 means unbounded
}

// runeClass is a set of code points: a bitmap for the BMP, sorted ranges above.
type runeClass struct {
	bmp    [0x10000 / 64]uint64
	ranges []rune // lo, hi pairs above the BMP
}

func newRuneClass(pairs []rune) *runeClass {
	c := &runeClass{}
	for i := 0; i+1 < len(pairs); i += 2 {
		lo, hi := pairs[i], pairs[i+1]
		for r := lo; r <= hi && r < 0x10000; r++ {
			c.bmp[r>>6] |= 1 << (uint(r) & 63)
		}
		if hi >= 0x10000 {
			c.ranges = append(c.ranges, max(lo, 0x10000), hi)
		}
	}
	return c
}

func (c *runeClass) has(r rune) bool {
	if uint32(r) < 0x10000 {
		return c.bmp[r>>6]&(1<<(uint(r)&63)) != 0
	}
	if r < 0 {
		return false
	}
	// ranges are sorted by lo as syntax produces them
	i := sort.Search(len(c.ranges)/2, func(i int) bool { return c.ranges[2*i+1] >= r })
	return i < len(c.ranges)/2 && c.ranges[2*i] <= r
}

// classOf returns the code-point ranges of a one-character node.
func classOf(re *syntax.Regexp) ([]rune, bool) {
	switch re.Op {
	case syntax.OpCharClass:
		return re.Rune, true
	case syntax.OpLiteral:
		if len(re.Rune) == 1 && re.Flags&syntax.FoldCase == 0 {
			return []rune{re.Rune[0], re.Rune[0]}, true
		}
	case syntax.OpAnyCharNotNL:
		return []rune{0, '\n' - 1, '\n' + 1, utf8.MaxRune}, true
	case syntax.OpAnyChar:
		return []rune{0, utf8.MaxRune}, true
	}
	return nil, false
}

// newClassRunMatcher recognises the supported shapes in an already
// translated (Go syntax) pattern; ok is false for anything else.
func newClassRunMatcher(goPattern string) (*classRunMatcher, bool) {
	re, err := syntax.Parse(goPattern, syntax.Perl)
	if err != nil {
		return nil, false
	}
	m := &classRunMatcher{}
	body := re
	if re.Op == syntax.OpConcat {
		if len(re.Sub) != 2 || re.Sub[0].Op != syntax.OpQuest || re.Sub[0].Flags&syntax.NonGreedy != 0 {
			return nil, false
		}
		opt, ok := classOf(re.Sub[0].Sub[0])
		if !ok {
			return nil, false
		}
		m.opt = newRuneClass(opt)
		body = re.Sub[1]
	}
	if body.Flags&syntax.NonGreedy != 0 {
		return nil, false
	}
	var cls []rune
	var ok bool
	switch body.Op {
	case syntax.OpPlus:
		cls, ok = classOf(body.Sub[0])
		m.min, m.max = 1, -1
	case syntax.OpRepeat:
		cls, ok = classOf(body.Sub[0])
		m.min, m.max = body.Min, body.Max
	default:
		cls, ok = classOf(body)
		m.min, m.max = 1, 1
	}
	if !ok || m.min < 1 {
		return nil, false
	}
	m.main = newRuneClass(cls)
	return m, true
}

// runFrom counts up to max runes of the main class from p; it returns the
// end offset and the count.
func (m *classRunMatcher) runFrom(s string, p int) (int, int) {
	n := 0
	for p < len(s) && (m.max < 0 || n < m.max) {
		r, w := decodeAt(s, p)
		if !m.main.has(r) {
			break
		}
		p += w
		n++
	}
	return p, n
}

func (m *classRunMatcher) next(s string, p int) (int, int, bool) {
	for p < len(s) {
		r, w := decodeAt(s, p)
		if m.opt != nil && m.opt.has(r) {
			if e, n := m.runFrom(s, p+w); n >= m.min {
				return p, e, true
			}
		}
		if e, n := m.runFrom(s, p); n >= m.min {
			return p, e, true
		}
		p += w
	}
	return 0, 0, false
}
