package engine

import (
	"context"
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// shardRun is what the sharded and unsharded runs are compared on: the
// prefill logits of every prompt position, then greedy decoding's tokens
// and the logits of each step.
type shardRun struct {
	prefill [][]float32
	ids     []int
	steps   [][]float32
}

func runForShards(t *testing.T, m *Model, prompt []int, gen int) shardRun {
	t.Helper()
	ctx := context.Background()
	s, err := m.NewSession(len(prompt) + gen)
	require.NoError(t, err)
	var r shardRun
	r.prefill, err = s.Prefill(ctx, prompt)
	require.NoError(t, err)
	logits := r.prefill[len(r.prefill)-1]
	for range gen {
		id := argmax(logits)
		r.ids = append(r.ids, id)
		r.steps = append(r.steps, slices.Clone(logits))
		if len(r.ids) == gen {
			break
		}
		logits, err = s.Step(ctx, id)
		require.NoError(t, err)
	}
	return r
}

// maxRelDiff is the largest |got−want| over the row, relative to the
// row's largest |want| (logits near zero have no meaningful relative
// error of their own).
func maxRelDiff(got, want []float32) float64 {
	var d, scale float64
	for i := range want {
		d = max(d, math.Abs(float64(got[i])-float64(want[i])))
		scale = max(scale, math.Abs(float64(want[i])))
	}
	return d / scale
}

// TestShardsMatchOne is issue 17's done-when on the CPU fake: every
// fixture family gives the same greedy tokens, and logits within 1e-5
// relative, on 2 and 4 shards as on one.
func TestShardsMatchOne(t *testing.T) {
	const tol = 1e-5
	prompt := []int{1, 17, 200, 45, 300, 12, 99, 7, 411, 3, 256, 88}
	for _, tc := range []struct {
		fixture string
		opts    []Option
	}{
		{"llama-mha", nil},
		{"llama-gqa-llama3rope", nil}, // 2 KV heads: on 4 shards each keeps one, replicated
		{"llama-linear-rope", nil},
		{"qwen2", nil}, // q/k/v biases split with their heads
		{"qwen2-tied", nil},
		{"deepseek-v2-lite", []Option{WithMLA(MLAAbsorbed)}},
		{"deepseek-v2-lite", []Option{WithMLA(MLANaive)}},
		{"deepseek-v3", []Option{WithMLA(MLAAbsorbed)}},
		{"deepseek-v3", []Option{WithMLA(MLANaive)}},
	} {
		base := append([]Option{WithDevice("cpu"), WithThreads(1)}, tc.opts...)
		one, err := Load(fixtureDir(tc.fixture), base...)
		require.NoError(t, err, tc.fixture)
		gen := 12
		if testing.Short() {
			gen = 4
		}
		want := runForShards(t, one, prompt, gen)
		require.NoError(t, one.Close())
		for _, n := range []int{2, 4} {
			name := fmt.Sprintf("%s/%s/%d", tc.fixture, one.MLAPath(), n)
			t.Run(name, func(t *testing.T) {
				m, err := Load(fixtureDir(tc.fixture), append(base, WithShards(n))...)
				require.NoError(t, err)
				defer m.Close()
				require.Equal(t, n, m.Shards())
				assert.Contains(t, m.Info().Backend, fmt.Sprintf("×%d shards", n))
				got := runForShards(t, m, prompt, gen)
				require.Equal(t, want.ids, got.ids, "greedy tokens")
				t.Logf("worst prefill %.3g step %.3g", func() (w float64) {
					for i := range want.prefill {
						w = max(w, maxRelDiff(got.prefill[i], want.prefill[i]))
					}
					return
				}(), func() (w float64) {
					for i := range want.steps {
						w = max(w, maxRelDiff(got.steps[i], want.steps[i]))
					}
					return
				}())
				for i := range want.prefill {
					assert.LessOrEqual(t, maxRelDiff(got.prefill[i], want.prefill[i]), tol, "prefill position %d", i)
				}
				for i := range want.steps {
					assert.LessOrEqual(t, maxRelDiff(got.steps[i], want.steps[i]), tol, "step %d", i)
				}
			})
		}
	}
}
