//go:build linux && cgo

package cuda

import (
	"fmt"
	"math"
	"runtime"
	"unsafe"

	"github.com/deepseek-go/deepseek-go/kernels"
	"github.com/deepseek-go/deepseek-go/kernels/routing"
)

// The MoE capability (kernels.MoE) on the GPU; the kernels are moe.cuh.
// A layer is, with no host round trip:
//
//	route:          moe_route, one warp per row (indices equal the host's)
//	n ≤ 8 rows:     moe_gateup_dec (gate|up of each selected expert, SwiGLU
//	                in registers), moe_down_dec (down, routing weight and
//	                the sum over the k experts in slot order)
//	n > 8 rows:     moe_sort (stable counting sort of the pairs by expert,
//	                tile table), moe_gateup_grp and moe_down_grp (grouped
//	                GEMMs, tiles mapped to (expert, pair range) on the
//	                device from an upper-bound grid; moe_*_mma on tensor
//	                cores for bf16/f16/fp8), moe_combine
//
// so a decode step (one row) is three launches and captures as a graph.
// fp8 experts stay fp8 (one byte per value and the block scales): the
// kernels read them as gemv_fp8 does, and the tensor-core kernels
// dequantise each weight tile to bf16 in shared memory.

var (
	_ kernels.MoE            = (*Backend)(nil)
	_ kernels.MoE            = captureView{}
	_ kernels.MoERouteMatMul = (*Backend)(nil)
	_ kernels.MoERouteMatMul = captureView{}
)

const (
	moeDecodeRows = 8   // rows up to which the decode kernels run
	moeTile       = 64  // pairs per tile of the grouped kernels (moe.cuh)
	moeMaxExperts = 256 // routed experts of a router
	moeMaxTopK    = 32  // slots per row: top-k plus shared experts
	moeMaxGroups  = 32
	moeMaxHeld    = 288 // experts a layer's kernels hold, shared ones included (MOE_MAX_HELD in moe.cuh)
)

// Experts are a layer's routed experts in device memory: gate|up
// [cnt, 2·inter, hidden] and down [cnt, hidden, inter] in one dtype, with
// float32 scales gus and dns: per row for int8; for fp8 the block scales
// of each stacked array (every expert's rows a multiple of the block
// height: stacked row R uses scale row R / br).
type Experts struct {
	gu, gus, dn, dns          devptr
	first, cnt, hidden, inter int
	dt                        kernels.DType
	br, bc                    int // fp8 block shape
}

// First implements kernels.Experts.
func (e *Experts) First() int { return e.first }

// Count implements kernels.Experts.
func (e *Experts) Count() int { return e.cnt }

// Hidden implements kernels.Experts.
func (e *Experts) Hidden() int { return e.hidden }

// Inter implements kernels.Experts.
func (e *Experts) Inter() int { return e.inter }

// DType implements kernels.Experts.
func (e *Experts) DType() kernels.DType { return e.dt }

// Bytes implements kernels.Experts.
func (e *Experts) Bytes() int64 {
	n := 3 * int64(e.cnt) * int64(e.hidden) * int64(e.inter) * int64(e.dt.Size())
	switch e.dt {
	case kernels.Int8:
		n += int64(e.cnt) * int64(2*e.inter+e.hidden) * 4
	case kernels.FP8:
		gu, dn := e.fp8Layouts()
		n += 4 * (int64(e.cnt) * int64(2*e.inter/e.br) * int64(gu.sc))
		n += 4 * (int64(e.cnt) * int64(e.hidden/e.br) * int64(dn.sc))
	}
	return n
}

// fp8Layouts are the scale layouts of fp8 experts' gate|up and down arrays:
// one part each, stacked row R using scale row R / br.
func (e *Experts) fp8Layouts() (gu, dn *fp8Layout) {
	return &fp8Layout{sc: (e.hidden + e.bc - 1) / e.bc, br: e.br, bc: e.bc},
		&fp8Layout{sc: (e.inter + e.bc - 1) / e.bc, br: e.br, bc: e.bc}
}

