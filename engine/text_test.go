package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/third_party/stories260k"
	"github.com/deepseek-go/deepseek-go/tokenizer"
)

func loadEmbedded(t testing.TB) *Model {
	t.Helper()
	m, err := LoadFS(stories260k.FS(), WithDevice("cpu"))
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	require.NotNil(t, m.Tokenizer())
	return m
}

// storiesGreedy returns greedy_from_bos_256.txt's text and ids.
func storiesGreedy(t testing.TB) (string, []int) {
	t.Helper()
	b, err := os.ReadFile("../testdata/stories260K/greedy_from_bos_256.txt")
	require.NoError(t, err)
	s := strings.TrimRight(string(b), "\n")
	i := strings.LastIndex(s, "\n")
	var ids []int
	for _, f := range strings.Fields(strings.Trim(s[i+1:], "[]")) {
		id, err := strconv.Atoi(f)
		require.NoError(t, err)
		ids = append(ids, id)
	}
	return s[:i], ids
}

// collectText runs a text generation and returns its ids and concatenated text.
func collectText(t testing.TB, seq func(func(Token, error) bool)) ([]int, string) {
	t.Helper()
	var ids []int
	var sb strings.Builder
	for tok, err := range seq {
		require.NoError(t, err)
		if tok.ID >= 0 {
			ids = append(ids, tok.ID)
		}
		require.True(t, utf8.ValidString(tok.Text), "token %d text %q splits a character", tok.ID, tok.Text)
		sb.WriteString(tok.Text)
	}
	return ids, sb.String()
}

func TestGenerateGreedyFromBOS(t *testing.T) {
	m := loadEmbedded(t)
	text, ref := storiesGreedy(t)
	ids, got := collectText(t, m.Generate(context.Background(), "", GenerateOptions{MaxTokens: 100}))
	require.Equal(t, ref[:100], ids)
	assert.True(t, strings.HasPrefix(text, got), "streamed text %q is not a prefix of the reference story", got)
	assert.Equal(t, m.Tokenizer().DecodeSkipSpecial(ids), got)
}

func TestGenerateContinuesPrompt(t *testing.T) {
	m := loadEmbedded(t)
	prompt := "Once upon a time"
	ids, got := collectText(t, m.Generate(context.Background(), prompt, GenerateOptions{MaxTokens: 30}))
	require.Len(t, ids, 30)
	// The reply decodes as it does after the prompt: the first token keeps
	// its leading space ("Once upon a time, there" not "timethere").
	pids, err := m.Tokenizer().Encode(prompt, true)
	require.NoError(t, err)
	full := m.Tokenizer().DecodeSkipSpecial(append(pids, ids...))
	assert.Equal(t, full, m.Tokenizer().DecodeSkipSpecial(pids)+got)
	assert.True(t, strings.HasPrefix(prompt+got, "Once upon a time,"), prompt+got)
}

func TestTextStreamUTF8(t *testing.T) {
	m := loadEmbedded(t)
	tok := m.Tokenizer()
	tests := []string{
		"Lily saw a cat.",
		"日本語のテキスト", // byte-fallback tokens: three per character
		"emoji 🙂 and ünïcödé",
		"  two spaces, then\nnew line",
	}
	for _, text := range tests {
		t.Run(text, func(t *testing.T) {
			prompt, err := tok.Encode("Hello", true)
			require.NoError(t, err)
			gen, err := tok.Encode(text, false)
			require.NoError(t, err)
			s := newTextStream(tok, prompt)
			var sb strings.Builder
			for _, id := range gen {
				piece := s.Next(id)
				require.True(t, utf8.ValidString(piece), "%q", piece)
				sb.WriteString(piece)
			}
			sb.WriteString(s.Flush())
			full := tok.DecodeSkipSpecial(append(prompt, gen...))
			assert.Equal(t, full, tok.DecodeSkipSpecial(prompt)+sb.String())
		})
	}
}

func TestTextStreamFlushesIncompleteCharacter(t *testing.T) {
	m := loadEmbedded(t)
	tok := m.Tokenizer()
	gen, err := tok.Encode("日", false)
	require.NoError(t, err)
	require.Greater(t, len(gen), 1, "expected byte-fallback tokens")
	s := newTextStream(tok, nil)
	for _, id := range gen[:len(gen)-1] {
		assert.Empty(t, s.Next(id), "an incomplete character is held back")
	}
	assert.NotEmpty(t, s.Flush())
}

