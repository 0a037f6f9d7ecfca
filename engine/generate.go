package engine

import (
	"context"
	"fmt"
	"iter"
	"slices"
	"time"
)

// Token is one generated token; Text is filled by the text-level API when a
// tokenizer is attached.
type Token struct {
	ID   int
	Text string
	// Logprob and Top are filled by a Scheduler when the request asks for
	// them (Request.Logprobs, Request.TopLogprobs).
	Logprob float32
	Top     []Logprob
}

// GenerateOptions controls a generation.
type GenerateOptions struct {
	// MaxTokens caps generated tokens; 0 means until EOS or the context
	// (max_position_embeddings) is full.
	MaxTokens int
	// Sampling picks tokens; the zero value is greedy.
	Sampling SamplerOptions
	// Stats, when not nil, is filled in when the generation ends.
	Stats *Stats
}

// Stats reports what a generation did and how long it took.
type Stats struct {
	PromptTokens, GeneratedTokens int
	Load, Prefill, Decode         time.Duration
}

// PrefillTokensPerSec is prompt tokens per second of prefill (0 if none).
func (s *Stats) PrefillTokensPerSec() float64 {
	if s.Prefill <= 0 {
		return 0
	}
	return float64(s.PromptTokens) / s.Prefill.Seconds()
}

// DecodeTokensPerSec is generated tokens per second after the first.
func (s *Stats) DecodeTokensPerSec() float64 {
	if s.Decode <= 0 || s.GeneratedTokens < 2 {
		return 0
	}
	return float64(s.GeneratedTokens-1) / s.Decode.Seconds()
}

// initialGenRoom is how many generated tokens a generation's first session
// has room for before it grows.
const initialGenRoom = 512

// checkGenerate is the check of a prompt and options that GenerateIDs and
// Conversation share (each then checks the prompt against its context).
func checkGenerate(ids []int, o GenerateOptions) error {
	switch {
	case len(ids) == 0:
		return fmt.Errorf("generate: empty prompt")
	case o.MaxTokens < 0:
		return fmt.Errorf("generate: MaxTokens must be >= 0, got %d", o.MaxTokens)
	}
	return nil
}

// newHistory returns a copy of the prompt ids with room for gen more, so
// appending generated ids does not reallocate while decoding.
func newHistory(ids []int, gen int) []int {
	return append(make([]int, 0, len(ids)+gen), ids...)
}

// GenerateIDs streams tokens continuing the prompt ids. It stops at an EOS
// id (config and generation_config; the EOS token is not yielded), after
// MaxTokens, when the consumer stops iterating, or when ctx is cancelled
// (checked before every token; the error is yielded). Errors end the
// sequence. Each call uses its own Session, so concurrent calls are safe.
func (m *Model) GenerateIDs(ctx context.Context, ids []int, o GenerateOptions) iter.Seq2[Token, error] {
	return func(yield func(Token, error) bool) {
		st := &Stats{PromptTokens: len(ids), Load: m.info.Load}
		defer func() {
			if o.Stats != nil {
				*o.Stats = *st
			}
		}()
		fail := func(err error) { yield(Token{}, err) }
		if err := checkGenerate(ids, o); err != nil {
			fail(err)
			return
		}
		limit := m.cfg.MaxPositionEmbeddings
		switch {
		case len(ids) >= limit:
			fail(fmt.Errorf("generate: prompt of %d tokens leaves no room in max_position_embeddings %d", len(ids), limit))
			return
		case o.MaxTokens > 0 && len(ids)+o.MaxTokens > limit:
			fail(fmt.Errorf("generate: prompt of %d tokens + MaxTokens %d exceed max_position_embeddings %d", len(ids), o.MaxTokens, limit))
			return
		}
		maxNew := o.MaxTokens
		if maxNew == 0 {
			maxNew = limit - len(ids)
		}
		smp, err := NewSampler(o.Sampling)
		if err != nil {
			fail(fmt.Errorf("generate: %w", err))
			return
		}
		// Start with room for a modest continuation and grow on demand: a
		// session sized for max_position_embeddings (128K for some
		// checkpoints) would reserve gigabytes of KV cache up front.
		s, err := m.NewSession(len(ids) + min(maxNew, m.genRoom))
		if err != nil {
			fail(fmt.Errorf("generate: %w", err))
			return
		}
		history := newHistory(ids, min(maxNew, m.genRoom))
		t0 := time.Now()
		logits, err := s.Last(ctx, ids)
		st.Prefill = time.Since(t0)
		if err != nil {
			fail(fmt.Errorf("generate: prefill: %w", err))
			return
		}
		d := decoder{s: s, smp: smp, stops: m.cfg.StopIDs(), history: history, maxNew: maxNew, st: st,
			grow: func(s *Session, history []int) (*Session, []float32, error) {
				// Full: re-run the history in a session twice as large
				// (amortised: at most doubles the prefill work).
				bigger, err := m.NewSession(min(2*s.MaxTokens(), len(ids)+maxNew))
				if err != nil {
					return nil, nil, fmt.Errorf("growing the session: %w", err)
				}
				logits, err := bigger.Last(ctx, history)
				return bigger, logits, err
			}}
		if err := d.run(ctx, logits, yield); err != nil {
			fail(err)
		}
	}
}

// decoder is the decode loop GenerateIDs and Conversation share: sample
// from the logits, yield, feed the token back, until a stop id, maxNew
// tokens, cancellation or the consumer stops.
type decoder struct {
	s       *Session
	smp     *Sampler
	stops   []int
	history []int // prompt, then generated ids (repetition penalty)
	maxNew  int
	st      *Stats
	// grow replaces a full session (nil: the session never fills first).
	grow func(s *Session, history []int) (*Session, []float32, error)
	// fed is called with each id once it is in the session's cache.
	fed func(id int)
}

// run decodes from logits (the prompt's last); errors are the caller's to
// yield. On a backend that samples on the device only the next id crosses
// per step (Session.advance), not the logits row.
func (d *decoder) run(ctx context.Context, logits []float32, yield func(Token, error) bool) error {
	st := d.st
	t1 := time.Now()
	defer func() {
		if st.GeneratedTokens > 0 {
			st.Decode = time.Since(t1)
		}
	}()
	next := -1
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		id := next
		if id < 0 {
			id = d.smp.Sample(logits, d.history)
		}
		next = -1
		if slices.Contains(d.stops, id) {
			return nil
		}
		st.GeneratedTokens++
		if !yield(Token{ID: id}, nil) || st.GeneratedTokens >= d.maxNew {
			return nil
		}
		d.history = append(d.history, id)
		var err error
		if d.grow != nil && d.s.Pos() == d.s.MaxTokens() {
			if d.s, logits, err = d.grow(d.s, d.history); err != nil {
				return fmt.Errorf("generate: step %d: %w", st.GeneratedTokens, err)
			}
			continue
		}
		if next, logits, err = d.s.advance(ctx, id, d.smp, d.history); err != nil {
			return fmt.Errorf("generate: step %d: %w", st.GeneratedTokens, err)
		}
		if d.fed != nil {
			d.fed(id)
		}
	}
}