// fp8Descs are the kernels' FP8Scales arguments for gate|up and down
// (zero for other dtypes: the kernels ignore them).
func (e *Experts) fp8Descs() (gu, dn [48]byte) {
	if e.dt != kernels.FP8 {
		return gu, dn
	}
	lg, ld := e.fp8Layouts()
	return fp8DescOf(e.gus, lg, []int{e.cnt * 2 * e.inter}, e.cnt*2*e.inter),
		fp8DescOf(e.dns, ld, []int{e.cnt * e.hidden}, e.cnt*e.hidden)
}

// checkFP8Experts checks that fp8 parts stack with one scale grid per
// array: one block shape, every part starting a block (ScaleRow0 0) and
// its rows a multiple of the block height (V3's 2048 and 7168 rows of
// 128×128 blocks are), and returns the block shape.
func checkFP8Experts(parts ...[]kernels.HostMatrix) (br, bc int, err error) {
	f := parts[0][0]
	br, bc = f.BlockRows, f.BlockCols
	for _, ps := range parts {
		for _, h := range ps {
			switch {
			case h.BlockRows != br || h.BlockCols != bc:
				return 0, 0, fmt.Errorf("cuda: UploadExperts %s: fp8 blocks %d×%d differ from %d×%d of %s", h.Name, h.BlockRows, h.BlockCols, br, bc, f.Name)
			case h.ScaleRow0 != 0 || h.Rows%br != 0:
				return 0, 0, fmt.Errorf("cuda: UploadExperts %s: fp8 experts need whole row blocks (%d rows, first row at %d in a block of %d rows)",
					h.Name, h.Rows, h.ScaleRow0, br)
			}
		}
	}
	for _, ps := range parts { // the kernels index stacked rows with int
		if rows := int64(len(ps)) * int64(ps[0].Rows); rows > math.MaxInt32 {
			return 0, 0, fmt.Errorf("cuda: UploadExperts %s: %d stacked fp8 rows", ps[0].Name, rows)
		}
	}
	return br, bc, nil
}

// UploadExperts implements kernels.MoE: the experts are stacked into two
// device arrays (streamed through the pinned staging buffers); with int8
// float and fp8 parts are quantised per row on the host, as UploadMatrix
// does; fp8 parts stay fp8, their block scales stacked after them.
func (b *Backend) UploadExperts(p kernels.ExpertParts, toInt8 bool) (kernels.Experts, error) {
	hidden, inter, err := kernels.CheckExperts(p)
	if err != nil {
		return nil, fmt.Errorf("cuda: %w", err)
	}
	cnt := len(p.Gate)
	gu := make([]kernels.HostMatrix, 0, 2*cnt)
	for i := range cnt {
		gu = append(gu, p.Gate[i], p.Up[i])
	}
	dn := append([]kernels.HostMatrix(nil), p.Down...)
	dt := p.Gate[0].DType
	var br, bc int
	if dt == kernels.FP8 && !toInt8 {
		if br, bc, err = checkFP8Experts(gu, dn); err != nil {
			return nil, err
		}
	}
	if toInt8 && dt != kernels.Int8 {
		if gu, err = quantizeParts(gu); err != nil {
			return nil, err
		}
		if dn, err = quantizeParts(dn); err != nil {
			return nil, err
		}
		dt = kernels.Int8
	}
	e := &Experts{first: p.First, cnt: cnt, hidden: hidden, inter: inter, dt: dt, br: br, bc: bc}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.hostErr("UploadExperts " + p.Gate[0].Name); err != nil {
		return nil, err
	}
	es := int64(dt.Size())
	guN, dnN := int64(cnt)*2*int64(inter)*int64(hidden), int64(cnt)*int64(hidden)*int64(inter)
	var held []devptr
	fail := func(err error) (kernels.Experts, error) {
		for _, q := range held {
			b.alloc.put(q)
		}
		free, _, _ := b.x.memInfo()
		return nil, fmt.Errorf("cuda: UploadExperts %s (%d experts, %d bytes, %d free on the device): %w", p.Gate[0].Name, cnt, e.Bytes(), free, err)
	}
	get := func(n int64) (devptr, error) {
		q, err := b.alloc.get(n)
		if err == nil {
			held = append(held, q)
		}
		return q, err
	}
	if e.gu, err = get(guN * es); err != nil {
		return fail(err)
	}
	if err := b.uploadStaged(e.gu, gu); err != nil {
		return fail(err)
	}
	if e.dn, err = get(dnN * es); err != nil {
		return fail(err)
	}
	if err := b.uploadStaged(e.dn, dn); err != nil {
		return fail(err)
	}
	if dt == kernels.Int8 || dt == kernels.FP8 {
		for _, s := range []struct {
			dst   *devptr
			parts []kernels.HostMatrix
		}{{&e.gus, gu}, {&e.dns, dn}} {
			var sc []float32
			for _, q := range s.parts {
				sc = append(sc, q.Scales...)
			}
			if *s.dst, err = get(int64(len(sc)) * 4); err != nil {
				return fail(err)
			}
			if err := b.x.htod(*s.dst, unsafe.Pointer(&sc[0]), int64(len(sc))*4); err != nil {
				return fail(err)
			}
		}
	}
	if dt == kernels.F32 {
		b.sawF32 = true
	}
	return e, nil
}

