package tokenizer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// EncodeReader encodes the text read from r exactly as Encode would encode
// all of it, handing the ids to emit in order as they become final (the
// slice is reused: emit must copy what it keeps). An error from emit stops
// the encoding and is returned as is, so a caller that only needs to know
// whether the text passes a number of tokens can stop reading there.
//
// The text is cut into pieces of about 64 KiB that are encoded one at a
// time, so memory stays bounded however long the input is, provided it
// has a cut point now and then: a line break between a non-space character
// and an ASCII letter or digit, where every stage of the tokenizer is known
// to split anyway (see cutRules). A tokenizer whose components give no
// such guarantee (Cuttable reports false), and text with no cut point,
// are buffered whole as Encode does.
func (t *Tokenizer) EncodeReader(ctx context.Context, r io.Reader, addSpecial bool, emit func(ids []int) error) error {
	return t.encodeReader(ctx, r, addSpecial, streamChunk, emit)
}

// streamChunk is the size EncodeReader reads before it looks for a cut.
const streamChunk = 64 << 10

// Cuttable reports whether EncodeReader can cut this tokenizer's input
// into pieces (else it buffers the whole input).
func (t *Tokenizer) Cuttable() bool { return t.cuttable }

func (t *Tokenizer) encodeReader(ctx context.Context, r io.Reader, addSpecial bool, chunk int, emit func(ids []int) error) error {
	var ids []int
	if addSpecial && len(t.prefixIDs) > 0 {
		if err := emit(append(ids[:0], t.prefixIDs...)); err != nil {
			return err
		}
	}
	buf := make([]byte, 0, 2*chunk)
	cont := false // buf continues text already encoded
	scanned := 0  // buf[:scanned] holds no cut after lastCut
	lastCut := 0
	encode := func(text []byte) error {
		if !utf8.Valid(text) {
			return fmt.Errorf("tokenizer: encode: input is not valid UTF-8")
		}
		var err error
		if ids, err = t.encodeAppend(ctx, string(text), ids[:0], cont); err != nil {
			return err
		}
		cont = true
		if len(ids) == 0 {
			return nil
		}
		return emit(ids)
	}
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("tokenizer: encode: %w", err)
		}
		// Read until a chunk's worth is buffered or the input ends.
		var readErr error
		for target := len(buf) + chunk; len(buf) < target && readErr == nil; {
			if len(buf) == cap(buf) {
				buf = append(buf, 0)[:len(buf)]
			}
			var n int
			n, readErr = r.Read(buf[len(buf):min(cap(buf), target)])
			buf = buf[:len(buf)+n]
		}
		if readErr != nil && !errors.Is(readErr, io.EOF) {
			return fmt.Errorf("tokenizer: reading the text: %w", readErr)
		}
		if readErr != nil { // end of input
			if err := encode(buf); err != nil {
				return err
			}
			if addSpecial && len(t.suffixIDs) > 0 {
				return emit(append(ids[:0], t.suffixIDs...))
			}
			return nil
		}
		if !t.cuttable {
			continue
		}
		for i := max(scanned, 2); i < len(buf); i++ {
			if isCut(buf, i) {
				lastCut = i
			}
		}
		scanned = len(buf)
		if lastCut == 0 {
			continue
		}
		if err := encode(buf[:lastCut]); err != nil {
			return err
		}
		n := copy(buf, buf[lastCut:])
		buf = buf[:n]
		scanned, lastCut = 0, 0
	}
}

// isCut reports whether text may be cut before text[i]: a line break
// after a non-space character and before an ASCII letter or digit.
func isCut(text []byte, i int) bool {
	if text[i-1] != '\n' || !isASCIIAlnum(text[i]) {
		return false
	}
	r, _ := utf8.DecodeLastRune(text[:i-1])
	return r != utf8.RuneError && !isSpace(r)
}

func isASCIIAlnum(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9'
}

