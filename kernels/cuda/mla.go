//go:build linux && cgo

package cuda

import (
	"fmt"

	"github.com/deepseek-go/deepseek-go/kernels"
)

// The MLA kernels of mla.cuh: MatMulHeads (the absorbed per-head
// projections) and the decode attention over an absorbed latent cache
// (one KV head, values inside the keys).

const (
	mlaHB      = 16  // MLA_HB: query heads per block
	mlaBN      = 32  // MLA_BN: cache rows per tile
	mlaTCBN    = 64  // MLA_TC_BN: cache rows per tile of the tensor-core kernel
	mlaMaxVD   = 512 // value columns the kernel's registers hold
	mlaMinKeys = 64  // keys per split at least (a split's fixed cost is its q and partials)
	mlaRows    = 16  // query rows per launch on the contiguous path (per-row kernels)
	mlaTR      = 4   // MLA_TR: query rows per block of the prefill kernel
	// mlaPrefillRows is the query rows per launch of the prefill kernel
	// (mla_attn_tc_rows_f16): 32 row tiles. Not measured yet.
	mlaPrefillRows = 128
	// headsGEMV is the most tokens MatMulHeads runs through the GEMV
	// kernel (weights read once per 8 tokens, from L2 after the first);
	// more go head by head through MatMul's GEMMs, four launches a head.
	// A session's prefill chunk (128) stays on the GEMV. Not measured yet.
	headsGEMV = 256
)

var dtypeNames = map[kernels.DType]string{kernels.F32: "f32", kernels.F16: "f16", kernels.BF16: "bf16", kernels.Int8: "i8"}

// mlaState is the backend's MLA state: MatMulHeads' staging of one
// head's input and output on its GEMM path (grown as needed, never during
// capture), and a switch for tests and benchmarks.
type mlaState struct {
	x, y       devptr
	xCap, yCap int64 // floats
	core       bool  // f16 caches on the float32 kernel too (tests, benchmarks)
	perRow     bool  // prefill on the per-row kernels too (tests, benchmarks)
	// prefillRows overrides mlaPrefillRows when > 0 (benchmarks).
	prefillRows int
	// The row tiles of the last paged batch on the prefill kernel
	// (mlaRowTiles), on the device and the host copy of what is there.
	tiles    devptr
	tilesCap int
	hTiles   []int32
}

// MLAPack implements kernels.Backend: one block a row (mla_pack), the
// latent norm with the rmsnorm kernel's arithmetic.
func (b *Backend) MLAPack(k, qabs, q, lat, kr, weight kernels.Buffer, n int, s kernels.MLAPackShape) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.mlaPack(k, qabs, q, lat, kr, weight, n, s)
}

func (b *Backend) mlaPack(k, qabs, q, lat, kr, weight kernels.Buffer, n int, s kernels.MLAPackShape) {
	if n <= 0 {
		return
	}
	kb, ab, qb, lb, rb, wb := b.dev(k), b.dev(qabs), b.dev(q), b.dev(lat), b.dev(kr), b.dev(weight)
	if kb == nil || ab == nil || qb == nil || lb == nil || rb == nil || wb == nil {
		return
	}
	if err := kernels.CheckMLAPack(kb, ab, qb, lb, rb, wb, n, s); err != nil {
		b.fail(fmt.Errorf("cuda: %w", err))
		return
	}
	var f devptr // the rope's frequencies (none: no rotation)
	var rscale float32
	inter := 0
	if r := s.RoPE; r != nil {
		if f = b.ropeFreqs(r); f == 0 {
			return
		}
		rscale = r.Scale
		if r.Interleaved {
			inter = 1
		}
	}
	b.launch("mla_pack", dim3{n, 1, 1}, dim3{256, 1, 1}, 0, func(a *args) {
		a.ptr(kb.p).ptr(ab.p).ptr(qb.p).ptr(lb.p).ptr(rb.p).ptr(wb.p).i32(s.Heads).i32(s.Nope).i32(s.Rope).i32(s.Lora).f32(s.Eps).
			i32(s.Pos0).ptr(b.dp).ptr(f).f32(rscale).i32(inter)
	})
}

