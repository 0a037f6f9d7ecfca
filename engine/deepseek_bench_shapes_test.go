package engine

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// DeepSeek shapes of the GPU benchmarks (deepseek_cuda_bench_test.go) and
// the arithmetic of their roofline: which weights one decoded token reads.

// deepseekV2LiteShape is deepseek-ai/DeepSeek-V2-Lite's config.json (the
// tokenizer ids left out, so greedy decoding never stops at an EOS).
func deepseekV2LiteShape() map[string]any {
	return map[string]any{
		"model_type": "deepseek_v2", "vocab_size": 102400, "hidden_size": 2048, "intermediate_size": 10944,
		"moe_intermediate_size": 1408, "num_hidden_layers": 27, "num_attention_heads": 16, "num_key_value_heads": 16,
		"max_position_embeddings": 163840, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
		"q_lora_rank": nil, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
		"n_routed_experts": 64, "n_shared_experts": 2, "num_experts_per_tok": 6, "first_k_dense_replace": 1, "moe_layer_freq": 1,
		"topk_method": "greedy", "n_group": 1, "topk_group": 1, "norm_topk_prob": false, "routed_scaling_factor": 1.0,
		"scoring_func": "softmax", "tie_word_embeddings": false,
		"rope_scaling": map[string]any{"type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096,
			"beta_fast": 32, "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707},
	}
}

// withLayers returns shape with num_hidden_layers set to n.
func withLayers(shape map[string]any, n int) map[string]any {
	shape["num_hidden_layers"] = n
	return shape
}

// deepseekV3Shape is deepseek-ai/DeepSeek-V3's config.json with layers
// layers, the first dense and the rest MoE (the real model: 61, 3 dense).
// fp8 adds its quantization_config (128×128 weight blocks).
func deepseekV3Shape(layers, dense int, fp8 bool) map[string]any {
	c := map[string]any{
		"model_type": "deepseek_v3", "vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432,
		"moe_intermediate_size": 2048, "num_hidden_layers": layers, "num_attention_heads": 128, "num_key_value_heads": 128,
		"max_position_embeddings": 163840, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
		"q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
		"n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8, "first_k_dense_replace": dense, "moe_layer_freq": 1,
		"topk_method": "noaux_tc", "n_group": 8, "topk_group": 4, "norm_topk_prob": true, "routed_scaling_factor": 2.5,
		"scoring_func": "sigmoid", "tie_word_embeddings": false,
		"rope_scaling": map[string]any{"type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096,
			"beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
	}
	if fp8 {
		c["quantization_config"] = map[string]any{"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": []int{128, 128}}
	}
	return c
}

func parseShape(tb testing.TB, name string, shape map[string]any) *Config {
	tb.Helper()
	data, err := json.Marshal(shape)
	require.NoError(tb, err)
	cfg, err := ParseConfig(name, data)
	require.NoError(tb, err)
	return cfg
}

// deepseekParams counts a DeepSeek V2/V3 model's weights (parameters) by
// how a decode step reads them. Proj are the projections a checkpoint may
// store in fp8 (attention, dense MLP, experts); routers and lm_head stay
// 16-bit; the embedding table gives one row per token and is not counted
// as read.
type deepseekParams struct {
	ActiveProj, ActiveRouter, Head int64   // read by one decoded token
	TotalProj, TotalRouter, Embed  int64   // held
	LayerActive                    []int64 // per layer: projections + router read per token
	Matrices                       int     // matrices of 1 MiB and more (allocation rounding)
}

func countDeepseekParams(c *Config) deepseekParams {
	hid, H := int64(c.HiddenSize), int64(c.NumHeads)
	nope, rope, v, kvl := int64(c.QKNopeHeadDim), int64(c.QKRopeHeadDim), int64(c.VHeadDim), int64(c.KVLoraRank)
	var attn int64
	if q := int64(c.QLoraRank); q > 0 {
		attn = q*hid + H*(nope+rope)*q // q_a_proj, q_b_proj
	} else {
		attn = H * (nope + rope) * hid // q_proj
	}
	attn += (kvl+rope)*hid + H*(nope+v)*kvl + hid*H*v // kv_a_proj_with_mqa, kv_b_proj, o_proj
	expert := 3 * hid * int64(c.MoEIntermediateSize)
	p := deepseekParams{Head: int64(c.VocabSize) * hid, Embed: int64(c.VocabSize) * hid, Matrices: 2}
	for l := range c.NumLayers {
		layer := attn
		p.TotalProj += attn
		p.Matrices += 5
		if isMoELayer(c, l) {
			router := int64(c.NRoutedExperts) * hid
			active := int64(c.NumExpertsPerTok+c.NSharedExperts) * expert
			layer += active + router
			p.ActiveProj += attn + active
			p.ActiveRouter += router
			p.TotalProj += int64(c.NRoutedExperts+c.NSharedExperts) * expert
			p.TotalRouter += router
			p.Matrices += 2*c.NRoutedExperts + 3
		} else {
			dense := 3 * hid * int64(c.IntermediateSize)
			layer += dense
			p.ActiveProj += attn + dense
			p.TotalProj += dense
			p.Matrices += 2
		}
		p.LayerActive = append(p.LayerActive, layer)
	}
	return p
}

// weightBytesPerToken is what one decoded token reads of the weights when
// projections take projBytes per parameter (bf16 2, fp8 1 plus its 128×128
// block scales, int8 1) and routers 2 (16-bit); lm_head takes headBytes.
func (p deepseekParams) weightBytesPerToken(projBytes, headBytes float64) float64 {
	return float64(p.ActiveProj)*projBytes + float64(p.ActiveRouter)*2 + float64(p.Head)*headBytes
}

// latentCacheBytes is what attention over pos cached positions reads of an
// absorbed-MLA cache in 16 bits: per layer and position the normalised
// latent and the rope key.
func latentCacheBytes(c *Config, pos float64) float64 {
	return float64(c.NumLayers) * pos * float64(c.KVLoraRank+c.QKRopeHeadDim) * 2
}

// fp8ProjBytes is bytes per fp8 parameter with one float32 scale per
// 128×128 block.
const fp8ProjBytes = 1 + 4.0/(128*128)

// TestDeepseekParams checks the arithmetic against the published counts:
// V2-Lite 15.7B parameters with 2.4B activated, V3 671B with 37B (both
// counting the embedding, which a token reads one row of).
func TestDeepseekParams(t *testing.T) {
	lite := countDeepseekParams(parseShape(t, "v2-lite", deepseekV2LiteShape()))
	total := lite.TotalProj + lite.TotalRouter + lite.Embed + lite.Head
	assert.InEpsilon(t, 15.7e9, float64(total), 0.01, "V2-Lite total %d", total)
	active := lite.ActiveProj + lite.ActiveRouter + lite.Head
	assert.InEpsilon(t, 2.4e9, float64(active), 0.05, "V2-Lite active %d", active)
	assert.Len(t, lite.LayerActive, 27)
	assert.Greater(t, lite.LayerActive[1], lite.LayerActive[0], "8 experts of 1408 outweigh one MLP of 10944")

	v3 := countDeepseekParams(parseShape(t, "v3", deepseekV3Shape(61, 3, false)))
	total = v3.TotalProj + v3.TotalRouter + v3.Embed + v3.Head
	assert.InEpsilon(t, 671e9, float64(total), 0.01, "V3 total %d", total)
	active = v3.ActiveProj + v3.ActiveRouter + v3.Head + v3.Embed
	assert.InEpsilon(t, 37e9, float64(active), 0.02, "V3 active %d", active)

	// The 4-layer slice the GPU benchmark builds: one dense layer and three
	// MoE layers of ≈ 0.58 B parameters read per token each.
	slice := countDeepseekParams(parseShape(t, "v3-slice", deepseekV3Shape(4, 1, true)))
	for _, n := range slice.LayerActive {
		assert.InDelta(t, 0.585e9, float64(n), 0.01e9)
	}
	assert.InDelta(t, 2*3.265e9, slice.weightBytesPerToken(2, 2), 0.02e9, "bf16 bytes per token")
}
