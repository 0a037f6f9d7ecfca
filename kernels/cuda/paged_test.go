//go:build linux && cgo

package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/kernels"
	"github.com/deepseek-go/deepseek-go/kernels/cpu"
)

// TestPagedAttentionParity runs mixed batches (prompt chunks beside single
// decode rows, odd lengths, shuffled 16-position blocks, several steps so
// later rows read earlier steps' keys) through the GPU and the CPU
// reference, for GQA, MHA with odd dims and MLA's absorbed layout, with
// f32 and f16 caches.
func TestPagedAttentionParity(t *testing.T) {
	cases := []struct {
		name               string
		heads, kvh, kd, vd int
		vInK               bool
	}{
		{"gqa", 8, 2, 64, 64, false},
		{"mha-odd", 3, 3, 20, 12, false},
		{"mla-absorbed", 16, 1, 576, 512, true},
	}
	steps := [][]int{{37, 5, 0}, {1, 40, 150}, {1, 1, 1}, {0, 1, 200}, {1, 1, 1}}
	for _, dt := range []kernels.DType{kernels.F32, kernels.F16} {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%v/%s", dt, tc.name), func(t *testing.T) {
				r := newRig(t, Options{KVDType: dt})
				ps := r.pagedSeqs(kernels.PagedKVSpec{Layers: 2, Blocks: 64, BlockTokens: 16, KVHeads: tc.kvh, KDim: tc.kd, VDim: tc.vd, VInK: tc.vInK}, 3)
				tol := tolF32
				if dt == kernels.F16 {
					tol = tol16
				}
				for si, step := range steps {
					ps.attend(fmt.Sprintf("step %d", si), ps.batch(step), tc.heads, 0.1, tol, true, false)
				}
			})
		}
	}
}

// TestRopeRowsParity: per-row positions (unsorted, repeated) against the
// CPU, both pairings.
func TestRopeRowsParity(t *testing.T) {
	r := newRig(t, Options{KVDType: kernels.F16})
	pos := []int32{5, 0, 4095, 17, 17, 1000, 3}
	const heads, hd = 4, 64
	for _, inter := range []bool{false, true} {
		inv := make([]float32, 16)
		for i := range inv {
			inv[i] = float32(1 / float64(int(1)<<i))
		}
		rope := &kernels.Rope{Off: 32, Dim: 32, InvFreq: inv, Scale: 1.1, Interleaved: inter}
		x := r.rand(len(pos) * heads * hd)
		r.g.RopeRows(x.g, len(pos), heads, hd, pos, rope)
		r.c.RopeRows(x.c, len(pos), heads, hd, pos, rope)
		r.check(fmt.Sprintf("interleaved=%v", inter), x, x.n, 1e-5)
	}
}

// TestPagedSplit: the rows PagedAttention sends to the flash kernel are
// runs of one sequence at consecutive positions of at least minRows rows
// (a decode row that its sequence's next positions follow joins them);
// every other row stays on split-KV, in batch order.
func TestPagedSplit(t *testing.T) {
	bt := &kernels.Batch{}
	add := func(seq, pos, n int) {
		for i := range n {
			bt.Pos, bt.Seq = append(bt.Pos, int32(pos+i)), append(bt.Seq, int32(seq))
		}
	}
	add(0, 7, 1)     // row 0: decode
	add(1, 0, 16)    // rows 1..16: a chunk at 0, just long enough
	add(2, 40, 15)   // rows 17..31: one row short
	add(3, 5, 1)     // rows 32..52: a decode row and the next 20 positions
	add(3, 6, 20)    //
	add(4, 300, 129) // rows 53..181: two query tiles
	add(5, 0, 16)    // rows 182..197 and 198..213: one sequence, a gap
	add(5, 100, 16)  //
	add(6, 9, 1)     // row 214
	segs, rest, tiles := pagedSplit(nil, nil, bt, 16)
	require.Equal(t, []int32{
		1, 16, 0, 1,
		32, 21, 5, 3,
		53, 129, 300, 4,
		182, 16, 0, 5,
		198, 16, 100, 5,
	}, segs)
	want := []int32{0}
	for r := int32(17); r < 32; r++ {
		want = append(want, r)
	}
	require.Equal(t, append(want, 214), rest)
	require.Equal(t, 2, tiles)

	segs, rest, tiles = pagedSplit(segs[:0], rest[:0], &kernels.Batch{Pos: []int32{4, 9}, Seq: []int32{0, 1}}, 16)
	require.Empty(t, segs)
	require.Equal(t, []int32{0, 1}, rest)
	require.Zero(t, tiles)
}

