//go:build linux && cgo

package cuda

import (
	"fmt"
	"math"
	"math/bits"
	"runtime"
	"slices"
	"unsafe"

	"github.com/deepseek-go/deepseek-go/kernels"
)

var _ kernels.Batcher = (*Backend)(nil)

// PagedKV is a device paged cache: per layer K [Blocks·BlockTokens, KVHeads,
// KDim] and V [.., VDim] in the backend's KV dtype (f16 or f32).
type PagedKV struct {
	spec kernels.PagedKVSpec
	kvMem
	b *Backend
}

// Spec implements kernels.PagedKV.
func (c *PagedKV) Spec() kernels.PagedKVSpec { return c.spec }

// Close frees the cache's device memory now rather than at garbage
// collection, back to the driver (a scheduler's pool is most of the GPU
// and its size rarely recurs, so caching it would only hide it from the
// next budget). Graphs that captured the cache must be closed first.
func (c *PagedKV) Close() error {
	runtime.SetFinalizer(c, nil)
	b := c.b
	b.mu.Lock() // not while a capture holds the stream
	defer b.mu.Unlock()
	for _, p := range []devptr{c.k, c.v, c.part} {
		b.alloc.drop(p)
	}
	c.kvMem = kvMem{}
	return nil
}

// Bytes implements kernels.PagedKV.
func (c *PagedKV) Bytes() int64 {
	return int64(c.spec.Blocks) * c.spec.BytesPerBlock() / 4 * int64(c.dt.Size())
}

// batchDev is the device copy of the last batch descriptor: rows'
// positions and sequences and the block tables [seqs, maxb]. It is
// uploaded only when the descriptor changes (every layer of a step
// passes the same one). segs and rows are the flash path's split of the
// batch (pagedSplit): its prompt-chunk segments and the other rows.
type batchDev struct {
	pos, seq, tab          devptr
	posCap, seqCap, tabCap int
	hPos, hSeq, hTab       []int32
	flat                   []int32 // the tables padded to maxb, rebuilt per call without allocating
	maxb                   int
	segs, rows             devptr
	segsCap, rowsCap       int
	hSegs, hRows           []int32
	fSegs, fRows           []int32 // rebuilt per call as flat is
	splitOnly              bool    // tests and benchmarks: no flash path
	noDec                  bool    // tests and benchmarks: attn_split where attn_dec would run (paged and contiguous)
	decL                   int     // benchmarks: attn_dec's paged split size (0: decSplit)
}

// NewPagedKV implements kernels.Batcher.
func (b *Backend) NewPagedKV(spec kernels.PagedKVSpec) (kernels.PagedKV, error) {
	if spec.Layers <= 0 || spec.Blocks <= 0 || spec.BlockTokens <= 0 || spec.KVHeads <= 0 || spec.KDim <= 0 || spec.VDim <= 0 {
		return nil, fmt.Errorf("cuda: NewPagedKV: bad spec %+v", spec)
	}
	if spec.VInK && spec.VDim > spec.KDim {
		return nil, fmt.Errorf("cuda: NewPagedKV: VInK with VDim %d > KDim %d", spec.VDim, spec.KDim)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, errClosed
	}
	slots := int64(spec.Layers) * int64(spec.Blocks) * int64(spec.BlockTokens) * int64(spec.KVHeads)
	var vn int64
	if !spec.VInK {
		vn = slots * int64(spec.VDim)
	}
	mem, err := b.newKVMem(slots*int64(spec.KDim), vn)
	if err != nil {
		return nil, fmt.Errorf("cuda: NewPagedKV: %w", err)
	}
	c := &PagedKV{spec: spec, kvMem: mem, b: b}
	al := b.alloc
	runtime.SetFinalizer(c, func(c *PagedKV) { c.release(al) })
	return c, nil
}

