package tokenizer

import (
	"errors"
	"fmt"
	"strings"

	"github.com/deepseek-go/deepseek-go/tokenizer/jinja"
)

// Message is one chat turn. It is an alias so that templates see a message
// as a dict with role then content, as they did when the interpreter lived
// in this package.
type Message = jinja.Message

// ChatOptions controls RenderChat.
type ChatOptions struct {
	// AddGenerationPrompt appends the assistant prefix so the model answers.
	AddGenerationPrompt bool
	// Template overrides tokenizer_config.json's chat_template (Jinja source).
	Template string
	// Vars are extra template variables, e.g. "enable_thinking": false,
	// "thinking": true or "tools": []map[string]any{...}.
	Vars map[string]any
	// ContinueFinalMessage cuts the rendering right after the last message's
	// content so the model continues it (an assistant prefill), as
	// transformers' continue_final_message.
	ContinueFinalMessage bool
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
	tmpl, err := jinja.Parse(src)
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
	if o.ContinueFinalMessage && o.AddGenerationPrompt {
		return "", fmt.Errorf("chat template: ContinueFinalMessage and AddGenerationPrompt are incompatible")
	}
	out, err := tmpl.Render(vars)
	if err != nil {
		return "", fmt.Errorf("chat template: %w", err)
	}
	if o.ContinueFinalMessage {
		return cutAfterFinalMessage(out, msgs)
	}
	return out, nil
}

// cutAfterFinalMessage keeps the rendering up to the end of the last
// message's content (or its trimmed form, for templates that trim).
func cutAfterFinalMessage(out string, msgs []map[string]any) (string, error) {
	if len(msgs) == 0 {
		return "", fmt.Errorf("chat template: ContinueFinalMessage needs a message")
	}
	var final string
	switch c := msgs[len(msgs)-1]["content"].(type) {
	case string:
		final = c
	case []any: // list of parts: the last part's text
		if len(c) > 0 {
			if part, ok := c[len(c)-1].(map[string]any); ok {
				final, _ = part["text"].(string)
			}
		}
	}
	if i := strings.LastIndex(out, final); i >= 0 {
		return out[:i+len(final)], nil
	}
	trimmed := strings.TrimSpace(final)
	if i := strings.LastIndex(out, trimmed); i >= 0 {
		return out[:i+len(trimmed)], nil
	}
	return "", fmt.Errorf("chat template: the final message's content is not in the rendered prompt")
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
