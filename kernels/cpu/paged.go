package cpu

import (
	"fmt"
	"math"

	"github.com/deepseek-go/deepseek-go/kernels"
	"github.com/deepseek-go/deepseek-go/kernels/cpu/simd"
)

var _ kernels.Batcher = (*Backend)(nil)

// PagedKV is the CPU paged cache: per layer [Blocks, BlockTokens, KVHeads,
// KDim] keys and, without VInK, values of VDim.
type PagedKV struct {
	spec kernels.PagedKVSpec
	k, v [][]float32
}

// Spec implements kernels.PagedKV.
func (c *PagedKV) Spec() kernels.PagedKVSpec { return c.spec }

// Bytes implements kernels.PagedKV.
func (c *PagedKV) Bytes() int64 { return int64(c.spec.Blocks) * c.spec.BytesPerBlock() }

// NewPagedKV implements kernels.Batcher.
func (b *Backend) NewPagedKV(spec kernels.PagedKVSpec) (kernels.PagedKV, error) {
	if spec.Layers <= 0 || spec.Blocks <= 0 || spec.BlockTokens <= 0 || spec.KVHeads <= 0 || spec.KDim <= 0 || spec.VDim <= 0 {
		return nil, fmt.Errorf("cpu: NewPagedKV: bad spec %+v", spec)
	}
	if spec.VInK && spec.VDim > spec.KDim {
		return nil, fmt.Errorf("cpu: NewPagedKV: VInK with VDim %d > KDim %d", spec.VDim, spec.KDim)
	}
	slots := spec.Blocks * spec.BlockTokens * spec.KVHeads
	c := &PagedKV{spec: spec, k: make([][]float32, spec.Layers)}
	if !spec.VInK {
		c.v = make([][]float32, spec.Layers)
	}
	for l := range spec.Layers {
		c.k[l] = make([]float32, slots*spec.KDim)
		if !spec.VInK {
			c.v[l] = make([]float32, slots*spec.VDim)
		}
	}
	return c, nil
}

// RopeRows implements kernels.Batcher.
func (b *Backend) RopeRows(x kernels.Buffer, n, heads, headDim int, pos []int32, r *kernels.Rope) {
	rope(buf(x), n, heads, headDim, 0, pos[:n], r)
}

// PagedAttention implements kernels.Batcher. Keys and values of every row
// are stored first, so a prompt chunk's rows see each other; then items of
// (row, KV head, ≤ attnHeadsPerItem query heads) run in parallel as in
// Attention, walking the row's blocks.
func (b *Backend) PagedAttention(out, q, k, v kernels.Buffer, kv kernels.PagedKV, layer int, bt *kernels.Batch, heads int, scale float32) {
	c := kv.(*PagedKV)
	sp := c.spec
	kd, vd, kvh, bs := sp.KDim, sp.VDim, sp.KVHeads, sp.BlockTokens
	n := bt.Rows()
	ks, kc := buf(k), c.k[layer]
	var vs, vc []float32
	vstride := kd
	if sp.VInK {
		vc = kc
	} else {
		vs, vc, vstride = buf(v), c.v[layer], vd
	}
	for i := range n {
		p := int(bt.Pos[i])
		slot := int(bt.Tables[bt.Seq[i]][p/bs])*bs + p%bs
		copy(kc[slot*kvh*kd:(slot+1)*kvh*kd], ks[i*kvh*kd:(i+1)*kvh*kd])
		if !sp.VInK {
			copy(vc[slot*kvh*vd:(slot+1)*kvh*vd], vs[i*kvh*vd:(i+1)*kvh*vd])
		}
	}
	b.attendTiles(buf(out), buf(q), kc, vc, bt, kd, vd, kvh, bs, vstride, heads, scale, nil)
}

