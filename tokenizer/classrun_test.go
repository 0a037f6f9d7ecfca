package tokenizer

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// regexpMatcher is the reference: Go's regexp over the whole piece.
type regexpMatcher struct{ g *genericMatcher }

func (m regexpMatcher) next(s string, p int) (int, int, bool) { return m.g.next(s, p) }

// The class-run matcher must split exactly as Go's regexp does.
func TestClassRunMatchesRegexp(t *testing.T) {
	patterns := append([]string{`\s?\p{L}+`, `\s?\p{P}+`, `\p{N}`, `\p{N}{1,3}`, `[\r\n]`, `x?[a-c]+`, `[一-龥ࠀ-一가-퟿]+`, `\s`,
		`[^\s]+`, `.`, `\p{N}{2,4}`}, deepseekLLMSplits...)
	alphabet := []string{" ", "\t", "\n", "\r", "\u3000", "a", "b", "c", "x", "Z", "é", "Ω", "1", "٣", "½", "中", "가", "!", ",", "。", "！",
		"$", "🦙", "𐐀", "\u0301", "ſ"}
	rng := rand.New(rand.NewPCG(3, 4))
	var texts []string
	for i := 0; i < 1500; i++ {
		var b strings.Builder
		for k := rng.IntN(14); k >= 0; k-- {
			b.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		texts = append(texts, b.String())
	}
	for _, pat := range patterns {
		goPat, err := translateOniguruma(pat)
		require.NoError(t, err)
		cr, ok := newClassRunMatcher(goPat)
		if pat == `\s+$` {
			require.False(t, ok, "anchored patterns need the regexp")
			continue
		}
		require.True(t, ok, pat)
		re, err := compileOniguruma(pat)
		require.NoError(t, err)
		ref := preSplit{m: regexpMatcher{&genericMatcher{re: re}}, behavior: behaviorIsolated}
		fast := preSplit{m: cr, behavior: behaviorIsolated}
		bad := 0
		for _, s := range texts {
			if !assert.Equal(t, collect(ref, s), collect(fast, s), "%q on %q", pat, s) {
				if bad++; bad > 3 {
					break
				}
			}
		}
	}
	for _, pat := range []string{`ab`, `a*`, `a+b+`, `\s+(?!\S)`} {
		goPat, err := translateOniguruma(pat)
		if err != nil {
			continue
		}
		_, ok := newClassRunMatcher(goPat)
		assert.False(t, ok, "%q is not a class run", pat)
	}
}
