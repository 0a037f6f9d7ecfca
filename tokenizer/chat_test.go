package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type chatCase struct {
	Messages            []map[string]any `json:"messages"`
	AddGenerationPrompt bool             `json:"add_generation_prompt"`
	Text                string           `json:"text"`
}

// TestChatDeepSeekV3 renders tokenizer_config.json's template exactly as
// transformers' apply_chat_template.
func TestChatDeepSeekV3(t *testing.T) {
	tok := loadTok(t, dirDeepSeekV3)
	data, err := os.ReadFile(filepath.Join(dirVectors, "deepseek-v3.chat.json"))
	require.NoError(t, err)
	var cases []chatCase
	require.NoError(t, json.Unmarshal(data, &cases))
	require.NotEmpty(t, cases)
	for i, c := range cases {
		got, err := tok.RenderChat(c.Messages, ChatOptions{AddGenerationPrompt: c.AddGenerationPrompt})
		require.NoError(t, err, "case %d", i)
		assert.Equal(t, c.Text, got, "case %d", i)
		// The Message-based API must agree.
		var msgs []Message
		for _, m := range c.Messages {
			msgs = append(msgs, Message{Role: m["role"].(string), Content: m["content"].(string)})
		}
		got2, err := tok.ApplyChatTemplate(msgs, c.AddGenerationPrompt)
		require.NoError(t, err)
		assert.Equal(t, c.Text, got2, "case %d", i)
	}
}

// TestChatTemplatesRendered checks the R1-Distill and V3.1 templates against
// Jinja2 renderings (trim_blocks, lstrip_blocks, DeepSeek's bos/eos).
func TestChatTemplatesRendered(t *testing.T) {
	tok := loadTok(t, dirDeepSeekV3)
	data, err := os.ReadFile(filepath.Join(dirVectors, "chat-templates.rendered.json"))
	require.NoError(t, err)
	var all map[string][]chatCase
	require.NoError(t, json.Unmarshal(data, &all))
	require.Len(t, all, 3)
	for name, cases := range all {
		t.Run(name, func(t *testing.T) {
			src, err := os.ReadFile(filepath.Join("../testdata/chat-templates", name+".jinja"))
			require.NoError(t, err)
			require.NotEmpty(t, cases)
			for i, c := range cases {
				got, err := tok.RenderChat(c.Messages, ChatOptions{AddGenerationPrompt: c.AddGenerationPrompt, Template: string(src)})
				require.NoError(t, err, "case %d", i)
				assert.Equal(t, c.Text, got, "case %d", i)
			}
		})
	}
}

func TestContinueFinalMessage(t *testing.T) {
	tok := loadTok(t, dirDeepSeekV3)
	msgs := []map[string]any{
		{"role": "user", "content": "Name a color."},
		{"role": "assistant", "content": "The color is"},
	}
	got, err := tok.RenderChat(msgs, ChatOptions{ContinueFinalMessage: true})
	require.NoError(t, err)
	assert.Equal(t, "<｜begin▁of▁sentence｜><｜User｜>Name a color.<｜Assistant｜>The color is", got)
	_, err = tok.RenderChat(msgs, ChatOptions{ContinueFinalMessage: true, AddGenerationPrompt: true})
	assert.Error(t, err)
}
