package layers

import (
	"fmt"

	"github.com/deepseek-go/deepseek-go/kernels"
	"github.com/deepseek-go/deepseek-go/kernels/routing"
)

// MoE is a DeepSeek mixture-of-experts MLP: a router over routed experts
// plus always-on shared experts. Routing and the routed experts run on the
// backend's kernels.MoE capability, so nothing crosses to the host inside
// the layer (a decode step stays capturable as one device graph).
type MoE struct {
	Hidden  int
	Inter   int            // moe_intermediate_size
	Router  kernels.Matrix // mlp.gate.weight [experts, hidden]
	Routing routing.Config
	Bias    []float32 // e_score_correction_bias (noaux_tc)
	// Experts are the routed experts this backend holds: all of them, or
	// a shard's contiguous run (expert parallelism; the others add
	// nothing here and come in through the block's all-reduce).
	// Unsharded, the shared experts follow the routed ones here (ids
	// Experts…, Routing.Shared of them).
	Experts kernels.Experts
	Shared  *DenseMLP // separate shared experts (sharded models), else nil

	gate kernels.MoERouter // routing state and selection counters
}

// Gate is the layer's routing state on the backend, whose per-expert
// selection counters every context running the layer adds to.
func (m *MoE) Gate() kernels.MoERouter { return m.gate }

// moeOf returns the backend's MoE capability, or an error naming it.
func moeOf(be kernels.Backend) (kernels.MoE, error) {
	mb, ok := be.(kernels.MoE)
	if !ok {
		return nil, fmt.Errorf("backend %s cannot run mixture-of-experts layers (no kernels.MoE)", be.Name())
	}
	return mb, nil
}

// MoEShape is the geometry LoadMoE reads from a DeepSeek config:
// hidden_size, moe_intermediate_size and n_shared_experts (the routed
// experts are the routing's Experts).
type MoEShape struct {
	Hidden, Inter, SharedExperts int
}