// TestPagedFlashParity: steps that mix prompt chunks of 1, 15, 16, 17,
// 100, 130 and 300 rows, at position 0 and continuing sequences already in
// the cache, with decode rows between them (shuffled 16-position blocks,
// f16 cache, layer 1 of 2), through the GPU (chunks of 16 rows or more on
// the paged flash kernel, the other rows on split-KV through a row list)
// and the CPU reference, for GQA and MHA at head dims 64 and 128. Every
// row is checked on its own as well as the whole output.
func TestPagedFlashParity(t *testing.T) {
	// A step is (sequence, rows) runs in batch order; a sequence goes on
	// from where its last step left it.
	steps := [][][2]int{
		{{0, 300}, {1, 1}, {2, 17}, {3, 16}, {4, 15}, {5, 100}},        // everything at position 0
		{{1, 1}, {2, 100}, {0, 1}, {4, 16}, {3, 1}, {5, 17}, {6, 300}}, // chunks going on, decode rows between
		{{1, 1}, {0, 130}, {2, 1}, {3, 15}, {4, 1}, {5, 1}, {6, 1}},    // 130 rows after 301 positions: two tiles
		{{2, 300}},                       // the flash kernel alone
		{{0, 1}, {1, 1}, {2, 1}, {6, 1}}, // decode alone: split-KV over every row
	}
	for _, tc := range pagedShapes[:4] {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, Options{KVDType: kernels.F16})
			ps := r.pagedSeqs(kernels.PagedKVSpec{Layers: 2, Blocks: 128, BlockTokens: 16, KVHeads: tc.kvh, KDim: tc.d, VDim: tc.d}, 7)
			scale := float32(1 / math.Sqrt(float64(tc.d)))
			for si, step := range steps {
				bt := &kernels.Batch{}
				flash := 0
				for _, run := range step {
					s, rows := run[0], run[1]
					if rows >= pagedFlashRows {
						flash += rows
					}
					ps.add(bt, s, rows)
				}
				ps.attend(fmt.Sprintf("step %d (%d rows, %d on flash)", si, bt.Rows(), flash), bt, tc.heads, scale, tol16, true, true)
			}
		})
	}
}

// pagedShapes are the attention shapes of the paged flash and decode
// tests; the flash test takes the first four.
var pagedShapes = []struct {
	name          string
	heads, kvh, d int
}{
	{"gqa-64", 8, 2, 64},
	{"gqa-128", 8, 2, 128},
	{"mha-64", 4, 4, 64},
	{"mha-128", 4, 4, 128},
	{"g2-128", 4, 2, 128},
	{"g3-40", 6, 2, 40},
	{"g16-32", 16, 1, 32},
	{"mha-256", 2, 2, 256},
	{"g2-16", 4, 2, 16},
}

// pagedSeqs is a paged cache of layer 1 on both backends and the
// sequences a test grows in it: each one's block table and length, blocks
// handed out from a shuffled free list so tables are not contiguous.
type pagedSeqs struct {
	r      *rig
	spec   kernels.PagedKVSpec
	g, c   kernels.PagedKV
	free   []int
	tables [][]int32
	lens   []int
}

// pagedSeqs makes a paged cache of spec on each backend for seqs
// sequences.
func (r *rig) pagedSeqs(spec kernels.PagedKVSpec, seqs int) *pagedSeqs {
	g, err := r.g.NewPagedKV(spec)
	require.NoError(r.t, err)
	c, err := r.c.NewPagedKV(spec)
	require.NoError(r.t, err)
	return &pagedSeqs{r: r, spec: spec, g: g, c: c, free: r.rnd.Perm(spec.Blocks), tables: make([][]int32, seqs), lens: make([]int, seqs)}
}

// add appends rows rows of sequence s to bt at the sequence's next
// positions, giving it a new block at each block boundary.
func (ps *pagedSeqs) add(bt *kernels.Batch, s, rows int) {
	for range rows {
		p := ps.lens[s]
		if p%ps.spec.BlockTokens == 0 {
			ps.tables[s] = append(ps.tables[s], int32(ps.free[0]))
			ps.free = ps.free[1:]
		}
		bt.Pos, bt.Seq = append(bt.Pos, int32(p)), append(bt.Seq, int32(s))
		ps.lens[s]++
	}
}

