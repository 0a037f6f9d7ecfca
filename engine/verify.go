package engine

import (
	"context"
	"fmt"
	"github.com/deepseek-go/deepseek-go/engine/sample"
	"math"

	"github.com/deepseek-go/deepseek-go/engine/safetensors"
)

// VerifyReport compares a model with reference logits (the
// reference.safetensors format of testdata/README.md).
type VerifyReport struct {
	InputIDs []int
	// PrefillErr[i] is ‖ours−ref‖/‖ref‖ of the logits at prompt position i.
	PrefillErr []float64
	// StepErr[i] is the same for the logits that chose generated token i
	// (StepErr[0] comes from the prefill's last position).
	StepErr []float64
	// RefIDs are the reference's greedy tokens, OurIDs our argmax at each
	// step. Decoding feeds the reference tokens (teacher forcing) so that one
	// early mismatch does not hide how the later steps compare.
	RefIDs, OurIDs []int
	Match          int // steps where OurIDs[i] == RefIDs[i]
	FirstMismatch  int // index of the first differing step, -1 if none
	Worst          float64
	WorstAt        string // e.g. "prefill 3" or "step 7"
}

// Passed reports whether every relative error is within tol and every
// greedy token matches.
func (r *VerifyReport) Passed(tol float64) bool {
	return r.Worst <= tol && r.Match == len(r.RefIDs)
}

// Verify runs the reference file's input_ids through m (prefill, then
// decode from the cache) and compares logits and greedy tokens.
func Verify(ctx context.Context, m *Model, refFile string) (*VerifyReport, error) {
	ref, err := safetensors.OpenFile(refFile)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	defer ref.Close()
	vocab := m.cfg.VocabSize
	input, err := refInts(ref, "input_ids")
	if err != nil {
		return nil, err
	}
	gen, err := refInts(ref, "generated_ids")
	if err != nil {
		return nil, err
	}
	logits, err := refFloats(ref, "logits", len(input), vocab)
	if err != nil {
		return nil, err
	}
	stepLogits, err := refFloats(ref, "step_logits", len(gen), vocab)
	if err != nil {
		return nil, err
	}
	if len(input) == 0 || len(gen) == 0 {
		return nil, fmt.Errorf("verify: %s: empty input_ids or generated_ids", refFile)
	}
	s, err := m.NewSession(len(input) + len(gen))
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	r := &VerifyReport{InputIDs: input, RefIDs: gen, FirstMismatch: -1, WorstAt: "none"}
	note := func(e float64, where string) {
		if e > r.Worst || math.IsNaN(e) {
			r.Worst, r.WorstAt = e, where
		}
	}
	pre, err := s.Prefill(ctx, input)
	if err != nil {
		return nil, fmt.Errorf("verify: prefill: %w", err)
	}
	for i, row := range pre {
		e := RelErr(row, logits[i*vocab:(i+1)*vocab])
		r.PrefillErr = append(r.PrefillErr, e)
		note(e, fmt.Sprintf("prefill %d", i))
	}
	cur := pre[len(pre)-1]
	for i, want := range gen {
		e := RelErr(cur, stepLogits[i*vocab:(i+1)*vocab])
		r.StepErr = append(r.StepErr, e)
		note(e, fmt.Sprintf("step %d", i))
		got := sample.Argmax(cur)
		r.OurIDs = append(r.OurIDs, got)
		if got == want {
			r.Match++
		} else if r.FirstMismatch < 0 {
			r.FirstMismatch = i
		}
		if i+1 < len(gen) {
			if cur, err = s.Step(ctx, want); err != nil {
				return nil, fmt.Errorf("verify: step %d: %w", i, err)
			}
		}
	}
	return r, nil
}

// RelErr is ‖a−b‖/‖b‖ in float64 (‖a−b‖ when b is zero; +Inf for NaN).
func RelErr(a, b []float32) float64 {
	var d, n float64
	for i := range b {
		x := float64(a[i]) - float64(b[i])
		d += x * x
		n += float64(b[i]) * float64(b[i])
	}
	if math.IsNaN(d) {
		return math.Inf(1)
	}
	if n == 0 {
		return math.Sqrt(d)
	}
	return math.Sqrt(d / n)
}

func refInts(ref *safetensors.Checkpoint, name string) ([]int, error) {
	t, err := ref.Tensor(name)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	if len(t.Shape) != 1 {
		return nil, fmt.Errorf("verify: %s: tensor %q: shape %v, want 1-D", t.File, name, t.Shape)
	}
	v, err := t.Int64s()
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x)
	}
	return out, nil
}

func refFloats(ref *safetensors.Checkpoint, name string, rows, cols int) ([]float32, error) {
	t, err := ref.Tensor(name)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	if err := t.ExpectShape(rows, cols); err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	f, err := t.Float32()
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	return f, nil
}
