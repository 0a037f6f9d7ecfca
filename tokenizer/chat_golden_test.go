package tokenizer

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/internal/testutil"
)

// TestChatGolden compares the interpreter with Jinja2 3.1 (configured as
// transformers) on templates × conversations with tools, tool calls,
// reasoning and thinking flags; see testdata/gen_chat_golden.py.
func TestChatGolden(t *testing.T) {
	var g struct {
		Conversations [][]map[string]any `json:"conversations"`
		Cases         []struct {
			Template            string         `json:"template"`
			Conv                int            `json:"conv"`
			AddGenerationPrompt bool           `json:"add_generation_prompt"`
			Vars                map[string]any `json:"vars"`
			Text                *string        `json:"text"`
			Error               *string        `json:"error"`
		} `json:"cases"`
	}
	testutil.DecodeJSONFile(t, "testdata/chat-golden.json", &g)
	templates := map[string]string{}
	for _, name := range []string{"deepseek-ai-DeepSeek-R1-Distill-Llama-8B", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B",
		"deepseek-ai-DeepSeek-V3.1", "deepseek-ai-DeepSeek-V3.2", "llama-cpp-deepseek-r1"} {
		src, err := os.ReadFile(filepath.Join("../testdata/chat-templates", name+".jinja"))
		require.NoError(t, err)
		templates[name] = string(src)
	}
	templates["deepseek-v3-config"] = loadTok(t, dirDeepSeekV3).ChatTemplate()
	templates["qwen2-config"] = loadTok(t, dirQwen2).ChatTemplate()
	tok := loadTok(t, dirDeepSeekV3) // bos/eos = DeepSeek's, as the generator
	checked := 0
	for i, c := range g.Cases {
		if c.Error != nil {
			continue // Jinja2 raised (e.g. tojson of a generator); our interpreter may be laxer
		}
		src, ok := templates[c.Template]
		require.True(t, ok, c.Template)
		name := fmt.Sprintf("#%d %s conv%d agp=%v vars=%v", i, c.Template, c.Conv, c.AddGenerationPrompt, c.Vars)
		got, err := tok.RenderChat(g.Conversations[c.Conv], ChatOptions{AddGenerationPrompt: c.AddGenerationPrompt, Template: src, Vars: c.Vars})
		if !assert.NoError(t, err, name) {
			continue
		}
		assert.Equal(t, *c.Text, got, name)
		checked++
	}
	require.Greater(t, checked, 400)
}