// upload32 copies v to *p (growing it to at least cap ints) when v differs
// from the host copy *h of what is there.
func (b *Backend) upload32(p *devptr, capn *int, h *[]int32, v []int32) bool {
	if len(v) == 0 || slices.Equal(*h, v) {
		return true
	}
	if *capn < len(v) {
		if *p != 0 {
			b.alloc.put(*p)
		}
		n := max(len(v), 1024)
		q, err := b.alloc.get(int64(n) * 4)
		if err != nil {
			b.fail(err)
			*p, *capn = 0, 0
			return false
		}
		*p, *capn = q, n
	}
	b.fail(b.x.htod(*p, unsafe.Pointer(&v[0]), int64(len(v))*4))
	*h = append((*h)[:0], v...)
	return true
}

// uploadBatch makes b.bd hold bt (positions, sequences, tables padded to
// the longest).
func (b *Backend) uploadBatch(bt *kernels.Batch) bool {
	d := &b.bd
	maxb := 1
	for _, t := range bt.Tables {
		maxb = max(maxb, len(t))
	}
	tab := d.flat[:0]
	for _, t := range bt.Tables {
		tab = append(tab, t...)
		for range maxb - len(t) {
			tab = append(tab, 0)
		}
	}
	d.flat = tab
	if d.maxb != maxb {
		d.hTab = d.hTab[:0] // same ints, other layout: upload again
		d.maxb = maxb
	}
	return b.upload32(&d.pos, &d.posCap, &d.hPos, bt.Pos) &&
		b.upload32(&d.seq, &d.seqCap, &d.hSeq, bt.Seq) &&
		b.upload32(&d.tab, &d.tabCap, &d.hTab, tab)
}

// RopeRows implements kernels.Batcher.
func (b *Backend) RopeRows(x kernels.Buffer, n, heads, headDim int, pos []int32, r *kernels.Rope) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ropeRows(x, n, heads, headDim, pos, r)
}

// ropeRows is RopeRows with the lock held; in a batched graph capture the
// positions come from the step's input array.
func (b *Backend) ropeRows(x kernels.Buffer, n, heads, headDim int, pos []int32, r *kernels.Rope) {
	xb := b.dev(x)
	if xb == nil || n <= 0 || r == nil || r.Dim <= 0 {
		return
	}
	if len(pos) < n || len(r.InvFreq) < r.Dim/2 || r.Off+r.Dim > headDim || xb.n < n*heads*headDim {
		b.failf("RopeRows: bad rope %d+%d in head %d, %d positions for %d rows, buffer %d", r.Off, r.Dim, headDim, len(pos), n, xb.n)
		return
	}
	f := b.ropeFreqs(r)
	if f == 0 {
		return
	}
	var rpos devptr
	if in := b.bs.in; in != nil {
		if n != in.rows {
			b.failf("RopeRows of %d rows in a captured step of %d", n, in.rows)
			return
		}
		rpos = in.pos()
	} else {
		if !b.upload32(&b.bd.pos, &b.bd.posCap, &b.bd.hPos, pos[:n]) {
			return
		}
		rpos = b.bd.pos
	}
	total := int64(n) * int64(heads) * int64(r.Dim/2)
	inter := 0
	if r.Interleaved {
		inter = 1
	}
	b.launch("rope", dim3{int((total + 255) / 256), 1, 1}, dim3{256, 1, 1}, 0, func(a *args) {
		a.ptr(xb.p).i32(n).i32(heads).i32(headDim).i32(0).ptr(b.zeroDP).ptr(rpos).ptr(f).i32(r.Off).i32(r.Dim).f32(r.Scale).i32(inter)
	})
}

// pagedFlashRows is the shortest prompt chunk (rows of one sequence at
// consecutive positions) that PagedAttention sends to the flash kernel.
// On the split-KV kernel each row reads all its keys once per KV head
// (for MHA, m rows read the K/V m times over); a flash block reads them
// once per head for up to 128 rows, at the price of tensor-core work on
// the padding of its 128-row tile, which is cheap next to the reads. On
// the H100 (7B shape) a request whose 4,000-token prefix was cached and
// which computed 8 rows took 19.6 ms on split-KV (the 8 rows read 16 GB
// of K/V), so every run of 2 or more rows goes to flash; decode rows stay
// on split-KV.
const pagedFlashRows = 2

