package tokenizer

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBPEModelOptions(t *testing.T) {
	tests := []struct {
		name, model string
		pre         string
		text        string
		want        []int
	}{
		{
			// Merges apply lowest rank first: "b c" (rank 0) before "a b".
			name:  "rank order",
			model: `{"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4, "abc": 5}, "merges": ["b c", "a b", "a bc"]}`,
			text:  "abc", want: []int{5},
		},
		{
			name:  "rank order blocks",
			model: `{"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4, "abc": 5}, "merges": ["b c", "a b", "ab c"]}`,
			text:  "abc", want: []int{0, 4},
		},
		{
			// ignore_merges (Llama-3): a word in the vocab is taken whole.
			name:  "ignore_merges",
			model: `{"type": "BPE", "ignore_merges": true, "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4}, "merges": ["a b"]}`,
			text:  "abc", want: []int{4},
		},
		{
			name:  "without ignore_merges",
			model: `{"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4}, "merges": ["a b"]}`,
			text:  "abc", want: []int{3, 2},
		},
		{
			// continuing_subword_prefix: non-initial chars carry "##", and a
			// merge's result drops the prefix of its second part ("a ##b" -> "ab").
			name:  "subword prefix",
			model: `{"type": "BPE", "continuing_subword_prefix": "##", "vocab": {"a": 0, "##b": 1, "##c": 2, "ab": 3, "##bc": 4}, "merges": ["a ##b", "##b ##c"]}`,
			text:  "abc", want: []int{3, 2},
		},
		{
			name:  "subword prefix other order",
			model: `{"type": "BPE", "continuing_subword_prefix": "##", "vocab": {"a": 0, "##b": 1, "##c": 2, "ab": 3, "##bc": 4}, "merges": ["##b ##c", "a ##b"]}`,
			text:  "abc", want: []int{0, 4},
		},
		{
			name:  "end of word suffix",
			model: `{"type": "BPE", "end_of_word_suffix": "</w>", "vocab": {"a": 0, "b": 1, "b</w>": 2, "ab</w>": 3}, "merges": ["a b</w>"]}`,
			text:  "ab", want: []int{3},
		},
		{
			// Unknown chars: fused into one <unk> when fuse_unk.
			name:  "fuse unk",
			model: `{"type": "BPE", "unk_token": "<unk>", "fuse_unk": true, "vocab": {"<unk>": 0, "a": 1}, "merges": []}`,
			text:  "axyza", want: []int{1, 0, 1},
		},
		{
			name:  "unfused unk",
			model: `{"type": "BPE", "unk_token": "<unk>", "vocab": {"<unk>": 0, "a": 1}, "merges": []}`,
			text:  "axya", want: []int{1, 0, 0, 1},
		},
		{
			// byte_fallback: missing chars become <0xXX> tokens.
			name:  "byte fallback",
			model: `{"type": "BPE", "byte_fallback": true, "unk_token": "<unk>", "vocab": {"<unk>": 0, "a": 1, "<0xC3>": 2, "<0xA9>": 3}, "merges": []}`,
			text:  "aé", want: []int{1, 2, 3},
		},
		{
			name:  "merges as pairs",
			model: `{"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]}`,
			text:  "ab", want: []int{2},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := FromBytes([]byte(`{"model": `+tc.model+`}`), nil)
			require.NoError(t, err)
			got, err := tok.Encode(tc.text, false)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

// Long words take the heap path; it must agree with the linear one.
func TestBPEHeapMatchesLinear(t *testing.T) {
	tok := loadTok(t, dirDeepSeekV3)
	m := tok.model
	words := []string{"internationalization", "supercalifragilisticexpialidocious", "我想在苹果公司工作很多年了", "aaaaaaaaaaaaaaaaaaaaaaaa", "ĠĠĠĠĠĠĠĠĠĠĠĠĠĠĠ"}
	for _, w := range words {
		syms := make([]symbol, 0, len(w))
		for i := 0; i < len(w); i++ {
			syms = append(syms, symbol{id: m.byteIDs[w[i]], prev: int32(i) - 1, next: int32(i) + 1, len: 1})
		}
		syms[len(syms)-1].next = -1
		ids := make([]int32, len(syms))
		for i := range syms {
			ids[i] = syms[i].id
		}
		n := m.mergeSmall(ids)
		m.mergeAll(syms)
		var heapIDs []int32
		for i := 0; i != -1; i = int(syms[i].next) {
			heapIDs = append(heapIDs, syms[i].id)
		}
		assert.Equal(t, ids[:n], heapIDs, w)
	}
}

// ignore_merges with byte-level BPE (Llama-3 style) looks whole words up
// by their raw bytes.
func TestByteLevelIgnoreMerges(t *testing.T) {
	vocab := map[string]int{}
	for b := 0; b < 256; b++ {
		vocab[string(byteToRune[b])] = b
	}
	vocab["Ġh"] = 256
	vocab["ĠhÃ©"] = 257 // " hé" in the byte alphabet; no merge builds it
	vj, err := json.Marshal(vocab)
	require.NoError(t, err)
	for _, ignore := range []bool{true, false} {
		js := fmt.Sprintf(`{"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
			"decoder": {"type": "ByteLevel"}, "model": {"type": "BPE", "ignore_merges": %v, "vocab": %s, "merges": ["Ġ h"]}}`, ignore, vj)
		tok, err := FromBytes([]byte(js), nil)
		require.NoError(t, err)
		ids, err := tok.Encode("a hé", false)
		require.NoError(t, err)
		if ignore {
			assert.Equal(t, []int{'a', 257}, ids)
		} else {
			assert.Equal(t, []int{'a', 256, 0xC3, 0xA9}, ids)
		}
		assert.Equal(t, "a hé", tok.Decode(ids))
	}
}
