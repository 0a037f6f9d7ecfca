package layers

import (
	"github.com/deepseek-go/deepseek-go/kernels"
)

// Attention is a block's attention: GQA (llama, qwen2, DeepSeek V1) or
// MLA (V2/V3).
type Attention interface {
	Forward(ctx Context, out, xn kernels.Buffer, n, pos0 int) error
}

// FeedForward is a block's MLP: a DenseMLP or a MoE.
type FeedForward interface {
	Forward(ctx Context, out, xn kernels.Buffer, n int) error
}

// PreNormBlock runs the pre-norm residual block both families use on n
// rows of x [n, hid]: x += attn(norm(x)); x += ffn(norm(x)), the norms
// RMSNorm with epsilon eps.
func PreNormBlock(ctx Context, hid int, eps float32, x kernels.Buffer, n, pos0 int, attnNorm, mlpNorm kernels.Buffer, attn Attention, ffn FeedForward) error {
	be := ctx.Backend()
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
	ctx.AllReduce(tmp, n*hid) // a shard's heads give a partial sum (engine/shard.go)
	be.Add(x, x, tmp, n*hid)
	be.RMSNorm(xn, x, mlpNorm, n, hid, eps)
	if err := ffn.Forward(ctx, tmp, xn, n); err != nil {
		return err
	}
	ctx.AllReduce(tmp, n*hid)
	be.Add(x, x, tmp, n*hid)
	return nil
}
