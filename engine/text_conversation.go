package engine

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"time"

	"github.com/deepseek-go/deepseek-go/tokenizer"
)

// Conversation is a multi-turn chat that keeps its KV cache between turns.
// Each turn the whole conversation is rendered with the chat template, as
// Model.Chat does, but only the tokens after the longest prefix already in
// the cache are run through the model: a follow-up question costs its own
// tokens, not the whole history's. (R1-style templates drop earlier turns'
// reasoning, so a turn re-reads the previous reply, not more.)
//
// A Conversation is not safe for concurrent use; make one per chat. Its
// memory is one Session of maxTokens positions.
type Conversation struct {
	m      *Model
	s      *Session
	cached []int // ids whose keys and values the session holds
	reused int
}

// NewConversation makes a conversation holding up to maxTokens positions
// (prompt and replies of the rendered conversation); maxTokens <= 0 means
// max_position_embeddings.
func (m *Model) NewConversation(maxTokens int) (*Conversation, error) {
	if m.tok == nil {
		return nil, ErrNoTokenizer
	}
	s, err := m.NewSession(maxTokens)
	if err != nil {
		return nil, err
	}
	return &Conversation{m: m, s: s}, nil
}

// MaxTokens is the conversation's capacity in tokens.
func (c *Conversation) MaxTokens() int { return c.s.MaxTokens() }

// Reused is how many prompt tokens of the last turn came from the cache.
func (c *Conversation) Reused() int { return c.reused }

// Reset forgets the cache (the next turn is processed in full).
func (c *Conversation) Reset() {
	c.s.Reset()
	c.cached = c.cached[:0]
}

// Chat streams the assistant's reply to msgs (the whole conversation so
// far, ending with the user's turn) like Model.Chat, with the same tokens
// for the same options. Append the reply to msgs as the assistant's turn
// for the next call. Stats.Prefill covers only the tokens not reused.
func (c *Conversation) Chat(ctx context.Context, msgs []tokenizer.Message, o GenerateOptions) iter.Seq2[Token, error] {
	return func(yield func(Token, error) bool) {
		prompt, err := c.m.tok.ApplyChatTemplate(msgs, true)
		if err != nil {
			yield(Token{ID: -1}, err)
			return
		}
		ids, err := c.m.tok.Encode(prompt, false)
		if err != nil {
			yield(Token{ID: -1}, fmt.Errorf("encoding the chat prompt: %w", err))
			return
		}
		c.m.decodeText(ids, thinkPrefix(prompt), c.generate(ctx, ids, o), yield)
	}
}

// generate is GenerateIDs on the conversation's session, starting after
// the cached prefix of ids.
func (c *Conversation) generate(ctx context.Context, ids []int, o GenerateOptions) iter.Seq2[Token, error] {
	return func(yield func(Token, error) bool) {
		st := &Stats{PromptTokens: len(ids), Load: c.m.info.Load}
		defer func() {
			if o.Stats != nil {
				*o.Stats = *st
			}
		}()
		fail := func(err error) { yield(Token{ID: -1}, err) }
		if err := checkGenerate(ids, o); err != nil {
			fail(err)
			return
		}
		limit := c.s.MaxTokens()
		if len(ids) >= limit {
			fail(fmt.Errorf("the conversation is %d tokens and fills the context of %d", len(ids), limit))
			return
		}
		maxNew := limit - len(ids)
		if o.MaxTokens > 0 {
			maxNew = min(maxNew, o.MaxTokens)
		}
		smp, err := NewSampler(o.Sampling)
		if err != nil {
			fail(fmt.Errorf("generate: %w", err))
			return
		}
		// Keep the cached prefix; at least one token must run to give logits.
		keep := 0
		for keep < len(c.cached) && keep < len(ids)-1 && c.cached[keep] == ids[keep] {
			keep++
		}
		if err := c.s.Truncate(keep); err != nil {
			fail(err)
			return
		}
		c.cached, c.reused = append(c.cached[:keep], ids[keep:]...), keep
		t0 := time.Now()
		logits, err := c.s.Last(ctx, ids[keep:])
		st.Prefill = time.Since(t0)
		if err != nil {
			c.Reset() // the cache holds an unknown part of the prompt
			fail(fmt.Errorf("generate: prefill: %w", err))
			return
		}
		d := decoder{s: c.s, smp: smp, stops: c.m.cfg.StopIDs(), history: newHistory(ids, maxNew), maxNew: maxNew, st: st,
			fed: func(id int) { c.cached = append(c.cached, id) }}
		if err := d.run(ctx, logits, yield); err != nil {
			if ctx.Err() == nil || !errors.Is(err, ctx.Err()) {
				c.Reset()
			}
			fail(err)
		}
	}
}
