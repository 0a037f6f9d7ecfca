package tokenizer

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func collect(p preTokenizer, s string) []string {
	out := []string{}
	p.split(s, func(piece string) { out = append(out, piece) })
	return out
}

// Expected pieces are HF tokenizers' documented Split examples.
func TestSplitBehaviors(t *testing.T) {
	tests := []struct {
		behavior splitBehavior
		invert   bool
		want     []string
	}{
		{behaviorRemoved, false, []string{"the", "final", "countdown"}},
		{behaviorIsolated, false, []string{"the", "-", "final", "-", "-", "countdown"}},
		{behaviorMergedWithPrevious, false, []string{"the-", "final-", "-", "countdown"}},
		{behaviorMergedWithNext, false, []string{"the", "-final", "-", "-countdown"}},
		{behaviorContiguous, false, []string{"the", "-", "final", "--", "countdown"}},
		{behaviorRemoved, true, []string{"-", "-", "-"}},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%d/%v", tc.behavior, tc.invert), func(t *testing.T) {
			p := preSplit{m: stringMatcher("-"), behavior: tc.behavior, invert: tc.invert}
			assert.Equal(t, tc.want, collect(p, "the-final--countdown"))
		})
	}
}

func TestOtherPreTokenizers(t *testing.T) {
	tests := []struct {
		name string
		p    preTokenizer
		in   string
		want []string
	}{
		{"digits", preDigits{}, "ab123cd4", []string{"ab", "123", "cd", "4"}},
		{"digits individual", preDigits{individual: true}, "a12", []string{"a", "1", "2"}},
		{"metaspace", preMetaspace{replacement: "▁", prepend: "always", splitOn: true}, "hi there", []string{"▁hi", "▁there"}},
		{"metaspace no split", preMetaspace{replacement: "▁", prepend: "never"}, "hi there", []string{"hi▁there"}},
		{"whitespace split", preWhitespaceSplit{}, " a  b\tc ", []string{"a", "b", "c"}},
		{"bytelevel mapped", preByteLevel{mapBytes: true}, "a é", []string{"aĠÃ©"}},
		{"sequence", preSequence{preDigits{}, preWhitespaceSplit{}}, "ab12 cd", []string{"ab", "12", "cd"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, collect(tc.p, tc.in))
		})
	}
}

// The hand-written scanners must agree with the generic matcher (Go
// regexp with Oniguruma classes plus the hand-handled `\s+(?!\S)|\s+`
// tail) on every vector text and on random strings of tricky characters.
func TestScannersMatchGenericRegex(t *testing.T) {
	var texts []string
	for _, set := range vectorSets(t) {
		for _, v := range set.vs {
			texts = append(texts, v.Text)
		}
	}
	alphabet := []string{" ", "  ", "\t", "\r", "\n", "\u00a0", "\u3000", "\u2028", "\u0085", "\v", "a", "Z", "é",
		"\u0301", "\u0903", "1", "٣", "Ⅻ", "½", "中", "ぁ", "カ", "ー", "한", "!", "'", "'s", "'T", "'re", "'LL", "'ſ",
		"\"", "-", "_", "$", "+", "€", "©", "🦙", "😀", "\u200d", "\ufe0f", ".", "。", "?", "x", "Qu", "ab"}
	rng := rand.New(rand.NewPCG(1, 2))
	n := 3000
	if testing.Short() {
		n = 500
	}
	for i := 0; i < n; i++ {
		var b strings.Builder
		for k := rng.IntN(16); k >= 0; k-- {
			b.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		texts = append(texts, b.String())
	}
	for _, pat := range []string{deepseekV3Digits, deepseekV3CJK, deepseekV3Main, qwen2Pattern, llama3Pattern} {
		hand, err := newRegexMatcher(pat)
		require.NoError(t, err)
		generic, err := newGenericMatcher(pat)
		require.NoError(t, err)
		_, isScan := hand.(scanMatcher)
		require.True(t, isScan, "known pattern %q must use a scanner", pat)
		hp := preSplit{m: hand, behavior: behaviorIsolated}
		gp := preSplit{m: generic, behavior: behaviorIsolated}
		bad := 0
		for _, s := range texts {
			h, g := collect(hp, s), collect(gp, s)
			if !assert.Equal(t, g, h, "pattern %q on %q", pat, s) {
				if bad++; bad > 3 {
					break
				}
			}
		}
	}
}

func TestGPT2PatternGeneric(t *testing.T) {
	m, err := newRegexMatcher(gpt2Pattern)
	require.NoError(t, err)
	p := preSplit{m: m, behavior: behaviorIsolated}
	assert.Equal(t, []string{"Hello", " world", "'s", "  ", " 12", "!!", " \n"}, collect(p, "Hello world's   12!! \n"))
}

// Patterns without the look-ahead tail are searched over the whole piece,
// with Ruby's line-anchor meaning of ^ and $ (deepseek-llm uses \s+$).
func TestGenericMatcherAnchors(t *testing.T) {
	tests := []struct {
		pat, in string
		want    []string
	}{
		{`\s+$`, "a  \nb  ", []string{"a", "  ", "\nb", "  "}},
		{`^\p{L}`, "ab\ncd", []string{"a", "b\n", "c", "d"}},
		{`\p{N}+`, "x12y3", []string{"x", "12", "y", "3"}},
		{`[一-龥]+|\s?[A-Za-z]+`, "中文 ab", []string{"中文", " ab"}},
	}
	for _, tc := range tests {
		m, err := newRegexMatcher(tc.pat)
		require.NoError(t, err, tc.pat)
		assert.Equal(t, tc.want, collect(preSplit{m: m, behavior: behaviorIsolated}, tc.in), tc.pat)
	}
	_, err := newRegexMatcher(`^a|\s+(?!\S)|\s+`)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "look-ahead")
}

