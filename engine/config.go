// Package engine loads Hugging Face checkpoints of DeepSeek-family models
// (llama, qwen2, deepseek V1/V2/V3) and runs them through a kernels.Backend:
// config parsing, weights, the forward pass, sessions with their KV cache,
// generation and verification against reference logits.
package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/deepseek-go/deepseek-go/engine/layers"
	"github.com/deepseek-go/deepseek-go/kernels"
)

// Config is a model's config.json (plus generation_config.json when
// present), normalised: defaults applied, HeadDim filled in, EOS ids merged.
type Config struct {
	ModelType     string   `json:"model_type"`
	Architectures []string `json:"architectures"`
	TorchDType    string   `json:"torch_dtype"`

	VocabSize             int     `json:"vocab_size"`
	HiddenSize            int     `json:"hidden_size"`
	IntermediateSize      int     `json:"intermediate_size"`
	NumLayers             int     `json:"num_hidden_layers"`
	NumHeads              int     `json:"num_attention_heads"`
	NumKVHeads            int     `json:"num_key_value_heads"`
	HeadDim               int     `json:"head_dim"`
	MaxPositionEmbeddings int     `json:"max_position_embeddings"`
	RMSNormEps            float64 `json:"rms_norm_eps"`
	HiddenAct             string  `json:"hidden_act"`

	RopeTheta   float64      `json:"rope_theta"`
	RopeScaling *RopeScaling `json:"rope_scaling"`
	// RopeParameters is transformers v5's spelling (rope_theta and the
	// scaling in one object); normalize folds it into the two fields above.
	RopeParameters *RopeScaling `json:"rope_parameters"`

	TieWordEmbeddings bool `json:"tie_word_embeddings"`
	AttentionBias     bool `json:"attention_bias"`
	MLPBias           bool `json:"mlp_bias"`
	BOSTokenID        *int `json:"bos_token_id"`
	EOSTokenIDs       IDs  `json:"eos_token_id"`
	PadTokenID        *int `json:"pad_token_id"`
	UseSlidingWindow  bool `json:"use_sliding_window"`
	SlidingWindow     *int `json:"sliding_window"`

	// DeepSeek V2/V3 multi-head latent attention (0 = absent, e.g. q_lora_rank null).
	QLoraRank     int `json:"q_lora_rank"`
	KVLoraRank    int `json:"kv_lora_rank"`
	QKNopeHeadDim int `json:"qk_nope_head_dim"`
	QKRopeHeadDim int `json:"qk_rope_head_dim"`
	VHeadDim      int `json:"v_head_dim"`

	// DeepSeek mixture of experts.
	NRoutedExperts      int     `json:"n_routed_experts"`
	NSharedExperts      int     `json:"n_shared_experts"`
	NumExpertsPerTok    int     `json:"num_experts_per_tok"`
	MoEIntermediateSize int     `json:"moe_intermediate_size"`
	FirstKDenseReplace  int     `json:"first_k_dense_replace"`
	MoELayerFreq        int     `json:"moe_layer_freq"`
	TopKMethod          string  `json:"topk_method"`
	NGroup              int     `json:"n_group"`
	TopKGroup           int     `json:"topk_group"`
	NormTopKProb        bool    `json:"norm_topk_prob"`
	RoutedScalingFactor float64 `json:"routed_scaling_factor"`
	ScoringFunc         string  `json:"scoring_func"`

	QuantizationConfig *QuantizationConfig `json:"quantization_config"`

	// MLA is the DeepSeek V2/V3 attention path, "absorbed" (default when
	// empty) or "naive"; set by WithMLA, not read from config.json.
	MLA string `json:"-"`

	// Generation holds generation_config.json (zero when absent).
	Generation GenerationConfig `json:"-"`
}

// RopeScaling is config.json's rope_scaling (layers.RopeScaling).
type RopeScaling = layers.RopeScaling

// QuantizationConfig is config.json's quantization_config (DeepSeek fp8).
type QuantizationConfig struct {
	QuantMethod      string `json:"quant_method"`
	Fmt              string `json:"fmt"`
	ActivationScheme string `json:"activation_scheme"`
	WeightBlockSize  []int  `json:"weight_block_size"`
}

// GenerationConfig is generation_config.json: stop ids and the checkpoint's
// suggested sampling defaults.
type GenerationConfig struct {
	BOSTokenID        *int     `json:"bos_token_id"`
	EOSTokenIDs       IDs      `json:"eos_token_id"`
	DoSample          bool     `json:"do_sample"`
	Temperature       *float64 `json:"temperature"`
	TopP              *float64 `json:"top_p"`
	TopK              *int     `json:"top_k"`
	RepetitionPenalty *float64 `json:"repetition_penalty"`
	MaxNewTokens      *int     `json:"max_new_tokens"`
}

// IDs is a token id list that also decodes from a single integer or null
// (eos_token_id is either in the wild).
type IDs []int

