// Package layers holds the transformer layers the model families share
// (grouped-query and multi-head latent attention, the SwiGLU MLP, the
// DeepSeek mixture of experts, the pre-norm residual block), rope
// construction and the weight Builder that loads them. Layers run against
// a Context (an engine Session) and never see the engine itself.
package layers

import "github.com/deepseek-go/deepseek-go/kernels"

// Context is what a layer's forward pass needs from the sequence (or the
// scheduler step) it runs in: the backend, named scratch, the ops whose
// form depends on the step (rope and attention take per-row positions and
// the paged cache in a batched step), the shard group's all-reduce and the
// MoE routing scratch. engine.Session implements it.
type Context interface {
	// Backend is the backend ops run on.
	Backend() kernels.Backend
	// Chunk is the most rows a layer is asked to process at once; size
	// scratch buffers by it.
	Chunk() int
	// Scratch returns the buffer called name with at least n floats,
	// allocating it on first use. Layers share buffers by name, so use a
	// name per live intermediate (e.g. "q", "mlp.gate").
	Scratch(name string, n int) (kernels.Buffer, error)
	// MatMul is Backend().MatMul over the non-nil outs, without allocating
	// the output list.
	MatMul(x kernels.Buffer, n int, w kernels.Matrix, bias kernels.Buffer, outs Outs)
	// Rope rotates x for rows at pos0.. (one sequence) or at the batch's
	// per-row positions.
	Rope(x kernels.Buffer, n, heads, headDim, pos0 int, r *kernels.Rope)
	// MLAPack rotates MLA's query and rope key (ropeQ on q's heads, ropeK
	// on kr) and packs them as Backend().MLAPack: for one sequence in
	// that one op (MLAPackShape.RoPE at pos0), in a batched step (per-row
	// positions) as two Ropes and the op.
	MLAPack(k, qabs, q, lat, kr, weight kernels.Buffer, n, pos0 int, s kernels.MLAPackShape, ropeQ, ropeK *kernels.Rope)
	// Attention stores this chunk's keys and values in the cache of layer
	// and writes the attention of q over the cache to out.
	Attention(out, q, k, v kernels.Buffer, layer, pos0, n, heads int, scale float32)
	// AllReduce sums buf[0:n] over the tensor-parallel shards; a no-op
	// when not sharded.
	AllReduce(buf kernels.Buffer, n int)
	// Sharded reports whether the layers hold one shard's part of each
	// sum (AllReduce is not a no-op): their outputs must be reduced
	// before they join the residual stream, so they cannot add to it.
	Sharded() bool
	// MoERoutes returns routing results and expert scratch of spec made by
	// mb, shared by every MoE layer of the context (they run one after
	// another) and made on first use.
	MoERoutes(mb kernels.MoE, spec kernels.MoERoutesSpec) (kernels.MoERoutes, error)
}

// Outs are the outputs of one MatMul, one per part of a fused projection,
// nil after the last. An array, not a variadic list, so that calling
// Context.MatMul through the interface allocates nothing.
type Outs [4]kernels.Buffer
