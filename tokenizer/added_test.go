package tokenizer

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type split struct {
	Text string
	ID   int // -1 for plain text
}

// extract mirrors HF's AddedVocabulary::extract_and_normalize: split on
// non-normalized added tokens, normalize the rest, split on normalized ones.
func extract(tok *Tokenizer, text string) []split {
	var out []split
	tok.rawTrie.split(text, func(seg string, _ int, a *addedToken) {
		if a != nil {
			out = append(out, split{seg, a.ID})
			return
		}
		if tok.normalizer != nil {
			seg = tok.normalizer.normalize(seg)
		}
		tok.normTrie.split(seg, func(seg string, _ int, a *addedToken) {
			if a != nil {
				out = append(out, split{seg, a.ID})
			} else if seg != "" {
				out = append(out, split{seg, -1})
			}
		})
	})
	return out
}

type addedSpec struct {
	Content    string `json:"content"`
	ID         int    `json:"id"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	SingleWord bool   `json:"single_word"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

func lowercaseTokenizer(t *testing.T, added []addedSpec) *Tokenizer {
	t.Helper()
	aj, err := json.Marshal(added)
	require.NoError(t, err)
	js := fmt.Sprintf(`{"added_tokens": %s, "normalizer": {"type": "Lowercase"},
		"model": {"type": "BPE", "vocab": {}, "merges": []}}`, aj)
	tok, err := FromBytes([]byte(js), nil)
	require.NoError(t, err)
	return tok
}

// The cases are the behaviours HF tokenizers' added_vocabulary tests
// specify (ids assigned in the same order).
func TestAddedVocabularyHFCases(t *testing.T) {
	t.Run("options", func(t *testing.T) {
		tok := lowercaseTokenizer(t, []addedSpec{
			{Content: "my", ID: 0, LStrip: true, RStrip: true, Normalized: true},
			{Content: "name", ID: 1, Normalized: true},
			{Content: "ony", ID: 2, SingleWord: true, Normalized: true},
			{Content: "[CLS]", ID: 3, Special: true},
			{Content: "[SEP]", ID: 4, Special: true},
		})
		assert.Equal(t, []split{{"[CLS]", 3}, {" my ", 0}, {"name", 1}, {" is anthony ", -1}, {"[SEP]", 4}},
			extract(tok, "[CLS] My name is Anthony [SEP]"))
	})
	t.Run("single_word", func(t *testing.T) {
		tok := lowercaseTokenizer(t, []addedSpec{{Content: "<mask>", SingleWord: true, Normalized: true}})
		assert.Equal(t, []split{{"<mask>", 0}, {" my name ", -1}, {"<mask>", 0}, {" a<mask> <mask>ony ", -1}, {"<mask>", 0}},
			extract(tok, "<mask> My name <mask> A<mask> <mask>ony <mask>"))
	})
	t.Run("single_word unicode", func(t *testing.T) {
		tok := lowercaseTokenizer(t, []addedSpec{{Content: "<mask>", SingleWord: true, Normalized: true}})
		assert.Equal(t, []split{{"<mask>", 0}, {", ", -1}, {"<mask>", 0}, {"- ◌̰<mask>", -1}},
			extract(tok, "<mask>, <mask>- ◌̰<mask>"))
	})
	t.Run("lstrip unicode space", func(t *testing.T) {
		tok := lowercaseTokenizer(t, []addedSpec{{Content: "<mask>", LStrip: true, RStrip: true, SingleWord: true, Normalized: true}})
		assert.Equal(t, []split{{"hi", -1}, {" <mask> ", 0}, {"there", -1}, {"\t<mask>\t", 0}, {"<mask>\u2000", 0}},
			extract(tok, "Hi <mask> there\t<mask>\t<mask>\u2000"))
	})
	t.Run("rejected single_word match is skipped whole", func(t *testing.T) {
		tok := lowercaseTokenizer(t, []addedSpec{{Content: "ab", ID: 0, SingleWord: true}, {Content: "b c", ID: 1}})
		assert.Equal(t, []split{{"xab c", -1}}, extract(tok, "xab c"))
	})
}

// Llama-2/Mistral-style tokenizers (legacy=false) prepend ▁ only at the
// start of the input (Metaspace prepend_scheme "first"), not after an
// added token; the Metaspace decoder drops ▁ from the first token.
func TestMetaspacePrependFirst(t *testing.T) {
	js := `{"added_tokens": [{"id": 0, "content": "<s>", "special": true}],
		"pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false},
		"decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false},
		"model": {"type": "BPE", "vocab": {"<s>": 0, "▁": 1, "H": 2, "i": 3, "▁H": 4, "▁Hi": 5, "Hi": 6},
			"merges": ["▁ H", "▁H i", "H i"]}}`
	tok, err := FromBytes([]byte(js), nil)
	require.NoError(t, err)
	tests := []struct {
		text string
		ids  []int
		dec  string
	}{
		{"Hi", []int{5}, "Hi"},
		{"<s>Hi", []int{0, 6}, "<s>Hi"},
		{"Hi Hi", []int{5, 5}, "Hi Hi"},
		{"Hi<s> Hi", []int{5, 0, 5}, "Hi<s> Hi"},
	}
	for _, tc := range tests {
		ids, err := tok.Encode(tc.text, false)
		require.NoError(t, err)
		assert.Equal(t, tc.ids, ids, tc.text)
		assert.Equal(t, tc.dec, tok.Decode(ids), tc.text)
	}
}
