package layers

import (
	"encoding/json"
	"fmt"
	"math"

	"github.com/deepseek-go/deepseek-go/kernels"
)

// RopeScaling is config.json's rope_scaling. Type accepts both "type" and
// "rope_type"; fields not used by the type are ignored.
type RopeScaling struct {
	Type   string  `json:"-"`
	Factor float64 `json:"factor"`
	// OriginalMaxPositionEmbeddings: llama3 and yarn (0 = max_position_embeddings).
	OriginalMaxPositionEmbeddings int `json:"original_max_position_embeddings"`
	// llama3.
	LowFreqFactor  float64 `json:"low_freq_factor"`
	HighFreqFactor float64 `json:"high_freq_factor"`
	// yarn.
	BetaFast        float64  `json:"beta_fast"`
	BetaSlow        float64  `json:"beta_slow"`
	MScale          float64  `json:"mscale"`
	MScaleAllDim    float64  `json:"mscale_all_dim"`
	AttentionFactor *float64 `json:"attention_factor"`
	Truncate        *bool    `json:"truncate"`
	// RopeTheta is only read from transformers v5's rope_parameters.
	RopeTheta float64 `json:"rope_theta"`
}

// UnmarshalJSON accepts "type" or "rope_type".
func (r *RopeScaling) UnmarshalJSON(b []byte) error {
	type plain RopeScaling
	var aux struct {
		plain
		Type     string `json:"type"`
		RopeType string `json:"rope_type"`
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	*r = RopeScaling(aux.plain)
	r.Type = aux.RopeType
	if r.Type == "" {
		r.Type = aux.Type
	}
	return nil
}

// RopeConfig is what rope construction reads from a model config.
type RopeConfig struct {
	Theta   float64      // rope_theta
	MaxPos  int          // max_position_embeddings
	Scaling *RopeScaling // rope_scaling; nil for none
}

// Freqs returns the inverse frequencies (dim/2 of them) and the
// attention factor that multiplies cos and sin, for a rotary dimension dim,
// as transformers' rope init functions compute them (default, linear,
// dynamic, llama3, yarn). Dynamic NTK only changes the base for sequences
// longer than max_position_embeddings, which sessions refuse, so it equals
// the default here.
func (c RopeConfig) Freqs(dim int) ([]float32, float64, error) {
	if dim <= 0 || dim%2 != 0 {
		return nil, 0, fmt.Errorf("rope: rotary dim %d must be positive and even", dim)
	}
	r := c.Scaling
	typ := "default"
	if r != nil {
		typ = r.Type
	}
	switch typ {
	case "default", "dynamic":
		return baseInvFreq(c.Theta, dim), 1, nil
	case "linear":
		inv := baseInvFreq(c.Theta, dim)
		for i := range inv {
			inv[i] = float32(float64(inv[i]) / r.Factor)
		}
		return inv, 1, nil
	case "llama3":
		return llama3InvFreq(c.Theta, dim, r), 1, nil
	case "yarn":
		inv, af := YarnFreqs(c.Theta, dim, r, c.MaxPos)
		return inv, af, nil
	}
	return nil, 0, fmt.Errorf("rope: config field rope_scaling.type %q not supported", typ)
}

// New builds the kernels.Rope for rotary dims [off, off+dim) of each
// head, with the config's scaling.
func (c RopeConfig) New(off, dim int, interleaved bool) (*kernels.Rope, error) {
	inv, af, err := c.Freqs(dim)
	if err != nil {
		return nil, err
	}
	return &kernels.Rope{Off: off, Dim: dim, InvFreq: inv, Scale: float32(af), Interleaved: interleaved}, nil
}

// baseInvFreq is 1 / theta^(2i/dim), rounded to float32 like torch's buffer.
func baseInvFreq(theta float64, dim int) []float32 {
	inv := make([]float32, dim/2)
	for i := range inv {
		inv[i] = float32(1 / math.Pow(theta, float64(2*i)/float64(dim)))
	}
	return inv
}

// llama3InvFreq follows transformers' _compute_llama3_parameters: long
// wavelengths are divided by factor, short ones kept, the band between
// interpolated smoothly.
func llama3InvFreq(theta float64, dim int, r *RopeScaling) []float32 {
	inv := baseInvFreq(theta, dim)
	old := float64(r.OriginalMaxPositionEmbeddings)
	lowWave, highWave := old/r.LowFreqFactor, old/r.HighFreqFactor
	for i, f32 := range inv {
		f := float64(f32)
		wave := 2 * math.Pi / f
		switch {
		case wave < highWave:
			// high frequency: unchanged
		case wave > lowWave:
			f /= r.Factor
		default:
			smooth := (old/wave - r.LowFreqFactor) / (r.HighFreqFactor - r.LowFreqFactor)
			f = (1-smooth)*f/r.Factor + smooth*f
		}
		inv[i] = float32(f)
	}
	return inv
}

// YarnGetMScale is YaRN's magnitude correction 0.1·mscale·ln(scale)+1 (1 when
// scale <= 1). DeepSeek multiplies the softmax scale by
// YarnGetMScale(factor, mscale_all_dim)².
func YarnGetMScale(scale, mscale float64) float64 {
	if scale <= 1 {
		return 1
	}
	return 0.1*mscale*math.Log(scale) + 1
}

// YarnFreqs follows transformers' _compute_yarn_parameters (v5): the
// explicit factor, original_max_position_embeddings (default maxPos) for the
// correction range, beta_fast/beta_slow (default 32/1), truncate (default
// true) and the attention factor (explicit, else mscale/mscale_all_dim ratio
// when both are set, else YarnGetMScale(factor, 1)).
func YarnFreqs(theta float64, dim int, r *RopeScaling, maxPos int) ([]float32, float64) {
	factor := r.Factor
	orig := r.OriginalMaxPositionEmbeddings
	if orig == 0 {
		orig = maxPos
	}
	var af float64
	switch {
	case r.AttentionFactor != nil:
		af = *r.AttentionFactor
	case r.MScale != 0 && r.MScaleAllDim != 0:
		af = YarnGetMScale(factor, r.MScale) / YarnGetMScale(factor, r.MScaleAllDim)
	default:
		af = YarnGetMScale(factor, 1)
	}
	betaFast, betaSlow := r.BetaFast, r.BetaSlow
	if betaFast == 0 {
		betaFast = 32
	}
	if betaSlow == 0 {
		betaSlow = 1
	}
	corr := func(rot float64) float64 {
		return float64(dim) * math.Log(float64(orig)/(rot*2*math.Pi)) / (2 * math.Log(theta))
	}
	low, high := corr(betaFast), corr(betaSlow)
	if r.Truncate == nil || *r.Truncate {
		low, high = math.Floor(low), math.Ceil(high)
	}
	low, high = math.Max(low, 0), math.Min(high, float64(dim-1))
	if low == high {
		high += 0.001 // transformers: prevent a division by zero
	}
	inv := make([]float32, dim/2)
	for i := range inv {
		pos := math.Pow(theta, float64(2*i)/float64(dim))
		extra := 1 / pos
		inter := 1 / (factor * pos)
		ramp := math.Min(math.Max((float64(i)-low)/(high-low), 0), 1)
		ef := 1 - ramp
		inv[i] = float32(inter*(1-ef) + extra*ef)
	}
	return inv, af
}
