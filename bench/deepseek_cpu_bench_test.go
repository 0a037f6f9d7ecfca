package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/engine"
	"github.com/deepseek-go/deepseek-go/engine/safetensors"
)

// v2LiteConfig is deepseek-ai/DeepSeek-V2-Lite's config.json: 27 layers
// (the first dense), MLA without q_lora, 64 routed experts of 1408 top-6
// plus 2 shared. In int8 its 15.7 B parameters take ≈ 16 GB; a token reads
// ≈ 2.4 B of them.
const v2LiteConfig = `{"model_type": "deepseek_v2", "vocab_size": 102400, "hidden_size": 2048,
	"intermediate_size": 10944, "moe_intermediate_size": 1408, "num_hidden_layers": 27,
	"num_attention_heads": 16, "num_key_value_heads": 16, "max_position_embeddings": 163840,
	"rms_norm_eps": 1e-6, "rope_theta": 10000, "q_lora_rank": null, "kv_lora_rank": 512,
	"qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
	"n_routed_experts": 64, "n_shared_experts": 2, "num_experts_per_tok": 6,
	"first_k_dense_replace": 1, "moe_layer_freq": 1, "topk_method": "greedy", "n_group": 1,
	"topk_group": 1, "norm_topk_prob": false, "routed_scaling_factor": 1.0, "scoring_func": "softmax",
	"tie_word_embeddings": false, "rope_scaling": {"type": "yarn", "factor": 40,
	"original_max_position_embeddings": 4096, "beta_fast": 32, "beta_slow": 1,
	"mscale": 0.707, "mscale_all_dim": 0.707}}`

// v2LiteLayersEnv reduces V2-Lite's layer count (1 dense + the rest MoE) for
// a quick run: DSGO_BENCH_V2_LAYERS=4 builds ≈ 2.6 GB instead of ≈ 16 GB.
const v2LiteLayersEnv = "DSGO_BENCH_V2_LAYERS"

// fitV2Lite returns the V2-Lite config to build (layers from
// DSGO_BENCH_V2_LAYERS when set) and a Go memory limit for the build, or
// skips when the machine has too little memory available for it.
func fitV2Lite(b *testing.B, config string) (string, int64) {
	var shape map[string]any
	if err := json.Unmarshal([]byte(config), &shape); err != nil {
		b.Fatal(err)
	}
	if s := os.Getenv(v2LiteLayersEnv); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 2 {
			b.Fatalf("%s=%q: want a layer count >= 2", v2LiteLayersEnv, s)
		}
		shape["num_hidden_layers"] = n
	}
	data, err := json.Marshal(shape)
	if err != nil {
		b.Fatal(err)
	}
	cfg, err := engine.ParseConfig("v2-lite", data)
	if err != nil {
		b.Fatal(err)
	}
	// int8 projections, bf16 embedding table and routers, f32 norms, plus
	// headroom for the bf16 tensors being quantised and the scratch.
	p := countMoEParams(cfg)
	need := p.totalProj + p.head + 2*(p.embed+p.totalRouter) + 4<<30
	avail, err := memAvailable()
	switch {
	case err != nil:
		b.Skipf("v2-lite int8 needs ≈ %.1f GB of memory and the available amount is unknown: %v", float64(need)/1e9, err)
	case avail < need:
		b.Skipf("v2-lite int8 (%d layers) needs ≈ %.1f GB of memory, %.1f GB available; %s=4 builds a 4-layer slice",
			cfg.NumLayers, float64(need)/1e9, float64(avail)/1e9, v2LiteLayersEnv)
	}
	b.Logf("v2-lite: %d of 27 layers, ≈ %.1f GB to build, %.1f GB available", cfg.NumLayers, float64(need)/1e9, float64(avail)/1e9)
	// The bf16 tensors RandomSource makes are garbage once quantised: a
	// limit makes the collector reclaim them before the heap doubles.
	return string(data), need
}

// memAvailable reads MemAvailable from /proc/meminfo (Linux).
func memAvailable() (int64, error) {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "MemAvailable:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("/proc/meminfo has no MemAvailable")
}

// moeParams counts a DeepSeek V2/V3 model's parameters (as the engine's
// TestDeepseekParams arithmetic does): the projections and routers one
// decoded token reads (its experts and the shared ones, not the others),
// lm_head, and what the model holds. The embedding table gives one row per
// token and is not counted as read.
type moeParams struct {
	activeProj, activeRouter, head int64
	totalProj, totalRouter, embed  int64
}

func countMoEParams(c *engine.Config) moeParams {
	hid, H := int64(c.HiddenSize), int64(c.NumHeads)
	nope, rope, v, kvl := int64(c.QKNopeHeadDim), int64(c.QKRopeHeadDim), int64(c.VHeadDim), int64(c.KVLoraRank)
	attn := H * (nope + rope) * hid // q_proj
	if q := int64(c.QLoraRank); q > 0 {
		attn = q*hid + H*(nope+rope)*q // q_a_proj, q_b_proj
	}
	attn += (kvl+rope)*hid + H*(nope+v)*kvl + hid*H*v // kv_a_proj_with_mqa, kv_b_proj, o_proj
	expert := 3 * hid * int64(c.MoEIntermediateSize)
	p := moeParams{head: int64(c.VocabSize) * hid, embed: int64(c.VocabSize) * hid}
	for l := range c.NumLayers {
		p.activeProj += attn
		p.totalProj += attn
		if c.NRoutedExperts > 0 && l >= c.FirstKDenseReplace && l%c.MoELayerFreq == 0 {
			router := int64(c.NRoutedExperts) * hid
			p.activeProj += int64(c.NumExpertsPerTok+c.NSharedExperts) * expert
			p.totalProj += int64(c.NRoutedExperts+c.NSharedExperts) * expert
			p.activeRouter += router
			p.totalRouter += router
		} else {
			p.activeProj += 3 * hid * int64(c.IntermediateSize)
			p.totalProj += 3 * hid * int64(c.IntermediateSize)
		}
	}
	return p
}

// moeStreamedBytes is what one decode step reads of a MoE model's weights:
// projections and lm_head at 1 byte with int8 (per-row scales, < 1%, not
// counted) or in the source dtype, routers in the source dtype (kept
// unquantised).
func moeStreamedBytes(c *engine.Config, src safetensors.DType, int8 bool) int64 {
	p := countMoEParams(c)
	proj := int64(src.Size())
	if int8 {
		proj = 1
	}
	return (p.activeProj+p.head)*proj + p.activeRouter*int64(src.Size())
}

// TestMoEStreamedBytes: V2-Lite holds 15.7 B parameters and a token reads
// ≈ 2.4 B of them (the published counts), ≈ 2.45 GB a step in int8.
func TestMoEStreamedBytes(t *testing.T) {
	cfg, err := engine.ParseConfig("v2-lite", []byte(v2LiteConfig))
	require.NoError(t, err)
	p := countMoEParams(cfg)
	assert.InEpsilon(t, 15.7e9, float64(p.totalProj+p.totalRouter+p.head+p.embed), 0.01)
	assert.InEpsilon(t, 2.4e9, float64(p.activeProj+p.activeRouter+p.head), 0.05)
	assert.Equal(t, p.activeProj+p.head+2*p.activeRouter, moeStreamedBytes(cfg, safetensors.BF16, true), "int8")
	assert.Equal(t, 2*(p.activeProj+p.head+p.activeRouter), moeStreamedBytes(cfg, safetensors.BF16, false), "bf16")
	assert.InDelta(t, 2.45e9, float64(moeStreamedBytes(cfg, safetensors.BF16, true)), 0.05e9)
}