// Router is a layer's routing config on the device: the correction bias
// and the selection counters (int64 per expert, then rows routed).
type Router struct {
	b      *Backend
	cfg    routing.Config
	bias   devptr // 0 unless noaux_tc
	counts devptr
}

// Config implements kernels.MoERouter.
func (r *Router) Config() routing.Config { return r.cfg }

// Counts implements kernels.MoERouter: it waits for issued work and reads
// the counters.
func (r *Router) Counts() (int64, []int64, error) {
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.hostErr("MoE router counters read"); err != nil {
		return 0, nil, err
	}
	if b.err != nil {
		return 0, nil, b.err
	}
	E := r.cfg.Experts
	c := make([]uint64, E+1)
	if err := b.x.dtoh(unsafe.Pointer(&c[0]), r.counts, int64(E+1)*8); err != nil {
		b.fail(err)
		return 0, nil, err
	}
	out := make([]int64, E)
	for i := range out {
		out[i] = int64(c[i])
	}
	return int64(c[E]), out, nil
}

// ResetCounts implements kernels.MoERouter (ordered after issued work).
func (r *Router) ResetCounts() error {
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.hostErr("MoE router counters reset"); err != nil {
		return err
	}
	return b.x.memset32(r.counts, 0, 2*int64(r.cfg.Experts+1))
}

// NewMoERouter implements kernels.MoE.
func (b *Backend) NewMoERouter(cfg routing.Config, bias []float32) (kernels.MoERouter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cuda: NewMoERouter: %w", err)
	}
	if err := cfg.CheckBias(bias); err != nil {
		return nil, fmt.Errorf("cuda: NewMoERouter: %w", err)
	}
	if cfg.Experts > moeMaxExperts || cfg.Slots() > moeMaxTopK || cfg.Groups > moeMaxGroups || cfg.Experts+cfg.Shared > moeMaxHeld {
		return nil, fmt.Errorf("cuda: NewMoERouter: %d experts, top-%d + %d shared, %d groups: the routing kernel takes at most %d experts, %d slots, %d groups, %d experts with the shared ones",
			cfg.Experts, cfg.TopK, cfg.Shared, cfg.Groups, moeMaxExperts, moeMaxTopK, moeMaxGroups, moeMaxHeld)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.hostErr("NewMoERouter"); err != nil {
		return nil, err
	}
	r := &Router{b: b, cfg: cfg}
	var err error
	if r.counts, err = b.alloc.get(int64(cfg.Experts+1) * 8); err != nil {
		return nil, fmt.Errorf("cuda: NewMoERouter: %w", err)
	}
	if err := b.x.memset32(r.counts, 0, 2*int64(cfg.Experts+1)); err != nil {
		b.alloc.put(r.counts)
		return nil, fmt.Errorf("cuda: NewMoERouter: %w", err)
	}
	if bias != nil {
		if r.bias, err = b.alloc.get(int64(len(bias)) * 4); err == nil {
			err = b.x.htod(r.bias, unsafe.Pointer(&bias[0]), int64(len(bias))*4)
		}
		if err != nil {
			b.alloc.put(r.counts)
			b.alloc.put(r.bias)
			return nil, fmt.Errorf("cuda: NewMoERouter bias: %w", err)
		}
	}
	al := b.alloc
	runtime.SetFinalizer(r, func(r *Router) { al.put(r.counts); al.put(r.bias) })
	return r, nil
}

