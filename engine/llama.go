package engine

import (
	"fmt"
	"math"

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
	return preNormBlock(ctx, blk.cfg, x, n, pos0, blk.attnNorm, blk.mlpNorm, blk.attn, blk.mlp)
}

// feedForward is a block's MLP: a DenseMLP or a MoE.
type feedForward interface {
	Forward(ctx layers.Context, out, xn kernels.Buffer, n int) error
}

// preNormBlock runs the pre-norm residual block both families use on n
// rows of x: x += attn(norm(x)); x += ffn(norm(x)).
func preNormBlock(ctx layers.Context, c *Config, x kernels.Buffer, n, pos0 int, attnNorm, mlpNorm kernels.Buffer, attn attention, ffn feedForward) error {
	be := ctx.Backend()
	hid := c.HiddenSize
	eps := float32(c.RMSNormEps)
	xn, err := ctx.Scratch("xn", ctx.Chunk()*hid)
	if err != nil {
		return err
	}
	tmp, err := ctx.Scratch("tmp", ctx.Chunk()*hid)
	if err != nil {
		return err
	}
	be.RMSNorm(xn, x, attnNorm, n, hid, eps)
	if err := attn.Forward(ctx, tmp, xn, n, pos0); err != nil {
		return err
	}
	ctx.AllReduce(tmp, n*hid) // a shard's heads give a partial sum (shard.go)
	be.Add(x, x, tmp, n*hid)
	be.RMSNorm(xn, x, mlpNorm, n, hid, eps)
	if err := ffn.Forward(ctx, tmp, xn, n); err != nil {
		return err
	}
	ctx.AllReduce(tmp, n*hid)
	be.Add(x, x, tmp, n*hid)
	return nil
}

// GQA is grouped-query attention with a fused q|k|v projection (MHA when
// KVHeads == Heads), rope on the whole head, softmax scale 1/sqrt(head_dim).
type GQA struct {
	Layer                   int
	Heads, KVHeads, HeadDim int
	QKV                     kernels.Matrix
	QKVBias                 kernels.Buffer // nil without bias
	O                       kernels.Matrix
	OBias                   kernels.Buffer
	Rope                    *kernels.Rope
	Scale                   float32
}

