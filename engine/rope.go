package engine

import (
	"github.com/deepseek-go/deepseek-go/engine/layers"
	"github.com/deepseek-go/deepseek-go/kernels"
)

// ropeConfig is what rope construction reads from c.
func ropeConfig(c *Config) layers.RopeConfig {
	return layers.RopeConfig{Theta: c.RopeTheta, MaxPos: c.MaxPositionEmbeddings, Scaling: c.RopeScaling}
}

// RopeFreqs returns the inverse frequencies (dim/2 of them) and the
// attention factor that multiplies cos and sin, for a rotary dimension dim
// of c (layers.RopeConfig.Freqs).
func RopeFreqs(c *Config, dim int) ([]float32, float64, error) { return ropeConfig(c).Freqs(dim) }

// NewRope builds the kernels.Rope for rotary dims [off, off+dim) of each
// head, with the config's scaling.
func NewRope(c *Config, off, dim int, interleaved bool) (*kernels.Rope, error) {
	return ropeConfig(c).New(off, dim, interleaved)
}

// YarnGetMScale is YaRN's magnitude correction (layers.YarnGetMScale).
func YarnGetMScale(scale, mscale float64) float64 { return layers.YarnGetMScale(scale, mscale) }

// YarnFreqs follows transformers' _compute_yarn_parameters
// (layers.YarnFreqs).
func YarnFreqs(theta float64, dim int, r *RopeScaling, maxPos int) ([]float32, float64) {
	return layers.YarnFreqs(theta, dim, r, maxPos)
}