func TestGenerateNoTokenizer(t *testing.T) {
	m := loadEmbedded(t)
	bare := &Model{cfg: m.cfg}
	for _, err := range bare.Generate(context.Background(), "hi", GenerateOptions{}) {
		require.ErrorIs(t, err, ErrNoTokenizer)
	}
}

func TestGenerateCancelWithinOneToken(t *testing.T) {
	m := loadEmbedded(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := 0
	var gotErr error
	for tok, err := range m.Generate(ctx, "Once upon a time", GenerateOptions{MaxTokens: 200}) {
		if err != nil {
			gotErr = err
			break
		}
		if tok.ID >= 0 {
			n++
		}
		if n == 5 {
			cancel()
		}
	}
	require.ErrorIs(t, gotErr, context.Canceled)
	assert.Equal(t, 5, n, "no token after the cancellation")
}

// Eight goroutines sampling on one Model each get the text they get alone.
func TestGenerateConcurrent(t *testing.T) {
	m := loadEmbedded(t)
	n := 40
	if testing.Short() {
		n = 16
	}
	opts := func(seed uint64) GenerateOptions {
		return GenerateOptions{MaxTokens: n, Sampling: SamplerOptions{Temperature: 0.9, TopP: 0.95, Seed: seed}}
	}
	want := make([]string, 8)
	for i := range want {
		_, want[i] = collectText(t, m.Generate(context.Background(), "Lily", opts(uint64(i))))
	}
	got := make([]string, 8)
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() {
			var sb strings.Builder
			for tok, err := range m.Generate(context.Background(), "Lily", opts(uint64(i))) {
				if err != nil {
					return
				}
				sb.WriteString(tok.Text)
			}
			got[i] = sb.String()
		})
	}
	wg.Wait()
	assert.Equal(t, want, got)
	assert.NotEqual(t, want[0], want[1], "different seeds should give different stories")
}

// loadWithTemplate loads the embedded model with a chat template added to
// its tokenizer_config.json.
func loadWithTemplate(t *testing.T, template string) *Model {
	t.Helper()
	src := stories260k.FS()
	mfs := fstest.MapFS{}
	for _, name := range []string{"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} {
		b, err := fs.ReadFile(src, name)
		require.NoError(t, err)
		mfs[name] = &fstest.MapFile{Data: b}
	}
	cfg, err := json.Marshal(map[string]any{
		"add_bos_token": true, "bos_token": "<s>", "eos_token": "</s>", "chat_template": template,
	})
	require.NoError(t, err)
	mfs["tokenizer_config.json"] = &fstest.MapFile{Data: cfg}
	m, err := LoadFS(mfs, WithDevice("cpu"))
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

func TestChat(t *testing.T) {
	r1, err := os.ReadFile("../testdata/chat-templates/llama-cpp-deepseek-r1.jinja")
	require.NoError(t, err)
	// llama.cpp's copy of the R1-Distill-Qwen template closes the think
	// block unless enable_thinking is set.
	r1closed, err := os.ReadFile("../testdata/chat-templates/deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja")
	require.NoError(t, err)
	plain := "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}" +
		"{% if add_generation_prompt %}assistant:{% endif %}"
	msgs := []tokenizer.Message{{Role: "system", Content: "Be kind."}, {Role: "user", Content: "Tell me about Lily."}}
	tests := []struct {
		name     string
		template string
		prefix   string // expected start of the streamed text
	}{
		{"R1 template opens a think block", string(r1), "<think>\n"},
		{"R1 template with the think block closed", string(r1closed), ""},
		{"plain template", plain, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := loadWithTemplate(t, tc.template)
			o := GenerateOptions{MaxTokens: 12}
			ids, text := collectText(t, m.Chat(context.Background(), msgs, o))
			// The same tokens as generating from the rendered prompt.
			prompt, err := m.Tokenizer().ApplyChatTemplate(msgs, true)
			require.NoError(t, err)
			assert.Equal(t, strings.HasSuffix(prompt, "<think>\n"), tc.prefix != "")
			pids, err := m.Tokenizer().Encode(prompt, false)
			require.NoError(t, err)
			bos, _ := m.Tokenizer().BOS()
			require.Equal(t, bos, pids[0], "BOS comes from the template, once")
			require.NotEqual(t, bos, pids[1])
			var want []int
			for tok, err := range m.GenerateIDs(context.Background(), pids, o) {
				require.NoError(t, err)
				want = append(want, tok.ID)
			}
			assert.Equal(t, want, ids)
			assert.True(t, strings.HasPrefix(text, tc.prefix), "%q", text)
			assert.Equal(t, tc.prefix+m.Tokenizer().DecodeSkipSpecial(append(pids, ids...))[len(m.Tokenizer().DecodeSkipSpecial(pids)):], text)
		})
	}
}

