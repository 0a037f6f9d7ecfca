package engine

// DeepSeek V2 and V3 (model_type deepseek_v2, deepseek_v3): multi-head latent
// attention (MLA), mixture of experts with shared experts, YaRN rope and fp8
// block-quantised checkpoints. DeepSeek V1 MoE (model_type deepseek,
// deepseek-moe-16b) is llama attention with the same MoE layers. The
// reference is transformers' modeling_deepseek_v2.py / modeling_deepseek_v3.py
// and DeepSeek's own modeling_deepseek.py on the hub.
//
// MLA runs two ways (WithMLA):
//   - naive: kv_b_proj expands the latent into per-head keys and values; the
//     cache holds heads×(nope+rope) key and heads×v value floats per token.
//     This is the reference form.
//   - absorbed (default): the cache holds only the normalised latent
//     (kv_lora_rank) and the rotated rope key (qk_rope_head_dim) per token,
//     shared by all heads. kv_b_proj's key half is folded into the query
//     (q_nope·W_UK per head) and its value half into the output
//     (latent·W_UVᵀ per head), so attention runs as MQA with KDim =
//     kv_lora+rope whose values are the first kv_lora floats of each key.

import (
	"fmt"
	"math"

	"github.com/deepseek-go/deepseek-go/engine/layers"
	"github.com/deepseek-go/deepseek-go/kernels"
)

// MLA attention paths for WithMLA.
const (
	MLAAbsorbed = "absorbed"
	MLANaive    = "naive"
)

// WithMLA selects the DeepSeek V2/V3 attention path: MLAAbsorbed (default,
// small cache) or MLANaive (the per-head expansion, a reference).
func WithMLA(path string) Option { return func(o *options) { o.mla = path } }

// mlaNormEps is the epsilon of q_a_layernorm and kv_a_layernorm: transformers
// and DeepSeek's code build both with the RMSNorm default 1e-6, not
// rms_norm_eps.
const mlaNormEps = 1e-6

func init() {
	fam := Family{Validate: validateDeepseek, Build: buildDeepseek, KVSpec: deepseekKVSpec}
	RegisterFamily("deepseek_v2", fam)
	RegisterFamily("deepseek_v3", fam)
	// V1 MoE (deepseek-moe-16b): llama attention with DeepSeek's MoE.
	RegisterFamily("deepseek", Family{Validate: validateDeepseekMoE, Build: buildDeepseek, KVSpec: llamaKVSpec})
}

// deepseekRouter derives the routing configuration with each family's
// defaults (V1/V2: softmax greedy, scaling only without normalisation as in
// DeepSeek's MoEGate — V1 has no scaling factor, so it stays 1; V3: sigmoid
// noaux_tc, normalise then scale).
func deepseekRouter(c *Config) RouterConfig {
	rc := RouterConfig{Method: TopKGreedy, Scoring: ScoringSoftmax, Experts: c.NRoutedExperts,
		TopK: c.NumExpertsPerTok, Groups: c.NGroup, TopGroups: c.TopKGroup,
		NormTopK: c.NormTopKProb, Scale: float32(c.RoutedScalingFactor)}
	if c.ModelType == "deepseek_v3" {
		rc.Method, rc.Scoring, rc.ScaleAfterNorm = TopKNoAuxTC, ScoringSigmoid, true
	}
	if c.TopKMethod != "" {
		rc.Method = c.TopKMethod
	}
	if c.ScoringFunc != "" {
		rc.Scoring = c.ScoringFunc
	}
	if rc.Method == TopKGreedy && rc.Groups == 0 {
		rc.Groups, rc.TopGroups = 1, 1
	}
	return rc
}

// validateDeepseekMoE checks the MoE fields shared by V1, V2 and V3.
func validateDeepseekMoE(c *Config) error {
	if c.FirstKDenseReplace < 0 || c.MoELayerFreq <= 0 || c.NSharedExperts < 0 || c.NRoutedExperts < 0 {
		return fmt.Errorf("config fields first_k_dense_replace (%d), n_shared_experts (%d), n_routed_experts (%d) must be >= 0 and moe_layer_freq (%d) > 0",
			c.FirstKDenseReplace, c.NSharedExperts, c.NRoutedExperts, c.MoELayerFreq)
	}
	if c.NRoutedExperts > 0 {
		if c.MoEIntermediateSize <= 0 {
			return fmt.Errorf("config field moe_intermediate_size must be positive with n_routed_experts %d, got %d", c.NRoutedExperts, c.MoEIntermediateSize)
		}
		rc := deepseekRouter(c)
		if err := rc.Validate(); err != nil {
			return err
		}
	}
	return nil
}

