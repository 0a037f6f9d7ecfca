//go:build linux && cgo

package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/engine/safetensors"
	"github.com/deepseek-go/deepseek-go/kernels"
)

// TestCUDADeepseekMoEGraph: every DeepSeek fixture, on both MLA paths,
// decodes greedily on the GPU with its decode step captured as one graph
// (routing and experts on the device: no read-back inside a step) and
// makes the CPU's tokens; the expert counters, kept on the device, count
// every routed row. fp8 experts stay fp8 on the GPU (assertFP8Experts).
func TestCUDADeepseekMoEGraph(t *testing.T) {
	needCUDA(t)
	if os.Getenv("DSGO_NO_GRAPH") != "" {
		t.Skip("DSGO_NO_GRAPH is set")
	}
	ctx := context.Background()
	const gen = 16
	for _, dir := range deepseekFixtures {
		for _, path := range []string{MLAAbsorbed, MLANaive} {
			t.Run(dir+"/"+path, func(t *testing.T) {
				ref, err := safetensors.OpenFile(filepath.Join(fixtureDir(dir), "reference.safetensors"))
				require.NoError(t, err)
				defer ref.Close()
				prompt, err := refInts(ref, "input_ids")
				require.NoError(t, err)
				greedy := func(m *Model) ([]int, *Session) {
					s, err := m.NewSession(len(prompt) + gen)
					require.NoError(t, err)
					lg, err := s.Last(ctx, prompt)
					require.NoError(t, err)
					var ids []int
					for range gen {
						next := argmax(lg)
						ids = append(ids, next)
						lg, err = s.Step(ctx, next)
						require.NoError(t, err)
					}
					return ids, s
				}
				cpuM, err := Load(fixtureDir(dir), WithDevice("cpu"), WithThreads(2), WithMLA(path))
				require.NoError(t, err)
				defer cpuM.Close()
				want, _ := greedy(cpuM)

				m, err := Load(fixtureDir(dir), WithDevice("cuda"), WithMLA(path))
				require.NoError(t, err)
				defer m.Close()
				require.True(t, strings.HasPrefix(m.Info().Backend, "cuda"), m.Info().Backend)
				assertFP8Experts(t, m, cpuM)
				got, s := greedy(m)
				assert.Equal(t, want, got, "greedy tokens on %s", m.Info().Backend)
				assert.False(t, s.graph.failed, "the decode step must capture")
				assert.NotNil(t, s.graph.g, "the decode step must replay a graph")

				st := m.ExpertStats()
				require.NotEmpty(t, st)
				k := m.Config().NumExpertsPerTok
				for _, ls := range st {
					assert.Equal(t, int64(len(prompt)+gen), ls.Tokens, "layer %d", ls.Layer)
					var sum int64
					for _, c := range ls.Counts {
						sum += c
					}
					assert.Equal(t, ls.Tokens*int64(k), sum, "layer %d", ls.Layer)
				}
			})
		}
	}
}

// expertsOf returns the routed experts of m's MoE layers in layer order.
func expertsOf(m *Model) []kernels.Experts {
	var out []kernels.Experts
	for _, b := range m.blocks {
		if blk, ok := b.(*deepseekBlock); ok && blk.moe != nil {
			out = append(out, blk.moe.Experts)
		}
	}
	return out
}

// assertFP8Experts: where the CPU model (ref) holds fp8 experts, the GPU
// model m holds them as fp8 too, with the same resident bytes (the fp8
// bytes and the block scales).
func assertFP8Experts(t *testing.T, m, ref *Model) {
	t.Helper()
	got, want := expertsOf(m), expertsOf(ref)
	require.Len(t, got, len(want))
	for i, w := range want {
		if w.DType() != kernels.FP8 {
			continue
		}
		assert.Equal(t, kernels.FP8, got[i].DType(), "MoE layer %d: fp8 experts stay fp8", i)
		assert.Equal(t, w.Bytes(), got[i].Bytes(), "MoE layer %d: expert bytes, GPU vs CPU", i)
	}
}

// BenchmarkCUDAMoEDecode decodes DeepSeek-V2-Lite's MoE layers (64 routed
// experts top-6 of 1408 features plus 2 shared, hidden 2048, bf16 weights
// made by RandomSource) with 2 or 4 of its layers (1 dense + 1 or 3 MoE)
// and a small vocabulary, graph-replayed steps: the difference between the
// two is the time of 2 MoE layers (and 2 MLA layers).
func BenchmarkCUDAMoEDecode(b *testing.B) {
	needCUDA(b)
	for _, layers := range []int{2, 4} {
		b.Run(fmt.Sprintf("v2-lite/layers=%d", layers), func(b *testing.B) {
			cfg := v2LiteSliceConfig(b, layers, 8192)
			m, err := New(cfg, RandomSource{DType: safetensors.BF16, Seed: 7}, WithDevice("cuda"))
			require.NoError(b, err)
			defer m.Close()
			ctx := context.Background()
			s, err := m.NewSession(1024)
			require.NoError(b, err)
			_, err = s.Last(ctx, []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
			require.NoError(b, err)
			benchSteps(b, ctx, s, cfg.VocabSize)
			require.NotNil(b, s.graph.g, "decode steps replay a graph")
		})
	}
}