func TestChatWithoutTemplate(t *testing.T) {
	m := loadEmbedded(t)
	for _, err := range m.Chat(context.Background(), []tokenizer.Message{{Role: "user", Content: "hi"}}, GenerateOptions{}) {
		require.ErrorIs(t, err, tokenizer.ErrNoChatTemplate)
	}
}

// With DeepSeek's real tokenizer and template, the chat prompt Chat builds
// holds BOS exactly once (the template writes it; encoding adds none), and
// R1-style templates are recognised from their rendered prompt.
func TestChatPromptWithDeepSeekTokenizer(t *testing.T) {
	tok, err := tokenizer.Load("../testdata/tokenizers/deepseek-v3")
	require.NoError(t, err)
	msgs := []tokenizer.Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi there"}}
	prompt, err := tok.ApplyChatTemplate(msgs, true)
	require.NoError(t, err)
	ids, err := tok.Encode(prompt, false)
	require.NoError(t, err)
	bos, ok := tok.BOS()
	require.True(t, ok)
	assert.Equal(t, bos, ids[0])
	assert.Equal(t, 1, strings.Count(tok.Decode(ids), "<｜begin▁of▁sentence｜>"))
	assert.Empty(t, thinkPrefix(prompt), "V3's template does not open a think block")
	assert.True(t, strings.HasSuffix(prompt, "<｜Assistant｜>"))

	r1, err := os.ReadFile("../testdata/chat-templates/llama-cpp-deepseek-r1.jinja")
	require.NoError(t, err)
	rendered, err := tok.RenderChat([]map[string]any{{"role": "user", "content": "Hi"}},
		tokenizer.ChatOptions{AddGenerationPrompt: true, Template: string(r1)})
	require.NoError(t, err)
	assert.Equal(t, "<think>\n", thinkPrefix(rendered))
}

// Random weights over DeepSeek-V3's byte-level vocabulary emit arbitrary
// byte fragments: the streamed Text must stay valid UTF-8 and add up to the
// decoded reply, through the whole Chat path with the real template.
func TestChatStreamsRandomBytesSafely(t *testing.T) {
	tok, err := tokenizer.Load("../testdata/tokenizers/deepseek-v3")
	require.NoError(t, err)
	cfg, err := ParseConfig("synthetic", []byte(fmt.Sprintf(`{"model_type": "llama", "vocab_size": %d,
		"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
		"num_key_value_heads": 1, "max_position_embeddings": 256, "rms_norm_eps": 1e-6,
		"bos_token_id": 0, "eos_token_id": 1, "tie_word_embeddings": true}`, tok.VocabSize())))
	require.NoError(t, err)
	m, err := New(cfg, RandomSource{Seed: 7}, WithTokenizer(tok), WithDevice("cpu"))
	require.NoError(t, err)
	defer m.Close()
	msgs := []tokenizer.Message{{Role: "user", Content: "Écris un poème 🙂"}}
	o := GenerateOptions{MaxTokens: 80, Sampling: SamplerOptions{Temperature: 1.5, Seed: 3}}
	ids, text := collectText(t, m.Chat(context.Background(), msgs, o))
	require.NotEmpty(t, ids)
	prompt, err := tok.ApplyChatTemplate(msgs, true)
	require.NoError(t, err)
	pids, err := tok.Encode(prompt, false)
	require.NoError(t, err)
	full := tok.DecodeSkipSpecial(append(pids, ids...))
	head := tok.DecodeSkipSpecial(pids)
	require.True(t, strings.HasPrefix(full, head))
	assert.Equal(t, full[len(head):], text)
}
