package engine

// DeepSeek V2 and V3 (model_type deepseek_v2, deepseek_v3): multi-head latent
// attention (MLA), mixture of experts with shared experts, YaRN rope and fp8
// block-quantised checkpoints. DeepSeek V1 MoE (model_type deepseek,
// deepseek-moe-16b) is llama attention with the same MoE layers. The
// reference is transformers' modeling_deepseek_v2.py / modeling_deepseek_v3.py
// and DeepSeek's own modeling_deepseek.py on the hub.
//
// MLA runs two ways (WithMLA):
//   - naive: kv_b_proj expands the latent into per-head keys and values; the
//     cache holds heads×(nope+rope) key and heads×v value floats per token.
//     This is the reference form.
//   - absorbed (default): the cache holds only the normalised latent
//     (kv_lora_rank) and the rotated rope key (qk_rope_head_dim) per token,
//     shared by all heads. kv_b_proj's key half is folded into the query
//     (q_nope·W_UK per head) and its value half into the output
//     (latent·W_UVᵀ per head), so attention runs as MQA with KDim =
//     kv_lora+rope whose values are the first kv_lora floats of each key.

import (
	"fmt"
	"math"

	"github.com/deepseek-go/deepseek-go/engine/layers"
	"github.com/deepseek-go/deepseek-go/kernels"
)

// MLA attention paths for WithMLA.
const (
	MLAAbsorbed = "absorbed"
	MLANaive    = "naive"
)

// WithMLA selects the DeepSeek V2/V3 attention path: MLAAbsorbed (default,
// small cache) or MLANaive (the per-head expansion, a reference).
func WithMLA(path string) Option { return func(o *options) { o.mla = path } }

func init() {
	fam := Family{Validate: validateDeepseek, Build: buildDeepseek, KVSpec: deepseekKVSpec}
	RegisterFamily("deepseek_v2", fam)
	RegisterFamily("deepseek_v3", fam)
	// V1 MoE (deepseek-moe-16b): llama attention with DeepSeek's MoE.
	RegisterFamily("deepseek", Family{Validate: validateDeepseekMoE, Build: buildDeepseek, KVSpec: llamaKVSpec})
}

// deepseekRouter derives the routing configuration with each family's
// defaults (V1/V2: softmax greedy, scaling only without normalisation as in
// DeepSeek's MoEGate — V1 has no scaling factor, so it stays 1; V3: sigmoid
// noaux_tc, normalise then scale).
func deepseekRouter(c *Config) RouterConfig {
	rc := RouterConfig{Method: TopKGreedy, Scoring: ScoringSoftmax, Experts: c.NRoutedExperts,
		TopK: c.NumExpertsPerTok, Groups: c.NGroup, TopGroups: c.TopKGroup,
		NormTopK: c.NormTopKProb, Scale: float32(c.RoutedScalingFactor)}
	if c.ModelType == "deepseek_v3" {
		rc.Method, rc.Scoring, rc.ScaleAfterNorm = TopKNoAuxTC, ScoringSigmoid, true
	}
	if c.TopKMethod != "" {
		rc.Method = c.TopKMethod
	}
	if c.ScoringFunc != "" {
		rc.Scoring = c.ScoringFunc
	}
	if rc.Method == TopKGreedy && rc.Groups == 0 {
		rc.Groups, rc.TopGroups = 1, 1
	}
	return rc
}

// validateDeepseekMoE checks the MoE fields shared by V1, V2 and V3.
func validateDeepseekMoE(c *Config) error {
	if c.FirstKDenseReplace < 0 || c.MoELayerFreq <= 0 || c.NSharedExperts < 0 || c.NRoutedExperts < 0 {
		return fmt.Errorf("config fields first_k_dense_replace (%d), n_shared_experts (%d), n_routed_experts (%d) must be >= 0 and moe_layer_freq (%d) > 0",
			c.FirstKDenseReplace, c.NSharedExperts, c.NRoutedExperts, c.MoELayerFreq)
	}
	if c.NRoutedExperts > 0 {
		if c.MoEIntermediateSize <= 0 {
			return fmt.Errorf("config field moe_intermediate_size must be positive with n_routed_experts %d, got %d", c.NRoutedExperts, c.MoEIntermediateSize)
		}
		rc := deepseekRouter(c)
		if err := rc.Validate(); err != nil {
			return err
		}
	}
	return nil
}

