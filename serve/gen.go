package serve

import (
	"context"
	"errors"
	"iter"

	"github.com/deepseek-go/deepseek-go/engine"
)

// Stream is one submitted generation (*engine.Stream, or a test fake).
type Stream interface {
	// Tokens yields generated tokens; an error ends it and breaking out
	// of the loop cancels the generation.
	Tokens() iter.Seq2[engine.Token, error]
	// Result is valid once Tokens has finished.
	Result() engine.Result
}

// Generator runs generations for one model replica: the engine's batching
// Scheduler in production, a fake in tests. Scheduling policy (batching,
// KV blocks, prefix cache, the engine's own queue) lives behind it; serve
// only submits and reads.
type Generator interface {
	// Submit validates r and queues it; errors wrapping
	// engine.ErrInvalid are the client's fault (HTTP 400). Cancelling ctx
	// cancels the generation and frees its KV blocks.
	Submit(ctx context.Context, r engine.Request) (Stream, error)
	Stats() engine.SchedulerStats
	Close() error
}

func isInvalid(err error) bool { return errors.Is(err, engine.ErrInvalid) }
func isClosed(err error) bool  { return errors.Is(err, engine.ErrClosed) }