func validateDeepseek(c *Config) error {
	if err := validateDeepseekMoE(c); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"kv_lora_rank", c.KVLoraRank}, {"qk_nope_head_dim", c.QKNopeHeadDim},
		{"qk_rope_head_dim", c.QKRopeHeadDim}, {"v_head_dim", c.VHeadDim}} {
		if f.v <= 0 {
			return fmt.Errorf("config field %s must be positive for %s, got %d", f.name, c.ModelType, f.v)
		}
	}
	if c.QKRopeHeadDim%2 != 0 {
		return fmt.Errorf("config field qk_rope_head_dim must be even, got %d", c.QKRopeHeadDim)
	}
	if c.QLoraRank < 0 {
		return fmt.Errorf("config field q_lora_rank must be >= 0, got %d", c.QLoraRank)
	}
	if c.AttentionBias {
		return fmt.Errorf("config field attention_bias: biased MLA projections are not supported (no DeepSeek checkpoint has them)")
	}
	if r := c.RopeScaling; r != nil && r.Type != "default" && r.Type != "yarn" {
		return fmt.Errorf("config field rope_scaling.type %q not supported for %s (yarn or none)", r.Type, c.ModelType)
	}
	if q := c.QuantizationConfig; q != nil {
		if q.QuantMethod != "fp8" {
			return fmt.Errorf("config field quantization_config.quant_method %q not supported (fp8)", q.QuantMethod)
		}
		if q.Fmt != "" && q.Fmt != "e4m3" {
			return fmt.Errorf("config field quantization_config.fmt %q not supported (e4m3)", q.Fmt)
		}
	}
	switch c.MLA {
	case "", MLAAbsorbed, MLANaive:
	default:
		return fmt.Errorf("MLA path %q: want %q or %q", c.MLA, MLAAbsorbed, MLANaive)
	}
	return nil
}

// mlaAbsorbed reports whether c selects the absorbed MLA path.
func mlaAbsorbed(c *Config) bool { return c.MLA == "" || c.MLA == MLAAbsorbed }

func deepseekKVSpec(c *Config) kernels.KVSpec {
	if mlaAbsorbed(c) {
		return kernels.KVSpec{Layers: c.NumLayers, KVHeads: 1, KDim: c.KVLoraRank + c.QKRopeHeadDim, VDim: c.KVLoraRank, VInK: true}
	}
	return kernels.KVSpec{Layers: c.NumLayers, KVHeads: c.NumHeads, KDim: c.QKNopeHeadDim + c.QKRopeHeadDim, VDim: c.VHeadDim}
}

// MLACache is the KV-cache footprint of an MLA model, in float32 values and
// bytes per token over all layers.
type MLACache struct {
	// AbsorbedFloats = layers × (kv_lora_rank + qk_rope_head_dim).
	AbsorbedFloats int64
	// NaiveFloats = layers × heads × (qk_nope + qk_rope + v_head_dim).
	NaiveFloats int64
	// AbsorbedBytes and NaiveBytes at 4 bytes per value (the caches are f32).
	AbsorbedBytes, NaiveBytes int64
}

// MLACacheSize returns the per-token cache size of both MLA paths for a
// DeepSeek V2/V3 config.
func MLACacheSize(c *Config) MLACache {
	l := int64(c.NumLayers)
	a := l * int64(c.KVLoraRank+c.QKRopeHeadDim)
	n := l * int64(c.NumHeads) * int64(c.QKNopeHeadDim+c.QKRopeHeadDim+c.VHeadDim)
	return MLACache{AbsorbedFloats: a, NaiveFloats: n, AbsorbedBytes: 4 * a, NaiveBytes: 4 * n}
}

// MLACache reports the model's per-token cache size on both MLA paths, and
// false for models without MLA.
func (m *Model) MLACache() (MLACache, bool) {
	if m.cfg.ModelType != "deepseek_v2" && m.cfg.ModelType != "deepseek_v3" {
		return MLACache{}, false
	}
	return MLACacheSize(m.cfg), true
}

