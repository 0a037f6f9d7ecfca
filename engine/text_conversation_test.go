package engine

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/tokenizer"
)

// A Conversation gives the same replies as Model.Chat on the whole history,
// while running only the new tokens through the model.
func TestConversationReusesCache(t *testing.T) {
	r1, err := os.ReadFile("../testdata/chat-templates/llama-cpp-deepseek-r1.jinja")
	require.NoError(t, err)
	plain := "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}" +
		"{% if add_generation_prompt %}assistant:{% endif %}"
	for _, tc := range []struct{ name, template string }{{"plain", plain}, {"R1", string(r1)}} {
		t.Run(tc.name, func(t *testing.T) {
			m := loadWithTemplate(t, tc.template)
			conv, err := m.NewConversation(0)
			require.NoError(t, err)
			msgs := []tokenizer.Message{{Role: "system", Content: "Be kind."}}
			turns := []string{"Tell me about Lily.", "And her mom?", "What did they play?"}
			for i, q := range turns {
				msgs = append(msgs, tokenizer.Message{Role: "user", Content: q})
				o := GenerateOptions{MaxTokens: 10, Sampling: SamplerOptions{Temperature: 0.7, Seed: uint64(i)}}
				wantIDs, want := collectText(t, m.Chat(context.Background(), msgs, o))
				var st Stats
				o.Stats = &st
				gotIDs, got := collectText(t, conv.Chat(context.Background(), msgs, o))
				require.Equal(t, wantIDs, gotIDs, "turn %d", i)
				require.Equal(t, want, got)
				prompt, err := m.Tokenizer().ApplyChatTemplate(msgs, true)
				require.NoError(t, err)
				pids, err := m.Tokenizer().Encode(prompt, false)
				require.NoError(t, err)
				assert.Equal(t, len(pids), st.PromptTokens)
				if i > 0 {
					assert.Greater(t, conv.Reused(), len(pids)/3, "turn %d reuses the earlier conversation", i)
				}
				msgs = append(msgs, tokenizer.Message{Role: "assistant", Content: strings.TrimSpace(got)})
			}
			// Regenerating the same turn reuses all but the last prompt token.
			msgs = msgs[:len(msgs)-1]
			_, _ = collectText(t, conv.Chat(context.Background(), msgs, GenerateOptions{MaxTokens: 3}))
			_, _ = collectText(t, conv.Chat(context.Background(), msgs, GenerateOptions{MaxTokens: 3}))
			prompt, err := m.Tokenizer().ApplyChatTemplate(msgs, true)
			require.NoError(t, err)
			pids, err := m.Tokenizer().Encode(prompt, false)
			require.NoError(t, err)
			assert.Equal(t, len(pids)-1, conv.Reused())
		})
	}
}

func TestConversationErrors(t *testing.T) {
	m := loadWithTemplate(t, "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}")
	conv, err := m.NewConversation(16)
	require.NoError(t, err)
	long := []tokenizer.Message{{Role: "user", Content: strings.Repeat("Lily and Tom play ball. ", 10)}}
	for _, err := range conv.Chat(context.Background(), long, GenerateOptions{}) {
		require.ErrorContains(t, err, "fills the context of 16")
	}
	// The conversation still works after the error.
	ids, _ := collectText(t, conv.Chat(context.Background(), []tokenizer.Message{{Role: "user", Content: "Lily"}}, GenerateOptions{MaxTokens: 4}))
	assert.Len(t, ids, 4)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, err := range conv.Chat(ctx, []tokenizer.Message{{Role: "user", Content: "Tom"}}, GenerateOptions{MaxTokens: 4}) {
		require.ErrorIs(t, err, context.Canceled)
	}

	bare := &Model{cfg: m.cfg}
	_, err = bare.NewConversation(0)
	require.ErrorIs(t, err, ErrNoTokenizer)
}