// Routes is one session's routing results and expert scratch on the
// device: idx and w [rows, k]; H [rows·k, inter] (the SwiGLU of each pair);
// for more than moeDecodeRows rows the sorted pair list, expert offsets,
// tile starts and Y [rows·k, hidden] (each pair's unweighted expert output).
type Routes struct {
	spec                             kernels.MoERoutesSpec
	idx, w, h, y, list, offs, tstart devptr
	done                             devptr // moe_router_dec's finished-block counter (fuse.cuh), zero between launches
	al                               *allocator
}

// Spec implements kernels.MoERoutes.
func (r *Routes) Spec() kernels.MoERoutesSpec { return r.spec }

func (r *Routes) release() {
	for _, p := range []devptr{r.idx, r.w, r.h, r.y, r.list, r.offs, r.tstart, r.done} {
		r.al.put(p)
	}
}

// NewMoERoutes implements kernels.MoE.
func (b *Backend) NewMoERoutes(spec kernels.MoERoutesSpec) (kernels.MoERoutes, error) {
	if err := spec.Check(); err != nil {
		return nil, fmt.Errorf("cuda: %w", err)
	}
	if spec.Experts > moeMaxHeld || spec.TopK > moeMaxTopK {
		return nil, fmt.Errorf("cuda: NewMoERoutes: %d experts, %d slots: at most %d, %d", spec.Experts, spec.TopK, moeMaxHeld, moeMaxTopK)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.hostErr("NewMoERoutes"); err != nil {
		return nil, err
	}
	r := &Routes{spec: spec, al: b.alloc}
	pairs := int64(spec.Rows) * int64(spec.TopK)
	sizes := []struct {
		dst *devptr
		n   int64
	}{{&r.idx, pairs * 4}, {&r.w, pairs * 4}, {&r.h, pairs * int64(spec.Inter) * 4}, {&r.done, 4}}
	if spec.Rows > moeDecodeRows {
		sizes = append(sizes, []struct {
			dst *devptr
			n   int64
		}{{&r.y, pairs * int64(spec.Hidden) * 4}, {&r.list, pairs * 4},
			{&r.offs, int64(spec.Experts+1) * 4}, {&r.tstart, int64(spec.Experts+1) * 4}}...)
	}
	for _, s := range sizes {
		p, err := b.alloc.get(s.n)
		if err != nil {
			r.release()
			free, _, _ := b.x.memInfo()
			return nil, fmt.Errorf("cuda: NewMoERoutes %+v: %d bytes (%d free): %w", spec, s.n, free, err)
		}
		*s.dst = p
	}
	if err := b.x.memset32(r.done, 0, 1); err != nil {
		r.release()
		return nil, fmt.Errorf("cuda: NewMoERoutes: %w", err)
	}
	runtime.SetFinalizer(r, func(r *Routes) { r.release() })
	return r, nil
}

// Route implements kernels.MoE.
func (b *Backend) Route(rt kernels.MoERoutes, r kernels.MoERouter, logits kernels.Buffer, n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.route(rt, r, logits, n)
}

func (b *Backend) route(rt kernels.MoERoutes, r kernels.MoERouter, logits kernels.Buffer, n int) {
	ro, rr, lb, ok := b.routeCheck(rt, r, logits, n)
	if !ok {
		return
	}
	b.launch("moe_route", dim3{n, 1, 1}, dim3{32, 1, 1}, 0, func(a *args) { routeArgs(a, ro, rr, lb, n) })
	runtime.KeepAlive(logits)
}

// routeCheck resolves and checks a Route call's arguments; ok is false
// (any failure recorded) when there is nothing to launch.
func (b *Backend) routeCheck(rt kernels.MoERoutes, r kernels.MoERouter, logits kernels.Buffer, n int) (ro *Routes, rr *Router, lb *Buffer, ok bool) {
	ro, ok1 := rt.(*Routes)
	rr, ok2 := r.(*Router)
	lb = b.dev(logits)
	if !ok1 || !ok2 || lb == nil {
		b.failf("Route: routes %T, router %T", rt, r)
		return nil, nil, nil, false
	}
	if n <= 0 {
		return nil, nil, nil, false
	}
	c := &rr.cfg
	switch {
	case n > ro.spec.Rows:
		b.failf("Route: %d rows into routes of %d", n, ro.spec.Rows)
		return nil, nil, nil, false
	case c.Slots() != ro.spec.TopK || c.Experts+c.Shared > ro.spec.Experts:
		b.failf("Route: %d experts top-%d + %d shared into routes for %d experts, %d slots", c.Experts, c.TopK, c.Shared, ro.spec.Experts, ro.spec.TopK)
		return nil, nil, nil, false
	case lb.n < n*c.Experts:
		b.failf("Route: logits of %d floats for %d rows × %d experts", lb.n, n, c.Experts)
		return nil, nil, nil, false
	}
	return ro, rr, lb, true
}

// routeArgs writes moe_route's parameters (moe_router_dec's after its
// first four).
func routeArgs(a *args, ro *Routes, rr *Router, lb *Buffer, n int) {
	c := &rr.cfg
	method := map[string]int{routing.TopKGreedy: 0, routing.TopKGroupLimit: 1, routing.TopKNoAuxTC: 2}[c.Method]
	groups := max(c.Groups, 1)
	flag := func(v bool) int {
		if v {
			return 1
		}
		return 0
	}
	a.ptr(ro.idx).ptr(ro.w).ptr(rr.counts).ptr(lb.p).ptr(rr.bias).i32(n).i32(c.Experts).i32(c.TopK).i32(c.Shared).
		i32(groups).i32(c.TopGroups).i32(method).i32(flag(c.Scoring == routing.ScoringSigmoid)).
		i32(flag(c.Normalise())).i32(flag(c.Scaled())).f32(c.Scale)
}

// RouteMatMul implements kernels.MoERouteMatMul: up to 8 rows of a 16-bit
// or f32 router with 16-byte rows in one launch (moe_router_dec, fuse.cuh:
// the GEMV's blocks, then the last of them routes); others as MatMul and
// Route.
func (b *Backend) RouteMatMul(rt kernels.MoERoutes, r kernels.MoERouter, logits, x kernels.Buffer, n int, router kernels.Matrix) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.routeMatMul(rt, r, logits, x, n, router)
}