// MLAPath is the attention path the model runs ("absorbed" or "naive"), or
// "" for models without MLA.
func (m *Model) MLAPath() string {
	if _, ok := m.MLACache(); !ok {
		return ""
	}
	if mlaAbsorbed(m.cfg) {
		return MLAAbsorbed
	}
	return MLANaive
}

// deepseekRope returns the rope of the qk_rope_head_dim part (YaRN inv_freq
// and cos/sin attention factor folded in) and the softmax scale
// 1/sqrt(qk_head_dim), times yarn_get_mscale(factor, mscale_all_dim)² when
// YaRN sets mscale_all_dim (DeepSeek's attention, transformers' V3).
func deepseekRope(c *Config) (*kernels.Rope, float32, error) {
	inv, af, err := RopeFreqs(c, c.QKRopeHeadDim)
	if err != nil {
		return nil, 0, err
	}
	scale := 1 / math.Sqrt(float64(c.QKNopeHeadDim+c.QKRopeHeadDim))
	if r := c.RopeScaling; r != nil && r.Type == "yarn" && r.MScaleAllDim != 0 {
		m := YarnGetMScale(r.Factor, r.MScaleAllDim)
		scale *= m * m
	}
	return &kernels.Rope{Dim: c.QKRopeHeadDim, InvFreq: inv, Scale: float32(af), Interleaved: true}, float32(scale), nil
}

// isMoELayer reports whether layer l has routed experts.
func isMoELayer(c *Config, l int) bool {
	return c.NRoutedExperts > 0 && l >= c.FirstKDenseReplace && l%c.MoELayerFreq == 0
}

func buildDeepseek(b *Builder) ([]Block, error) {
	c := b.Config
	v1 := c.ModelType == "deepseek"
	validate := validateDeepseek
	if v1 {
		validate = validateDeepseekMoE
	}
	if err := validate(c); err != nil { // Config may come from New
		return nil, err
	}
	var rope *kernels.Rope
	var scale float32
	var err error
	if v1 {
		rope, err = NewRope(c, 0, c.HeadDim, false)
	} else {
		rope, scale, err = deepseekRope(c)
	}
	if err != nil {
		return nil, err
	}
	blocks := make([]Block, c.NumLayers)
	for l := range blocks {
		p := LayerPrefix(l)
		blk := &deepseekBlock{layer: l, cfg: c}
		if blk.attnNorm, err = b.Vector(p+"input_layernorm.weight", c.HiddenSize); err != nil {
			return nil, err
		}
		if blk.mlpNorm, err = b.Vector(p+"post_attention_layernorm.weight", c.HiddenSize); err != nil {
			return nil, err
		}
		if v1 {
			blk.attn, err = LoadGQA(b, p+"self_attn.", l, c.AttentionBias, c.AttentionBias, rope)
		} else {
			blk.attn, err = loadMLA(b, p+"self_attn.", l, rope, scale)
		}
		if err != nil {
			return nil, err
		}
		if isMoELayer(c, l) {
			if blk.moe, err = loadMoE(b, p+"mlp."); err != nil {
				return nil, err
			}
		} else if blk.mlp, err = LoadDenseMLP(b, p+"mlp.", c.HiddenSize, c.IntermediateSize, false); err != nil {
			return nil, err
		}
		blocks[l] = blk
	}
	return blocks, nil
}

// attention is a block's attention: GQA (llama, qwen2, DeepSeek V1) or
// MLA (V2/V3).
type attention interface {
	Forward(ctx layers.Context, out, xn kernels.Buffer, n, pos0 int) error
}

// deepseekBlock is x += attn(norm(x)); x += (dense MLP or MoE)(norm(x)).
type deepseekBlock struct {
	layer             int
	cfg               *Config
	attnNorm, mlpNorm kernels.Buffer
	attn              attention
	mlp               *DenseMLP
	moe               *MoE
}

func (blk *deepseekBlock) Forward(ctx layers.Context, x kernels.Buffer, n, pos0 int) error {
	var ffn feedForward = blk.mlp
	if blk.moe != nil {
		ffn = blk.moe
	}
	return preNormBlock(ctx, blk.cfg, x, n, pos0, blk.attnNorm, blk.mlpNorm, blk.attn, ffn)
}

