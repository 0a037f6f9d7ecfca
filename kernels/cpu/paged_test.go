package cpu

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/kernels"
)

// TestPagedAttentionMatchesContiguous runs three sequences through mixed
// batches (prompt chunks beside single decode rows, odd lengths, shuffled
// blocks of 4 positions) and compares every row with the single-sequence
// Attention over a contiguous cache, for GQA and MLA's absorbed layout.
func TestPagedAttentionMatchesContiguous(t *testing.T) {
	cases := []struct {
		name               string
		heads, kvh, kd, vd int
		vInK               bool
		threads            int
	}{
		{"gqa", 6, 2, 8, 8, false, 2},
		{"mha-odd-dims", 3, 3, 5, 7, false, 1},
		{"mla-absorbed", 4, 1, 12, 8, true, 2},
	}
	// steps[i][s] = rows of sequence s in step i (0 = not in the step).
	steps := [][]int{{5, 3, 0}, {1, 4, 7}, {1, 1, 1}, {0, 1, 9}, {1, 1, 1}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, uint64(tc.heads)))
			be := New(tc.threads)
			const bs, layers, layer = 4, 2, 1
			spec := kernels.PagedKVSpec{Layers: layers, Blocks: 20, BlockTokens: bs, KVHeads: tc.kvh, KDim: tc.kd, VDim: tc.vd, VInK: tc.vInK}
			kv, err := be.NewPagedKV(spec)
			require.NoError(t, err)
			// Blocks handed out in a shuffled order, so tables are not contiguous.
			free := rng.Perm(spec.Blocks)
			tables := make([][]int32, 3)
			refs := make([]kernels.KVCache, 3)
			for s := range refs {
				refs[s], err = be.NewKVCache(kernels.KVSpec{Layers: layers, MaxTokens: 64, KVHeads: tc.kvh, KDim: tc.kd, VDim: tc.vd, VInK: tc.vInK})
				require.NoError(t, err)
			}
			lens := make([]int, 3)
			up := func(x []float32) kernels.Buffer { return upload(t, be, x) }
			rnd := func(n int) []float32 {
				x := make([]float32, n)
				for i := range x {
					x[i] = float32(rng.NormFloat64())
				}
				return x
			}
			scale := float32(0.3)
			for si, step := range steps {
				var bt kernels.Batch
				bt.Tables = tables
				var q, k, v []float32
				var want []float32
				for s, rows := range step {
					if rows == 0 {
						continue
					}
					qs, ks, vs := rnd(rows*tc.heads*tc.kd), rnd(rows*tc.kvh*tc.kd), rnd(rows*tc.kvh*tc.vd)
					o := make([]float32, rows*tc.heads*tc.vd)
					ob := up(o)
					be.Attention(ob, up(qs), up(ks), up(vs), refs[s], layer, lens[s], rows, tc.heads, scale)
					require.NoError(t, be.Download(o, ob, 0))
					want = append(want, o...)
					q, k, v = append(q, qs...), append(k, ks...), append(v, vs...)
					for r := range rows {
						p := lens[s] + r
						if p%bs == 0 {
							tables[s] = append(tables[s], int32(free[0]))
							free = free[1:]
						}
						bt.Pos = append(bt.Pos, int32(p))
						bt.Seq = append(bt.Seq, int32(s))
					}
					lens[s] += rows
				}
				bt.Tables = tables
				require.NoError(t, bt.Check(spec))
				n := bt.Rows()
				out := up(make([]float32, n*tc.heads*tc.vd))
				be.PagedAttention(out, up(q), up(k), up(v), kv, layer, &bt, tc.heads, scale)
				got := make([]float32, n*tc.heads*tc.vd)
				require.NoError(t, be.Download(got, out, 0))
				assert.Less(t, relErr(got, want), 1e-6, "step %d", si)
			}
		})
	}
}

// TestRopeRowsMatchesApplyRope checks per-row positions against ApplyRope
// at the same positions, for both pairings.
func TestRopeRowsMatchesApplyRope(t *testing.T) {
	be := New(1)
	rng := rand.New(rand.NewPCG(3, 4))
	const heads, hd = 3, 10
	inv := []float32{1, 0.3, 0.05}
	pos := []int32{7, 0, 3, 4, 100}
	for _, inter := range []bool{false, true} {
		r := &kernels.Rope{Off: 2, Dim: 6, InvFreq: inv, Scale: 0.9, Interleaved: inter}
		x := make([]float32, len(pos)*heads*hd)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		b, _ := be.Alloc(len(x))
		require.NoError(t, be.Upload(b, 0, x))
		be.RopeRows(b, len(pos), heads, hd, pos, r)
		got := make([]float32, len(x))
		require.NoError(t, be.Download(got, b, 0))
		for i, p := range pos {
			w := heads * hd
			one, _ := be.Alloc(w)
			require.NoError(t, be.Upload(one, 0, x[i*w:(i+1)*w]))
			be.ApplyRope(one, 1, heads, hd, int(p), r)
			want := make([]float32, w)
			require.NoError(t, be.Download(want, one, 0))
			assert.Equal(t, want, got[i*w:(i+1)*w], "row %d interleaved=%v", i, inter)
		}
	}
}

func TestBatchCheckRejectsBadDescriptors(t *testing.T) {
	spec := kernels.PagedKVSpec{Layers: 1, Blocks: 4, BlockTokens: 2, KVHeads: 1, KDim: 2, VDim: 2}
	tables := [][]int32{{0, 1}, {3}}
	for _, tc := range []struct {
		name string
		b    kernels.Batch
		msg  string
	}{
		{"ok", kernels.Batch{Pos: []int32{3, 1}, Seq: []int32{0, 1}, Tables: tables}, ""},
		{"lengths", kernels.Batch{Pos: []int32{3}, Seq: []int32{0, 1}, Tables: tables}, "sequence slots"},
		{"seq", kernels.Batch{Pos: []int32{0}, Seq: []int32{2}, Tables: tables}, "outside 2 tables"},
		{"pos", kernels.Batch{Pos: []int32{2}, Seq: []int32{1}, Tables: tables}, "beyond the 1 blocks"},
		{"block", kernels.Batch{Pos: []int32{0}, Seq: []int32{0}, Tables: [][]int32{{9}}}, "outside the cache"},
	} {
		err := tc.b.Check(spec)
		if tc.msg == "" {
			assert.NoError(t, err, tc.name)
		} else {
			assert.ErrorContains(t, err, tc.msg, tc.name)
		}
	}
}

// TestPagedAttentionAllocs: once warm, a batched step's attention
// allocates nothing (jobs and scratch are pooled).
func TestPagedAttentionAllocs(t *testing.T) {
	be := allocsBackend(t)
	spec := kernels.PagedKVSpec{Layers: 1, Blocks: 8, BlockTokens: 4, KVHeads: 2, KDim: 8, VDim: 8}
	kv, err := be.NewPagedKV(spec)
	require.NoError(t, err)
	bt := &kernels.Batch{Pos: []int32{0, 1, 2, 5}, Seq: []int32{0, 0, 0, 1}, Tables: [][]int32{{0}, {1, 2}}}
	alloc := func(n int) kernels.Buffer {
		b, err := be.Alloc(n)
		require.NoError(t, err)
		return b
	}
	q, k, v, out := alloc(4*4*8), alloc(4*2*8), alloc(4*2*8), alloc(4*4*8)
	step := func() { be.PagedAttention(out, q, k, v, kv, 0, bt, 4, 0.3) }
	step()
	assert.Zero(t, testing.AllocsPerRun(20, step))
}