// MatMulHeads implements kernels.Backend: up to headsGEMV tokens in one
// launch of the per-head GEMV (grid: row blocks × heads × 8-token chunks);
// more (prefill) as MatMul per head on the gathered slices, so each head
// gets cuBLASLt or the tensor-core GEMM.
func (b *Backend) MatMulHeads(y kernels.Buffer, yRow, yHead int, x kernels.Buffer, xRow, xHead, n int, w kernels.Matrix) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.matMulHeads(y, yRow, yHead, x, xRow, xHead, n, w)
}

func (b *Backend) matMulHeads(y kernels.Buffer, yRow, yHead int, x kernels.Buffer, xRow, xHead, n int, w kernels.Matrix) {
	m, ok := b.opMatrix("MatMulHeads", w, n)
	if !ok {
		return
	}
	yb, xb := b.dev(y), b.dev(x)
	if yb == nil || xb == nil {
		return
	}
	heads, rows, err := kernels.CheckHeads(yb, yRow, yHead, xb, xRow, xHead, n, m)
	if err != nil {
		b.fail(fmt.Errorf("cuda: %w", err))
		return
	}
	if _, ok := dtypeNames[m.dt]; !ok {
		b.failf("MatMulHeads: %v weights not supported", m.dt)
		return
	}
	es := m.dt.Size()
	if n > headsGEMV && !b.capturing && rows*m.cols*es%256 == 0 {
		b.matMulHeadsEach(yb, yRow, yHead, xb, xRow, xHead, n, m, heads, rows)
		return
	}
	if (n+7)/8 > 65535 {
		b.failf("MatMulHeads: %d tokens in one call", n)
		return
	}
	vec := 0
	if m.cols%(16/es) == 0 && xRow%4 == 0 && xHead%4 == 0 {
		vec = 1 // 16-byte weight rows and x slices
	}
	nt := 8
	if n == 1 {
		nt = 1
	}
	warps := (rows + 1) / 2 // R = 2 rows per warp
	b.launch(fmt.Sprintf("gemv_heads_%s_%d", dtypeNames[m.dt], nt), dim3{(warps + 7) / 8, heads, (n + nt - 1) / nt}, dim3{256, 1, 1}, 0, func(a *args) {
		a.ptr(m.p).ptr(xb.p).i32(n).ptr(yb.p).i32(rows).i32(m.cols).i32(xRow).i32(xHead).i32(yRow).i32(yHead).ptr(m.scales).i32(vec)
	})
}

// matMulHeadsEach runs MatMul on each head's matrix (a view into w: its
// rows start 256-byte aligned, as a GEMM's weights may need) with the
// head's slice of x gathered into scratch and its output scattered to y.
func (b *Backend) matMulHeadsEach(yb *Buffer, yRow, yHead int, xb *Buffer, xRow, xHead, n int, m *Matrix, heads, rows int) {
	cols := m.cols
	s := &b.mla
	if !b.growScratch(&s.x, &s.xCap, int64(n)*int64(cols)) || !b.growScratch(&s.y, &s.yCap, int64(n)*int64(rows)) {
		return
	}
	xs, ys := &Buffer{p: s.x, n: n * cols}, &Buffer{p: s.y, n: n * rows}
	view := &Matrix{rows: rows, cols: cols, dt: m.dt, parts: []int{rows}}
	outs := []kernels.Buffer{ys}
	es := devptr(m.dt.Size())
	for h := range heads {
		view.p = m.p + devptr(h)*devptr(rows)*devptr(cols)*es
		if m.dt == kernels.Int8 {
			view.scales = m.scales + devptr(h*rows)*4
		}
		b.copy2D(xs, 0, cols, xb, h*xHead, xRow, n, cols)
		b.matmul(outs, xs, n, view, nil)
		b.copy2D(yb, h*yHead, yRow, ys, 0, rows, n, rows)
	}
}

// growScratch makes *p hold at least need floats; false (the failure
// recorded) when the device is out of memory.
func (b *Backend) growScratch(p *devptr, capn *int64, need int64) bool {
	if *capn >= need {
		return true
	}
	if *p != 0 {
		b.alloc.put(*p) // in stream order: work already issued still reads it first
	}
	q, err := b.alloc.get(need * 4)
	if err != nil {
		*p, *capn = 0, 0
		b.fail(err)
		return false
	}
	*p, *capn = q, need
	return true
}