// pagedSplit finds the runs of bt's rows that are one sequence at
// consecutive positions and appends those of at least minRows rows to segs
// as (first row, rows, first position, sequence), and every other row's
// index to rest; tiles is the most 128-row query tiles of a segment.
func pagedSplit(segs, rest []int32, bt *kernels.Batch, minRows int) (_, _ []int32, tiles int) {
	n := bt.Rows()
	for i := 0; i < n; {
		j := i + 1
		for j < n && bt.Seq[j] == bt.Seq[i] && bt.Pos[j] == bt.Pos[j-1]+1 {
			j++
		}
		if j-i >= minRows {
			segs = append(segs, int32(i), int32(j-i), bt.Pos[i], bt.Seq[i])
			tiles = max(tiles, (j-i+flash2Rows-1)/flash2Rows)
		} else {
			for r := i; r < j; r++ {
				rest = append(rest, int32(r))
			}
		}
		i = j
	}
	return segs, rest, tiles
}

// PagedAttention implements kernels.Batcher with the split-KV kernels of
// Attention reading keys through the block tables, every row attending to
// its own positions; outside a captured step, prompt chunks of at least
// pagedFlashRows rows on a GQA/MHA f16 cache take the flash kernel.
func (b *Backend) PagedAttention(out, q, k, v kernels.Buffer, kv kernels.PagedKV, layer int, bt *kernels.Batch, heads int, scale float32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pagedAttention(out, q, k, v, kv, layer, bt, heads, scale)
}

