package tokenizer

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"
)

// normalizer rewrites text before pre-tokenization. Offsets are not tracked:
// the engine needs ids, not alignments.
type normalizer interface {
	normalize(s string) string
}

type normSequence []normalizer

func (n normSequence) normalize(s string) string {
	for _, x := range n {
		s = x.normalize(s)
	}
	return s
}

type normNFC struct{}

func (normNFC) normalize(s string) string { return nfc(s) }

type normNFD struct{}

func (normNFD) normalize(s string) string {
	if !nfcMaybeChanges(s) {
		return s
	}
	return string(decomposeOrdered(s))
}

type normLowercase struct{}

func (normLowercase) normalize(s string) string { return strings.ToLower(s) }

type normPrepend struct{ prepend string }

// HF prepends only to non-empty input.
func (n normPrepend) normalize(s string) string {
	if s == "" {
		return s
	}
	return n.prepend + s
}

type normReplace struct {
	pattern string
	re      *regexp.Regexp
	content string
}

func (n normReplace) normalize(s string) string {
	if n.re != nil {
		return n.re.ReplaceAllLiteralString(s, n.content)
	}
	return strings.ReplaceAll(s, n.pattern, n.content)
}

type normStrip struct{ left, right bool }

func (n normStrip) normalize(s string) string {
	if n.left {
		s = strings.TrimLeftFunc(s, isSpace)
	}
	if n.right {
		s = strings.TrimRightFunc(s, isSpace)
	}
	return s
}

// pattern is the {"String": ...} / {"Regex": ...} object of Split and Replace.
type pattern struct {
	String *string `json:"String"`
	Regex  *string `json:"Regex"`
}

type rawNormalizer struct {
	Type        string            `json:"type"`
	Normalizers []json.RawMessage `json:"normalizers"`
	Prepend     string            `json:"prepend"`
	Pattern     pattern           `json:"pattern"`
	Content     string            `json:"content"`
	Left        bool              `json:"left"`
	Right       bool              `json:"right"`
}

func parseNormalizer(raw json.RawMessage) (normalizer, error) {
	if isNull(raw) {
		return nil, nil
	}
	var r rawNormalizer
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("normalizer: %w", err)
	}
	switch r.Type {
	case "Sequence":
		var seq normSequence
		for i, sub := range r.Normalizers {
			n, err := parseNormalizer(sub)
			if err != nil {
				return nil, fmt.Errorf("normalizer Sequence[%d]: %w", i, err)
			}
			if n != nil {
				seq = append(seq, n)
			}
		}
		return seq, nil
	case "NFC":
		return normNFC{}, nil
	case "NFD":
		return normNFD{}, nil
	case "Lowercase":
		return normLowercase{}, nil
	case "Prepend":
		return normPrepend{prepend: r.Prepend}, nil
	case "Replace":
		switch {
		case r.Pattern.String != nil:
			return normReplace{pattern: *r.Pattern.String, content: r.Content}, nil
		case r.Pattern.Regex != nil:
			re, err := compileOniguruma(*r.Pattern.Regex)
			if err != nil {
				return nil, fmt.Errorf("normalizer Replace: %w", err)
			}
			return normReplace{re: re, content: r.Content}, nil
		}
		return nil, fmt.Errorf("normalizer Replace: missing pattern")
	case "Strip":
		return normStrip{left: r.Left, right: r.Right}, nil
	case "":
		return nil, fmt.Errorf("normalizer: missing type")
	}
	return nil, fmt.Errorf("normalizer %q: unsupported", r.Type)
}

func isNull(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s == "" || s == "null"
}

// Hangul syllable composition constants (Unicode §3.12).
const (
	hangulSBase  = 0xAC00
	hangulLBase  = 0x1100
	hangulVBase  = 0x1161
	hangulTBase  = 0x11A7
	hangulLCount = 19
	hangulVCount = 21
	hangulTCount = 28
	hangulNCount = hangulVCount * hangulTCount
	hangulSCount = hangulLCount * hangulNCount
)

// nfcMaybeChanges reports whether any rune of s could be altered by
// canonical decomposition or composition; most text takes this fast path.
func nfcMaybeChanges(s string) bool {
	for _, r := range s {
		if r < 0x300 {
			continue
		}
		if r >= hangulLBase && r < 0x1200 || r >= hangulSBase && r < hangulSBase+hangulSCount {
			return true
		}
		if _, ok := cccTable[r]; ok {
			return true
		}
		if _, ok := decompTable[r]; ok {
			return true
		}
		if compSecondStarters[r] {
			return true
		}
	}
	return false
}

