package engine

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/engine/safetensors"
)

// Shared pieces of the engine's tests and benchmarks, CPU and CUDA alike.

// benchPrompt is the benchmarks' prompt: n token ids spread over the
// vocabulary.
func benchPrompt(n, vocab int) []int {
	prompt := make([]int, n)
	for i := range prompt {
		prompt[i] = (i * 7919) % vocab
	}
	return prompt
}

// benchPrefills times whole-prompt prefills of s from an empty context.
func benchPrefills(b *testing.B, ctx context.Context, s *Session, prompt []int) {
	for b.Loop() {
		s.Reset()
		_, err := s.Last(ctx, prompt)
		require.NoError(b, err)
	}
	b.ReportMetric(float64(len(prompt)*b.N)/b.Elapsed().Seconds(), "tok/s")
}

// benchSteps times decode steps of s from where it stands, starting over
// when its context is full.
func benchSteps(b *testing.B, ctx context.Context, s *Session, vocab int) {
	i := 0
	for b.Loop() {
		if s.Pos() >= s.MaxTokens() {
			s.Reset()
		}
		_, err := s.Step(ctx, (i*7919)%vocab)
		require.NoError(b, err)
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tok/s")
}

// v2LiteSliceConfig is benchDeepseekConfig with DeepSeek-V2-Lite's 64
// routed experts, the given number of layers and vocabulary size.
func v2LiteSliceConfig(b *testing.B, layers, vocab int) *Config {
	js := strings.NewReplacer(`"vocab_size":8192`, fmt.Sprintf(`"vocab_size":%d`, vocab),
		`"num_hidden_layers":2`, fmt.Sprintf(`"num_hidden_layers":%d`, layers),
		`"n_routed_experts":8`, `"n_routed_experts":64`).Replace(benchDeepseekConfig)
	cfg, err := ParseConfig("bench", []byte(js))
	require.NoError(b, err)
	return cfg
}

// fp8CheckpointBytes counts a checkpoint's fp8 values, the bytes of its
// block scales and the bytes of every other tensor.
func fp8CheckpointBytes(t *testing.T, ck *safetensors.Checkpoint) (fp8Vals, scaleBytes, otherBytes int64) {
	for _, n := range ck.Names() {
		tn, err := ck.Tensor(n)
		require.NoError(t, err)
		switch {
		case tn.DType == safetensors.F8E4M3:
			fp8Vals += int64(tn.NumElements())
		case strings.HasSuffix(n, "_scale_inv"):
			scaleBytes += int64(len(tn.Data))
		default:
			otherBytes += int64(len(tn.Data))
		}
	}
	return fp8Vals, scaleBytes, otherBytes
}

// stepsThenChunk runs prompt through a fresh session of m position by
// position up to split, then the rest as one prefill chunk, then tail
// decode steps, and returns the logits of each call.
func stepsThenChunk(t *testing.T, ctx context.Context, m *Model, prompt []int, split, tail int) [][]float32 {
	s, err := m.NewSession(len(prompt) + 8)
	require.NoError(t, err)
	var out [][]float32
	for _, id := range prompt[:split] {
		l, err := s.Step(ctx, id)
		require.NoError(t, err)
		out = append(out, slices.Clone(l))
	}
	l, err := s.Last(ctx, prompt[split:])
	require.NoError(t, err)
	out = append(out, slices.Clone(l))
	for i := range tail {
		l, err := s.Step(ctx, 10+i*31)
		require.NoError(t, err)
		out = append(out, slices.Clone(l))
	}
	return out
}
