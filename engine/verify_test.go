package engine

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestVerifyDenseFixtures runs every llama/qwen2 fixture against its
// transformers reference: prefill logits, step logits and 16 greedy tokens.
func TestVerifyDenseFixtures(t *testing.T) {
	for _, dir := range []string{"llama-mha", "llama-gqa-llama3rope", "llama-linear-rope", "llama-mha-bf16-sharded", "qwen2", "qwen2-tied"} {
		t.Run(dir, func(t *testing.T) {
			path := filepath.Join("..", "testdata", "models", dir)
			m, err := Load(path, WithThreads(2), WithDevice("cpu"))
			require.NoError(t, err)
			defer m.Close()
			r, err := Verify(context.Background(), m, filepath.Join(path, "reference.safetensors"))
			require.NoError(t, err)
			t.Logf("%s: worst %.3g at %s, greedy %d/%d", dir, r.Worst, r.WorstAt, r.Match, len(r.RefIDs))
			assert.Len(t, r.RefIDs, 16)
			assert.Equal(t, 16, r.Match, "ours %v ref %v", r.OurIDs, r.RefIDs)
			assert.LessOrEqual(t, r.Worst, 1e-4, "worst at %s", r.WorstAt)
			assert.True(t, r.Passed(1e-4))
		})
	}
}