func ccc(r rune) uint8 {
	if r < 0x300 {
		return 0
	}
	return cccTable[r]
}

// decomposeOrdered returns the canonical decomposition of s in canonical order.
func decomposeOrdered(s string) []rune {
	out := make([]rune, 0, len(s))
	for _, r := range s {
		switch {
		case r >= hangulSBase && r < hangulSBase+hangulSCount:
			si := r - hangulSBase
			out = append(out, hangulLBase+si/hangulNCount, hangulVBase+(si%hangulNCount)/hangulTCount)
			if t := si % hangulTCount; t != 0 {
				out = append(out, hangulTBase+t)
			}
		default:
			if d, ok := decompTable[r]; ok {
				out = append(out, d...)
			} else {
				out = append(out, r)
			}
		}
	}
	// Canonical ordering: stable sort each run of non-starters by class.
	for i := 1; i < len(out); i++ {
		c := ccc(out[i])
		if c == 0 {
			continue
		}
		for j := i; j > 0; j-- {
			p := ccc(out[j-1])
			if p == 0 || p <= c {
				break
			}
			out[j-1], out[j] = out[j], out[j-1]
		}
	}
	return out
}

func composePair(a, b rune) (rune, bool) {
	if a >= hangulLBase && a < hangulLBase+hangulLCount && b >= hangulVBase && b < hangulVBase+hangulVCount {
		return hangulSBase + ((a-hangulLBase)*hangulVCount+(b-hangulVBase))*hangulTCount, true
	}
	if a >= hangulSBase && a < hangulSBase+hangulSCount && (a-hangulSBase)%hangulTCount == 0 &&
		b > hangulTBase && b < hangulTBase+hangulTCount {
		return a + (b - hangulTBase), true
	}
	c, ok := compTable[[2]rune{a, b}]
	return c, ok
}

// nfc implements Unicode Normalization Form C (canonical decomposition
// followed by canonical composition).
func nfc(s string) string {
	if !nfcMaybeChanges(s) {
		return s
	}
	d := decomposeOrdered(s)
	out := d[:0]
	starter := -1
	var lastCC uint8
	for _, r := range d {
		cc := ccc(r)
		if starter >= 0 {
			adjacent := len(out)-1 == starter
			if adjacent || (lastCC != 0 && lastCC < cc) {
				if c, ok := composePair(out[starter], r); ok {
					out[starter] = c
					continue
				}
			}
		}
		if cc == 0 {
			starter = len(out)
		}
		lastCC = cc
		out = append(out, r)
	}
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range out {
		b.WriteRune(r)
	}
	return b.String()
}

// validUTF8 replaces invalid bytes the way Rust's from_utf8_lossy does:
// each maximal invalid prefix becomes one U+FFFD.
func lossyUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	sb.Grow(len(b) + 8)
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r == utf8.RuneError && n <= 1 {
			sb.WriteRune(utf8.RuneError)
			b = b[invalidPrefixLen(b):]
			continue
		}
		sb.WriteRune(r)
		b = b[n:]
	}
	return sb.String()
}

// invalidPrefixLen is the length of the maximal prefix of b that is a valid
// start of a UTF-8 sequence but incomplete (at least 1), mirroring the
// WHATWG/Rust "substitution of maximal subparts" rule.
func invalidPrefixLen(b []byte) int {
	c := b[0]
	var need int
	lo, hi := byte(0x80), byte(0xBF)
	switch {
	case c >= 0xC2 && c <= 0xDF:
		need = 1
	case c == 0xE0:
		need, lo = 2, 0xA0
	case c >= 0xE1 && c <= 0xEC, c == 0xEE, c == 0xEF:
		need = 2
	case c == 0xED:
		need, hi = 2, 0x9F
	case c == 0xF0:
		need, lo = 3, 0x90
	case c >= 0xF1 && c <= 0xF3:
		need = 3
	case c == 0xF4:
		need, hi = 3, 0x8F
	default:
		return 1
	}
	i := 1
	for ; i <= need && i < len(b); i++ {
		x := b[i]
		if i == 1 {
			if x < lo || x > hi {
				return i
			}
		} else if x < 0x80 || x > 0xBF {
			return i
		}
	}
	return i
}