func validateDeepseek(c *Config) error {
	if err := validateDeepseekMoE(c); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"kv_lora_rank", c.KVLoraRank}, {"qk_nope_head_dim", c.QKNopeHeadDim},
		{"qk_rope_head_dim", c.QKRopeHeadDim}, {"v_head_dim", c.VHeadDim}} {
		if f.v <= 0 {
			return fmt.Errorf("config field %s must be positive for %s, got %d", f.name, c.ModelType, f.v)
		}
	}
	if c.QKRopeHeadDim%2 != 0 {
		return fmt.Errorf("config field qk_rope_head_dim must be even, got %d", c.QKRopeHeadDim)
	}
	if c.QLoraRank < 0 {
		return fmt.Errorf("config field q_lora_rank must be >= 0, got %d", c.QLoraRank)
	}
	if c.AttentionBias {
		return fmt.Errorf("config field attention_bias: biased MLA projections are not supported (no DeepSeek checkpoint has them)")
	}
	if r := c.RopeScaling; r != nil && r.Type != "default" && r.Type != "yarn" {
		return fmt.Errorf("config field rope_scaling.type %q not supported for %s (yarn or none)", r.Type, c.ModelType)
	}
	if q := c.QuantizationConfig; q != nil {
		if q.QuantMethod != "fp8" {
			return fmt.Errorf("config field quantization_config.quant_method %q not supported (fp8)", q.QuantMethod)
		}
		if q.Fmt != "" && q.Fmt != "e4m3" {
			return fmt.Errorf("config field quantization_config.fmt %q not supported (e4m3)", q.Fmt)
		}
	}
	switch c.MLA {
	case "", MLAAbsorbed, MLANaive:
	default:
		return fmt.Errorf("MLA path %q: want %q or %q", c.MLA, MLAAbsorbed, MLANaive)
	}
	return nil
}

// mlaAbsorbed reports whether c selects the absorbed MLA path.
func mlaAbsorbed(c *Config) bool { return c.MLA == "" || c.MLA == MLAAbsorbed }

func deepseekKVSpec(c *Config) kernels.KVSpec {
	if mlaAbsorbed(c) {
		return kernels.KVSpec{Layers: c.NumLayers, KVHeads: 1, KDim: c.KVLoraRank + c.QKRopeHeadDim, VDim: c.KVLoraRank, VInK: true}
	}
	return kernels.KVSpec{Layers: c.NumLayers, KVHeads: c.NumHeads, KDim: c.QKNopeHeadDim + c.QKRopeHeadDim, VDim: c.VHeadDim}
}

// MLACache is the KV-cache footprint of an MLA model, in float32 values and
// bytes per token over all layers.
type MLACache struct {
	// AbsorbedFloats = layers × (kv_lora_rank + qk_rope_head_dim).
	AbsorbedFloats int64
	// NaiveFloats = layers × heads × (qk_nope + qk_rope + v_head_dim).
	NaiveFloats int64
	// AbsorbedBytes and NaiveBytes at 4 bytes per value (the caches are f32).
	AbsorbedBytes, NaiveBytes int64
}

// MLACacheSize returns the per-token cache size of both MLA paths for a
// DeepSeek V2/V3 config.
func MLACacheSize(c *Config) MLACache {
	l := int64(c.NumLayers)
	a := l * int64(c.KVLoraRank+c.QKRopeHeadDim)
	n := l * int64(c.NumHeads) * int64(c.QKNopeHeadDim+c.QKRopeHeadDim+c.VHeadDim)
	return MLACache{AbsorbedFloats: a, NaiveFloats: n, AbsorbedBytes: 4 * a, NaiveBytes: 4 * n}
}