// batch is a step of rows[s] rows of each sequence s, in sequence order.
func (ps *pagedSeqs) batch(rows []int) *kernels.Batch {
	bt := &kernels.Batch{}
	for s, n := range rows {
		ps.add(bt, s, n)
	}
	return bt
}

// attend runs PagedAttention of bt in layer 1 on both backends on fresh
// random q, k and (with v) v, and checks the output against the CPU
// within tol and, with perRow, every row on its own within 3·tol.
func (ps *pagedSeqs) attend(name string, bt *kernels.Batch, heads int, scale float32, tol float64, v, perRow bool) {
	r, sp := ps.r, ps.spec
	bt.Tables = ps.tables
	n := bt.Rows()
	q, k := r.rand(n*heads*sp.KDim), r.rand(n*sp.KVHeads*sp.KDim)
	var vb pair
	if v {
		vb = r.rand(n * sp.KVHeads * sp.VDim)
	}
	w := heads * sp.VDim
	out := r.poisoned(n * w)
	r.g.PagedAttention(out.g, q.g, k.g, vb.g, ps.g, 1, bt, heads, scale)
	r.c.PagedAttention(out.c, q.c, k.c, vb.c, ps.c, 1, bt, heads, scale)
	r.check(name, out, n*w, tol)
	if !perRow {
		return
	}
	got, want := r.get(out, n*w)
	for i := range n {
		e := relErr(got[i*w:(i+1)*w], want[i*w:(i+1)*w])
		require.LessOrEqual(r.t, e, 3*tol, "%s: row %d (sequence %d, position %d): relative error %.3g", name, i, bt.Seq[i], bt.Pos[i], e)
	}
}

// BenchmarkPagedPrefill: one 512-row prompt chunk of the 7B attention
// shape (32 heads, head dim 128, MHA; f16 cache in shuffled 16-position
// blocks) at position 0 and at 512, alone and beside 31 decode rows of
// other sequences at position 1023, through PagedAttention without the
// step's key store (the kernels alone, as the contiguous flash figure), on
// the flash path and with every row on split-KV (the path before it).
// TFLOP/s counts the causal products (Σ_i T_i · heads · 4·D).
func BenchmarkPagedPrefill(b *testing.B) {
	const heads, d, bs, chunk, ctx = 32, 128, 16, 512, 1024
	for _, pos0 := range []int{0, 512} {
		for _, decode := range []int{0, 31} {
			for _, path := range []string{"flash", "split"} {
				b.Run(fmt.Sprintf("pos0=%d/decode=%d/%s", pos0, decode, path), func(b *testing.B) {
					g := newGPU(b, Options{KVDType: kernels.F16})
					g.bd.splitOnly = path == "split"
					seqs := 1 + decode
					spec := kernels.PagedKVSpec{Layers: 1, Blocks: seqs * ctx / bs, BlockTokens: bs, KVHeads: heads, KDim: d, VDim: d}
					kv, err := g.NewPagedKV(spec)
					require.NoError(b, err)
					step := &kernels.Batch{Tables: fillPaged(b, g, kv.(*PagedKV), seqs, ctx)}
					for p := pos0; p < pos0+chunk; p++ {
						step.Pos, step.Seq = append(step.Pos, int32(p)), append(step.Seq, 0)
					}
					for s := 1; s < seqs; s++ {
						step.Pos, step.Seq = append(step.Pos, int32(ctx-1)), append(step.Seq, int32(s))
					}
					n := step.Rows()
					bufs := make([]kernels.Buffer, 4) // q, k, v, out: MHA, all n·heads·d
					for i := range bufs {
						bufs[i], err = g.Alloc(n * heads * d)
						require.NoError(b, err)
						require.NoError(b, g.RandomBuffer(bufs[i], uint32(7+i), 0, 1))
					}
					us := timeOps(b, g, func() {
						g.mu.Lock()
						defer g.mu.Unlock()
						g.skipStore = true
						g.pagedAttention(bufs[3], bufs[0], bufs[1], bufs[2], kv, 0, step, heads, float32(1/math.Sqrt(d)))
						g.skipStore = false
					})
					keys := float64(chunk)*float64(pos0) + float64(chunk)*float64(chunk+1)/2 + float64(decode*ctx)
					b.ReportMetric(keys*float64(heads*4*d)/(us*1e6), "TFLOP/s")
					b.ReportMetric(float64(n)/us*1e6, "rows/s")
				})
			}
		}
	}
}