func TestCompileOnigurumaRejectsLookaround(t *testing.T) {
	_, err := newRegexMatcher(`a(?=b)`)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "look-around")
}

func TestNFCGolden(t *testing.T) {
	data, err := os.ReadFile("testdata/nfc-golden.json")
	require.NoError(t, err)
	var cases []struct{ In, NFC, NFD string }
	require.NoError(t, json.Unmarshal(data, &cases))
	require.Len(t, cases, 400)
	for _, c := range cases {
		assert.Equal(t, c.NFC, nfc(c.In), "NFC(%+q)", c.In)
		assert.Equal(t, c.NFD, normNFD{}.normalize(c.In), "NFD(%+q)", c.In)
	}
	assert.Equal(t, "plain ascii", nfc("plain ascii"))
}

func TestLossyUTF8MatchesRust(t *testing.T) {
	tests := []struct{ in, want string }{
		{"abc", "abc"},
		{"\xe4\xb8", "\uFFFD"},                 // truncated 3-byte sequence: one replacement
		{"\xe4\xb8a", "\uFFFDa"},               // ... followed by ASCII
		{"\xff\xfe", "\uFFFD\uFFFD"},           // two invalid bytes
		{"\xf0\x9f\xa6", "\uFFFD"},             // truncated 4-byte
		{"\xed\xa0\x80", "\uFFFD\uFFFD\uFFFD"}, // surrogate: each byte
		{"\xc3\xa9\x80", "é\uFFFD"},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.want, lossyUTF8([]byte(tc.in)), "%+q", tc.in)
	}
}

// miniTokenizer builds a small byte-level tokenizer.json with the given
// added tokens, to exercise added-token flags.
func miniTokenizer(t *testing.T, added string, extra string) *Tokenizer {
	t.Helper()
	vocab := map[string]int{}
	for b := 0; b < 256; b++ {
		vocab[string(byteToRune[b])] = b
	}
	vocab["Ġw"] = 256
	vocab["Ġwo"] = 257
	vj, err := json.Marshal(vocab)
	require.NoError(t, err)
	js := fmt.Sprintf(`{"added_tokens": [%s], "normalizer": null,
		"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
		"decoder": {"type": "ByteLevel"}, %s
		"model": {"type": "BPE", "vocab": %s, "merges": ["Ġ w", "Ġw o"]}}`, added, extra, vj)
	tok, err := FromBytes([]byte(js), nil)
	require.NoError(t, err)
	return tok
}

func TestAddedTokenFlags(t *testing.T) {
	mk := func(id int, content string, flags string) string {
		return fmt.Sprintf(`{"id": %d, "content": %q, "special": true, "normalized": false %s}`, id, content, flags)
	}
	// Check behaviour through the segments rather than hand-computed ids.
	seg := func(tok *Tokenizer, s string) []string {
		var out []string
		tok.rawTrie.split(s, func(seg string, _ int, a *addedToken) {
			if a != nil {
				out = append(out, "["+seg+"]")
			} else {
				out = append(out, seg)
			}
		})
		return out
	}
	cases := []struct {
		name, added, text string
		want              []string
		wantID            int
	}{
		{"plain", mk(300, "<x>", ""), "a <x> b", []string{"a ", "[<x>]", " b"}, 300},
		{"lstrip", mk(300, "<x>", `, "lstrip": true`), "a  <x> b", []string{"a", "[  <x>]", " b"}, 300},
		{"rstrip", mk(300, "<x>", `, "rstrip": true`), "a <x> \n b", []string{"a ", "[<x> \n ]", "b"}, 300},
		{"single_word rejects inside word", mk(300, "ab", `, "single_word": true`), "cabd ab", []string{"cabd ", "[ab]"}, 300},
		{"longest wins", mk(300, "<x>", "") + "," + mk(301, "<x>>", ""), "<x>>", []string{"[<x>>]"}, 301},
		{"adjacent", mk(300, "<x>", ""), "<x><x>", []string{"[<x>]", "[<x>]"}, 300},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok := miniTokenizer(t, tc.added, "")
			assert.Equal(t, tc.want, seg(tok, tc.text))
			ids, err := tok.Encode(tc.text, false)
			require.NoError(t, err)
			assert.Contains(t, ids, tc.wantID)
		})
	}
}