// attendTiles runs the attention of bt's rows (keys already stored) over
// the layer's keys kc and values vc (slot stride kvh·kd and kvh·vstride)
// in items of (tile of ≤ tileRows rows of one sequence, KV head, ≤
// attnHeadsPerItem query heads). j, when not nil, is the pooled job whose
// own descriptor bt is (contigTiles); attendTiles returns it to the pool.
func (b *Backend) attendTiles(out, q, kc, vc []float32, bt *kernels.Batch, kd, vd, kvh, bs, vstride, heads int, scale float32, j *pagedJob) {
	n := bt.Rows()
	maxPos := 0
	for _, p := range bt.Pos {
		maxPos = max(maxPos, int(p)+1)
	}
	if j == nil {
		j = b.pgJobs.Get().(*pagedJob)
	}
	group := heads / kvh
	hs := min(group, attnHeadsPerItem)
	// Jobs and their storage are pooled: a batched decode step allocates
	// nothing here once warm. Only the call's fields are reset.
	j.tiles = appendTiles(j.tiles[:0], bt)
	j.pagedCall = pagedCall{kern: b.kern, q: q, out: out, kc: kc, vc: vc, bt: bt,
		kd: kd, vd: vd, kvh: kvh, bs: bs, vstride: vstride, heads: heads, scale: scale,
		group: group, hs: hs, subs: (group + hs - 1) / hs}
	if len(j.scores) < b.threads || len(j.scores[0]) < tileRows*maxPos || len(j.acc[0]) < vd {
		j.scores, j.acc = make([][]float32, b.threads), make([][]float32, b.threads)
		for w := range j.scores {
			j.scores[w] = make([]float32, tileRows*maxPos)
			j.acc[w] = make([]float32, vd)
		}
	}
	items := len(j.tiles) * kvh * j.subs
	chunk := items
	if n*heads*maxPos*(kd+vd) >= 1<<15 {
		chunk = max(1, items/(4*b.threads))
	}
	b.pool.run(&j.par, j, items, chunk)
	j.pagedCall = pagedCall{} // no references to the caller's buffers in the pool
	b.pgJobs.Put(j)
}

// contigTiles is Attention's prompt path: rows pos0..pos0+n-1 of a
// contiguous cache (position p at slot p) through attendTiles, whose
// tiles read each key once for up to tileRows rows, with an identity
// table of contigBlock-position blocks (a block of values, 32 KiB at
// head dim 128, stays in L1 while the tile's rows sum it). A 1,024-token
// coder-1.3b prefill spent two thirds of its time scoring keys one row at
// a time (attnJob).
func (b *Backend) contigTiles(out, q, kc, vc []float32, pos0, n, kd, vd, kvh, vstride, heads int, scale float32) {
	j := b.pgJobs.Get().(*pagedJob)
	j.pos, j.seq = j.pos[:0], j.seq[:0]
	for i := range n {
		j.pos = append(j.pos, int32(pos0+i))
		j.seq = append(j.seq, 0)
	}
	for blk := len(j.ident); blk*contigBlock < pos0+n; blk++ {
		j.ident = append(j.ident, int32(blk))
	}
	j.tab[0] = j.ident
	j.own = kernels.Batch{Pos: j.pos, Seq: j.seq, Tables: j.tab[:]}
	b.attendTiles(out, q, kc, vc, &j.own, kd, vd, kvh, contigBlock, vstride, heads, scale, j)
}

// contigBlock is contigTiles' block of positions.
const contigBlock = 64

// tileRows is the most query rows of one sequence that score a key
// block together: a prompt chunk reads each block once per tile instead
// of once per row.
const tileRows = 8

// tile is rows t0..t0+m-1 of a batch: one sequence, consecutive positions.
type tile struct{ t0, m int }

// appendTiles groups the batch's rows into tiles (decode rows are tiles of
// one), appended to tiles.
func appendTiles(tiles []tile, bt *kernels.Batch) []tile {
	for t := 0; t < bt.Rows(); {
		m := 1
		for m < tileRows && t+m < bt.Rows() && bt.Seq[t+m] == bt.Seq[t] && bt.Pos[t+m] == bt.Pos[t+m-1]+1 {
			m++
		}
		tiles = append(tiles, tile{t, m})
		t += m
	}
	return tiles
}