// mlaSmem is the MLA attention kernel's shared memory for keys of kd
// elements of dt: q of MLA_HB heads (f32), one tile, scores,
// probabilities and per-head softmax state.
func mlaSmem(kd int, dt kernels.DType) int {
	kdp := (kd + 31) &^ 31
	return 4*mlaHB*kdp + dt.Size()*mlaBN*kdp + 4*(2*mlaHB*mlaBN+3*mlaHB)
}

// mlaTCSmem is the tensor-core MLA kernel's shared memory: q of MLA_HB
// heads and one tile in f16 (rows padded by 8 halves), probabilities
// (f16), scores and softmax state.
func mlaTCSmem(kd int) int {
	return 2*(mlaHB+mlaTCBN)*(kd+8) + 2*mlaHB*(mlaTCBN+8) + 4*(mlaHB*mlaTCBN+3*mlaHB)
}

// mlaTRSmem is the prefill kernel's shared memory: q of MLA_TR rows ×
// MLA_HB heads and one tile in f16 (rows padded by 8 halves),
// probabilities (f16), scores and softmax state of its 64 M rows.
func mlaTRSmem(kd int) int {
	const m = mlaTR * mlaHB
	return 2*(m+mlaTCBN)*(kd+8) + 2*m*(mlaTCBN+8) + 4*(m*mlaTCBN+3*m)
}

// useMLA reports whether attention over a cache of this shape runs on the
// MLA kernels: an absorbed MLA cache (one KV head, values inside the keys)
// whose values fit the kernel's registers and whose tile fits its shared
// memory.
func (b *Backend) useMLA(vInK bool, kvh, kd, vd int, dt kernels.DType) bool {
	return vInK && kvh == 1 && vd <= mlaMaxVD && mlaSmem(kd, dt) <= b.smemMax
}

// mlaKernel names the MLA kernel for a cache (useMLA true) and returns its
// block size and shared memory: the tensor-core kernel for f16 caches
// whose widths fit its tiles (kd a multiple of 16, vd of 64: DeepSeek's
// 576 and 512), else the float32 one.
func (b *Backend) mlaKernel(kd, vd int, dt kernels.DType, paged bool) (name string, threads, smem int) {
	kind := ""
	if paged {
		kind = "paged_"
	}
	if b.mlaTC(kd, vd, dt) {
		return "mla_attn_tc_" + kind + "f16", 128, mlaTCSmem(kd)
	}
	return "mla_attn_" + kind + dtypeNames[dt], 256, mlaSmem(kd, dt)
}

// mlaTC reports whether the tensor-core kernels take this cache (the
// choice mlaKernel makes).
func (b *Backend) mlaTC(kd, vd int, dt kernels.DType) bool {
	return dt == kernels.F16 && kd%16 == 0 && vd%64 == 0 && mlaTCSmem(kd) <= b.smemMax && !b.mla.core
}

// mlaPrefill reports whether n query rows of one sequence at consecutive
// positions run on the prefill kernel: several rows of a cache the
// tensor-core kernel takes, whose 64-row q and tile fit shared memory.
func (b *Backend) mlaPrefill(n, kd, vd int, dt kernels.DType) bool {
	return n > 1 && b.mlaTC(kd, vd, dt) && mlaTRSmem(kd) <= b.smemMax && !b.mla.perRow
}

// mlaSplits splits contexts of up to maxT keys for launches of perSplit
// blocks per split (row blocks × head groups) aiming at about blocks
// blocks in all (two per SM for the per-row kernels), at least
// mlaMinKeys keys (a multiple of the kernels' tiles) a split.
func (b *Backend) mlaSplits(maxT, perSplit, blocks int) (nsplit, L int) {
	want := max(1, (max(blocks, 1)+perSplit-1)/perSplit)
	L = (maxT + want - 1) / want
	L = max(mlaMinKeys, (L+mlaTCBN-1)/mlaTCBN*mlaTCBN)
	return (maxT + L - 1) / L, L
}