// MLACache reports the model's per-token cache size on both MLA paths, and
// false for models without MLA.
func (m *Model) MLACache() (MLACache, bool) {
	if m.cfg.ModelType != "deepseek_v2" && m.cfg.ModelType != "deepseek_v3" {
		return MLACache{}, false
	}
	return MLACacheSize(m.cfg), true
}

// MLAPath is the attention path the model runs ("absorbed" or "naive"), or
// "" for models without MLA.
func (m *Model) MLAPath() string {
	if _, ok := m.MLACache(); !ok {
		return ""
	}
	if mlaAbsorbed(m.cfg) {
		return MLAAbsorbed
	}
	return MLANaive
}

// deepseekRope returns the rope of the qk_rope_head_dim part (YaRN inv_freq
// and cos/sin attention factor folded in) and the softmax scale
// 1/sqrt(qk_head_dim), times yarn_get_mscale(factor, mscale_all_dim)² when
// YaRN sets mscale_all_dim (DeepSeek's attention, transformers' V3).
func deepseekRope(c *Config) (*kernels.Rope, float32, error) {
	inv, af, err := RopeFreqs(c, c.QKRopeHeadDim)
	if err != nil {
		return nil, 0, err
	}
	scale := 1 / math.Sqrt(float64(c.QKNopeHeadDim+c.QKRopeHeadDim))
	if r := c.RopeScaling; r != nil && r.Type == "yarn" && r.MScaleAllDim != 0 {
		m := YarnGetMScale(r.Factor, r.MScaleAllDim)
		scale *= m * m
	}
	return &kernels.Rope{Dim: c.QKRopeHeadDim, InvFreq: inv, Scale: float32(af), Interleaved: true}, float32(scale), nil
}

// isMoELayer reports whether layer l has routed experts.
func isMoELayer(c *Config, l int) bool {
	return c.NRoutedExperts > 0 && l >= c.FirstKDenseReplace && l%c.MoELayerFreq == 0
}

func buildDeepseek(b *Builder) ([]Block, error) {
	c := b.Config
	v1 := c.ModelType == "deepseek"
	validate := validateDeepseek
	if v1 {
		validate = validateDeepseekMoE
	}
	if err := validate(c); err != nil { // Config may come from New
		return nil, err
	}
	var rope *kernels.Rope
	var scale float32
	var err error
	if v1 {
		rope, err = NewRope(c, 0, c.HeadDim, false)
	} else {
		rope, scale, err = deepseekRope(c)
	}
	if err != nil {
		return nil, err
	}
	mla := layers.MLAShape{Hidden: c.HiddenSize, Heads: c.NumHeads, Nope: c.QKNopeHeadDim, Rope: c.QKRopeHeadDim,
		V: c.VHeadDim, KVLora: c.KVLoraRank, QLora: c.QLoraRank, Absorbed: mlaAbsorbed(c)}
	moe := layers.MoEShape{Hidden: c.HiddenSize, Inter: c.MoEIntermediateSize, SharedExperts: c.NSharedExperts}
	rc := deepseekRouter(c)
	blocks := make([]Block, c.NumLayers)
	for l := range blocks {
		p := LayerPrefix(l)
		blk := &deepseekBlock{layer: l, cfg: c}
		if blk.attnNorm, err = b.Vector(p+"input_layernorm.weight", c.HiddenSize); err != nil {
			return nil, err
		}
		if blk.mlpNorm, err = b.Vector(p+"post_attention_layernorm.weight", c.HiddenSize); err != nil {
			return nil, err
		}
		if v1 {
			blk.attn, err = LoadGQA(b, p+"self_attn.", l, c.AttentionBias, c.AttentionBias, rope)
		} else {
			blk.attn, err = layers.LoadMLA(b.Builder, p+"self_attn.", l, mla, rope, scale)
		}
		if err != nil {
			return nil, err
		}
		if isMoELayer(c, l) {
			if blk.moe, err = layers.LoadMoE(b.Builder, p+"mlp.", moe, rc); err != nil {
				return nil, err
			}
		} else if blk.mlp, err = LoadDenseMLP(b, p+"mlp.", c.HiddenSize, c.IntermediateSize, false); err != nil {
			return nil, err
		}
		blocks[l] = blk
	}
	return blocks, nil
}

