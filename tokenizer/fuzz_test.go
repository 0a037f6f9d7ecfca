package tokenizer

import (
	"os"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// FuzzEncodeDecode checks decode(encode(x)) == x, that streaming decode
// concatenates to Decode, and that invalid input errors instead of panicking.
func FuzzEncodeDecode(f *testing.F) {
	for _, s := range []string{"", " ", "Hello world", "\n\n\t  x", "我想在apple工作1314151天～", "🦙🦙 3..3 '''ll",
		"<｜User｜>hi<｜Assistant｜>", "<|im_start|>a", "e\u0301\u0323", "\xff\xfe", "a\u00a0\u3000b\r\n"} {
		f.Add(s)
	}
	dsv3 := loadTok(f, dirDeepSeekV3)
	qwen := loadTok(f, dirQwen2)
	stories := loadTok(f, dirStories)
	f.Fuzz(func(t *testing.T, s string) {
		for _, tc := range []struct {
			name string
			tok  *Tokenizer
			want string // expected decode, or "" to skip the roundtrip
		}{
			{"deepseek-v3", dsv3, s},
			{"qwen2", qwen, nfc(s)},      // NFC normalizer
			{"stories260K", stories, ""}, // set below
		} {
			ids, err := tc.tok.Encode(s, false)
			if !utf8.ValidString(s) {
				if err == nil {
					t.Fatalf("%s: invalid UTF-8 accepted", tc.name)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			dec := tc.tok.Decode(ids)
			// SentencePiece-style decoding maps ▁ back to a space, and (as in
			// HF) the prefix space after an added token is not stripped.
			if tc.tok == stories {
				tc.want = strings.ReplaceAll(s, "▁", " ")
			}
			skip := tc.tok == stories && (strings.Contains(s, "<s>") || strings.Contains(s, "</s>") || strings.Contains(s, "<unk>"))
			if !skip && dec != tc.want {
				t.Fatalf("%s: decode(encode(%q)) = %q", tc.name, s, dec)
			}
			d := tc.tok.NewStreamDecoder()
			var b strings.Builder
			for _, id := range ids {
				b.WriteString(d.Next(id))
			}
			b.WriteString(d.Flush())
			if b.String() != dec {
				t.Fatalf("%s: stream %q != decode %q", tc.name, b.String(), dec)
			}
		}
	})
}

// FuzzLoad feeds malformed tokenizer.json/tokenizer_config.json pairs:
// errors are fine, panics are not; a loaded tokenizer must encode/decode.
func FuzzLoad(f *testing.F) {
	stories, err := os.ReadFile(dirStories + "/tokenizer.json")
	require.NoError(f, err)
	storiesCfg, err := os.ReadFile(dirStories + "/tokenizer_config.json")
	require.NoError(f, err)
	f.Add(stories, storiesCfg)
	f.Add([]byte(`{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}}`), []byte(nil))
	f.Add([]byte(`{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [["a", "a"]]}}`), []byte(`{"chat_template": "{{ x }}"}`))
	f.Add([]byte(`{"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "\\s+(?!\\S)|\\s+"}, "behavior": "Isolated"}, "model": {"type": "BPE", "vocab": {" ": 0}, "merges": []}}`), []byte(nil))
	f.Add([]byte(`{"added_tokens": [{"id": 5, "content": "<s>", "lstrip": true, "rstrip": true, "single_word": true}], "model": {"vocab": {"a": 0}, "merges": []}}`), []byte(`{"add_bos_token": true, "bos_token": "<s>"}`))
	f.Fuzz(func(t *testing.T, tj, cfg []byte) {
		if len(tj) > 1<<20 {
			return
		}
		tok, err := FromBytes(tj, cfg)
		if err != nil {
			assert.NotEmpty(t, err.Error())
			return
		}
		ids, err := tok.Encode("Hello wörld 123 <s>", true)
		if err != nil {
			return
		}
		_ = tok.Decode(append(ids, -1, 1<<30))
		d := tok.NewStreamDecoder()
		for _, id := range ids {
			d.Next(id)
		}
		d.Flush()
		_, _ = tok.ApplyChatTemplate([]Message{{Role: "user", Content: "x"}}, true)
	})
}