// mlaPrefillSplits is mlaSplits for the prefill kernel: at most SMs
// blocks (one an SM; at least one split), so a launch is one whole wave
// rather than a wave and a small tail.
func (b *Backend) mlaPrefillSplits(maxT, perSplit int) (nsplit, L int) {
	sms := max(b.info.SMs, 1)
	return b.mlaSplits(maxT, perSplit, sms/perSplit*perSplit)
}

// mlaPartials bounds the partials (floats) of any per-row launch of up
// to rows rows: mlaSplits(maxT, rows·groups, 2·SMs) keeps rows·nsplit ≤
// 2·SMs/groups + rows.
func (b *Backend) mlaPartials(rows, heads, vd int) int64 {
	groups := (heads + mlaHB - 1) / mlaHB
	return int64(2*max(b.info.SMs, 1)/groups+rows+1) * int64(heads) * int64(vd+2)
}

// mlaPrefillPartials bounds the partials of any prefill launch of up to
// rows rows: with t = ⌈rows/MLA_TR⌉ row blocks, mlaPrefillSplits(maxT,
// t·groups) keeps nsplit ≤ max(1, SMs/(t·groups)), so rows·nsplit ≤
// MLA_TR·SMs/groups + rows.
func (b *Backend) mlaPrefillPartials(rows, heads, vd int) int64 {
	groups := (heads + mlaHB - 1) / mlaHB
	return int64(mlaTR*max(b.info.SMs, 1)/groups+rows+1) * int64(heads) * int64(vd+2)
}

// mlaPrefillChunk is the rows per launch of the prefill kernel.
func (b *Backend) mlaPrefillChunk() int {
	if b.mla.prefillRows > 0 {
		return b.mla.prefillRows
	}
	return mlaPrefillRows
}

// mlaAttention is Attention's MLA path for n query rows at pos0.. (keys
// already stored): several rows on the prefill kernel (mlaPrefill) in
// chunks of mlaPrefillChunk rows, else chunks of mlaRows rows on the
// per-row kernel; each chunk one launch and one attn_combine. A captured
// step splits the whole cache (its position moves on replay); the
// partials are sized once per cache for both kernels, so a capture never
// reallocates them.
func (b *Backend) mlaAttention(c *KVCache, ob, qb *Buffer, kbase devptr, pos0, n, heads int, scale float32) {
	sp := c.spec
	kd, vd := sp.KDim, sp.VDim
	need := b.mlaPartials(mlaRows, heads, vd)
	if b.mlaPrefill(2, kd, vd, c.dt) {
		need = max(need, b.mlaPrefillPartials(b.mlaPrefillChunk(), heads, vd))
	}
	if !b.growPartials(&c.kvMem, need) {
		return
	}
	groups := (heads + mlaHB - 1) / mlaHB
	prefill := b.mlaPrefill(n, kd, vd, c.dt)
	name, threads, smem := b.mlaKernel(kd, vd, c.dt, false)
	rows := mlaRows
	if prefill {
		name, threads, smem = "mla_attn_tc_rows_f16", 256, mlaTRSmem(kd)
		rows = b.mlaPrefillChunk()
	}
	for i0 := 0; i0 < n; i0 += rows {
		nq := min(rows, n-i0)
		maxT := pos0 + i0 + nq
		if b.capturing {
			maxT = sp.MaxTokens
		}
		qp := qb.p + devptr(i0*heads*kd)*4
		op := ob.p + devptr(i0*heads*vd)*4
		p0 := pos0 + i0
		var ns int
		if prefill {
			tiles := (nq + mlaTR - 1) / mlaTR
			var L int
			ns, L = b.mlaPrefillSplits(maxT, tiles*groups)
			b.launch(name, dim3{ns, groups, tiles}, dim3{threads, 1, 1}, smem, func(a *args) {
				a.ptr(c.part).ptr(qp).ptr(kbase).i32(p0).ptr(b.dp).i32(nq).i32(heads).i32(kd).i32(vd).i32(kd).f32(scale).i32(L).i32(ns)
			})
		} else {
			var L int
			ns, L = b.mlaSplits(maxT, nq*groups, 2*max(b.info.SMs, 1))
			b.launch(name, dim3{ns, groups, nq}, dim3{threads, 1, 1}, smem, func(a *args) {
				a.ptr(c.part).ptr(qp).ptr(kbase).i32(p0).ptr(b.dp).i32(heads).i32(kd).i32(vd).i32(kd).f32(scale).i32(L).i32(ns)
			})
		}
		b.launch("attn_combine", dim3{nq * heads, 1, 1}, dim3{128, 1, 1}, 0, func(a *args) {
			a.ptr(op).ptr(c.part).i32(heads).i32(vd).i32(ns)
		})
	}
}