// pagedAttention is PagedAttention with the lock held. In a batched graph
// capture the descriptor comes from the step's input arrays, tables of the
// captured width, and every row gets the splits of a full table (splits
// past a row's position are empty and add nothing), so replays at any
// positions within the width run the same launches.
func (b *Backend) pagedAttention(out, q, k, v kernels.Buffer, kv kernels.PagedKV, layer int, bt *kernels.Batch, heads int, scale float32) {
	c, ok := kv.(*PagedKV)
	if !ok {
		b.failf("PagedAttention: cache of type %T", kv)
		return
	}
	sp := c.spec
	n := bt.Rows()
	ob, qb, kb, vb, ok := b.attnBufs("PagedAttention", out, q, k, v, sp.VInK, n, heads, sp.KVHeads, sp.KDim, sp.VDim)
	if !ok {
		return
	}
	kd, vd, kvh := sp.KDim, sp.VDim, sp.KVHeads
	if layer < 0 || layer >= sp.Layers {
		b.failf("PagedAttention: layer %d of %d", layer, sp.Layers)
		return
	}
	if err := bt.Check(sp); err != nil {
		b.failf("PagedAttention: %v", err)
		return
	}
	var pos, seq, tab devptr
	var maxb, maxT int
	hbt := bt // the batch on the host: nil in a captured step (its rows move on replay)
	if in := b.bs.in; in != nil {
		hbt = nil
		if n != in.rows {
			b.failf("PagedAttention of %d rows in a captured step of %d", n, in.rows)
			return
		}
		if in.spec != (kernels.PagedKVSpec{}) && in.spec != sp {
			b.failf("PagedAttention: two paged caches in one captured step")
			return
		}
		in.spec = sp
		pos, seq, tab, maxb = in.pos(), in.seq(), in.tab(), in.width
		maxT = in.width * sp.BlockTokens
	} else {
		if !b.uploadBatch(bt) {
			return
		}
		pos, seq, tab, maxb = b.bd.pos, b.bd.seq, b.bd.tab, b.bd.maxb
		for _, p := range bt.Pos {
			maxT = max(maxT, int(p)+1)
		}
	}
	es := devptr(c.dt.Size())
	kw, vw := kvh*kd, kvh*vd
	slots := devptr(sp.Blocks) * devptr(sp.BlockTokens)
	kbase := c.k + devptr(layer)*slots*devptr(kw)*es
	vbase, vstride, vhs := kbase, kw, kd
	if !sp.VInK {
		vbase, vstride, vhs = c.v+devptr(layer)*slots*devptr(vw)*es, vw, vd
	}
	dts := "f16"
	if c.dt == kernels.F32 {
		dts = "f32"
	}
	paged := func(a *args) *args {
		return a.ptr(pos).ptr(seq).ptr(tab).i32(maxb).i32(sp.BlockTokens)
	}
	vcp, vp, vwid := vbase, bp(vb, 0), vw
	if sp.VInK {
		vcp, vwid = 0, 0
	}
	if !b.skipStore { // benchmarks time the attention alone
		b.launch("kv_store_paged_"+dts, dim3{blocks(int64(n)*int64(kw+vwid), 256), 1, 1}, dim3{256, 1, 1}, 0, func(a *args) {
			paged(a.ptr(kbase).ptr(vcp).ptr(kb.p).ptr(vp).i32(n)).i32(kw).i32(vw)
		})
	}
	if n > 65535 { // grid z is the row
		b.failf("PagedAttention: %d rows in one step (at most 65535)", n)
		return
	}
	if b.useMLA(sp.VInK, kvh, kd, vd, c.dt) {
		b.mlaPagedAttention(c, ob, qb, kbase, pos, seq, tab, maxb, n, maxT, heads, scale, hbt)
		return
	}
	// rows lists the batch rows left to the split-KV kernel, m of them (0:
	// all n, the kernels' row list null).
	var rows devptr
	m := n
	if dp, fsmem, ok := b.flash2Dims(c.dt, sp.VInK, kd, vd); ok && hbt != nil && !b.capturing && !b.bd.splitOnly {
		d := &b.bd
		var tiles int
		d.fSegs, d.fRows, tiles = pagedSplit(d.fSegs[:0], d.fRows[:0], hbt, pagedFlashRows)
		if len(d.fSegs) > 0 {
			if !b.upload32(&d.segs, &d.segsCap, &d.hSegs, d.fSegs) {
				return
			}
			b.launch(fmt.Sprintf("flash2_paged_%d", dp), dim3{tiles, heads, len(d.fSegs) / 4}, dim3{128, 1, 1}, fsmem, func(a *args) {
				a.ptr(ob.p).ptr(qb.p).ptr(kbase).ptr(vbase).ptr(d.segs).ptr(tab).i32(maxb).i32(sp.BlockTokens).
					i32(heads).i32(kvh).i32(kd).f32(scale * math.Log2E)
			})
			if len(d.fRows) == 0 {
				return
			}
			if !b.upload32(&d.rows, &d.rowsCap, &d.hRows, d.fRows) {
				return
			}
			rows, m = d.rows, len(d.fRows)
			maxT = 0
			for _, r := range d.fRows {
				maxT = max(maxT, int(hbt.Pos[r])+1)
			}
		}
	}
	G := heads / kvh
	dec := b.useDec(c.dt, sp.VInK, kd, vd) && sp.BlockTokens&(sp.BlockTokens-1) == 0
	gb := decHeads(G)
	nhc := (G + gb - 1) / gb
	L := splitKeys
	if dec {
		L = b.decSplit(m*kvh*nhc, maxT)
		if b.bd.decL > 0 {
			L = b.bd.decL
		}
	}
	ns := (maxT + L - 1) / L
	need := int64(m) * int64(heads) * int64(ns) * int64(vd+2)
	if need > c.partCap {
		// Geometric growth: contexts lengthen a split at a time, and each
		// replacement makes the captured decode graphs stale.
		need = max(need, 2*c.partCap)
	}
	if !b.growPartials(&c.kvMem, need) {
		return
	}
	if dec {
		bshift := bits.TrailingZeros(uint(sp.BlockTokens))
		b.launch("attn_dec_paged_f16_"+decSuffix(gb), dim3{ns, kvh * nhc, m}, dim3{128, 1, 1}, decSmem(gb, kd), func(a *args) {
			a.ptr(c.part).ptr(qb.p).ptr(kbase).ptr(vbase).ptr(pos).ptr(seq).ptr(tab).i32(maxb).i32(bshift).ptr(rows).
				i32(heads).i32(kvh).i32(kd).i32(kw).i32(vw).f32(scale).i32(L).i32(ns)
		})
	} else {
		smem := G*(kd+L)*4 + 128*8*4
		if G > 64 || smem > b.smemMax {
			b.failf("PagedAttention: %d bytes of shared memory for group %d, kd %d", smem, G, kd)
			return
		}
		b.launch("attn_split_paged_"+dts, dim3{ns, kvh, m}, dim3{128, 1, 1}, smem, func(a *args) {
			paged(a.ptr(c.part).ptr(qb.p).ptr(kbase).ptr(vbase).i32(n)).
				i32(heads).i32(kvh).i32(kd).i32(vd).i32(kw).i32(vstride).f32(scale).i32(L).i32(ns).i32(vhs).ptr(rows)
		})
	}
	if rows != 0 {
		b.launch("attn_combine_rows", dim3{m * heads, 1, 1}, dim3{128, 1, 1}, 0, func(a *args) {
			a.ptr(ob.p).ptr(c.part).ptr(rows).i32(heads).i32(vd).i32(ns)
		})
		return
	}
	b.launch("attn_combine", dim3{n * heads, 1, 1}, dim3{128, 1, 1}, 0, func(a *args) {
		a.ptr(ob.p).ptr(c.part).i32(heads).i32(vd).i32(ns)
	})
}

