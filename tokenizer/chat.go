package tokenizer

import (
	"errors"
	"fmt"
	"strings"
)

// Message is one chat turn.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// ChatOptions controls RenderChat.
type ChatOptions struct {
	// AddGenerationPrompt appends the assistant prefix so the model answers.
	AddGenerationPrompt bool
	// Template overrides tokenizer_config.json's chat_template (Jinja source).
	Template string
	// Vars are extra template variables, e.g. "enable_thinking": false,
	// "thinking": true or "tools": []map[string]any{...}.
	Vars map[string]any
}

// ErrNoChatTemplate is returned when neither tokenizer_config.json nor
// ChatOptions provides a chat template.
var ErrNoChatTemplate = errors.New("tokenizer: no chat template (tokenizer_config.json has no chat_template)")

// ChatTemplate returns the checkpoint's default chat template source ("" if none).
func (t *Tokenizer) ChatTemplate() string { return t.chatTemplate }

// ApplyChatTemplate renders msgs with the checkpoint's chat template as
// transformers' apply_chat_template(tokenize=False) does.
func (t *Tokenizer) ApplyChatTemplate(msgs []Message, addGenerationPrompt bool) (string, error) {
	m := make([]map[string]any, len(msgs))
	for i, x := range msgs {
		m[i] = map[string]any{"role": x.Role, "content": x.Content}
	}
	return t.RenderChat(m, ChatOptions{AddGenerationPrompt: addGenerationPrompt})
}

// RenderChat renders messages given as generic maps (so tool calls,
// reasoning_content and other fields reach the template).
func (t *Tokenizer) RenderChat(msgs []map[string]any, o ChatOptions) (string, error) {
	src := o.Template
	if src == "" {
		src = t.chatTemplate
	}
	if src == "" {
		return "", ErrNoChatTemplate
	}
	tmpl, err := ParseTemplate(src)
	if err != nil {
		return "", fmt.Errorf("chat template: %w", err)
	}
	vars := map[string]any{
		"messages":              msgs,
		"add_generation_prompt": o.AddGenerationPrompt,
		"bos_token":             t.bosToken,
		"eos_token":             t.eosToken,
		"tools":                 nil,
		"documents":             nil,
	}
	for k, v := range o.Vars {
		vars[k] = v
	}
	out, err := tmpl.Render(vars)
	if err != nil {
		return "", fmt.Errorf("chat template: %w", err)
	}
	return out, nil
}

// EncodeChat renders msgs and encodes the prompt without adding special
// tokens again (the template already writes the BOS), as transformers'
// apply_chat_template(tokenize=True) does.
func (t *Tokenizer) EncodeChat(msgs []Message, addGenerationPrompt bool) ([]int, error) {
	s, err := t.ApplyChatTemplate(msgs, addGenerationPrompt)
	if err != nil {
		return nil, err
	}
	return t.Encode(s, false)
}

// OpensThinkBlock reports whether a rendered prompt ends inside an open
// <think> block, as R1-style templates do ("<｜Assistant｜><think>\n"): the
// model's reply then starts with reasoning and the engine should treat the
// generated text as inside the think block until "</think>".
func OpensThinkBlock(prompt string) bool {
	open := strings.LastIndex(prompt, "<think>")
	return open >= 0 && strings.LastIndex(prompt, "</think>") < open
}
