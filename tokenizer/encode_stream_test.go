package tokenizer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// streamIDs encodes text with encodeReader in chunks of the given size,
// feeding it through a reader that returns at most 3 bytes a call, so that
// cuts land everywhere.
func streamIDs(t *testing.T, tok *Tokenizer, text string, addSpecial bool, chunk int) []int {
	t.Helper()
	var got []int
	err := tok.encodeReader(context.Background(), &smallReader{r: strings.NewReader(text), n: 3}, addSpecial, chunk,
		func(ids []int) error { got = append(got, ids...); return nil })
	require.NoError(t, err)
	if got == nil {
		got = []int{}
	}
	return got
}

type smallReader struct {
	r    io.Reader
	n    int
	read int
}

func (s *smallReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p[:min(len(p), s.n)])
	s.read += n
	return n, err
}

// streamCorpus joins a tokenizer's test vectors with line breaks (and a
// few texts made to sit on the cut rules' edges) into one long text.
func streamCorpus(texts []string) string {
	edges := []string{
		"a\nb", "a \nb", "a\n\nb", "a\r\nb", "1\n2", "x.\n3y", "é\nZ", "\n\nA", " \n9",
		"<｜User｜>\nHi", "Hi\n<｜Assistant｜>", "<s>\nA</s>\nB", "tab\t\nC", "日本\n語a\nb",
		"end with newline\n", "   \n   \nQ", "😀\nA", "12345\n67890",
	}
	return strings.Join(append(append([]string(nil), texts...), edges...), "\n")
}

func TestEncodeReaderMatchesEncode(t *testing.T) {
	type set struct {
		name  string
		tok   *Tokenizer
		texts []string
	}
	var sets []set
	for _, vset := range vectorSets(t) {
		texts := make([]string, 0, len(vset.vs))
		for _, v := range vset.vs {
			texts = append(texts, v.Text)
		}
		sets = append(sets, set{vset.name, loadTok(t, vset.dir), texts})
	}
	for _, name := range []string{"deepseek-llm", "deepseek-coder"} {
		splits := deepseekLLMSplits
		if name == "deepseek-coder" {
			splits = []string{"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[一-龥ࠀ-一가-퟿]+", "\\p{N}"}
		}
		v := readGGUFVocab(t, filepath.Join("testdata/gguf-vocab", "ggml-vocab-"+name+".gguf"))
		tok, err := FromBytes(tokenizerJSONFromGGUF(t, v, splits), nil)
		require.NoError(t, err)
		vs := readGGML(t, filepath.Join(dirVectors, "ggml-vocab-"+name+".gguf.inp"), filepath.Join(dirVectors, "ggml-vocab-"+name+".gguf.out"))
		texts := make([]string, 0, len(vs))
		for _, x := range vs {
			texts = append(texts, x.Text)
		}
		sets = append(sets, set{name, tok, texts})
	}
	for _, s := range sets {
		t.Run(s.name, func(t *testing.T) {
			text := streamCorpus(s.texts)
			cuts := 0
			for i := 2; i < len(text); i++ {
				if isCut([]byte(text), i) {
					cuts++
				}
			}
			require.Greater(t, cuts, 10, "the corpus must exercise cuts")
			for _, addSpecial := range []bool{false, true} {
				want, err := s.tok.Encode(text, addSpecial)
				require.NoError(t, err)
				for _, chunk := range []int{1, 5, 64, 4096, streamChunk} {
					got := streamIDs(t, s.tok, text, addSpecial, chunk)
					require.True(t, equalIDs(want, got), "chunk %d, addSpecial %v: first difference at id %d", chunk, addSpecial, firstDiff(want, got))
				}
			}
		})
	}
}