func TestMiniTokenizerEncodeDecode(t *testing.T) {
	tok := miniTokenizer(t, `{"id": 300, "content": "<x>", "special": true, "normalized": false}`,
		`"post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<x>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {"<x>": {"id": "<x>", "ids": [300], "tokens": ["<x>"]}}},`)
	ids, err := tok.Encode("a wo", true)
	require.NoError(t, err)
	assert.Equal(t, []int{300, 'a', 257}, ids)
	assert.Equal(t, "<x>a wo", tok.Decode(ids))
	assert.Equal(t, "a wo", tok.DecodeSkipSpecial(ids))
	bos, ok := tok.BOS()
	assert.True(t, ok)
	assert.Equal(t, 300, bos)
	assert.Equal(t, 301, tok.VocabSize())
	assert.True(t, tok.IsSpecial(300))
	assert.False(t, tok.IsSpecial(257))
	s, ok := tok.TokenString(257)
	assert.True(t, ok)
	assert.Equal(t, "Ġwo", s)
	// Unknown ids are skipped, never a panic.
	assert.Equal(t, "a", tok.Decode([]int{-1, 'a', 1 << 30}))
}

func TestBOSEOSFromConfig(t *testing.T) {
	tests := []struct {
		dir      string
		bos      int
		hasBOS   bool
		eos      []int
		withBOS  bool
		template bool
	}{
		{dirDeepSeekV3, 0, true, []int{1}, true, true},
		{dirQwen2, -1, false, []int{151645}, false, true},
		{dirStories, 1, true, []int{2}, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.dir, func(t *testing.T) {
			tok := loadTok(t, tc.dir)
			bos, ok := tok.BOS()
			assert.Equal(t, tc.hasBOS, ok)
			if ok {
				assert.Equal(t, tc.bos, bos)
			}
			assert.Equal(t, tc.eos, tok.EOS())
			ids, err := tok.Encode("Hi", true)
			require.NoError(t, err)
			assert.Equal(t, tc.withBOS, len(ids) > 0 && ids[0] == tc.bos && tc.hasBOS)
			assert.Equal(t, tc.template, tok.ChatTemplate() != "")
		})
	}
}

func TestEncodeRejectsInvalidUTF8(t *testing.T) {
	tok := loadTok(t, dirStories)
	_, err := tok.Encode("ok\xff", false)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "UTF-8")
}

func TestOpensThinkBlock(t *testing.T) {
	tests := []struct {
		prompt string
		want   bool
	}{
		{"<｜User｜>Hi<｜Assistant｜><think>\n", true},
		{"<｜User｜>Hi<｜Assistant｜><think>\n</think>", false},
		{"<｜User｜>Hi<｜Assistant｜><think></think>", false},
		{"<｜User｜>Hi<｜Assistant｜>", false},
		{"<think>a</think>b<｜Assistant｜><think>", true},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.want, OpensThinkBlock(tc.prompt), tc.prompt)
	}
}

func TestEncodeChat(t *testing.T) {
	tok := loadTok(t, dirDeepSeekV3)
	ids, err := tok.EncodeChat([]Message{{Role: "user", Content: "Hello!"}}, true)
	require.NoError(t, err)
	user, _ := tok.TokenID("<｜User｜>")
	asst, _ := tok.TokenID("<｜Assistant｜>")
	require.GreaterOrEqual(t, len(ids), 4)
	assert.Equal(t, 0, ids[0], "BOS from the template, once")
	assert.NotEqual(t, 0, ids[1])
	assert.Equal(t, user, ids[1])
	assert.Equal(t, asst, ids[len(ids)-1])
	_, err = loadTok(t, dirStories).EncodeChat([]Message{{Role: "user", Content: "x"}}, true)
	assert.ErrorIs(t, err, ErrNoChatTemplate)
}