func (b *Backend) routeMatMul(rt kernels.MoERoutes, r kernels.MoERouter, logits, x kernels.Buffer, n int, router kernels.Matrix) {
	m, ok := router.(*Matrix)
	xb := b.dev(x)
	if !ok || xb == nil {
		b.failf("RouteMatMul: router %T, x %T", router, x)
		return
	}
	rr, _ := r.(*Router)
	dts := dtSuffix(m.dt) // moe_router_dec has 16-bit and f32 instances only
	if n > 8 || m.dt == kernels.Int8 || m.dt == kernels.FP8 || dts == "" || rr == nil || len(m.parts) != 1 || m.rows != rr.cfg.Experts || m.cols%(16/m.dt.Size()) != 0 {
		b.matmul([]kernels.Buffer{logits}, x, n, router, nil)
		b.route(rt, r, logits, n)
		return
	}
	if xb.n < n*m.cols {
		b.failf("RouteMatMul: x of %d floats for %d rows × %d", xb.n, n, m.cols)
		return
	}
	ro, rr, lb, ok := b.routeCheck(rt, r, logits, n)
	if !ok {
		return
	}
	nt := 8
	if n == 1 {
		nt = 1
	}
	warps := (m.rows + 1) / 2 // R = 2 experts a warp
	b.launch(fmt.Sprintf("moe_router_%s_%d", dts, nt), dim3{(warps + 7) / 8, 1, 1}, dim3{256, 1, 1}, 0, func(a *args) {
		a.ptr(m.p).ptr(xb.p).i32(m.cols).ptr(ro.done)
		routeArgs(a, ro, rr, lb, n)
	})
	runtime.KeepAlive(logits)
	runtime.KeepAlive(x)
}

