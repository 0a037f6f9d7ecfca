package engine

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var deepseekFixtures = []string{"deepseek-v2-lite", "deepseek-v2-lite-fp16", "deepseek-v3", "deepseek-v3-bf16", "deepseek-v3-fp8"}

// TestVerifyDeepseekFixtures runs every DeepSeek fixture through both MLA
// paths against its transformers reference: prefill logits, step logits
// and 16 greedy tokens.
func TestVerifyDeepseekFixtures(t *testing.T) {
	for _, dir := range deepseekFixtures {
		for _, path := range []string{MLAAbsorbed, MLANaive} {
			t.Run(dir+"/"+path, func(t *testing.T) {
				p := filepath.Join("..", "testdata", "models", dir)
				m, err := Load(p, WithThreads(2), WithMLA(path))
				require.NoError(t, err)
				defer m.Close()
				assert.Equal(t, path, m.MLAPath())
				r, err := Verify(context.Background(), m, filepath.Join(p, "reference.safetensors"))
				require.NoError(t, err)
				t.Logf("%s %s: worst %.3g at %s, greedy %d/%d", dir, path, r.Worst, r.WorstAt, r.Match, len(r.RefIDs))
				assert.Len(t, r.RefIDs, 16)
				assert.Equal(t, 16, r.Match, "ours %v ref %v", r.OurIDs, r.RefIDs)
				assert.LessOrEqual(t, r.Worst, 1e-4, "worst at %s", r.WorstAt)
			})
		}
	}
}