// cutRules decides whether encoding A then B (B marked cont) equals
// encoding A+B whenever A ends with a non-space character and '\n' and B
// starts with an ASCII letter or digit, and returns the normalizer for
// the continued segment (nil: the usual one). Stage by stage:
//
//   - added tokens: none may contain '\n' (a match could span the cut),
//     and none that strips whitespace on its left may start with an ASCII
//     letter or digit (it would take the '\n' from A);
//   - normalizer: per-character ones (NFC, NFD, Lowercase), Replace of a
//     literal without '\n' or ASCII letters and digits by text without
//     whitespace, and Prepend, dropped for the continued segment; Strip and
//     regex Replace are refused;
//   - pre-tokenizer: either some stage splits at the cut ("isolating": the
//     known hand-scanned patterns, ByteLevel's own regex, a line-break
//     Split, WhitespaceSplit), with only "local" stages before it, whose
//     pieces never span a line break differently (Digits, class-run
//     Splits, literal Splits, Metaspace without "always", ByteLevel without
//     regex or prefix space); or all stages are local and the BPE model
//     never merges a line break with anything.
//
// The tests check the result against Encode on real tokenizers.
func (t *Tokenizer) cutRules() (bool, normalizer) {
	for _, a := range t.added {
		content := a.Content
		if a.Normalized && t.normalizer != nil {
			content = t.normalizer.normalize(content)
		}
		if strings.ContainsRune(a.Content, '\n') || strings.ContainsRune(content, '\n') {
			return false, nil
		}
		if a.LStrip && (isASCIIAlnum(a.Content[0]) || content != "" && isASCIIAlnum(content[0])) {
			return false, nil
		}
	}
	normCont, ok := contNormalizer(t.normalizer)
	if !ok {
		return false, nil
	}
	switch cutClass(t.pre) {
	case cutIsolating:
		return true, normCont
	case cutLocal:
		return t.model.newlineNeverMerges(), normCont
	}
	return false, nil
}

// contNormalizer returns n without Prepend (nil when n has none), or
// ok=false when n may act across a cut.
func contNormalizer(n normalizer) (normalizer, bool) {
	switch x := n.(type) {
	case nil, normNFC, normNFD, normLowercase:
		return nil, true
	case normPrepend:
		return normSequence{}, true
	case normReplace:
		if x.re != nil || x.pattern == "" || strings.ContainsRune(x.pattern, '\n') ||
			strings.IndexFunc(x.pattern, func(r rune) bool { return r < utf8.RuneSelf && isASCIIAlnum(byte(r)) }) >= 0 ||
			strings.IndexFunc(x.content, isSpace) >= 0 {
			return nil, false
		}
		return nil, true
	case normSequence:
		out, changed := normSequence{}, false
		for _, sub := range x {
			c, ok := contNormalizer(sub)
			if !ok {
				return nil, false
			}
			if c != nil {
				changed = true
				if seq, isSeq := c.(normSequence); isSeq {
					out = append(out, seq...)
				}
				continue
			}
			out = append(out, sub)
		}
		if changed {
			return out, true
		}
		return nil, true
	}
	return nil, false
}

type cutKind int

const (
	cutUnknown   cutKind = iota
	cutLocal             // never joins or splits pieces across the cut differently, nor splits there
	cutIsolating         // always splits at the cut
)

// Split patterns known to split before and after a line break that
// follows a non-space character and precedes an ASCII letter or digit.
var isolatingPatterns = map[string]bool{
	deepseekV3Main: true, qwen2Pattern: true, llama3Pattern: true,
	`[\r\n]`: true, `\n`: true, `[\r\n]+`: true, "[\r\n]": true, "\n": true,
}

// Split patterns whose matches never contain a line break, so a piece
// that spans the cut stays one piece: runs of digits or CJK.
var localPatterns = map[string]bool{
	deepseekV3Digits: true, deepseekV3CJK: true, `\p{N}`: true, `\p{N}+`: true,
}

func cutClass(p preTokenizer) cutKind {
	switch x := p.(type) {
	case nil:
		return cutLocal
	case preSequence:
		for _, sub := range x {
			switch cutClass(sub) {
			case cutIsolating:
				// Later stages see the same pieces either way.
				return cutIsolating
			case cutUnknown:
				return cutUnknown
			}
		}
		return cutLocal
	case preSplit:
		switch {
		case x.invert:
			return cutUnknown
		case x.literal && !strings.ContainsRune(x.src, '\n'):
			return cutLocal
		case x.literal:
			return cutUnknown
		case isolatingPatterns[x.src] && (x.behavior == behaviorIsolated || x.behavior == behaviorRemoved):
			return cutIsolating
		case localPatterns[x.src]:
			return cutLocal
		}
	case preByteLevel:
		switch {
		case x.addPrefixSpace:
			return cutUnknown
		case x.useRegex:
			return cutIsolating
		}
		return cutLocal
	case preDigits:
		return cutLocal
	case preWhitespaceSplit:
		return cutIsolating
	case preMetaspace:
		if x.prepend == "always" {
			return cutUnknown
		}
		return cutLocal
	}
	return cutUnknown
}

// newlineNeverMerges reports whether no merge can join a line break with
// anything, so BPE of a word is BPE of its parts on either side of the
// break: no token of two or more characters holds '\n' (or 'Ċ', its
// ByteLevel form), and unknown characters are not fused.
func (b *bpe) newlineNeverMerges() bool {
	if b.fuseUnk && !b.byteFallback || b.contPrefix != "" || b.endSuffix != "" {
		return false
	}
	for _, tok := range b.idToToken {
		if utf8.RuneCountInString(tok) > 1 && strings.ContainsAny(tok, "\nĊ") {
			return false
		}
	}
	return true
}