// MoEExperts implements kernels.MoE.
func (b *Backend) MoEExperts(out, x kernels.Buffer, n int, ex kernels.Experts, rt kernels.MoERoutes, accumulate bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.moeExperts(out, x, n, ex, rt, accumulate)
}

func (b *Backend) moeExperts(out, x kernels.Buffer, n int, ex kernels.Experts, rt kernels.MoERoutes, accumulate bool) {
	e, ok1 := ex.(*Experts)
	ro, ok2 := rt.(*Routes)
	ob, xb := b.dev(out), b.dev(x)
	if !ok1 || !ok2 || ob == nil || xb == nil {
		b.failf("MoEExperts: experts %T, routes %T", ex, rt)
		return
	}
	if n <= 0 {
		return
	}
	hid, inter, k := e.hidden, e.inter, ro.spec.TopK
	switch {
	case n > ro.spec.Rows:
		b.failf("MoEExperts: %d rows into routes of %d", n, ro.spec.Rows)
		return
	case hid > ro.spec.Hidden || inter > ro.spec.Inter || e.first+e.cnt > ro.spec.Experts:
		b.failf("MoEExperts: experts [%d, %d) of %d→%d into routes %+v", e.first, e.first+e.cnt, hid, inter, ro.spec)
		return
	case ob.n < n*hid || xb.n < n*hid:
		b.failf("MoEExperts: out of %d and x of %d floats for %d rows × %d", ob.n, xb.n, n, hid)
		return
	case ob.p == xb.p:
		b.failf("MoEExperts: out aliases x")
		return
	}
	dts := dtSuffix(e.dt)
	gq, dq := e.fp8Descs()
	cshift := -1
	wsc, dsc := e.gus, e.dns // int8's row scales; fp8's block scales travel in gq, dq
	if e.dt == kernels.FP8 {
		cshift = fp8CShift(e.bc)
		wsc, dsc = 0, 0
	}
	acc := 0
	if accumulate {
		acc = 1
	}
	if n <= moeDecodeRows {
		const rowsPerBlock = 8 * 2 // gate|up: 8 warps of R = 2 features (moe.cuh)
		const downRows = 4         // down: MOE_DOWN_R features a block (moe.cuh)
		b.launch("moe_gateup_dec_"+dts, dim3{(inter + rowsPerBlock - 1) / rowsPerBlock, n * k, 1}, dim3{256, 1, 1}, 0, func(a *args) {
			a.ptr(e.gu).ptr(wsc).ptr(xb.p).ptr(ro.idx).ptr(ro.h).i32(k).i32(e.first).i32(e.cnt).i32(hid).i32(inter).
				raw(gq[:], 8).i32(cshift)
		})
		b.launch("moe_down_dec_"+dts, dim3{(hid + downRows - 1) / downRows, n, 1}, dim3{256, 1, 1}, 0, func(a *args) {
			a.ptr(e.dn).ptr(dsc).ptr(ro.h).ptr(ro.idx).ptr(ro.w).ptr(ob.p).i32(k).i32(e.first).i32(e.cnt).i32(hid).i32(inter).i32(acc).
				raw(dq[:], 8).i32(cshift)
		})
		runtime.KeepAlive(out)
		runtime.KeepAlive(x)
		return
	}
	pairs := n * k
	// Σ_e ceil(c_e/T) ≤ ceil(pairs/T) + cnt: the grid covers every tile,
	// and blocks past the last one (known only on the device) exit.
	tiles := (pairs+moeTile-1)/moeTile + e.cnt
	if tiles > 65535 {
		b.failf("MoEExperts: %d tiles exceed the grid (rows %d top-%d)", tiles, n, k)
		return
	}
	b.launch("moe_sort", dim3{1, 1, 1}, dim3{1024, 1, 1}, 0, func(a *args) {
		a.ptr(ro.list).ptr(ro.offs).ptr(ro.tstart).ptr(ro.idx).i32(pairs).i32(e.first).i32(e.cnt).i32(moeTile)
	})
	if e.mma() {
		// Tensor cores, on activations rounded to the weight dtype (bf16
		// for fp8).
		b.launch("moe_gateup_mma_"+dts, dim3{(inter + 31) / 32, tiles, 1}, dim3{128, 1, 1}, 0, func(a *args) {
			a.ptr(e.gu).ptr(xb.p).ptr(ro.list).ptr(ro.offs).ptr(ro.tstart).ptr(ro.h).i32(k).i32(e.cnt).i32(hid).i32(inter).raw(gq[:], 8)
		})
		b.launch("moe_down_mma_"+dts, dim3{(hid + 63) / 64, tiles, 1}, dim3{128, 1, 1}, 0, func(a *args) {
			a.ptr(e.dn).ptr(ro.h).ptr(ro.list).ptr(ro.offs).ptr(ro.tstart).ptr(ro.y).i32(e.cnt).i32(hid).i32(inter).raw(dq[:], 8)
		})
	} else {
		b.launch("moe_gateup_grp_"+dts, dim3{(inter + 31) / 32, tiles, 1}, dim3{256, 1, 1}, 0, func(a *args) {
			a.ptr(e.gu).ptr(wsc).ptr(xb.p).ptr(ro.list).ptr(ro.offs).ptr(ro.tstart).ptr(ro.h).i32(k).i32(e.cnt).i32(hid).i32(inter).raw(gq[:], 8)
		})
		b.launch("moe_down_grp_"+dts, dim3{(hid + 63) / 64, tiles, 1}, dim3{256, 1, 1}, 0, func(a *args) {
			a.ptr(e.dn).ptr(dsc).ptr(ro.h).ptr(ro.list).ptr(ro.offs).ptr(ro.tstart).ptr(ro.y).i32(e.cnt).i32(hid).i32(inter).raw(dq[:], 8)
		})
	}
	b.launch("moe_combine", dim3{(hid + 255) / 256, n, 1}, dim3{256, 1, 1}, 0, func(a *args) {
		a.ptr(ob.p).ptr(ro.y).ptr(ro.idx).ptr(ro.w).i32(k).i32(e.first).i32(e.cnt).i32(hid).i32(acc)
	})
	runtime.KeepAlive(out)
	runtime.KeepAlive(x)
}

