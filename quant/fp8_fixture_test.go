package quant_test

import (
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/engine/safetensors"
	"github.com/deepseek-go/deepseek-go/internal/testutil"
	"github.com/deepseek-go/deepseek-go/quant"
)

// TestDequantFixture dequantises every fp8 weight of the deepseek-v3-fp8
// fixture. Its writer scaled each block so that the block's largest |value|
// is fp8's maximum 448 (checked in Python for all 750 blocks), so the
// dequantised block maximum must equal 448 × that block's scale_inv: a wrong
// block-to-scale mapping, including at the partial edge blocks, fails here.
// (The fixture's weights are not the deepseek-v3 or -bf16 fixtures' weights,
// so no cross-fixture comparison is possible.)
func TestDequantFixture(t *testing.T) {
	dir := filepath.Join("..", "testdata", "models", "deepseek-v3-fp8")
	var cfg struct {
		Quant struct {
			Method    string `json:"quant_method"`
			Fmt       string `json:"fmt"`
			BlockSize []int  `json:"weight_block_size"`
		} `json:"quantization_config"`
	}
	testutil.DecodeJSONFile(t, filepath.Join(dir, "config.json"), &cfg)
	require.Equal(t, "fp8", cfg.Quant.Method)
	require.Len(t, cfg.Quant.BlockSize, 2)
	br, bc := cfg.Quant.BlockSize[0], cfg.Quant.BlockSize[1]

	c, err := safetensors.Open(dir)
	require.NoError(t, err)
	defer c.Close()
	n, edges := 0, 0
	for _, name := range c.Names() {
		w, err := c.Tensor(name)
		require.NoError(t, err)
		if w.DType != safetensors.F8E4M3 {
			continue
		}
		require.True(t, strings.HasSuffix(name, ".weight"), name)
		s, err := c.Tensor(name + "_scale_inv")
		require.NoError(t, err)
		require.Len(t, w.Shape, 2)
		require.Len(t, s.Shape, 2)
		rows, cols := w.Shape[0], w.Shape[1]
		if rows%br != 0 || cols%bc != 0 {
			edges++
		}
		scale, err := s.Float32()
		require.NoError(t, err)
		out, err := quant.DequantFP8Blocks(w.Data, rows, cols, scale, s.Shape[0], s.Shape[1], br, bc)
		require.NoError(t, err, name)
		for i := range s.Shape[0] {
			for j := range s.Shape[1] {
				var m float32
				for r := i * br; r < min(rows, (i+1)*br); r++ {
					for c := j * bc; c < min(cols, (j+1)*bc); c++ {
						m = max(m, float32(math.Abs(float64(out[r*cols+c]))))
					}
				}
				sc := scale[i*s.Shape[1]+j]
				assert.Equal(t, 448*sc, m, "%s block (%d,%d)", name, i, j)
			}
		}
		// A scale tensor of the wrong shape is refused.
		_, err = quant.DequantFP8Blocks(w.Data, rows, cols, scale[:len(scale)-s.Shape[1]], s.Shape[0]-1, s.Shape[1], br, bc)
		assert.ErrorContains(t, err, "scale_inv shape")
		n++
	}
	assert.Equal(t, 72, n, "fp8 weights in the fixture")
	assert.Positive(t, edges, "the fixture has partial edge blocks")
}
