package engine

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"strings"

	"github.com/deepseek-go/deepseek-go/tokenizer"
)

// ErrNoTokenizer is returned by the text-level calls (Generate, Chat) on a
// model without a tokenizer (no tokenizer.json, no WithTokenizer).
var ErrNoTokenizer = errors.New("engine: the model has no tokenizer (no tokenizer.json); use GenerateIDs with token ids")

// Generate encodes prompt (adding BOS when the tokenizer asks for it, as
// transformers does) and streams the continuation, like GenerateIDs, with
// each Token's Text set to the text it adds. A character whose bytes span
// several tokens appears whole in the Text of the token that completes it
// (the others have empty Text), so Texts can be printed as they arrive and
// concatenate to the decoded reply. When generation stops in the middle of a
// character, a last Token with ID -1 carries the remaining text.
func (m *Model) Generate(ctx context.Context, prompt string, o GenerateOptions) iter.Seq2[Token, error] {
	return func(yield func(Token, error) bool) {
		if m.tok == nil {
			yield(Token{ID: -1}, ErrNoTokenizer)
			return
		}
		ids, err := m.tok.Encode(prompt, true)
		if err != nil {
			yield(Token{ID: -1}, fmt.Errorf("encoding the prompt: %w", err))
			return
		}
		m.streamText(ctx, ids, "", o, yield)
	}
}

// Chat renders msgs with the checkpoint's chat template plus the
// assistant's generation prompt (as transformers' apply_chat_template with
// add_generation_prompt=True) and streams the reply like Generate. When the
// template leaves the reply inside an open reasoning block (DeepSeek-R1 and
// its distills end the prompt with "<think>\n"), the first Token's Text
// starts with that "<think>\n", so the stream holds the whole
// "<think>…</think>" block followed by the answer, and the reply can be
// added to msgs as the assistant's turn unchanged (R1 templates drop the
// reasoning from earlier turns themselves).
func (m *Model) Chat(ctx context.Context, msgs []tokenizer.Message, o GenerateOptions) iter.Seq2[Token, error] {
	return func(yield func(Token, error) bool) {
		if m.tok == nil {
			yield(Token{ID: -1}, ErrNoTokenizer)
			return
		}
		prompt, err := m.tok.ApplyChatTemplate(msgs, true)
		if err != nil {
			yield(Token{ID: -1}, err)
			return
		}
		// The template writes BOS itself; transformers encodes it without
		// adding special tokens again.
		ids, err := m.tok.Encode(prompt, false)
		if err != nil {
			yield(Token{ID: -1}, fmt.Errorf("encoding the chat prompt: %w", err))
			return
		}
		m.streamText(ctx, ids, thinkPrefix(prompt), o, yield)
	}
}

// thinkPrefix returns the part of an open reasoning block at the end of a
// rendered prompt ("<think>\n" for R1 templates), "" when none is open.
func thinkPrefix(prompt string) string {
	if !tokenizer.OpensThinkBlock(prompt) {
		return ""
	}
	return prompt[strings.LastIndex(prompt, "<think>"):]
}

// streamText generates from ids and fills each Token's Text; prefix is
// prepended to the first Token's Text.
func (m *Model) streamText(ctx context.Context, ids []int, prefix string, o GenerateOptions, yield func(Token, error) bool) {
	m.decodeText(ids, prefix, m.GenerateIDs(ctx, ids, o), yield)
}

// decodeText passes seq's tokens (generated after prompt) on to yield
// with their Text filled in.
func (m *Model) decodeText(prompt []int, prefix string, seq iter.Seq2[Token, error], yield func(Token, error) bool) {
	dec := newTextStream(m.tok, prompt)
	for t, err := range seq {
		if err != nil {
			yield(t, err)
			return
		}
		t.Text = prefix + dec.Next(t.ID)
		prefix = ""
		if !yield(t, nil) {
			return
		}
	}
	if rest := prefix + dec.Flush(); rest != "" {
		yield(Token{ID: -1, Text: rest}, nil)
	}
}

// newTextStream returns the streaming decoder for a reply to prompt: it
// decodes each new token in the context of the tokens before it (a
// SentencePiece decoder drops the leading space of a text's first token,
// and the reply is not the start of the text), skips special tokens as
// skip_special_tokens=True does, and holds back text ending in U+FFFD until
// the character is complete.
func newTextStream(tok *tokenizer.Tokenizer, prompt []int) *tokenizer.StreamDecoder {
	return tok.NewStreamDecoderWith(tokenizer.StreamOptions{Context: prompt, SkipSpecial: true})
}
