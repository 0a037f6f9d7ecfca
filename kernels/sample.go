package kernels

import (
	"fmt"
	"math"
)

// SampleParams are the token-sampling settings (engine.SamplerOptions
// without the seed) for backends that sample on the device, so that only the
// chosen id leaves it. Filters apply in transformers' order: repetition
// penalty on the raw logits, then temperature, top-k, top-p and min-p.
type SampleParams struct {
	Temperature   float32 // 0: greedy (argmax)
	TopK          int     // 0: off
	TopP          float32 // 0 or 1: off
	MinP          float32 // 0: off
	RepeatPenalty float32 // 0 or 1: off
}

// Validate reports the first setting that is out of range.
func (p SampleParams) Validate() error {
	bad := func(f float32) bool { return math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) }
	switch {
	case bad(p.Temperature) || p.Temperature < 0:
		return fmt.Errorf("temperature must be >= 0 (0 = greedy), got %g", p.Temperature)
	case p.TopK < 0:
		return fmt.Errorf("top-k must be >= 0 (0 = off), got %d", p.TopK)
	case bad(p.TopP) || p.TopP < 0 || p.TopP > 1:
		return fmt.Errorf("top-p must be in (0, 1] (0 = off), got %g", p.TopP)
	case bad(p.MinP) || p.MinP < 0 || p.MinP > 1:
		return fmt.Errorf("min-p must be in [0, 1], got %g", p.MinP)
	case bad(p.RepeatPenalty) || p.RepeatPenalty < 0:
		return fmt.Errorf("repeat penalty must be > 0 (1 = off), got %g", p.RepeatPenalty)
	}
	return nil
}
