package tokenizer

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLoadErrors(t *testing.T) {
	model := `"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}`
	tests := []struct {
		name, tj, cfg, want string
	}{
		{"not json", `{`, "", "tokenizer.json"},
		{"no model", `{}`, "", "missing model"},
		{"wordpiece", `{"model": {"type": "WordPiece", "vocab": {}}}`, "", `model "WordPiece": unsupported`},
		{"dropout", `{"model": {"type": "BPE", "dropout": 0.1, "vocab": {}, "merges": []}}`, "", "dropout"},
		{"merge not in vocab", `{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a c"]}}`, "", `merges[0] "a c"`},
		{"merge without space", `{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["ac"]}}`, "", "two space-separated"},
		{"negative id", `{"model": {"type": "BPE", "vocab": {"a": -1}, "merges": []}}`, "", "negative id"},
		{"unk missing", `{"model": {"type": "BPE", "unk_token": "<unk>", "vocab": {"a": 0}, "merges": []}}`, "", "unk_token"},
		{"normalizer", `{"normalizer": {"type": "BertNormalizer"}, ` + model + `}`, "", `normalizer "BertNormalizer": unsupported`},
		{"pre_tokenizer", `{"pre_tokenizer": {"type": "BertPreTokenizer"}, ` + model + `}`, "", `pre_tokenizer "BertPreTokenizer": unsupported`},
		{"nested", `{"pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Punctuation"}]}, ` + model + `}`, "", "Sequence[0]"},
		{"lookahead", `{"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "a(?=b)"}, "behavior": "Isolated"}, ` + model + `}`, "", "look-around"},
		{"bad regex", `{"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "a("}, "behavior": "Isolated"}, ` + model + `}`, "", "regex"},
		{"behavior", `{"pre_tokenizer": {"type": "Split", "pattern": {"String": "a"}, "behavior": "Weird"}, ` + model + `}`, "", `behavior "Weird"`},
		{"decoder", `{"decoder": {"type": "WordPiece"}, ` + model + `}`, "", `decoder "WordPiece": unsupported`},
		{"post_processor", `{"post_processor": {"type": "Weird"}, ` + model + `}`, "", `post_processor "Weird"`},
		{"template special missing", `{"post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}], "special_tokens": {}}, ` + model + `}`, "", `special token "<s>"`},
		{"added empty", `{"added_tokens": [{"id": 3, "content": ""}], ` + model + `}`, "", "empty content"},
		{"config not json", `{` + model + `}`, `[`, "tokenizer_config.json"},
		{"config bos unknown", `{` + model + `}`, `{"bos_token": "<nope>"}`, `bos_token "<nope>"`},
		{"config template type", `{` + model + `}`, `{"chat_template": 5}`, "chat_template"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var cfg []byte
			if tc.cfg != "" {
				cfg = []byte(tc.cfg)
			}
			_, err := FromBytes([]byte(tc.tj), cfg)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestLoadMissingDir(t *testing.T) {
	_, err := Load("testdata/does-not-exist")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "tokenizer.json")
}

// Named chat templates (a list of {name, template}) pick "default".
func TestNamedChatTemplates(t *testing.T) {
	tok, err := FromBytes([]byte(`{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}`),
		[]byte(`{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D{{ messages|length }}"}]}`))
	require.NoError(t, err)
	out, err := tok.ApplyChatTemplate([]Message{{Role: "user", Content: "x"}}, false)
	require.NoError(t, err)
	assert.Equal(t, "D1", out)
}