// useDec reports whether decode attention over a cache of dt and these
// dims runs on the one-pass kernel attn_dec (decode.cuh): f16, values
// beside the keys, kd == vd a multiple of 8 up to 256. The paged form
// also needs power-of-two blocks.
func (b *Backend) useDec(dt kernels.DType, vInK bool, kd, vd int) bool {
	return !b.bd.noDec && dt == kernels.F16 && !vInK && kd == vd && kd%8 == 0 && kd <= 256
}

// decHeads is the query heads one attn_dec block scores: the group rounded
// up to 1, 2, 4 or 8 (a larger group takes several blocks per KV head, each
// reading its keys again, mostly from L2); more would not fit registers.
func decHeads(group int) int {
	gb := 1
	for gb < group && gb < 8 {
		gb *= 2
	}
	return gb
}

// decSuffix names attn_dec's instance for gb heads a block (a constant,
// so the hot path builds names without formatting).
func decSuffix(gb int) string {
	switch gb {
	case 1:
		return "g1"
	case 2:
		return "g2"
	case 4:
		return "g4"
	}
	return "g8"
}

// decSmem is attn_dec's dynamic shared memory for gb heads of dim d: the
// four warps' partials (d+4 floats a head) and, above 2 heads, the
// queries (registers hold them for 1 and 2).
func decSmem(gb, d int) int {
	n := 4 * gb * (d + 4)
	if gb > 2 {
		n += gb * d
	}
	return n * 4
}

// decSplit is attn_dec's key-chunk for blocks (row, KV head, head chunk)
// of pairs over maxT keys: the largest of 256, 128 and 64 that still gives
// every SM 2 blocks. Measured on the H100 (BenchmarkPagedDecode, 7B shape,
// L 64/128/256/512 side by side): 64 rows × 640 keys 251/245/243/250 µs,
// 1 row × 4,096 keys 40.8/39.3/33.8/51.2 µs, so 256 wherever it keeps the
// SMs busy (the first rule, "8 blocks per SM from 512 down", picked 512 and
// 64 there).
func (b *Backend) decSplit(pairs, maxT int) int {
	L := 256
	for L > 64 && pairs*((maxT+L-1)/L) < 2*b.info.SMs {
		L /= 2
	}
	return L
}