// deepseekBlock is x += attn(norm(x)); x += (dense MLP or MoE)(norm(x)).
type deepseekBlock struct {
	layer             int
	cfg               *Config
	attnNorm, mlpNorm kernels.Buffer
	attn              layers.Attention
	mlp               *DenseMLP
	moe               *MoE
}

func (blk *deepseekBlock) Forward(ctx layers.Context, x kernels.Buffer, n, pos0 int) error {
	var ffn layers.FeedForward = blk.mlp
	if blk.moe != nil {
		ffn = blk.moe
	}
	return layers.PreNormBlock(ctx, blk.cfg.HiddenSize, float32(blk.cfg.RMSNormEps), x, n, pos0, blk.attnNorm, blk.mlpNorm, blk.attn, ffn)
}

// Sharded reports whether the session runs one shard of a sharded model,
// whose AllReduce sums (layers.Context).
func (s *Session) Sharded() bool {
	t := s.m.tp
	return t != nil && t.size > 1
}

// MLAPack packs MLA's absorbed cache rows and query rope parts with the
// rotation inside Backend.MLAPack for one sequence, or after two Ropes in
// a batched step (per-row positions) (layers.Context). ropeQ is ropeK
// moved to the query heads' rope offset (LoadMLA builds them from one
// rope), so the one rotation MLAPackShape.RoPE carries serves both.
func (s *Session) MLAPack(k, qabs, q, lat, kr, weight kernels.Buffer, n, pos0 int, sh kernels.MLAPackShape, ropeQ, ropeK *kernels.Rope) {
	if s.batch != nil {
		s.Rope(q, n, sh.Heads, sh.Nope+sh.Rope, pos0, ropeQ)
		s.Rope(kr, n, 1, sh.Rope, pos0, ropeK)
		s.be.MLAPack(k, qabs, q, lat, kr, weight, n, sh)
		return
	}
	sh.RoPE, sh.Pos0 = ropeK, pos0
	s.be.MLAPack(k, qabs, q, lat, kr, weight, n, sh)
}

// MLA is DeepSeek's multi-head latent attention for one layer
// (layers.MLA).
type MLA = layers.MLA

// MoE is a DeepSeek mixture-of-experts MLP (layers.MoE).
type MoE = layers.MoE

// ExpertStats returns per-layer routed-expert usage since the model was
// loaded (or since ResetExpertStats), summed over all sessions, read from
// the backend's counters (a device download); nil for models without
// routed experts, or when the counters cannot be read (a failed device,
// whose next step reports the error).
func (m *Model) ExpertStats() []LayerExpertStats {
	st, err := m.expertStats().Snapshot()
	if err != nil || len(st) == 0 {
		return nil
	}
	return st
}

// ResetExpertStats zeroes the expert usage counters.
func (m *Model) ResetExpertStats() {
	_ = m.expertStats().Reset() // a failed device reports at its next step
}

// expertStats collects the MoE layers' routers; a sharded model reads rank
// 0's (every shard routes the same rows).
func (m *Model) expertStats() *ExpertStats {
	if len(m.shards) > 0 {
		return m.shards[0].expertStats()
	}
	st := &ExpertStats{}
	for _, b := range m.blocks {
		if blk, ok := b.(*deepseekBlock); ok && blk.moe != nil {
			st.add(blk.layer, blk.moe.Gate())
		}
	}
	return st
}