// LoadMoE loads a MoE layer routed by rc under prefix
// ("model.layers.N.mlp."). Unsharded, the shared experts run with the
// routed ones: a shared MLP of width S·inter is the sum of S experts of
// width inter (its gate and up rows and its down columns cut in S), held
// after the routed experts as ids Experts… and routed to every row with
// weight 1 (routing.Config.Shared), so the layer is one routing and one
// expert pass. Sharded models, and shared experts that cannot join 16-bit
// or fp8 routed ones (another dtype, fp8 blocks cut by the split), keep
// them as a separate DenseMLP (loadSharedExperts).
func LoadMoE(b *Builder, prefix string, sh MoEShape, rc routing.Config) (*MoE, error) {
	hid, inter := sh.Hidden, sh.Inter
	mb, err := moeOf(b.Backend)
	if err != nil {
		return nil, err
	}
	m := &MoE{Hidden: hid, Inter: inter, Routing: rc}
	// The router stays in its stored dtype: MatMul widens it exactly and
	// accumulates in fp32, which is transformers' fp32 router matmul.
	if m.Router, err = b.MatrixKeep(MatSpec{prefix + "gate.weight", rc.Experts, hid}); err != nil {
		return nil, err
	}
	if m.Routing.Method == routing.TopKNoAuxTC {
		if m.Bias, err = b.Floats(prefix+"gate.e_score_correction_bias", rc.Experts); err != nil {
			return nil, err
		}
	}
	// Expert parallelism: a shard holds a contiguous run of whole experts
	// and adds only their outputs; routing is replicated and the block's
	// all-reduce combines the shards.
	own := SplitRange(rc.Experts, b.Rank, b.shardCount())
	// The experts other shards hold count here too (one model's Params),
	// with their block scales in an fp8 checkpoint.
	per := 3 * int64(hid) * int64(inter)
	if br, bc := b.FP8Block[0], b.FP8Block[1]; b.FP8 && br > 0 && bc > 0 {
		blocks := func(r, c int) int64 { return int64((r+br-1)/br) * int64((c+bc-1)/bc) }
		per += 2*blocks(inter, hid) + blocks(hid, inter)
	}
	b.params += per * int64(rc.Experts-own.Len())
	if own.Len() > 0 {
		keep := b.keepFP8(b.Int8)
		p := kernels.ExpertParts{First: own.Lo}
		for e := own.Lo; e < own.Hi; e++ {
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
		if err := widenMixed(p.Gate, p.Up, p.Down); err != nil {
			return nil, err
		}
		if sh.SharedExperts > 0 && b.shardCount() == 1 {
			if m.Shared, err = loadSharedExperts(b, prefix+"shared_experts.", sh, p.Gate[0].DType, keep, &p); err != nil {
				return nil, err
			}
			if m.Shared == nil {
				m.Routing.Shared = sh.SharedExperts
			}
		}
		if m.Experts, err = mb.UploadExperts(p, b.Int8); err != nil {
			return nil, fmt.Errorf("loading weights %sexperts: %w", prefix, err)
		}
		b.bytes[m.Experts.DType().String()] += m.Experts.Bytes()
	}
	if sh.SharedExperts > 0 && m.Shared == nil && m.Routing.Shared == 0 {
		if m.Shared, err = LoadDenseMLP(b, prefix+"shared_experts.", hid, inter*sh.SharedExperts, false); err != nil {
			return nil, err
		}
	}
	if m.gate, err = mb.NewMoERouter(m.Routing, m.Bias); err != nil {
		return nil, fmt.Errorf("%sgate: %w", prefix, err)
	}
	return m, nil
}

// loadSharedExperts fetches the shared MLP under prefix and appends it to
// p as sh.SharedExperts experts of sh.Inter features: gate and up cut by
// rows, down by columns; widened to f32 when the routed experts' dtype dt
// is f32 and theirs is not. When its parts do not all have dt otherwise,
// or are fp8 whose blocks the cuts would split (the device stacks whole
// blocks), it returns them as a DenseMLP instead: widening the routed
// experts to f32 to fuse them would cost far more memory than the
// separate launches cost time.
func loadSharedExperts(b *Builder, prefix string, sh MoEShape, dt kernels.DType, keep bool, p *kernels.ExpertParts) (*DenseMLP, error) {
	S, inter, hid := sh.SharedExperts, sh.Inter, sh.Hidden
	var gate, up, down kernels.HostMatrix
	for _, f := range []struct {
		dst  *kernels.HostMatrix
		spec MatSpec
	}{{&gate, MatSpec{prefix + "gate_proj.weight", S * inter, hid}}, {&up, MatSpec{prefix + "up_proj.weight", S * inter, hid}},
		{&down, MatSpec{prefix + "down_proj.weight", hid, S * inter}}} {
		h, err := b.host(f.spec, keep)
		if err != nil {
			return nil, err
		}
		*f.dst = h
	}
	fuse := gate.DType == dt && up.DType == dt && down.DType == dt
	if fuse && dt == kernels.FP8 && S > 1 {
		for _, h := range []kernels.HostMatrix{gate, up, down} {
			fuse = fuse && inter%h.BlockRows == 0 && inter%h.BlockCols == 0
		}
	}
	if !fuse && dt == kernels.F32 { // routed f32 (stored so, or a mixed layer widened): widen the shared ones too
		for _, h := range []*kernels.HostMatrix{&gate, &up, &down} {
			if err := WidenHost(h); err != nil {
				return nil, err
			}
		}
		fuse = true
	}
	if !fuse {
		return denseFromHost(b, S*inter, gate, up, down)
	}
	for s := range S {
		lo, hi := s*inter, (s+1)*inter
		d, err := down.SliceCols(lo, hi, fmt.Sprintf("%s[cols %d:%d]", down.Name, lo, hi))
		if err != nil {
			return nil, fmt.Errorf("loading weights: %w", err)
		}
		p.Gate = append(p.Gate, sliceRows(gate, RowRange{lo, hi}))
		p.Up = append(p.Up, sliceRows(up, RowRange{lo, hi}))
		p.Down = append(p.Down, d)
	}
	return nil, nil
}

// denseFromHost uploads an MLP of inter features from its fetched gate,
// up and down as LoadDenseMLP would (mixed gate and up widened to f32).
func denseFromHost(b *Builder, inter int, gate, up, down kernels.HostMatrix) (*DenseMLP, error) {
	gu := []kernels.HostMatrix{gate, up}
	if err := widenMixed(gu); err != nil {
		return nil, err
	}
	d := &DenseMLP{Inter: inter}
	var err error
	if d.GateUp, err = uploadParts(b, gu); err != nil {
		return nil, err
	}
	if d.Down, err = uploadParts(b, []kernels.HostMatrix{down}); err != nil {
		return nil, err
	}
	return d, nil
}

// Forward writes (or adds) the MoE output for n rows of xn to out [n,
// hidden] (FeedForward).
func (m *MoE) Forward(ctx Context, out, xn kernels.Buffer, n int, add bool) error {
	be := ctx.Backend()
	mb, err := moeOf(be)
	if err != nil {
		return err
	}
	rt, err := ctx.MoERoutes(mb, kernels.MoERoutesSpec{Rows: ctx.Chunk(), TopK: m.Routing.Slots(),
		Experts: m.Routing.Experts + m.Routing.Shared, Hidden: m.Hidden, Inter: m.Inter})
	if err != nil {
		return err
	}
	rl, err := ctx.Scratch("moe.router", ctx.Chunk()*m.Routing.Experts)
	if err != nil {
		return err
	}
	if rm, ok := be.(kernels.MoERouteMatMul); ok {
		rm.RouteMatMul(rt, m.gate, rl, xn, n, m.Router)
	} else {
		ctx.MatMul(xn, n, m.Router, nil, Outs{rl})
		mb.Route(rt, m.gate, rl, n)
	}
	// Separate shared experts write (or add to) out first; the routed ones
	// add to it (fused shared experts are among m.Experts).
	if m.Shared != nil {
		if err := m.Shared.Forward(ctx, out, xn, n, add); err != nil {
			return err
		}
	}
	if m.Experts != nil {
		mb.MoEExperts(out, xn, n, m.Experts, rt, add || m.Shared != nil)
	} else if m.Shared == nil && !add {
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
