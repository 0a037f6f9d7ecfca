package cpu

import (
	"fmt"
	"sync/atomic"

	"github.com/deepseek-go/deepseek-go/kernels"
	"github.com/deepseek-go/deepseek-go/kernels/routing"
)

// The MoE capability on the host: routing is kernels/routing itself, and
// each held expert is an ordinary fused gate|up and down Matrix run with
// MatMul over the rows routed to it (gathered when not all of them), its
// output added to each row with the routing weight in expert order. This
// is the reference the device kernels are tested against.

var (
	_ kernels.MoE            = (*Backend)(nil)
	_ kernels.MoERouteMatMul = (*Backend)(nil)
)

// Experts are a layer's routed experts in host memory: per expert a fused
// gate|up Matrix (or FP8Matrix) and a down one.
type Experts struct {
	first, hidden, inter int
	dt                   kernels.DType
	gateUp, down         []kernels.Matrix
}

// First implements kernels.Experts.
func (e *Experts) First() int { return e.first }

// Count implements kernels.Experts.
func (e *Experts) Count() int { return len(e.gateUp) }

// Hidden implements kernels.Experts.
func (e *Experts) Hidden() int { return e.hidden }

// Inter implements kernels.Experts.
func (e *Experts) Inter() int { return e.inter }

// DType implements kernels.Experts.
func (e *Experts) DType() kernels.DType { return e.dt }

// Bytes implements kernels.Experts.
func (e *Experts) Bytes() int64 {
	var n int64
	for i := range e.gateUp {
		n += e.gateUp[i].Bytes() + e.down[i].Bytes()
	}
	return n
}

// UploadExperts implements kernels.MoE: each expert's matrices as
// UploadMatrix makes them (float parts in place or concatenated once, fp8
// kept, int8 quantised per row).
func (b *Backend) UploadExperts(p kernels.ExpertParts, toInt8 bool) (kernels.Experts, error) {
	hidden, inter, err := kernels.CheckExperts(p)
	if err != nil {
		return nil, fmt.Errorf("cpu: %w", err)
	}
	e := &Experts{first: p.First, hidden: hidden, inter: inter,
		gateUp: make([]kernels.Matrix, len(p.Gate)), down: make([]kernels.Matrix, len(p.Gate))}
	for i := range p.Gate {
		if e.gateUp[i], err = b.UploadMatrix([]kernels.HostMatrix{p.Gate[i], p.Up[i]}, toInt8); err != nil {
			return nil, err
		}
		if e.down[i], err = b.UploadMatrix([]kernels.HostMatrix{p.Down[i]}, toInt8); err != nil {
			return nil, err
		}
	}
	e.dt = e.gateUp[0].DType()
	return e, nil
}

// Router is a layer's routing config and bias with its selection counters.
type Router struct {
	cfg    routing.Config
	bias   []float32
	tokens atomic.Int64
	counts []atomic.Int64
}

// Config implements kernels.MoERouter.
func (r *Router) Config() routing.Config { return r.cfg }

// Counts implements kernels.MoERouter.
func (r *Router) Counts() (int64, []int64, error) {
	out := make([]int64, len(r.counts))
	for i := range out {
		out[i] = r.counts[i].Load()
	}
	return r.tokens.Load(), out, nil
}

// ResetCounts implements kernels.MoERouter.
func (r *Router) ResetCounts() error {
	r.tokens.Store(0)
	for i := range r.counts {
		r.counts[i].Store(0)
	}
	return nil
}

// NewMoERouter implements kernels.MoE.
func (b *Backend) NewMoERouter(cfg routing.Config, bias []float32) (kernels.MoERouter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cpu: NewMoERouter: %w", err)
	}
	if err := cfg.CheckBias(bias); err != nil {
		return nil, fmt.Errorf("cpu: NewMoERouter: %w", err)
	}
	return &Router{cfg: cfg, bias: append([]float32(nil), bias...), counts: make([]atomic.Int64, cfg.Experts)}, nil
}

// Routes is one session's routing results and expert scratch, sized once
// so that a decode step allocates nothing.
type Routes struct {
	spec             kernels.MoERoutesSpec
	sc               routing.Scratch
	idx              []int     // [rows, TopK]
	w                []float32 // [rows, TopK]
	assign           [][]moeAssign
	xg, gate, up, yg *Buffer
	outs             [2]kernels.Buffer // MatMul's output list without allocating
}

type moeAssign struct {
	tok int
	w   float32
}

// Spec implements kernels.MoERoutes.
func (r *Routes) Spec() kernels.MoERoutesSpec { return r.spec }