// MLA is DeepSeek's multi-head latent attention for one layer.
type MLA struct {
	Layer                        int
	Heads, Nope, Rope, V, KVLora int
	QLora                        int
	QA, QB                       kernels.Matrix // q_a_proj, q_b_proj (q_lora_rank > 0) ...
	QANorm                       kernels.Buffer
	Q                            kernels.Matrix // ... or q_proj
	KVA                          kernels.Matrix // kv_a_proj_with_mqa, parts: latent, rope key
	KVANorm                      kernels.Buffer
	KVB                          kernels.Matrix // naive: kv_b_proj as stored
	WUKT                         kernels.Matrix // absorbed: a part per head, W_UKᵀ [kv_lora, nope] (MatMulHeads)
	WUV                          kernels.Matrix // absorbed: a part per head, W_UV [v, kv_lora]
	O                            kernels.Matrix
	RopeQ, RopeK                 kernels.Rope // on the query heads (Off = nope) and on the rope key
	Scale                        float32
	Absorbed                     bool
}

// loadMLA loads one layer's attention weights under prefix.
func loadMLA(b *Builder, prefix string, layer int, rope *kernels.Rope, scale float32) (*MLA, error) {
	c := b.Config
	hid, H := c.HiddenSize, c.NumHeads
	// A shard keeps its heads of q_b/q, kv_b and o; the latent
	// projections (q_a, kv_a) are replicated (shard.go).
	hr, err := headShard(H, b.rank, b.shardCount())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", prefix, err)
	}
	a := &MLA{Layer: layer, Heads: hr.len(), Nope: c.QKNopeHeadDim, Rope: c.QKRopeHeadDim, V: c.VHeadDim,
		KVLora: c.KVLoraRank, QLora: c.QLoraRank, Scale: scale, Absorbed: mlaAbsorbed(c)}
	a.RopeQ, a.RopeK = *rope, *rope
	a.RopeQ.Off = a.Nope
	qh := a.Nope + a.Rope
	if a.QLora > 0 {
		if a.QA, err = b.Matrix(MatSpec{prefix + "q_a_proj.weight", a.QLora, hid}); err != nil {
			return nil, err
		}
		if a.QANorm, err = b.Vector(prefix+"q_a_layernorm.weight", a.QLora); err != nil {
			return nil, err
		}
		if a.QB, err = b.matrix(b.Int8, []MatSpec{{prefix + "q_b_proj.weight", H * qh, a.QLora}}, hr.times(qh)); err != nil {
			return nil, err
		}
	} else if a.Q, err = b.matrix(b.Int8, []MatSpec{{prefix + "q_proj.weight", H * qh, hid}}, hr.times(qh)); err != nil {
		return nil, err
	}
	kva, err := b.HostStored(MatSpec{prefix + "kv_a_proj_with_mqa.weight", a.KVLora + a.Rope, hid})
	if err != nil {
		return nil, err
	}
	if a.KVA, err = uploadParts(b, []kernels.HostMatrix{
		rowSlice(kva, 0, a.KVLora, kva.Name+"[latent]"),
		rowSlice(kva, a.KVLora, a.KVLora+a.Rope, kva.Name+"[rope]"),
	}); err != nil {
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
	kvb = sliceRows(kvb, hr.times(per)) // this shard's heads, renumbered from 0
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
			uv[h] = rowSlice(kvb, h*per+a.Nope, (h+1)*per, fmt.Sprintf("%s[W_UV %d]", kvb.Name, hr.lo+h))
			// fp8 blocks do not survive the transpose, and W_UV follows
			// W_UK (the halves are small: 2·heads·128·kv_lora values).
			if ukRows.DType == kernels.FP8 {
				if err := widenHost(&ukRows); err != nil {
					return nil, err
				}
				if err := widenHost(&uv[h]); err != nil {
					return nil, err
				}
			}
			uk[h] = transposeHost(ukRows, fmt.Sprintf("%s[W_UK %d]ᵀ", kvb.Name, hr.lo+h))
		}
		if a.WUKT, err = uploadParts(b, uk); err != nil {
			return nil, err
		}
		if a.WUV, err = uploadParts(b, uv); err != nil {
			return nil, err
		}
	}
	if a.O, err = b.matrixCols(MatSpec{prefix + "o_proj.weight", hid, c.NumHeads * a.V}, hr.times(a.V)); err != nil {
		return nil, err
	}
	return a, nil
}

// uploadParts uploads host matrices the Builder already fetched (and
// counted), quantised like b.Matrix, and records the backend bytes.
func uploadParts(b *Builder, parts []kernels.HostMatrix) (kernels.Matrix, error) {
	m, err := b.Backend.UploadMatrix(parts, b.Int8)
	if err != nil {
		return nil, fmt.Errorf("loading weights %s: %w", parts[0].Name, err)
	}
	b.bytes[m.DType().String()] += m.Bytes()
	return m, nil
}