// mma reports whether the grouped GEMMs run on tensor cores: 16-bit
// weights, or fp8 whose 8-value chunks lie in one block column, with both
// widths multiples of 8.
func (e *Experts) mma() bool {
	switch {
	case e.hidden%8 != 0 || e.inter%8 != 0:
		return false
	case e.dt == kernels.FP8:
		return e.bc%8 == 0
	}
	return e.dt == kernels.BF16 || e.dt == kernels.F16
}

// ReadRoutes implements kernels.MoE.
func (b *Backend) ReadRoutes(rt kernels.MoERoutes, n int, idx []int32, w []float32) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.hostErr("ReadRoutes"); err != nil {
		return err
	}
	ro, ok := rt.(*Routes)
	if !ok {
		return fmt.Errorf("cuda: ReadRoutes: routes of type %T", rt)
	}
	m := n * ro.spec.TopK
	if n <= 0 || n > ro.spec.Rows || len(idx) < m || len(w) < m {
		return fmt.Errorf("cuda: ReadRoutes of %d rows (routes of %d, %d indices, %d weights)", n, ro.spec.Rows, len(idx), len(w))
	}
	if b.err != nil {
		return b.err
	}
	if err := b.x.dtoh(unsafe.Pointer(&idx[0]), ro.idx, int64(m)*4); err != nil {
		b.fail(err)
		return err
	}
	if err := b.x.dtoh(unsafe.Pointer(&w[0]), ro.w, int64(m)*4); err != nil {
		b.fail(err)
		return err
	}
	return nil
}

// The capture view forwards the compute ops of the capability (CaptureStep
// holds the lock); making or reading MoE state is refused as Alloc and
// Download are.