// LoadGQA loads q_proj, k_proj, v_proj, o_proj under prefix (e.g.
// "model.layers.3.self_attn."), fusing q|k|v and their biases. In a
// sharded model it keeps the Builder's rank's heads (shard.go).
func LoadGQA(b *Builder, prefix string, layer int, qkvBias, oBias bool, rope *kernels.Rope) (*GQA, error) {
	c := b.Config
	h, kvh, hd := c.NumHeads, c.NumKVHeads, c.HeadDim
	qh, kh, err := gqaShard(h, kvh, b.rank, b.shardCount())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", prefix, err)
	}
	a := &GQA{Layer: layer, Heads: qh.len(), KVHeads: kh.len(), HeadDim: hd, Rope: rope, Scale: float32(1 / math.Sqrt(float64(hd)))}
	specs := []MatSpec{
		{prefix + "q_proj.weight", h * hd, c.HiddenSize},
		{prefix + "k_proj.weight", kvh * hd, c.HiddenSize},
		{prefix + "v_proj.weight", kvh * hd, c.HiddenSize},
	}
	qr, kr := qh.times(hd), kh.times(hd)
	if a.QKV, err = b.matrix(b.Int8, specs, qr, kr, kr); err != nil {
		return nil, err
	}
	if qkvBias {
		if a.QKVBias, err = b.vectorRows([]MatSpec{
			{Name: prefix + "q_proj.bias", Rows: h * hd},
			{Name: prefix + "k_proj.bias", Rows: kvh * hd},
			{Name: prefix + "v_proj.bias", Rows: kvh * hd}}, qr, kr, kr); err != nil {
			return nil, err
		}
	}
	if a.O, err = b.matrixCols(MatSpec{prefix + "o_proj.weight", c.HiddenSize, h * hd}, qr); err != nil {
		return nil, err
	}
	if oBias && b.rank == 0 { // row-split: the bias is added once
		if a.OBias, err = b.Vector(prefix+"o_proj.bias", c.HiddenSize); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// Forward writes attention of xn [n, hidden] (already normed) to out
// [n, hidden], storing this chunk's keys and values in the session cache.
func (a *GQA) Forward(ctx layers.Context, out, xn kernels.Buffer, n, pos0 int) error {
	ch := ctx.Chunk()
	qd, kvd := a.Heads*a.HeadDim, a.KVHeads*a.HeadDim
	q, err := ctx.Scratch("attn.q", ch*qd)
	if err != nil {
		return err
	}
	k, err := ctx.Scratch("attn.k", ch*kvd)
	if err != nil {
		return err
	}
	v, err := ctx.Scratch("attn.v", ch*kvd)
	if err != nil {
		return err
	}
	att, err := ctx.Scratch("attn.out", ch*qd)
	if err != nil {
		return err
	}
	ctx.MatMul(xn, n, a.QKV, a.QKVBias, layers.Outs{q, k, v})
	ctx.Rope(q, n, a.Heads, a.HeadDim, pos0, a.Rope)
	ctx.Rope(k, n, a.KVHeads, a.HeadDim, pos0, a.Rope)
	ctx.Attention(att, q, k, v, a.Layer, pos0, n, a.Heads, a.Scale)
	ctx.MatMul(att, n, a.O, a.OBias, layers.Outs{out})
	return nil
}

// DenseMLP is the SwiGLU feed-forward down(silu(gate(x)) * up(x)) with a
// fused gate|up matrix; MoE experts and shared experts reuse it.
type DenseMLP struct {
	Inter      int
	GateUp     kernels.Matrix
	GateUpBias kernels.Buffer
	Down       kernels.Matrix
	DownBias   kernels.Buffer
}

// LoadDenseMLP loads gate_proj, up_proj, down_proj under prefix (e.g.
// "model.layers.0.mlp."). In a sharded model it keeps the Builder's
// rank's slice of the intermediate features (shard.go).
func LoadDenseMLP(b *Builder, prefix string, hidden, inter int, bias bool) (*DenseMLP, error) {
	ir := splitRange(inter, b.rank, b.shardCount())
	if ir.len() == 0 {
		return nil, fmt.Errorf("%s: intermediate size %d is smaller than %d shards", prefix, inter, b.shardCount())
	}
	return loadDenseMLP(b, prefix, hidden, inter, bias, ir)
}

// loadDenseMLP loads the intermediate features ir of an MLP (all of them
// for a MoE expert, which lives whole on one shard).
func loadDenseMLP(b *Builder, prefix string, hidden, inter int, bias bool, ir rowRange) (*DenseMLP, error) {
	p := &DenseMLP{Inter: ir.len()}
	var err error
	if p.GateUp, err = b.matrix(b.Int8, []MatSpec{{prefix + "gate_proj.weight", inter, hidden}, {prefix + "up_proj.weight", inter, hidden}}, ir, ir); err != nil {
		return nil, err
	}
	if p.Down, err = b.matrixCols(MatSpec{prefix + "down_proj.weight", hidden, inter}, ir); err != nil {
		return nil, err
	}
	if bias {
		if p.GateUpBias, err = b.vectorRows([]MatSpec{{Name: prefix + "gate_proj.bias", Rows: inter}, {Name: prefix + "up_proj.bias", Rows: inter}}, ir, ir); err != nil {
			return nil, err
		}
	}
	if bias && ir.lo == 0 { // row-split: the bias is added by the first slice only
		if p.DownBias, err = b.Vector(prefix+"down_proj.bias", hidden); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Forward writes mlp(xn) for n rows to out [n, hidden]. Scratch is sized
// by the session chunk, so n must not exceed ctx.Chunk().
func (p *DenseMLP) Forward(ctx layers.Context, out, xn kernels.Buffer, n int) error {
	be := ctx.Backend()
	gate, err := ctx.Scratch("mlp.gate", ctx.Chunk()*p.Inter)
	if err != nil {
		return err
	}
	up, err := ctx.Scratch("mlp.up", ctx.Chunk()*p.Inter)
	if err != nil {
		return err
	}
	ctx.MatMul(xn, n, p.GateUp, p.GateUpBias, layers.Outs{gate, up})
	be.SwiGLU(gate, gate, up, n*p.Inter)
	ctx.MatMul(gate, n, p.Down, p.DownBias, layers.Outs{out})
	return nil
}