// rowSlice returns rows [r0, r1) of a host matrix without copying (fp8
// keeps the block scales of those rows).
func rowSlice(hm kernels.HostMatrix, r0, r1 int, name string) kernels.HostMatrix {
	return hm.SliceRows(r0, r1, name)
}

// transposeHost returns the transpose of a float host matrix in a new slice
// (the absorbed query needs W_UKᵀ in the [out, in] layout MatMul takes).
func transposeHost(hm kernels.HostMatrix, name string) kernels.HostMatrix {
	es := hm.DType.Size()
	out := make([]byte, len(hm.Data))
	for r := range hm.Rows {
		for c := range hm.Cols {
			copy(out[(c*hm.Rows+r)*es:(c*hm.Rows+r+1)*es], hm.Data[(r*hm.Cols+c)*es:(r*hm.Cols+c+1)*es])
		}
	}
	return kernels.HostMatrix{Name: name, Rows: hm.Cols, Cols: hm.Rows, DType: hm.DType, Data: out}
}

// mlaScratch names the session buffers MLA uses.
type mlaScratch struct {
	qa, q, lat, kr, k, attn kernels.Buffer
	kvb, v                  kernels.Buffer // naive
	qabs, olat              kernels.Buffer // absorbed
}

func (a *MLA) scratch(ctx layers.Context) (mlaScratch, error) {
	ch := ctx.Chunk()
	H, qh := a.Heads, a.Nope+a.Rope
	var sc mlaScratch
	var err error
	get := func(dst *kernels.Buffer, name string, width int) {
		if err == nil {
			*dst, err = ctx.Scratch(name, ch*width)
		}
	}
	if a.QLora > 0 {
		get(&sc.qa, "mla.qa", a.QLora)
	}
	get(&sc.q, "mla.q", H*qh)
	get(&sc.lat, "mla.latent", a.KVLora)
	get(&sc.kr, "mla.rope_k", a.Rope)
	get(&sc.attn, "mla.attn", H*a.V)
	if a.Absorbed {
		get(&sc.k, "mla.k", a.KVLora+a.Rope)
		get(&sc.qabs, "mla.q_absorbed", H*(a.KVLora+a.Rope))
		get(&sc.olat, "mla.out_latent", H*a.KVLora)
	} else {
		get(&sc.k, "mla.k", H*qh)
		get(&sc.kvb, "mla.kv_b", H*(a.Nope+a.V))
		get(&sc.v, "mla.v", H*a.V)
	}
	return sc, err
}

// Forward writes attention of xn [n, hidden] (already normed) to out
// [n, hidden], storing this chunk's cache rows.
func (a *MLA) Forward(ctx layers.Context, out, xn kernels.Buffer, n, pos0 int) error {
	be := ctx.Backend()
	sc, err := a.scratch(ctx)
	if err != nil {
		return err
	}
	H, qh := a.Heads, a.Nope+a.Rope
	if a.QLora > 0 {
		ctx.MatMul(xn, n, a.QA, nil, layers.Outs{sc.qa})
		be.RMSNorm(sc.qa, sc.qa, a.QANorm, n, a.QLora, mlaNormEps)
		ctx.MatMul(sc.qa, n, a.QB, nil, layers.Outs{sc.q})
	} else {
		ctx.MatMul(xn, n, a.Q, nil, layers.Outs{sc.q})
	}
	ctx.Rope(sc.q, n, H, qh, pos0, &a.RopeQ)
	ctx.MatMul(xn, n, a.KVA, nil, layers.Outs{sc.lat, sc.kr})
	be.RMSNorm(sc.lat, sc.lat, a.KVANorm, n, a.KVLora, mlaNormEps)
	ctx.Rope(sc.kr, n, 1, a.Rope, pos0, &a.RopeK)

	if a.Absorbed {
		kd := a.KVLora + a.Rope
		// Cache row: [normalised latent | rotated rope key].
		be.Copy2D(sc.k, 0, kd, sc.lat, 0, a.KVLora, n, a.KVLora)
		be.Copy2D(sc.k, a.KVLora, kd, sc.kr, 0, a.Rope, n, a.Rope)
		// Query per head: [q_nope·W_UK | q_rope]. Seen as n·H rows, the
		// rope parts of every head move with one strided copy; the latent
		// parts are one MatMulHeads from the heads' q_nope in place.
		be.Copy2D(sc.qabs, a.KVLora, kd, sc.q, a.Nope, qh, n*H, a.Rope)
		be.MatMulHeads(sc.qabs, H*kd, kd, sc.q, H*qh, qh, n, a.WUKT)
		ctx.Attention(sc.olat, sc.qabs, sc.k, nil, a.Layer, pos0, n, H, a.Scale)
		// Per head: attended latent · W_UVᵀ.
		be.MatMulHeads(sc.attn, H*a.V, a.V, sc.olat, H*a.KVLora, a.KVLora, n, a.WUV)
	} else {
		per := a.Nope + a.V
		ctx.MatMul(sc.lat, n, a.KVB, nil, layers.Outs{sc.kvb})
		// Seen as n·H rows of [k_nope | v], kv_b's output splits with two
		// strided copies; the rope key is shared by every head.
		be.Copy2D(sc.k, 0, qh, sc.kvb, 0, per, n*H, a.Nope)
		be.Copy2D(sc.v, 0, a.V, sc.kvb, a.Nope, per, n*H, a.V)
		for h := range H {
			be.Copy2D(sc.k, h*qh+a.Nope, H*qh, sc.kr, 0, a.Rope, n, a.Rope)
		}
		ctx.Attention(sc.attn, sc.q, sc.k, sc.v, a.Layer, pos0, n, H, a.Scale)
	}
	ctx.MatMul(sc.attn, n, a.O, nil, layers.Outs{out})
	return nil
}

