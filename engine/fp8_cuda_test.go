//go:build linux && cgo

package engine

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/engine/safetensors"
	"github.com/deepseek-go/deepseek-go/kernels"
)

// TestCUDAFP8Resident: the fp8 fixture on the GPU keeps its fp8 weights as
// fp8 (one byte per value plus the block scales: the CPU's resident bytes,
// dtype by dtype; the routed experts too), matches its transformers
// reference with the fp8 tolerance of
// TestCUDAVerifyDeepseekFixtures, and follows the CPU (fp8 kept there too)
// position by position, over a prefill chunk (bf16 tensor-core GEMMs on
// the GPU) and over decode steps (the fp8 GEMV), on both MLA paths.
// fp8GPUTol bounds the fp8 fixture on the GPU: the 16-bit bound. Its
// prefill runs f16 GEMMs on f16-dequantised weights (4–8e-3 in the CPU
// emulation, engine/fp8_study_test.go; bf16 gave 4.5–5.1e-2 on the H100).
const fp8GPUTol = 3e-2

func TestCUDAFP8Resident(t *testing.T) {
	needCUDA(t)
	const tol = fp8GPUTol
	p := fixtureDir("deepseek-v3-fp8")
	ck, err := safetensors.Open(p)
	require.NoError(t, err)
	fp8Vals, scaleBytes, _ := fp8CheckpointBytes(t, ck)
	require.NoError(t, ck.Close())
	require.Positive(t, fp8Vals)

	ctx := context.Background()
	prompt := []int{1, 17, 200, 45, 300, 12, 99, 7, 411, 3, 256, 88, 5, 77, 130, 64, 2}
	run := func(m *Model) [][]float32 {
		return stepsThenChunk(t, ctx, m, prompt, 4, 6) // a chunk of 13 tokens: the prefill GEMMs
	}
	for _, path := range []string{MLAAbsorbed, MLANaive} {
		t.Run(path, func(t *testing.T) {
			gm, err := Load(p, WithDevice("cuda"), WithMLA(path))
			require.NoError(t, err)
			defer gm.Close()
			require.True(t, strings.HasPrefix(gm.Info().Backend, "cuda"), gm.Info().Backend)
			cm, err := Load(p, WithDevice("cpu"), WithThreads(1), WithMLA(path))
			require.NoError(t, err)
			defer cm.Close()

			gby := gm.Info().BytesByDType
			assert.Equal(t, cm.Info().BytesByDType, gby, "resident bytes by dtype, GPU vs CPU")
			ex := expertsOf(gm)
			require.NotEmpty(t, ex, "the fixture has MoE layers")
			var exBytes int64
			for _, e := range ex {
				assert.Equal(t, kernels.FP8, e.DType(), "routed experts stay fp8")
				exBytes += e.Bytes()
			}
			assert.Less(t, exBytes, gby["fp8"], "the experts' fp8 bytes and scales count as fp8")
			assertFP8Experts(t, gm, cm)
			if path == MLANaive {
				assert.Equal(t, fp8Vals+scaleBytes, gby["fp8"], "every fp8 value and scale, as fp8")
			} else {
				assert.Greater(t, gby["fp8"], fp8Vals/2) // W_UK alone leaves fp8 (transposed)
			}
			assert.Less(t, gby["f32"], 4*fp8Vals, "fp8 weights were widened to f32")
			t.Logf("%s on %s: resident %v (fp8 checkpoint: %d values, %d B of scales)", path, gm.Info().Backend, gby, fp8Vals, scaleBytes)

			r, err := Verify(ctx, gm, filepath.Join(p, "reference.safetensors"))
			require.NoError(t, err)
			t.Logf("%s: worst %.3g at %s, greedy %d/%d", path, r.Worst, r.WorstAt, r.Match, len(r.RefIDs))
			assert.Equal(t, len(r.RefIDs), r.Match, "ours %v ref %v", r.OurIDs, r.RefIDs)
			assert.LessOrEqual(t, r.Worst, tol, "worst at %s", r.WorstAt)

			got, want := run(gm), run(cm)
			for i := range want {
				d := maxRelDiff(got[i], want[i])
				t.Logf("%s logits %d: GPU vs CPU max rel diff %.2e", path, i, d)
				assert.LessOrEqual(t, d, tol, "logits %d", i)
			}
		})
	}
}

// BenchmarkCUDAFP8V3Slice: BenchmarkFP8V3Slice (a two-layer DeepSeek-V3
// slice at the real widths, random weights) on the GPU, fp8 kept as fp8
// next to bf16: decode tok/s and ms per layer (fp8 GEMVs read half the
// bytes), a 64-token prefill (fp8 through bf16 slices and cuBLASLt), and
// resident GB.
func BenchmarkCUDAFP8V3Slice(b *testing.B) {
	needCUDA(b)
	benchFP8V3Slice(b, "cuda")
}