// fillPaged stores random keys and values at positions 0..ctx-1 of each of
// seqs sequences in layer 0 of c, each sequence's blocks a shuffled run of
// c's blocks, and returns the block tables.
func fillPaged(tb testing.TB, g *Backend, c *PagedKV, seqs, ctx int) [][]int32 {
	sp := c.spec
	kw, vw := sp.KVHeads*sp.KDim, sp.KVHeads*sp.VDim
	nb := (ctx + sp.BlockTokens - 1) / sp.BlockTokens
	require.LessOrEqual(tb, seqs*nb, sp.Blocks)
	perm := rand.New(rand.NewPCG(1, 2)).Perm(sp.Blocks)
	tables := make([][]int32, seqs)
	for s := range tables {
		for i := range nb {
			tables[s] = append(tables[s], int32(perm[s*nb+i]))
		}
	}
	kb, err := g.Alloc(ctx * kw)
	require.NoError(tb, err)
	vb, err := g.Alloc(ctx * vw)
	require.NoError(tb, err)
	for s := range seqs {
		require.NoError(tb, g.RandomBuffer(kb, uint32(2*s+1), 0, 1))
		require.NoError(tb, g.RandomBuffer(vb, uint32(2*s+2), 0, 1))
		bt := &kernels.Batch{Tables: tables}
		for p := range ctx {
			bt.Pos, bt.Seq = append(bt.Pos, int32(p)), append(bt.Seq, int32(s))
		}
		g.mu.Lock()
		if g.uploadBatch(bt) {
			d := &g.bd
			g.launch("kv_store_paged_"+dtypeNames[c.dt], dim3{blocks(int64(ctx)*int64(kw+vw), 256), 1, 1}, dim3{256, 1, 1}, 0, func(a *args) {
				a.ptr(c.k).ptr(c.v).ptr(g.dev(kb).p).ptr(g.dev(vb).p).i32(ctx).ptr(d.pos).ptr(d.seq).ptr(d.tab).i32(d.maxb).i32(sp.BlockTokens).i32(kw).i32(vw)
			})
		}
		g.mu.Unlock()
	}
	require.NoError(tb, g.Sync())
	return tables
}

// TestPagedDecodeParity: decode rows over contexts of 1, 15, 16, 17, 200,
// 1,000 and 3,000 positions (shuffled 16-position blocks, f16 cache, layer
// 1 of 2) on the one-pass kernel attn_dec against the CPU reference: every
// row alone, then beside a 20-row prompt chunk (the decode rows then go
// through a row list where the flash kernel takes the chunk), then in a
// shuffled row order. Groups of 1, 2, 3 (a masked head), 4 and 16 (two
// head chunks), head dims 16 to 256 (40: lanes past the row's chunks).
// The same steps on the two-pass attn_split (noDec) must agree as well.
func TestPagedDecodeParity(t *testing.T) {
	ctxs := []int{1, 15, 16, 17, 200, 1000, 3000}
	for _, tc := range pagedShapes {
		for _, kern := range []string{"dec", "split"} {
			t.Run(tc.name+"/"+kern, func(t *testing.T) {
				r := newRig(t, Options{KVDType: kernels.F16})
				r.c = cpu.New(runtime.NumCPU()) // the 3,000-row prompt's reference
				t.Cleanup(func() { r.c.Close() })
				r.g.bd.noDec = kern == "split"
				seqs := len(ctxs) + 1 // the last one's prompt comes beside decode rows
				ps := r.pagedSeqs(kernels.PagedKVSpec{Layers: 2, Blocks: 320, BlockTokens: 16, KVHeads: tc.kvh, KDim: tc.d, VDim: tc.d}, seqs)
				scale := float32(1 / math.Sqrt(float64(tc.d)))
				run := func(name string, bt *kernels.Batch, perRow bool) {
					ps.attend(name, bt, tc.heads, scale, tol16, true, perRow)
				}
				// Prompts up to one short of each context.
				fill := &kernels.Batch{}
				for s, c := range ctxs {
					ps.add(fill, s, c-1)
				}
				run("prompts", fill, false)
				dec := &kernels.Batch{}
				for s := range ctxs {
					ps.add(dec, s, 1)
				}
				run("decode", dec, true)
				mixed := &kernels.Batch{}
				for s := range ctxs {
					ps.add(mixed, s, 1)
					if s == 3 {
						ps.add(mixed, len(ctxs), 20)
					}
				}
				run("decode beside a prompt chunk", mixed, true)
				shuffled := &kernels.Batch{}
				for _, s := range r.rnd.Perm(seqs) {
					ps.add(shuffled, s, 1)
				}
				run("decode shuffled", shuffled, true)
			})
		}
	}
}