func firstDiff(a, b []int) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestCuttable(t *testing.T) {
	for _, dir := range []string{dirDeepSeekV3, dirQwen2, dirStories} {
		assert.True(t, loadTok(t, dir).Cuttable(), dir)
	}
	// Components that act across a line break make EncodeReader buffer
	// the whole input, and it still matches Encode.
	tests := []struct {
		name       string
		normalizer string
		pre        string
		cuttable   bool
	}{
		{"byte-level regex", `null`, `{"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}`, true},
		{"prefix space", `null`, `{"type": "ByteLevel", "add_prefix_space": true, "use_regex": true}`, false},
		{"strip", `{"type": "Strip", "left": true, "right": true}`, `{"type": "ByteLevel", "add_prefix_space": false}`, false},
		{"regex replace", `{"type": "Replace", "pattern": {"Regex": "a"}, "content": "b"}`, `{"type": "ByteLevel", "add_prefix_space": false}`, false},
		{"unknown split", `null`, `{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\\w+\\s"}, "behavior": "Isolated"}, {"type": "ByteLevel", "add_prefix_space": false}]}`, false},
		{"line-break split first", `null`, `{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "[\r\n]"}, "behavior": "Isolated"}, {"type": "Split", "pattern": {"Regex": "\\w+\\s"}, "behavior": "Isolated"}, {"type": "ByteLevel", "add_prefix_space": false}]}`, true},
	}
	text := strings.Repeat("ab ab\nab  \nba\n\nx\n", 50)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := FromBytes([]byte(byteLevelJSON(tc.normalizer, tc.pre)), nil)
			require.NoError(t, err)
			assert.Equal(t, tc.cuttable, tok.Cuttable())
			want, err := tok.Encode(text, false)
			require.NoError(t, err)
			assert.Equal(t, want, streamIDs(t, tok, text, false, 7))
		})
	}
}

// byteLevelJSON is a tiny byte-level tokenizer.json: the 256 byte symbols
// and merges building "ab", "ab " (as "abĠ") and "\n\n" (as "ĊĊ").
func byteLevelJSON(normalizer, pre string) string {
	vocab := []string{}
	for i := range 256 {
		vocab = append(vocab, fmt.Sprintf("%q: %d", bytesToUnicode(string([]byte{byte(i)})), i))
	}
	vocab = append(vocab, `"ab": 256`, `"abĠ": 257`, `"ĊĊ": 258`)
	return `{"normalizer": ` + normalizer + `, "pre_tokenizer": ` + pre + `,
		"decoder": {"type": "ByteLevel"}, "added_tokens": [],
		"model": {"type": "BPE", "vocab": {` + strings.Join(vocab, ", ") + `}, "merges": ["a b", "ab Ġ", "Ċ Ċ"]}}`
}

// The input is encoded piece by piece: the first ids arrive long before
// the input ends, and an error from emit stops the reading.
func TestEncodeReaderStreams(t *testing.T) {
	tok := loadTok(t, dirStories)
	line := "Once upon a time there was a little girl named Lily.\n"
	const total = 8 << 20
	r := &smallReader{r: io.LimitReader(repeatReader(line), total), n: 1 << 20}
	errStop := errors.New("enough")
	var firstAt, n int
	err := tok.EncodeReader(context.Background(), r, true, func(ids []int) error {
		if firstAt == 0 {
			firstAt = r.read
		}
		if n += len(ids); n > 1000 {
			return errStop
		}
		return nil
	})
	require.ErrorIs(t, err, errStop)
	assert.LessOrEqual(t, firstAt, 2*streamChunk+(1<<20), "the first ids come after about one chunk")
	assert.Less(t, r.read, 4<<20, "reading stops soon after emit says so")
}

func repeatReader(s string) io.Reader { return &cycle{s: s} }

type cycle struct {
	s   string
	off int
}

func (c *cycle) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k := copy(p[n:], c.s[c.off:])
		n += k
		c.off = (c.off + k) % len(c.s)
	}
	return n, nil
}

func TestEncodeReaderErrors(t *testing.T) {
	tok := loadTok(t, dirStories)
	noop := func([]int) error { return nil }
	err := tok.EncodeReader(context.Background(), strings.NewReader("ok\nA\xff"), false, noop)
	require.ErrorContains(t, err, "not valid UTF-8")

	boom := errors.New("disk on fire")
	err = tok.EncodeReader(context.Background(), io.MultiReader(strings.NewReader("abc"), errReader{boom}), false, noop)
	require.ErrorIs(t, err, boom)
	require.ErrorContains(t, err, "reading the text")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = tok.EncodeReader(ctx, strings.NewReader("abc"), false, noop)
	require.ErrorIs(t, err, context.Canceled)
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