// pagedJob is one PagedAttention call in flight: items are (tile, KV
// head, ≤ attnHeadsPerItem query heads).
type pagedJob struct {
	pagedCall

	// Storage kept with the pooled job: per-worker scores and value sums,
	// the tiles, and contigTiles' descriptor (own, its positions,
	// sequences and identity table).
	scores, acc     [][]float32
	tiles           []tile
	own             kernels.Batch
	pos, seq, ident []int32
	tab             [1][]int32
}

// pagedCall is what one attendTiles call sets.
type pagedCall struct {
	par                             parJob
	kern                            *simd.Kernels
	q, out, kc, vc                  []float32
	bt                              *kernels.Batch
	kd, vd, kvh, bs, vstride, heads int
	scale                           float32
	group, hs, subs                 int
}

func (j *pagedJob) run(lo, hi, worker int) {
	kd, vd, kvh, bs := j.kd, j.vd, j.kvh, j.bs
	for it := lo; it < hi; it++ {
		tl, rest := j.tiles[it/(kvh*j.subs)], it%(kvh*j.subs)
		g, sub := rest/j.subs, rest%j.subs
		h0 := g*j.group + sub*j.hs
		nh := min(j.hs, (g+1)*j.group-h0)
		// Scores up to the tile's last row; earlier rows use a prefix of theirs.
		pend := int(j.bt.Pos[tl.t0+tl.m-1]) + 1
		table := j.bt.Tables[j.bt.Seq[tl.t0]]
		sc := j.scores[worker][:tl.m*pend]
		acc := j.acc[worker]
		for h := h0; h < h0+nh; h++ {
			// sc[i*pend+p] = q_h of row t0+i · k_p of KV head g, a block at a time.
			qs := j.q[(tl.t0*j.heads+h)*kd:]
			for p0 := 0; p0 < pend; p0 += bs {
				cnt := min(bs, pend-p0)
				base := int(table[p0/bs]) * bs * kvh * kd
				j.kern.MatMulF32Strided(sc[p0:], pend, qs, j.heads*kd, tl.m, j.kc[base+g*kd:], kvh*kd, kd, 0, cnt)
			}
			for i := range tl.m {
				npos := int(j.bt.Pos[tl.t0+i]) + 1
				softmaxScaled(j.kern, sc[i*pend:i*pend+npos], j.scale)
			}
			// Values a block at a time for all the tile's rows, so a block
			// read from memory serves every row from L1 (per row, the same
			// sums in the same order as one row alone).
			for p0 := 0; p0 < pend; p0 += bs {
				base := int(table[p0/bs]) * bs * kvh * j.vstride
				for i := range tl.m {
					t := tl.t0 + i
					npos := int(j.bt.Pos[t]) + 1
					if p0 >= npos {
						continue
					}
					cnt := min(bs, npos-p0)
					dst := j.out[(t*j.heads+h)*vd : (t*j.heads+h+1)*vd]
					w := dst
					if p0 > 0 {
						w = acc
					}
					j.kern.WeightedSum(w, sc[i*pend+p0:i*pend+p0+cnt], j.vc[base+g*j.vstride:], kvh*j.vstride)
					if p0 > 0 {
						j.kern.Axpy(dst, 1, acc)
					}
				}
			}
		}
	}
}

// softmaxScaled replaces row by softmax(row·scale).
func softmaxScaled(kern *simd.Kernels, row []float32, scale float32) {
	// Four running maxima: one chain of max would bound the loop by its
	// latency (the scores of a long prompt are millions of values).
	inf := float32(math.Inf(-1))
	m0, m1, m2, m3 := inf, inf, inf, inf
	p := 0
	for ; p+4 <= len(row); p += 4 {
		r := row[p : p+4 : p+4]
		r[0] *= scale
		r[1] *= scale
		r[2] *= scale
		r[3] *= scale
		m0, m1, m2, m3 = max(m0, r[0]), max(m1, r[1]), max(m2, r[2]), max(m3, r[3])
	}
	for ; p < len(row); p++ {
		row[p] *= scale
		m0 = max(m0, row[p])
	}
	inv := 1 / kern.ExpSub(row, max(m0, m1, m2, m3))
	for p := range row {
		row[p] *= inv
	}
}