// BenchmarkPagedDecode: decode attention of the 7B shape (32 heads, head
// dim 128, MHA; f16 cache in shuffled 16-position blocks) for 64 rows at
// 640 positions and 1 row at 4,096, through PagedAttention without the
// step's key store, on the one-pass attn_dec and the two-pass attn_split
// (noDec); and the contiguous cache's Attention for the 1-row case. GB/s
// counts the K and V bytes read once (rows · ctx · heads · d · 2 · 2 B),
// the split partials and attn_combine not counted but timed. dec-L* fix
// attn_dec's split size (dec: decSplit's choice) to check that choice.
func BenchmarkPagedDecode(b *testing.B) {
	const heads, d, bs = 32, 128, 16
	scale := float32(1 / math.Sqrt(d))
	for _, sh := range []struct {
		rows, ctx int
		contig    bool
	}{{64, 640, false}, {1, 4096, false}, {1, 4096, true}} {
		for _, kern := range []string{"dec", "dec-L64", "dec-L128", "dec-L256", "dec-L512", "split"} {
			var decL int
			if _, err := fmt.Sscanf(kern, "dec-L%d", &decL); err == nil && sh.contig {
				continue // the contiguous path keeps Attention's split size
			}
			form := "paged"
			if sh.contig {
				form = "contig"
			}
			b.Run(fmt.Sprintf("%s/rows=%d/ctx=%d/%s", form, sh.rows, sh.ctx, kern), func(b *testing.B) {
				g := newGPU(b, Options{KVDType: kernels.F16})
				g.bd.noDec, g.bd.decL = kern == "split", decL
				n := sh.rows
				bufs := make([]kernels.Buffer, 4) // q, k, v, out
				for i := range bufs {
					var err error
					bufs[i], err = g.Alloc(n * heads * d)
					require.NoError(b, err)
					require.NoError(b, g.RandomBuffer(bufs[i], uint32(7+i), 0, 1))
				}
				var op func()
				if sh.contig {
					kv, err := g.NewKVCache(kernels.KVSpec{Layers: 1, MaxTokens: sh.ctx, KVHeads: heads, KDim: d, VDim: d})
					require.NoError(b, err)
					// Keys and values at every position (the store kernel once).
					for p := 0; p < sh.ctx; p += 1024 {
						k, err := g.Alloc(1024 * heads * d)
						require.NoError(b, err)
						require.NoError(b, g.RandomBuffer(k, uint32(p+1), 0, 1))
						g.mu.Lock()
						g.launch("kv_store_f16", dim3{blocks(int64(1024*heads*d)*2, 256), 1, 1}, dim3{256, 1, 1}, 0, func(a *args) {
							c := kv.(*KVCache)
							a.ptr(c.k).ptr(c.v).ptr(g.dev(k).p).ptr(g.dev(k).p).i32(1024).i32(p).ptr(g.zeroDP).i32(heads * d).i32(heads * d)
						})
						g.mu.Unlock()
					}
					require.NoError(b, g.Sync())
					op = func() { g.AttentionNoStore(bufs[3], bufs[0], kv, 0, sh.ctx-1, 1, heads, scale) }
				} else {
					spec := kernels.PagedKVSpec{Layers: 1, Blocks: n * sh.ctx / bs, BlockTokens: bs, KVHeads: heads, KDim: d, VDim: d}
					kv, err := g.NewPagedKV(spec)
					require.NoError(b, err)
					step := &kernels.Batch{Tables: fillPaged(b, g, kv.(*PagedKV), n, sh.ctx)}
					for s := range n {
						step.Pos, step.Seq = append(step.Pos, int32(sh.ctx-1)), append(step.Seq, int32(s))
					}
					op = func() {
						g.mu.Lock()
						defer g.mu.Unlock()
						g.skipStore = true
						g.pagedAttention(bufs[3], bufs[0], bufs[1], bufs[2], kv, 0, step, heads, scale)
						g.skipStore = false
					}
				}
				us := timeOps(b, g, op)
				b.ReportMetric(float64(n*sh.ctx)*heads*d*2*2/(us*1e3), "GB/s")
			})
		}
	}
}