func (v captureView) UploadExperts(p kernels.ExpertParts, _ bool) (kernels.Experts, error) {
	return nil, fmt.Errorf("cuda: UploadExperts during graph capture")
}
func (v captureView) NewMoERouter(routing.Config, []float32) (kernels.MoERouter, error) {
	return nil, fmt.Errorf("cuda: NewMoERouter during graph capture")
}
func (v captureView) NewMoERoutes(kernels.MoERoutesSpec) (kernels.MoERoutes, error) {
	return nil, fmt.Errorf("cuda: NewMoERoutes during graph capture")
}
func (v captureView) Route(rt kernels.MoERoutes, r kernels.MoERouter, logits kernels.Buffer, n int) {
	v.b.route(rt, r, logits, n)
}
func (v captureView) RouteMatMul(rt kernels.MoERoutes, r kernels.MoERouter, logits, x kernels.Buffer, n int, router kernels.Matrix) {
	v.b.routeMatMul(rt, r, logits, x, n, router)
}
func (v captureView) MoEExperts(out, x kernels.Buffer, n int, ex kernels.Experts, rt kernels.MoERoutes, accumulate bool) {
	v.b.moeExperts(out, x, n, ex, rt, accumulate)
}
func (v captureView) ReadRoutes(kernels.MoERoutes, int, []int32, []float32) error {
	return fmt.Errorf("cuda: ReadRoutes during graph capture")
}

// RandomExperts makes cnt experts (from global index first) directly on
// the device, for benchmarks at real model sizes without host data: bf16
// values uniform in [-scale, scale), or fp8 (random finite e4m3 codes in
// 128×128 blocks whose scales are all scale/448; hidden and inter must be
// multiples of 128).
func (b *Backend) RandomExperts(first, cnt, hidden, inter int, dt kernels.DType, seed uint32, scale float32) (*Experts, error) {
	if first < 0 || cnt <= 0 || hidden <= 0 || inter <= 0 {
		return nil, fmt.Errorf("cuda: RandomExperts: bad shape first %d, %d experts of %d→%d", first, cnt, hidden, inter)
	}
	if dt != kernels.BF16 && (dt != kernels.FP8 || hidden%128 != 0 || inter%128 != 0) {
		return nil, fmt.Errorf("cuda: RandomExperts: %v experts of %d→%d (bf16, or fp8 of whole 128×128 blocks)", dt, hidden, inter)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, errClosed
	}
	e := &Experts{first: first, cnt: cnt, hidden: hidden, inter: inter, dt: dt}
	if dt == kernels.FP8 {
		e.br, e.bc = 128, 128
	}
	n := int64(cnt) * int64(hidden) * int64(inter)
	es := int64(dt.Size())
	var held []devptr
	get := func(dst *devptr, bytes int64) error {
		p, err := b.alloc.get(bytes)
		if err != nil {
			for _, q := range held {
				b.alloc.put(q)
			}
			return fmt.Errorf("cuda: RandomExperts: %w", err)
		}
		held = append(held, p)
		*dst = p
		return nil
	}
	if err := get(&e.gu, 2*n*es); err != nil {
		return nil, err
	}
	if err := get(&e.dn, n*es); err != nil {
		return nil, err
	}
	if dt == kernels.FP8 {
		lg, ld := e.fp8Layouts()
		gs, ds := int64(cnt)*int64(2*inter/128)*int64(lg.sc), int64(cnt)*int64(hidden/128)*int64(ld.sc)
		if err := get(&e.gus, gs*4); err != nil {
			return nil, err
		}
		if err := get(&e.dns, ds*4); err != nil {
			return nil, err
		}
		for _, s := range []struct {
			p devptr
			n int64
		}{{e.gus, gs}, {e.dns, ds}} {
			b.launch("fill", dim3{blocks(s.n, 256), 1, 1}, dim3{256, 1, 1}, 0, func(a *args) {
				a.ptr(s.p).f32(scale / 448).i64(s.n)
			})
		}
	}
	for i, s := range []struct {
		p devptr
		n int64
	}{{e.gu, 2 * n}, {e.dn, n}} {
		if dt == kernels.FP8 {
			b.launch("moe_rand_fp8", dim3{blocks(s.n, 256), 1, 1}, dim3{256, 1, 1}, 0, func(a *args) {
				a.ptr(s.p).i64(s.n).u32(seed + uint32(i))
			})
			continue
		}
		b.launch("rand_bf16", dim3{blocks(s.n, 256), 1, 1}, dim3{256, 1, 1}, 0, func(a *args) {
			a.ptr(s.p).i64(s.n).u32(seed + uint32(i)).f32(scale)
		})
	}
	return e, b.err
}