// mlaRowTiles cuts a batch's rows into the prefill kernel's row tiles:
// runs of rows of one sequence at consecutive positions, at most mlaTR
// rows a tile, each tile 8·first row + rows. multi reports whether a tile
// has several rows (else the batch is all decode rows: the per-row kernel
// is the better fit).
func mlaRowTiles(pos, seq []int32) (tiles []int32, multi bool) {
	for i := 0; i < len(pos); {
		nr := 1
		for nr < mlaTR && i+nr < len(pos) && seq[i+nr] == seq[i] && pos[i+nr] == pos[i]+int32(nr) {
			nr++
		}
		tiles = append(tiles, int32(8*i+nr))
		multi = multi || nr > 1
		i += nr
	}
	return tiles, multi
}

// mlaPagedAttention is PagedAttention's MLA path: one launch over all rows
// of the batch (keys already stored, batch descriptor uploaded).
// pos, seq and tab are the batch descriptor's device arrays (the uploaded
// batch, or a captured step's inputs) with tables maxb blocks wide. bt is
// the batch on the host (nil in a captured step): with runs of rows of one
// sequence (prompt chunks) the launch runs on the prefill kernel over the
// batch's row tiles, else on the per-row kernel.
func (b *Backend) mlaPagedAttention(c *PagedKV, ob, qb *Buffer, kbase, pos, seq, tab devptr, maxb, n, maxT, heads int, scale float32, bt *kernels.Batch) {
	sp := c.spec
	kd, vd := sp.KDim, sp.VDim
	groups := (heads + mlaHB - 1) / mlaHB
	var tiles []int32
	prefill := false
	if bt != nil && b.mlaPrefill(n, kd, vd, c.dt) {
		tiles, prefill = mlaRowTiles(bt.Pos[:n], bt.Seq[:n])
	}
	ns, L := b.mlaSplits(maxT, n*groups, 2*max(b.info.SMs, 1))
	if prefill {
		ns, L = b.mlaPrefillSplits(maxT, len(tiles)*groups)
	}
	need := int64(n) * int64(heads) * int64(ns) * int64(vd+2)
	if need > c.partCap {
		need = max(need, 2*c.partCap) // as PagedAttention: fewer stale graphs
	}
	if !b.growPartials(&c.kvMem, need) {
		return
	}
	if prefill {
		s := &b.mla
		if !b.upload32(&s.tiles, &s.tilesCap, &s.hTiles, tiles) {
			return
		}
		b.launch("mla_attn_tc_rows_paged_f16", dim3{ns, groups, len(tiles)}, dim3{256, 1, 1}, mlaTRSmem(kd), func(a *args) {
			a.ptr(c.part).ptr(qb.p).ptr(kbase).ptr(s.tiles).ptr(pos).ptr(seq).ptr(tab).i32(maxb).i32(sp.BlockTokens).
				i32(heads).i32(kd).i32(vd).i32(kd).f32(scale).i32(L).i32(ns)
		})
	} else {
		name, threads, smem := b.mlaKernel(kd, vd, c.dt, true)
		b.launch(name, dim3{ns, groups, n}, dim3{threads, 1, 1}, smem, func(a *args) {
			a.ptr(c.part).ptr(qb.p).ptr(kbase).ptr(pos).ptr(seq).ptr(tab).i32(maxb).i32(sp.BlockTokens).
				i32(heads).i32(kd).i32(vd).i32(kd).f32(scale).i32(L).i32(ns)
		})
	}
	b.launch("attn_combine", dim3{n * heads, 1, 1}, dim3{128, 1, 1}, 0, func(a *args) {
		a.ptr(ob.p).ptr(c.part).i32(heads).i32(vd).i32(ns)
	})
}
