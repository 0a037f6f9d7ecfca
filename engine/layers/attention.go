package layers

import (
	"fmt"
	"math"

	"github.com/deepseek-go/deepseek-go/kernels"
)

// mlaNormEps is the epsilon of q_a_layernorm and kv_a_layernorm: transformers
// and DeepSeek's code build both with the RMSNorm default 1e-6, not
// rms_norm_eps.
const mlaNormEps = 1e-6

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

// GQAShape is the geometry LoadGQA reads from a model config.
type GQAShape struct {
	Hidden, Heads, KVHeads, HeadDim int
}

// LoadGQA loads q_proj, k_proj, v_proj, o_proj under prefix (e.g.
// "model.layers.3.self_attn."), fusing q|k|v and their biases. In a
// sharded model it keeps the Builder's rank's heads (shard.go).
func LoadGQA(b *Builder, prefix string, layer int, sh GQAShape, qkvBias, oBias bool, rope *kernels.Rope) (*GQA, error) {
	h, kvh, hd := sh.Heads, sh.KVHeads, sh.HeadDim
	qh, kh, err := GQAShard(h, kvh, b.Rank, b.shardCount())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", prefix, err)
	}
	a := &GQA{Layer: layer, Heads: qh.Len(), KVHeads: kh.Len(), HeadDim: hd, Rope: rope, Scale: float32(1 / math.Sqrt(float64(hd)))}
	specs := []MatSpec{
		{prefix + "q_proj.weight", h * hd, sh.Hidden},
		{prefix + "k_proj.weight", kvh * hd, sh.Hidden},
		{prefix + "v_proj.weight", kvh * hd, sh.Hidden},
	}
	qr, kr := qh.Times(hd), kh.Times(hd)
	if a.QKV, err = b.MatrixRows(b.Int8, specs, qr, kr, kr); err != nil {
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
	if a.O, err = b.matrixCols(MatSpec{prefix + "o_proj.weight", sh.Hidden, h * hd}, qr); err != nil {
		return nil, err
	}
	if oBias && b.Rank == 0 { // row-split: the bias is added once
		if a.OBias, err = b.Vector(prefix+"o_proj.bias", sh.Hidden); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// Forward writes (or adds) attention of xn [n, hidden] (already normed)
// to out [n, hidden], storing this chunk's keys and values in the session
// cache (Attention).
func (a *GQA) Forward(ctx Context, out, xn kernels.Buffer, n, pos0 int, add bool) error {
	qd, kvd := a.Heads*a.HeadDim, a.KVHeads*a.HeadDim
	var q, k, v, att kernels.Buffer
	sc := scratcher{ctx: ctx}
	sc.get(&q, "attn.q", qd)
	sc.get(&k, "attn.k", kvd)
	sc.get(&v, "attn.v", kvd)
	sc.get(&att, "attn.out", qd)
	if sc.err != nil {
		return sc.err
	}
	ctx.MatMul(xn, n, a.QKV, a.QKVBias, Outs{q, k, v})
	ctx.Rope(q, n, a.Heads, a.HeadDim, pos0, a.Rope)
	ctx.Rope(k, n, a.KVHeads, a.HeadDim, pos0, a.Rope)
	ctx.Attention(att, q, k, v, a.Layer, pos0, n, a.Heads, a.Scale)
	return project(ctx, out, att, n, a.O, a.OBias, add)
}

// MLA is DeepSeek's multi-head latent attention for one layer.
type MLA struct {
	Layer                        int
	Heads, Nope, Rope, V, KVLora int
	QLora                        int
	// In is every projection of the normed input in one matrix (one
	// launch at decode), parts: q_a_proj (q_lora_rank > 0) or this
	// shard's q_proj rows, then kv_a_proj_with_mqa's latent and rope key.
	In           kernels.Matrix
	QB           kernels.Matrix // q_b_proj (q_lora_rank > 0)
	QANorm       kernels.Buffer
	KVANorm      kernels.Buffer
	KVB          kernels.Matrix // naive: kv_b_proj as stored
	WUKT         kernels.Matrix // absorbed: a part per head, W_UKᵀ [kv_lora, nope] (MatMulHeads)
	WUV          kernels.Matrix // absorbed: a part per head, W_UV [v, kv_lora]
	O            kernels.Matrix
	RopeQ, RopeK kernels.Rope // on the query heads (Off = nope) and on the rope key
	Scale        float32
	Absorbed     bool
}

// MLAShape is the geometry LoadMLA reads from a DeepSeek V2/V3 config
// (hidden_size, num_attention_heads, qk_nope_head_dim, qk_rope_head_dim,
// v_head_dim, kv_lora_rank, q_lora_rank) and the attention path.
type MLAShape struct {
	Hidden, Heads, Nope, Rope, V, KVLora, QLora int
	Absorbed                                    bool
}

// LoadMLA loads one layer's attention weights under prefix.
func LoadMLA(b *Builder, prefix string, layer int, sh MLAShape, rope *kernels.Rope, scale float32) (*MLA, error) {
	hid, H := sh.Hidden, sh.Heads
	// A shard keeps its heads of q_b/q, kv_b and o; the latent
	// projections (q_a, kv_a) are replicated (shard.go).
	hr, err := HeadShard(H, b.Rank, b.shardCount())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", prefix, err)
	}
	a := &MLA{Layer: layer, Heads: hr.Len(), Nope: sh.Nope, Rope: sh.Rope, V: sh.V,
		KVLora: sh.KVLora, QLora: sh.QLora, Scale: scale, Absorbed: sh.Absorbed}
	// One rope at two offsets: Context.MLAPack rotates both with RopeK's
	// frequencies in one op.
	a.RopeQ, a.RopeK = *rope, *rope
	a.RopeQ.Off = a.Nope
	qh := a.Nope + a.Rope
	var qin kernels.HostMatrix
	if a.QLora > 0 {
		if qin, err = b.HostStored(MatSpec{prefix + "q_a_proj.weight", a.QLora, hid}); err != nil {
			return nil, err
		}
		if a.QANorm, err = b.Vector(prefix+"q_a_layernorm.weight", a.QLora); err != nil {
			return nil, err
		}
		if a.QB, err = b.MatrixRows(b.Int8, []MatSpec{{prefix + "q_b_proj.weight", H * qh, a.QLora}}, hr.Times(qh)); err != nil {
			return nil, err
		}
	} else {
		if qin, err = b.HostStored(MatSpec{prefix + "q_proj.weight", H * qh, hid}); err != nil {
			return nil, err
		}
		qin = sliceRows(qin, hr.Times(qh))
	}
	kva, err := b.HostStored(MatSpec{prefix + "kv_a_proj_with_mqa.weight", a.KVLora + a.Rope, hid})
	if err != nil {
		return nil, err
	}
	in := []kernels.HostMatrix{qin,
		rowSlice(kva, 0, a.KVLora, kva.Name+"[latent]"),
		rowSlice(kva, a.KVLora, a.KVLora+a.Rope, kva.Name+"[rope]"),
	}
	if err := widenMixed(in); err != nil { // fused parts share a dtype
		return nil, err
	}
	if a.In, err = uploadParts(b, in); err != nil {
		return nil, err
	}
	if a.KVANorm, err = b.Vector(prefix+"kv_a_layernorm.weight", a.KVLora); err != nil {
		return nil, err
	}
	per := a.Nope + a.V
	kvb, err := b.HostStored(MatSpec{prefix + "kv_b_proj.weight", H * per, a.KVLora})
	if err != nil {
		return nil, err
	}
	kvb = sliceRows(kvb, hr.Times(per)) // this shard's heads, renumbered from 0
	H = a.Heads
	if !a.Absorbed {
		if a.KVB, err = uploadParts(b, []kernels.HostMatrix{kvb}); err != nil {
			return nil, err
		}
	} else {
		// One matrix of H parts each: MatMulHeads runs every head at once.
		uk, uv := make([]kernels.HostMatrix, H), make([]kernels.HostMatrix, H)
		for h := range H {
			ukRows := rowSlice(kvb, h*per, h*per+a.Nope, "")
			uv[h] = rowSlice(kvb, h*per+a.Nope, (h+1)*per, fmt.Sprintf("%s[W_UV %d]", kvb.Name, hr.Lo+h))
			// fp8 blocks do not survive the transpose, and W_UV follows
			// W_UK (the halves are small: 2·heads·128·kv_lora values).
			if ukRows.DType == kernels.FP8 {
				if err := WidenHost(&ukRows); err != nil {
					return nil, err
				}
				if err := WidenHost(&uv[h]); err != nil {
					return nil, err
				}
			}
			uk[h] = transposeHost(ukRows, fmt.Sprintf("%s[W_UK %d]ᵀ", kvb.Name, hr.Lo+h))
		}
		if a.WUKT, err = uploadParts(b, uk); err != nil {
			return nil, err
		}
		if a.WUV, err = uploadParts(b, uv); err != nil {
			return nil, err
		}
	}
	if a.O, err = b.matrixCols(MatSpec{prefix + "o_proj.weight", hid, sh.Heads * a.V}, hr.Times(a.V)); err != nil {
		return nil, err
	}
	return a, nil
}

// mlaScratch names the session buffers MLA uses.
type mlaScratch struct {
	qa, q, lat, kr, k, attn kernels.Buffer
	kvb, v                  kernels.Buffer // naive
	qabs, olat              kernels.Buffer // absorbed
}

// scratcher gets session buffers of a chunk's rows, each width floats a
// row, keeping the first error (the later gets then do nothing).
type scratcher struct {
	ctx Context
	err error
}

func (s *scratcher) get(dst *kernels.Buffer, name string, width int) {
	if s.err == nil {
		*dst, s.err = s.ctx.Scratch(name, s.ctx.Chunk()*width)
	}
}

func (a *MLA) scratch(ctx Context) (mlaScratch, error) {
	H, qh := a.Heads, a.Nope+a.Rope
	var sc mlaScratch
	g := scratcher{ctx: ctx}
	if a.QLora > 0 {
		g.get(&sc.qa, "mla.qa", a.QLora)
	}
	g.get(&sc.q, "mla.q", H*qh)
	g.get(&sc.lat, "mla.latent", a.KVLora)
	g.get(&sc.kr, "mla.rope_k", a.Rope)
	g.get(&sc.attn, "mla.attn", H*a.V)
	if a.Absorbed {
		g.get(&sc.k, "mla.k", a.KVLora+a.Rope)
		g.get(&sc.qabs, "mla.q_absorbed", H*(a.KVLora+a.Rope))
		g.get(&sc.olat, "mla.out_latent", H*a.KVLora)
	} else {
		g.get(&sc.k, "mla.k", H*qh)
		g.get(&sc.kvb, "mla.kv_b", H*(a.Nope+a.V))
		g.get(&sc.v, "mla.v", H*a.V)
	}
	return sc, g.err
}

// Forward writes (or adds) attention of xn [n, hidden] (already normed)
// to out [n, hidden], storing this chunk's cache rows (Attention).
func (a *MLA) Forward(ctx Context, out, xn kernels.Buffer, n, pos0 int, add bool) error {
	be := ctx.Backend()
	sc, err := a.scratch(ctx)
	if err != nil {
		return err
	}
	H, qh := a.Heads, a.Nope+a.Rope
	if a.QLora > 0 {
		ctx.MatMul(xn, n, a.In, nil, Outs{sc.qa, sc.lat, sc.kr})
		be.RMSNorm(sc.qa, sc.qa, a.QANorm, n, a.QLora, mlaNormEps)
		ctx.MatMul(sc.qa, n, a.QB, nil, Outs{sc.q})
	} else {
		ctx.MatMul(xn, n, a.In, nil, Outs{sc.q, sc.lat, sc.kr})
	}
	if a.Absorbed {
		kd := a.KVLora + a.Rope
		// Cache row [normalised latent | rotated rope key] and each head's
		// query [q_nope·W_UK | rotated q_rope]: MLAPack rotates and writes
		// the row and the rope parts, one MatMulHeads the latent parts
		// from the heads' q_nope in place.
		ctx.MLAPack(sc.k, sc.qabs, sc.q, sc.lat, sc.kr, a.KVANorm, n, pos0,
			kernels.MLAPackShape{Heads: H, Nope: a.Nope, Rope: a.Rope, Lora: a.KVLora, Eps: mlaNormEps}, &a.RopeQ, &a.RopeK)
		be.MatMulHeads(sc.qabs, H*kd, kd, sc.q, H*qh, qh, n, a.WUKT)
		ctx.Attention(sc.olat, sc.qabs, sc.k, nil, a.Layer, pos0, n, H, a.Scale)
		// Per head: attended latent · W_UVᵀ.
		be.MatMulHeads(sc.attn, H*a.V, a.V, sc.olat, H*a.KVLora, a.KVLora, n, a.WUV)
	} else {
		ctx.Rope(sc.q, n, H, qh, pos0, &a.RopeQ)
		ctx.Rope(sc.kr, n, 1, a.Rope, pos0, &a.RopeK)
		per := a.Nope + a.V
		be.RMSNorm(sc.lat, sc.lat, a.KVANorm, n, a.KVLora, mlaNormEps)
		ctx.MatMul(sc.lat, n, a.KVB, nil, Outs{sc.kvb})
		// Seen as n·H rows of [k_nope | v], kv_b's output splits with two
		// strided copies; the rope key is shared by every head.
		be.Copy2D(sc.k, 0, qh, sc.kvb, 0, per, n*H, a.Nope)
		be.Copy2D(sc.v, 0, a.V, sc.kvb, a.Nope, per, n*H, a.V)
		for h := range H {
			be.Copy2D(sc.k, h*qh+a.Nope, H*qh, sc.kr, 0, a.Rope, n, a.Rope)
		}
		ctx.Attention(sc.attn, sc.q, sc.k, sc.v, a.Layer, pos0, n, H, a.Scale)
	}
	return project(ctx, out, sc.attn, n, a.O, nil, add)
}