// MoE is a DeepSeek mixture-of-experts MLP: a router over routed experts
// plus always-on shared experts. Routing and the routed experts run on the
// backend's kernels.MoE capability, so nothing crosses to the host inside
// the layer (a decode step stays capturable as one device graph).
type MoE struct {
	Hidden  int
	Inter   int            // moe_intermediate_size
	Router  kernels.Matrix // mlp.gate.weight [experts, hidden]
	Routing RouterConfig
	Bias    []float32 // e_score_correction_bias (noaux_tc)
	// Experts are the routed experts this backend holds: all of them, or
	// a shard's contiguous run (expert parallelism; the others add
	// nothing here and come in through the block's all-reduce).
	Experts kernels.Experts
	Shared  *DenseMLP // nil without shared experts

	gate kernels.MoERouter // routing state and selection counters
}

// moeOf returns the backend's MoE capability, or an error naming it.
func moeOf(be kernels.Backend) (kernels.MoE, error) {
	mb, ok := be.(kernels.MoE)
	if !ok {
		return nil, fmt.Errorf("backend %s cannot run mixture-of-experts layers (no kernels.MoE)", be.Name())
	}
	return mb, nil
}

// loadMoE loads a MoE layer under prefix ("model.layers.N.mlp.").
func loadMoE(b *Builder, prefix string) (*MoE, error) {
	c := b.Config
	hid, inter := c.HiddenSize, c.MoEIntermediateSize
	mb, err := moeOf(b.Backend)
	if err != nil {
		return nil, err
	}
	m := &MoE{Hidden: hid, Inter: inter, Routing: deepseekRouter(c)}
	// The router stays in its stored dtype: MatMul widens it exactly and
	// accumulates in fp32, which is transformers' fp32 router matmul.
	if m.Router, err = b.MatrixKeep(MatSpec{prefix + "gate.weight", c.NRoutedExperts, hid}); err != nil {
		return nil, err
	}
	if m.Routing.Method == TopKNoAuxTC {
		if m.Bias, err = b.Floats(prefix+"gate.e_score_correction_bias", c.NRoutedExperts); err != nil {
			return nil, err
		}
	}
	if m.gate, err = mb.NewMoERouter(m.Routing, m.Bias); err != nil {
		return nil, fmt.Errorf("%sgate: %w", prefix, err)
	}
	// Expert parallelism: a shard holds a contiguous run of whole experts
	// and adds only their outputs; routing is replicated and the block's
	// all-reduce combines the shards.
	own := splitRange(c.NRoutedExperts, b.rank, b.shardCount())
	b.params += 3 * int64(hid) * int64(inter) * int64(c.NRoutedExperts-own.len()) // counted by the shards holding them
	if own.len() > 0 {
		keep := b.keepFP8(b.Int8)
		p := kernels.ExpertParts{First: own.lo}
		for e := own.lo; e < own.hi; e++ {
			ep := fmt.Sprintf("%sexperts.%d.", prefix, e)
			for _, f := range []struct {
				dst  *[]kernels.HostMatrix
				spec MatSpec
			}{{&p.Gate, MatSpec{ep + "gate_proj.weight", inter, hid}}, {&p.Up, MatSpec{ep + "up_proj.weight", inter, hid}},
				{&p.Down, MatSpec{ep + "down_proj.weight", hid, inter}}} {
				h, err := b.host(f.spec, keep)
				if err != nil {
					return nil, err
				}
				*f.dst = append(*f.dst, h)
			}
		}
		// The experts share one dtype: widen a mixed layer to f32.
		dt := p.Gate[0].DType
		mixed := false
		for _, ps := range [][]kernels.HostMatrix{p.Gate, p.Up, p.Down} {
			for _, h := range ps {
				mixed = mixed || h.DType != dt
			}
		}
		if mixed {
			for _, ps := range [][]kernels.HostMatrix{p.Gate, p.Up, p.Down} {
				for i := range ps {
					if err := widenHost(&ps[i]); err != nil {
						return nil, err
					}
				}
			}
		}
		if m.Experts, err = mb.UploadExperts(p, b.Int8); err != nil {
			return nil, fmt.Errorf("loading weights %sexperts: %w", prefix, err)
		}
		b.bytes[m.Experts.DType().String()] += m.Experts.Bytes()
	}
	if c.NSharedExperts > 0 {
		if m.Shared, err = LoadDenseMLP(b, prefix+"shared_experts.", hid, inter*c.NSharedExperts, false); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Forward writes the MoE output for n rows of xn to out [n, hidden].
func (m *MoE) Forward(ctx layers.Context, out, xn kernels.Buffer, n int) error {
	be := ctx.Backend()
	mb, err := moeOf(be)
	if err != nil {
		return err
	}
	rt, err := ctx.MoERoutes(mb, kernels.MoERoutesSpec{Rows: ctx.Chunk(), TopK: m.Routing.TopK, Experts: m.Routing.Experts,
		Hidden: m.Hidden, Inter: m.Inter})
	if err != nil {
		return err
	}
	rl, err := ctx.Scratch("moe.router", ctx.Chunk()*m.Routing.Experts)
	if err != nil {
		return err
	}
	ctx.MatMul(xn, n, m.Router, nil, layers.Outs{rl})
	mb.Route(rt, m.gate, rl, n)
	// Shared experts write out first; the routed ones add to it.
	if m.Shared != nil {
		if err := m.Shared.Forward(ctx, out, xn, n); err != nil {
			return err
		}
	}
	if m.Experts != nil {
		mb.MoEExperts(out, xn, n, m.Experts, rt, m.Shared != nil)
	} else if m.Shared == nil {
		// A shard with neither routed experts (more shards than experts)
		// nor shared ones adds zeros to the all-reduce: a scratch buffer
		// that is never written holds them (Alloc zeroes).
		zeros, err := ctx.Scratch("moe.zeros", ctx.Chunk()*m.Hidden)
		if err != nil {
			return err
		}
		be.Copy2D(out, 0, m.Hidden, zeros, 0, m.Hidden, n, m.Hidden)
	}
	return nil
}

// ExpertStats returns per-layer routed-expert usage since the model was
// loaded (or since ResetExpertStats), summed over all sessions, read from
// the backend's counters (a device download); nil for models without
// routed experts, or when the counters cannot be read (a failed device,
// whose next step reports the error).
func (m *Model) ExpertStats() []LayerExpertStats {
	st, err := m.expertStats().Snapshot()
	if err != nil || len(st) == 0 {
		return nil
	}
	return st
}

// ResetExpertStats zeroes the expert usage counters.
func (m *Model) ResetExpertStats() {
	_ = m.expertStats().Reset() // a failed device reports at its next step
}

// expertStats collects the MoE layers' routers; a sharded model reads rank
// 0's (every shard routes the same rows).
func (m *Model) expertStats() *ExpertStats {
	if len(m.shards) > 0 {
		return m.shards[0].expertStats()
	}
	st := &ExpertStats{}
	for _, b := range m.blocks {
		if blk, ok := b.(*deepseekBlock); ok && blk.moe != nil {
			st.add(blk.layer, blk.moe.gate)
		}
	}
	return st
}
