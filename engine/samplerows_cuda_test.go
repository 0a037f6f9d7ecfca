//go:build linux && cgo

package engine

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/kernels"
	"github.com/deepseek-go/deepseek-go/kernels/cuda"
)

// rowChecker is the CUDA backend whose SampleRows also samples every row
// alone with Sample (the same logits, settings and variate) and counts
// the rows where the two differ.
type rowChecker struct {
	*cuda.Backend
	calls, maxRows, rows, diffs int
}

var _ kernels.RowSampler = (*rowChecker)(nil)

func (c *rowChecker) SampleRows(dst []int32, x kernels.Buffer, off, n int, rows []kernels.SampleRow) error {
	if err := c.Backend.SampleRows(dst, x, off, n, rows); err != nil {
		return err
	}
	c.calls++
	c.maxRows = max(c.maxRows, len(rows))
	for i, r := range rows {
		id, err := c.Sample(x, off+r.Row*n, n, r.History, r.Params, r.U)
		if err != nil {
			return err
		}
		c.rows++
		if id != int(dst[i]) {
			c.diffs++
		}
	}
	return nil
}

// sampledRequests are seeded requests with every filter, greedy rows with
// and without a penalty (they join a step's SampleRows) and one logprob
// row (host), prompts of 3 to 58 tokens.
func sampledRequests(vocab int) []Request {
	rng := rand.New(rand.NewPCG(21, 22))
	opts := []SamplerOptions{
		{Temperature: 1},
		{Temperature: 0.8, TopP: 0.9},
		{Temperature: 0.7, TopK: 20, RepeatPenalty: 1.2},
		{Temperature: 1.1, MinP: 0.05},
		{},
		{RepeatPenalty: 1.3},
		{Temperature: 1, TopK: 50, TopP: 0.95, MinP: 0.02, RepeatPenalty: 1.3},
	}
	var reqs []Request
	for i := range 12 {
		r := Request{Prompt: randPrompt(rng, 3+5*i, vocab), MaxTokens: 20, IgnoreEOS: true, Sampling: opts[i%len(opts)]}
		r.Sampling.Seed = uint64(100 + i)
		if i == 9 {
			r.TopLogprobs = 3
		}
		reqs = append(reqs, r)
	}
	return reqs
}

// TestSchedulerSampleRowsCUDA: a scheduler batch of seeded sampled
// requests gives the same tokens with a step's device rows sampled by one
// SampleRows as row by row with Sample, and every batched pick is the one
// Sample makes for the same row at the same step.
func TestSchedulerSampleRowsCUDA(t *testing.T) {
	needCUDA(t)
	for _, fx := range []string{"llama-gqa-llama3rope", "qwen2"} {
		t.Run(fx, func(t *testing.T) {
			g, err := cuda.New(cuda.Options{})
			require.NoError(t, err)
			defer g.Close()
			be := &rowChecker{Backend: g}
			m, err := Load(fixtureDir(fx), WithBackend(be))
			require.NoError(t, err)
			defer m.Close()
			run := func(perRow bool) []streamed {
				sch, err := m.NewScheduler(SchedulerOptions{MaxSeqs: 16})
				require.NoError(t, err)
				defer sch.Close()
				if perRow {
					sch.sampRows = nil // before the first Submit: the loop reads it after
				}
				reqs := sampledRequests(m.cfg.VocabSize)
				return submitAll(t, sch, reqs, 0)
			}
			want := run(true)
			assert.Zero(t, be.calls, "per-row run")
			got := run(false)
			for i := range want {
				require.NoError(t, want[i].err, "request %d", i)
				require.NoError(t, got[i].err, "request %d", i)
				assert.Equal(t, want[i].ids(), got[i].ids(), "request %d", i)
			}
			t.Logf("%d SampleRows calls, %d rows, at most %d a call", be.calls, be.rows, be.maxRows)
			assert.Positive(t, be.calls)
			assert.Greater(t, be.maxRows, 4, "a step's device rows share a call")
			assert.Zero(t, be.diffs, "rows where SampleRows and Sample differ (of %d)", be.rows)
		})
	}
}
