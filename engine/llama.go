package engine

import (
	"fmt"

	"github.com/deepseek-go/deepseek-go/engine/layers"
	"github.com/deepseek-go/deepseek-go/kernels"
)

// The llama family (deepseek-llm, deepseek-coder, R1-Distill-Llama) and
// qwen2 (R1-Distill-Qwen): pre-norm blocks of GQA attention with rotate-half
// rope and a SwiGLU MLP. qwen2 always has q/k/v biases.
func init() {
	RegisterFamily("llama", Family{Build: buildLlama, KVSpec: llamaKVSpec})
	RegisterFamily("qwen2", Family{Validate: validateQwen2, Build: buildLlama, KVSpec: llamaKVSpec})
}

func validateQwen2(c *Config) error {
	if c.UseSlidingWindow {
		return fmt.Errorf("config field use_sliding_window: sliding-window attention is not supported")
	}
	return nil
}

func llamaKVSpec(c *Config) kernels.KVSpec {
	return kernels.KVSpec{Layers: c.NumLayers, KVHeads: c.NumKVHeads, KDim: c.HeadDim, VDim: c.HeadDim}
}

// LayerPrefix is the hub name prefix of layer i's tensors.
func LayerPrefix(i int) string { return fmt.Sprintf("model.layers.%d.", i) }

func buildLlama(b *Builder) ([]Block, error) {
	c := b.Config
	rope, err := NewRope(c, 0, c.HeadDim, false)
	if err != nil {
		return nil, err
	}
	qkvBias := c.AttentionBias || c.ModelType == "qwen2"
	blocks := make([]Block, c.NumLayers)
	for i := range blocks {
		p := LayerPrefix(i)
		blk := &llamaBlock{layer: i, cfg: c, rope: rope}
		if blk.attn, err = LoadGQA(b, p+"self_attn.", i, qkvBias, c.AttentionBias, rope); err != nil {
			return nil, err
		}
		if blk.attnNorm, err = b.Vector(p+"input_layernorm.weight", c.HiddenSize); err != nil {
			return nil, err
		}
		if blk.mlpNorm, err = b.Vector(p+"post_attention_layernorm.weight", c.HiddenSize); err != nil {
			return nil, err
		}
		if blk.mlp, err = LoadDenseMLP(b, p+"mlp.", c.HiddenSize, c.IntermediateSize, c.MLPBias); err != nil {
			return nil, err
		}
		blocks[i] = blk
	}
	return blocks, nil
}

// llamaBlock is x += attn(norm(x)); x += mlp(norm(x)).
type llamaBlock struct {
	layer             int
	cfg               *Config
	rope              *kernels.Rope
	attnNorm, mlpNorm kernels.Buffer
	attn              *GQA
	mlp               *DenseMLP
}

func (blk *llamaBlock) Forward(ctx layers.Context, x kernels.Buffer, n, pos0 int) error {
	return layers.PreNormBlock(ctx, blk.cfg.HiddenSize, float32(blk.cfg.RMSNormEps), x, n, pos0, blk.attnNorm, blk.mlpNorm, blk.attn, blk.mlp)
}

// GQA is grouped-query attention with a fused q|k|v projection
// (layers.GQA).
type GQA = layers.GQA

// LoadGQA loads q_proj, k_proj, v_proj, o_proj under prefix (e.g.
// "model.layers.3.self_attn.") with the config's heads (layers.LoadGQA).
func LoadGQA(b *Builder, prefix string, layer int, qkvBias, oBias bool, rope *kernels.Rope) (*GQA, error) {
	c := b.Config
	sh := layers.GQAShape{Hidden: c.HiddenSize, Heads: c.NumHeads, KVHeads: c.NumKVHeads, HeadDim: c.HeadDim}
	return layers.LoadGQA(b.Builder, prefix, layer, sh, qkvBias, oBias, rope)
}

// DenseMLP is the SwiGLU feed-forward (layers.DenseMLP).
type DenseMLP = layers.DenseMLP

// LoadDenseMLP loads gate_proj, up_proj, down_proj under prefix
// (layers.LoadDenseMLP).
func LoadDenseMLP(b *Builder, prefix string, hidden, inter int, bias bool) (*DenseMLP, error) {
	return layers.LoadDenseMLP(b.Builder, prefix, hidden, inter, bias)
}