// NewMoERoutes implements kernels.MoE.
func (b *Backend) NewMoERoutes(spec kernels.MoERoutesSpec) (kernels.MoERoutes, error) {
	if err := spec.Check(); err != nil {
		return nil, fmt.Errorf("cpu: %w", err)
	}
	n := spec.Rows
	r := &Routes{spec: spec, idx: make([]int, n*spec.TopK), w: make([]float32, n*spec.TopK),
		assign: make([][]moeAssign, spec.Experts),
		xg:     &Buffer{data: make([]float32, n*spec.Hidden)},
		gate:   &Buffer{data: make([]float32, n*spec.Inter)},
		up:     &Buffer{data: make([]float32, n*spec.Inter)},
		yg:     &Buffer{data: make([]float32, n*spec.Hidden)}}
	for e := range r.assign {
		r.assign[e] = make([]moeAssign, 0, n)
	}
	return r, nil
}

// Route implements kernels.MoE with routing.Route, row by row.
func (b *Backend) Route(rt kernels.MoERoutes, r kernels.MoERouter, logits kernels.Buffer, n int) {
	ro, rr := rt.(*Routes), r.(*Router)
	c := &rr.cfg
	E, k := c.Experts, c.Slots()
	if n > ro.spec.Rows || k != ro.spec.TopK || E+c.Shared > ro.spec.Experts {
		panic(fmt.Sprintf("cpu: Route: %d rows of %d experts top-%d + %d shared into routes %+v", n, E, c.TopK, c.Shared, ro.spec))
	}
	lg := buf(logits)
	for t := range n {
		idx := ro.idx[t*k : (t+1)*k]
		routing.Route(c, rr.bias, &ro.sc, lg[t*E:(t+1)*E], idx, ro.w[t*k:(t+1)*k])
		for _, e := range idx[:c.TopK] { // the shared slots are not selections
			rr.counts[e].Add(1)
		}
	}
	rr.tokens.Add(int64(n))
}

// ReadRoutes implements kernels.MoE.
func (b *Backend) ReadRoutes(rt kernels.MoERoutes, n int, idx []int32, w []float32) error {
	ro := rt.(*Routes)
	m := n * ro.spec.TopK
	if n < 0 || n > ro.spec.Rows || len(idx) < m || len(w) < m {
		return fmt.Errorf("cpu: ReadRoutes of %d rows (routes of %d, %d indices, %d weights)", n, ro.spec.Rows, len(idx), len(w))
	}
	for i, e := range ro.idx[:m] {
		idx[i] = int32(e)
	}
	copy(w, ro.w[:m])
	return nil
}

// MoEExperts implements kernels.MoE. Experts run in index order, each on
// its rows in row order, and add w·y to out row by row, so results do not
// depend on threads.
func (b *Backend) MoEExperts(out, x kernels.Buffer, n int, ex kernels.Experts, rt kernels.MoERoutes, accumulate bool) {
	e, ro := ex.(*Experts), rt.(*Routes)
	hid, inter, k := e.hidden, e.inter, ro.spec.TopK
	if n > ro.spec.Rows || hid > ro.spec.Hidden || inter > ro.spec.Inter || e.first+len(e.gateUp) > ro.spec.Experts {
		panic(fmt.Sprintf("cpu: MoEExperts: %d rows, experts [%d, %d) of %d→%d into routes %+v", n, e.first, e.first+len(e.gateUp), hid, inter, ro.spec))
	}
	o, xs := buf(out), buf(x)
	if !accumulate {
		clear(o[:n*hid])
	}
	held := ro.assign[e.first : e.first+len(e.gateUp)]
	for i := range held {
		held[i] = held[i][:0]
	}
	for t := range n {
		for j, g := range ro.idx[t*k : (t+1)*k] {
			if i := g - e.first; i >= 0 && i < len(held) {
				held[i] = append(held[i], moeAssign{tok: t, w: ro.w[t*k+j]})
			}
		}
	}
	yg := ro.yg.data
	for i, as := range held {
		if len(as) == 0 {
			continue
		}
		in := x // every row, in order (always so when decoding): no gather
		if len(as) < n {
			in = ro.xg
			for j, a := range as {
				copy(ro.xg.data[j*hid:(j+1)*hid], xs[a.tok*hid:(a.tok+1)*hid])
			}
		}
		ro.outs[0], ro.outs[1] = ro.gate, ro.up
		b.MatMul(ro.outs[:2], in, len(as), e.gateUp[i], nil)
		b.SwiGLU(ro.gate, ro.gate, ro.up, len(as)*inter)
		ro.outs[0], ro.outs[1] = ro.yg, nil
		b.MatMul(ro.outs[:1], ro.gate, len(as), e.down[i], nil)
		ro.outs[0] = nil
		for j, a := range as {
			b.kern.Axpy(o[a.tok*hid:(a.tok+1)*hid], a.w, yg[j*hid:(j+1)*hid])
		}
	}
}
