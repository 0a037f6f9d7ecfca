package tokenizer

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// streamAll feeds ids one by one and checks that no chunk splits a UTF-8
// character; it returns the concatenation.
func streamAll(t *testing.T, tok *Tokenizer, ids []int) string {
	t.Helper()
	d := tok.NewStreamDecoder()
	var b strings.Builder
	for _, id := range ids {
		chunk := d.Next(id)
		require.True(t, utf8.ValidString(chunk))
		b.WriteString(chunk)
	}
	b.WriteString(d.Flush())
	return b.String()
}

func TestStreamDecodeVectors(t *testing.T) {
	for _, set := range vectorSets(t) {
		t.Run(set.name, func(t *testing.T) {
			tok := loadTok(t, set.dir)
			vs := set.vs
			if testing.Short() && len(vs) > 300 {
				vs = vs[:300]
			}
			for _, v := range vs {
				require.Equal(t, tok.Decode(v.IDs), streamAll(t, tok, v.IDs), v.Name)
			}
		})
	}
}

func TestStreamDecodeHoldsPartialChars(t *testing.T) {
	tests := []struct {
		name, dir, text string
	}{
		{"byte-level emoji split over tokens", dirDeepSeekV3, " this is 🦙.cpp"},
		{"byte fallback emoji", dirStories, "I saw a 🦙 and 你好"},
		{"qwen CJK", dirQwen2, "我想在apple工作1314151天～"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok := loadTok(t, tc.dir)
			ids, err := tok.Encode(tc.text, false)
			require.NoError(t, err)
			d := tok.NewStreamDecoder()
			var chunks []string
			for _, id := range ids {
				c := d.Next(id)
				assert.NotContains(t, c, "\uFFFD", "a partial character leaked")
				chunks = append(chunks, c)
			}
			chunks = append(chunks, d.Flush())
			assert.Equal(t, tc.text, strings.Join(chunks, ""))
		})
	}
}

// An invalid trailing byte is held until Flush, which emits U+FFFD as the
// full decode does.
func TestStreamDecodeFlushInvalid(t *testing.T) {
	tok := loadTok(t, dirStories)
	first, ok := tok.TokenID("<0xF0>")
	require.True(t, ok)
	hello, err := tok.Encode("Hi", false)
	require.NoError(t, err)
	ids := append(append([]int{}, hello...), first)
	d := tok.NewStreamDecoder()
	var b strings.Builder
	for _, id := range ids {
		b.WriteString(d.Next(id))
	}
	assert.Equal(t, "Hi", b.String())
	b.WriteString(d.Flush())
	assert.Equal(t, tok.Decode(ids), b.String())
	assert.True(t, strings.HasSuffix(b.String(), "\uFFFD"))
}

// With the prompt as context, a SentencePiece reply keeps its leading
// space and special tokens can be skipped.
func TestStreamDecoderWithContext(t *testing.T) {
	tests := []struct {
		name, dir, prompt, reply string
	}{
		{"sentencepiece", dirStories, "Once upon a time", " there was a dog."},
		{"byte-level", dirDeepSeekV3, "<｜User｜>Hi<｜Assistant｜>", " 你好🦙!"},
		{"qwen", dirQwen2, "<|im_start|>assistant\n", "Sure: 1+1=2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok := loadTok(t, tc.dir)
			prompt, err := tok.Encode(tc.prompt, true)
			require.NoError(t, err)
			full, err := tok.Encode(tc.prompt+tc.reply, true)
			require.NoError(t, err)
			require.Equal(t, prompt, full[:len(prompt)], "prompt ids must be a prefix")
			reply := full[len(prompt):]
			eos := tok.EOS()
			reply = append(reply, eos...)
			d := tok.NewStreamDecoderWith(StreamOptions{Context: prompt, SkipSpecial: true})
			var b strings.Builder
			for _, id := range reply {
				c := d.Next(id)
				assert.NotContains(t, c, "\uFFFD")
				b.WriteString(c)
			}
			b.WriteString(d.Flush())
			want := tok.DecodeSkipSpecial(append(append([]int{}, prompt...), reply...))[len(tok.DecodeSkipSpecial(prompt)):]
			assert.Equal(t, want, b.String())
			assert.Equal(t, tc.reply, b.String())
		})
	}
}
