package synth

import (
	"fmt"
	"slices"
	"strings"
)

// VocabSize is the vocab_size of every shape: DeepSeek-V3's (128815
// tokenizer ids, padded), because every checkpoint carries V3's tokenizer
// and each id it produces needs an embedding row. The per-layer widths are
// the named model's; only the embedding and output head are V3-sized.
const VocabSize = 129280

// Shape is a model architecture to synthesise: a config.json without the
// vocabulary and dtype fields, which Write fills in.
type Shape struct {
	Name string
	// About says what the shape is and where it deviates from the real
	// model.
	About string
	// NativeVocab is the real model's vocab_size (for parameter counts).
	NativeVocab int
	// DefaultDType is "bf16" or "fp8".
	DefaultDType string
	// Config holds the config.json keys of the architecture.
	Config map[string]any
	// Test marks tiny shapes for tests and smoke runs.
	Test bool
}

// shapes are the benchmarked architectures, with the hub config.json
// values of each model.
var shapes = []Shape{
	{
		Name: "deepseek-coder-1.3b", NativeVocab: 32256, DefaultDType: "bf16",
		About: "deepseek-ai/deepseek-coder-1.3b-base: llama, 24 layers, hidden 2048, MHA 16 heads, linear rope x4",
		Config: map[string]any{
			"model_type": "llama", "architectures": []string{"LlamaForCausalLM"},
			"hidden_size": 2048, "intermediate_size": 5504, "num_hidden_layers": 24,
			"num_attention_heads": 16, "num_key_value_heads": 16, "max_position_embeddings": 16384,
			"rms_norm_eps": 1e-6, "rope_theta": 100000.0, "hidden_act": "silu",
			"rope_scaling":   map[string]any{"type": "linear", "factor": 4.0},
			"attention_bias": false,
		},
	},
	{
		Name: "deepseek-llm-7b", NativeVocab: 102400, DefaultDType: "bf16",
		About: "deepseek-ai/deepseek-llm-7b-base: llama, 30 layers, hidden 4096, MHA 32 heads",
		Config: map[string]any{
			"model_type": "llama", "architectures": []string{"LlamaForCausalLM"},
			"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 30,
			"num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 4096,
			"rms_norm_eps": 1e-6, "rope_theta": 10000.0, "hidden_act": "silu", "attention_bias": false,
		},
	},
	{
		Name: "deepseek-v2-lite", NativeVocab: 102400, DefaultDType: "bf16",
		About: "deepseek-ai/DeepSeek-V2-Lite: 27 layers, hidden 2048, MLA (kv_lora 512, no q_lora), 64 routed + 2 shared experts, top-6, YaRN x40",
		Config: map[string]any{
			"model_type": "deepseek_v2", "architectures": []string{"DeepseekV2ForCausalLM"},
			"hidden_size": 2048, "intermediate_size": 10944, "moe_intermediate_size": 1408,
			"num_hidden_layers": 27, "num_attention_heads": 16, "num_key_value_heads": 16,
			"max_position_embeddings": 163840, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "hidden_act": "silu",
			"q_lora_rank": nil, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
			"n_routed_experts": 64, "n_shared_experts": 2, "num_experts_per_tok": 6, "first_k_dense_replace": 1,
			"moe_layer_freq": 1, "topk_method": "greedy", "n_group": 1, "topk_group": 1, "norm_topk_prob": false,
			"routed_scaling_factor": 1.0, "scoring_func": "softmax", "attention_bias": false,
			"rope_scaling": map[string]any{"type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096,
				"beta_fast": 32, "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707},
		},
	},
	{
		Name: "deepseek-v3-slice", NativeVocab: 129280, DefaultDType: "fp8",
		About: "deepseek-ai/DeepSeek-V3 widths (hidden 7168, MLA q_lora 1536/kv_lora 512, 256 routed experts top-8 in 8 groups, fp8 128x128 blocks) with 4 of its 61 layers: 3 dense + 1 MoE",
		Config: map[string]any{
			"model_type": "deepseek_v3", "architectures": []string{"DeepseekV3ForCausalLM"},
			"hidden_size": 7168, "intermediate_size": 18432, "moe_intermediate_size": 2048,
			"num_hidden_layers": 4, "num_attention_heads": 128, "num_key_value_heads": 128,
			"max_position_embeddings": 163840, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "hidden_act": "silu",
			"q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
			"n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8, "first_k_dense_replace": 3,
			"moe_layer_freq": 1, "topk_method": "noaux_tc", "n_group": 8, "topk_group": 4, "norm_topk_prob": true,
			"routed_scaling_factor": 2.5, "scoring_func": "sigmoid", "attention_bias": false,
			"rope_scaling": map[string]any{"type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096,
				"beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
		},
	},
	{
		Name: "tiny-llama", NativeVocab: VocabSize, DefaultDType: "bf16", Test: true,
		About: "test shape: llama, 2 layers, hidden 64, GQA 4/2",
		Config: map[string]any{
			"model_type": "llama", "architectures": []string{"LlamaForCausalLM"},
			"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
			"num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
			"rms_norm_eps": 1e-6, "rope_theta": 10000.0, "hidden_act": "silu",
		},
	},
	{
		Name: "tiny-v3", NativeVocab: VocabSize, DefaultDType: "fp8", Test: true,
		About: "test shape: deepseek_v3, 2 layers (1 dense + 1 MoE of 8 experts in 4 groups), hidden 64, fp8 blocks with partial edges",
		Config: map[string]any{
			"model_type": "deepseek_v3", "architectures": []string{"DeepseekV3ForCausalLM"},
			"hidden_size": 64, "intermediate_size": 160, "moe_intermediate_size": 32,
			"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
			"max_position_embeddings": 256, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "hidden_act": "silu",
			"q_lora_rank": 48, "kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16,
			"n_routed_experts": 8, "n_shared_experts": 1, "num_experts_per_tok": 2, "first_k_dense_replace": 1,
			"moe_layer_freq": 1, "topk_method": "noaux_tc", "n_group": 4, "topk_group": 2, "norm_topk_prob": true,
			"routed_scaling_factor": 2.5, "scoring_func": "sigmoid",
			"rope_scaling": map[string]any{"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
				"beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
		},
	},
}

// Shapes lists the shapes, full-size first.
func Shapes() []Shape {
	out := make([]Shape, len(shapes))
	for i, s := range shapes {
		s.Config = cloneMap(s.Config)
		out[i] = s
	}
	return out
}

// Lookup finds a shape by name (case-insensitive).
func Lookup(name string) (Shape, error) {
	for _, s := range shapes {
		if strings.EqualFold(s.Name, name) {
			s.Config = cloneMap(s.Config)
			return s, nil
		}
	}
	names := make([]string, len(shapes))
	for i, s := range shapes {
		names[i] = s.Name
	}
	return Shape{}, fmt.Errorf("synth: unknown shape %q; known: %s", name, strings.Join(names, ", "))
}

func cloneMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		switch v := v.(type) {
		case map[string]any:
			out[k] = cloneMap(v)
		case []string:
			out[k] = slices.Clone(v)
		default:
			out[k] = v
		}
	}
	return out
}
