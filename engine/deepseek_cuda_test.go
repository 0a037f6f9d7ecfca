//go:build linux && cgo

package engine

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCUDAVerifyDeepseekFixtures: the DeepSeek fixtures on the GPU through
// both MLA paths against their transformers references. Tolerances follow
// TestCUDAVerifyDenseFixtures (1e-4 for f32 and fp8-dequantised-to-f32
// weights, 2e-2 for bf16/f16 ones whose prefill GEMMs may round activations).
// Skipped without a GPU; written by D without GPU access (the GPU is F's),
// so it has not been run yet.
func TestCUDAVerifyDeepseekFixtures(t *testing.T) {
	needCUDA(t)
	for _, dir := range deepseekFixtures {
		for _, path := range []string{MLAAbsorbed, MLANaive} {
			t.Run(dir+"/"+path, func(t *testing.T) {
				p := filepath.Join("..", "testdata", "models", dir)
				m, err := Load(p, WithDevice("cuda"), WithMLA(path))
				require.NoError(t, err)
				defer m.Close()
				require.True(t, strings.HasPrefix(m.Info().Backend, "cuda"), m.Info().Backend)
				r, err := Verify(context.Background(), m, filepath.Join(p, "reference.safetensors"))
				require.NoError(t, err)
				t.Logf("%s %s on %s: worst %.3g at %s, greedy %d/%d", dir, path, m.Info().Backend, r.Worst, r.WorstAt, r.Match, len(r.RefIDs))
				assert.Equal(t, len(r.RefIDs), r.Match, "ours %v ref %v", r.OurIDs, r.RefIDs)
				tol := 1e-4
				if strings.HasSuffix(dir, "bf16") || strings.HasSuffix(dir, "fp16") {
					tol = 2e-2
				}
				assert.LessOrEqual(t, r.Worst, tol, "worst at %s", r.WorstAt)
			})
		}
	}
}