// UnmarshalJSON implements json.Unmarshaler.
func (ids *IDs) UnmarshalJSON(b []byte) error {
	s := strings.TrimSpace(string(b))
	if s == "null" {
		*ids = nil
		return nil
	}
	if strings.HasPrefix(s, "[") {
		var l []int
		if err := json.Unmarshal(b, &l); err != nil {
			return err
		}
		*ids = l
		return nil
	}
	var v int
	if err := json.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("want an integer or a list of integers, got %s", s)
	}
	*ids = IDs{v}
	return nil
}

// ParseConfig parses config.json bytes (name is used in errors),
// applies defaults and validates the fields.
func ParseConfig(name string, data []byte) (*Config, error) {
	c := &Config{}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	if err := dec.Decode(c); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := c.normalize(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return c, nil
}

// LoadConfig reads config.json and, if present, generation_config.json from
// a checkpoint directory.
func LoadConfig(dir string) (*Config, error) {
	return LoadConfigFS(os.DirFS(dir), dir)
}

// LoadConfigFS is LoadConfig on a file system; label prefixes file names in
// errors.
func LoadConfigFS(fsys fs.FS, label string) (*Config, error) {
	name := filepath.Join(label, "config.json")
	data, err := fs.ReadFile(fsys, "config.json")
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	c, err := ParseConfig(name, data)
	if err != nil {
		return nil, err
	}
	gname := filepath.Join(label, "generation_config.json")
	gdata, err := fs.ReadFile(fsys, "generation_config.json")
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("reading %s: %w", gname, err)
	default:
		if err := c.SetGenerationConfig(gname, gdata); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// SetGenerationConfig parses generation_config.json and merges its EOS ids
// into the config's stop set.
func (c *Config) SetGenerationConfig(name string, data []byte) error {
	var g GenerationConfig
	if err := json.Unmarshal(data, &g); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	for _, id := range g.EOSTokenIDs {
		if id < 0 || id >= c.VocabSize {
			return fmt.Errorf("%s: eos_token_id %d outside vocab_size %d", name, id, c.VocabSize)
		}
	}
	c.Generation = g
	return nil
}

// StopIDs returns the union of config and generation_config EOS ids.
func (c *Config) StopIDs() []int {
	ids := slices.Clone([]int(c.EOSTokenIDs))
	for _, id := range c.Generation.EOSTokenIDs {
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids
}

// DefaultSampling returns the sampling settings generation_config.json
// suggests: greedy unless do_sample is set, then its temperature (default
// 1), top_p, top_k and repetition_penalty.
func (c *Config) DefaultSampling() SamplerOptions {
	g := c.Generation
	var o SamplerOptions
	if !g.DoSample {
		return o
	}
	o.Temperature = 1
	if g.Temperature != nil {
		o.Temperature = float32(*g.Temperature)
	}
	if g.TopP != nil {
		o.TopP = float32(*g.TopP)
	}
	if g.TopK != nil {
		o.TopK = *g.TopK
	}
	if g.RepetitionPenalty != nil {
		o.RepeatPenalty = float32(*g.RepetitionPenalty)
	}
	return o
}

// BOS returns the beginning-of-sequence id, from generation_config when it
// sets one, else config.json.
func (c *Config) BOS() (int, bool) {
	if c.Generation.BOSTokenID != nil {
		return *c.Generation.BOSTokenID, true
	}
	if c.BOSTokenID != nil {
		return *c.BOSTokenID, true
	}
	return 0, false
}

// normalize applies defaults then validates common and family fields.
func (c *Config) normalize() error {
	fam, ok := lookupFamily(c.ModelType)
	if !ok {
		if c.ModelType == "" {
			return fmt.Errorf("model_type missing; supported: %s", strings.Join(SupportedModelTypes(), ", "))
		}
		return fmt.Errorf("model_type %q not supported; supported: %s", c.ModelType, strings.Join(SupportedModelTypes(), ", "))
	}
	if p := c.RopeParameters; p != nil {
		if c.RopeTheta == 0 {
			c.RopeTheta = p.RopeTheta
		}
		if c.RopeScaling == nil && p.Type != "" && p.Type != "default" {
			c.RopeScaling = p
		}
	}
	if c.NumKVHeads == 0 {
		c.NumKVHeads = c.NumHeads // transformers' default: MHA
	}
	if c.RopeTheta == 0 {
		c.RopeTheta = 10000
	}
	if c.RMSNormEps == 0 {
		c.RMSNormEps = 1e-6
	}
	if c.HiddenAct == "" {
		c.HiddenAct = "silu"
	}
	if c.HeadDim == 0 && c.NumHeads > 0 {
		c.HeadDim = c.HiddenSize / c.NumHeads
	}
	if c.MoELayerFreq == 0 {
		c.MoELayerFreq = 1
	}
	if c.RoutedScalingFactor == 0 {
		c.RoutedScalingFactor = 1
	}
	for _, f := range []struct {
		name string
		v    int
	}{
		{"vocab_size", c.VocabSize},
		{"hidden_size", c.HiddenSize},
		{"intermediate_size", c.IntermediateSize},
		{"num_hidden_layers", c.NumLayers},
		{"num_attention_heads", c.NumHeads},
		{"num_key_value_heads", c.NumKVHeads},
		{"head_dim", c.HeadDim},
		{"max_position_embeddings", c.MaxPositionEmbeddings},
	} {
		if f.v <= 0 {
			return fmt.Errorf("config field %s must be positive, got %d", f.name, f.v)
		}
	}
	if c.NumHeads%c.NumKVHeads != 0 {
		return fmt.Errorf("config field num_attention_heads (%d) must be a multiple of num_key_value_heads (%d)", c.NumHeads, c.NumKVHeads)
	}
	if c.RMSNormEps < 0 {
		return fmt.Errorf("config field rms_norm_eps must be >= 0, got %g", c.RMSNormEps)
	}
	if c.RopeTheta <= 0 {
		return fmt.Errorf("config field rope_theta must be positive, got %g", c.RopeTheta)
	}
	if c.HiddenAct != "silu" && c.HiddenAct != "swish" {
		return fmt.Errorf("config field hidden_act %q not supported (only silu)", c.HiddenAct)
	}
	for _, id := range c.EOSTokenIDs {
		if id < 0 || id >= c.VocabSize {
			return fmt.Errorf("config field eos_token_id %d outside vocab_size %d", id, c.VocabSize)
		}
	}
	if c.BOSTokenID != nil && (*c.BOSTokenID < 0 || *c.BOSTokenID >= c.VocabSize) {
		return fmt.Errorf("config field bos_token_id %d outside vocab_size %d", *c.BOSTokenID, c.VocabSize)
	}
	if err := c.validateRopeScaling(); err != nil {
		return err
	}
	if q := c.QuantizationConfig; q != nil && q.WeightBlockSize != nil {
		if len(q.WeightBlockSize) != 2 || q.WeightBlockSize[0] <= 0 || q.WeightBlockSize[1] <= 0 {
			return fmt.Errorf("config field quantization_config.weight_block_size must be two positive ints, got %v", q.WeightBlockSize)
		}
	}
	if fam.Validate != nil {
		if err := fam.Validate(c); err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) validateRopeScaling() error {
	r := c.RopeScaling
	if r == nil {
		return nil
	}
	switch r.Type {
	case "", "default":
		r.Type = "default"
		return nil
	case "linear", "dynamic", "llama3", "yarn":
	default:
		return fmt.Errorf("config field rope_scaling.type %q not supported; supported: default, linear, dynamic, llama3, yarn", r.Type)
	}
	if r.Factor <= 0 {
		return fmt.Errorf("config field rope_scaling.factor must be positive for %s, got %g", r.Type, r.Factor)
	}
	if r.OriginalMaxPositionEmbeddings < 0 {
		return fmt.Errorf("config field rope_scaling.original_max_position_embeddings must be positive, got %d", r.OriginalMaxPositionEmbeddings)
	}
	if r.Type == "llama3" {
		if r.OriginalMaxPositionEmbeddings == 0 {
			return fmt.Errorf("config field rope_scaling.original_max_position_embeddings is required for llama3")
		}
		if r.LowFreqFactor <= 0 || r.HighFreqFactor <= r.LowFreqFactor {
			return fmt.Errorf("config fields rope_scaling.low_freq_factor (%g) and high_freq_factor (%g) must satisfy 0 < low < high", r.LowFreqFactor, r.HighFreqFactor)
		}
	}
	return nil
}

// Family is what a model_type plugs into the engine: config checks, the
// transformer blocks built from weights, and the KV cache shape.
type Family struct {
	// Validate checks family-specific config fields after the common ones
	// (optional).
	Validate func(c *Config) error
	// Build makes the model's transformer blocks; embeddings, final norm
	// and lm_head are loaded by the engine.
	Build func(b *Builder) ([]Block, error)
	// KVSpec returns the cache shape per layer; the session fills MaxTokens.
	KVSpec func(c *Config) kernels.KVSpec
}

// familyRegistry maps model_type to its Family. It is written only by
// RegisterFamily from package init functions (like database/sql drivers),
// so families in other files (deepseek*.go) need no edit here.
var familyRegistry = map[string]Family{}

// RegisterFamily adds a model family; call it from an init function.
// Registering a model_type twice is a programming error and panics.
func RegisterFamily(modelType string, f Family) {
	if _, dup := familyRegistry[modelType]; dup {
		panic("engine: family " + modelType + " registered twice")
	}
	if f.Build == nil || f.KVSpec == nil {
		panic("engine: family " + modelType + " lacks Build or KVSpec")
	}
	familyRegistry[modelType] = f
}

func lookupFamily(modelType string) (Family, bool) {
	f, ok := familyRegistry[modelType]
	return f, ok
}

// SupportedModelTypes lists registered model_type values, sorted.
func SupportedModelTypes() []string {
	out := make([]string, 0, len(familyRegistry))
	for k := range familyRegistry {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
