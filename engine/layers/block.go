package layers

import (
	"github.com/deepseek-go/deepseek-go/kernels"
)

// Attention is a block's attention: GQA (llama, qwen2, DeepSeek V1) or
// MLA (V2/V3).
type Attention interface {
	// Forward writes the attention of xn [n, hidden] (already normed) to
	// out [n, hidden], or adds it to out when add is set (the residual
	// stream: the output projection accumulates, no separate Add).
	Forward(ctx Context, out, xn kernels.Buffer, n, pos0 int, add bool) error
}

// FeedForward is a block's MLP: a DenseMLP or a MoE.
type FeedForward interface {
	// Forward writes the MLP of xn [n, hidden] to out [n, hidden], or adds
	// it to out when add is set, as Attention.Forward.
	Forward(ctx Context, out, xn kernels.Buffer, n int, add bool) error
}

// PreNormBlock runs the pre-norm residual block both families use on n
// rows of x [n, hid]: x += attn(norm(x)); x += ffn(norm(x)), the norms
// RMSNorm with epsilon eps. Unsharded, attn and ffn add their outputs to
// x themselves (MatMulAdd, MoEExperts' accumulate); a shard's outputs are
// partial sums, so they go through a temporary, the all-reduce and Add.
func PreNormBlock(ctx Context, hid int, eps float32, x kernels.Buffer, n, pos0 int, attnNorm, mlpNorm kernels.Buffer, attn Attention, ffn FeedForward) error {
	be := ctx.Backend()
	xn, err := ctx.Scratch("xn", ctx.Chunk()*hid)
	if err != nil {
		return err
	}
	if !ctx.Sharded() {
		be.RMSNorm(xn, x, attnNorm, n, hid, eps)
		if err := attn.Forward(ctx, x, xn, n, pos0, true); err != nil {
			return err
		}
		be.RMSNorm(xn, x, mlpNorm, n, hid, eps)
		return ffn.Forward(ctx, x, xn, n, true)
	}
	tmp, err := ctx.Scratch("tmp", ctx.Chunk()*hid)
	if err != nil {
		return err
	}
	be.RMSNorm(xn, x, attnNorm, n, hid, eps)
	if err := attn.Forward(ctx, tmp, xn, n, pos0, false); err != nil {
		return err
	}
	ctx.AllReduce(tmp, n*hid) // a shard's heads give a partial sum (engine/shard.go)
	be.Add(x, x, tmp, n*hid)
	be.RMSNorm(xn, x, mlpNorm, n, hid, eps)
	if err := ffn.Forward(ctx, tmp, xn, n, false); err != nil {
		return err
	}
	ctx.AllReduce(tmp, n*hid)
	be.Add(x, x, tmp, n*hid)
	return nil
}

// project writes x[n, w.Cols]·wᵀ (+ bias) to out, or adds it to out when
// add is set (MatMulAdd, which may use the block's "tmp" scratch).
func project(ctx Context, out, x kernels.Buffer, n int, w kernels.Matrix, bias kernels.Buffer, add bool) error {
	if !add {
		ctx.MatMul(x, n, w, bias, Outs{out})
		return nil
	}
	tmp, err := ctx.Scratch("tmp", ctx.Chunk()*w.Rows())
	if err != nil {
		return err
	}
	ctx.Backend().MatMulAdd(out, tmp, x, n, w, bias)
	return nil
}
