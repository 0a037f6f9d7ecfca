//go:build linux && cgo

package cuda

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/kernels"
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
				const bs, layers, layer = 16, 2, 1
				spec := kernels.PagedKVSpec{Layers: layers, Blocks: 64, BlockTokens: bs, KVHeads: tc.kvh, KDim: tc.kd, VDim: tc.vd, VInK: tc.vInK}
				gkv, err := r.g.NewPagedKV(spec)
				require.NoError(t, err)
				ckv, err := r.c.NewPagedKV(spec)
				require.NoError(t, err)
				free := r.rnd.Perm(spec.Blocks)
				tables := make([][]int32, 3)
				lens := make([]int, 3)
				tol := tolF32
				if dt == kernels.F16 {
					tol = tol16
				}
				for si, step := range steps {
					bt := &kernels.Batch{}
					for s, rows := range step {
						for range rows {
							p := lens[s]
							if p%bs == 0 {
								tables[s] = append(tables[s], int32(free[0]))
								free = free[1:]
							}
							bt.Pos = append(bt.Pos, int32(p))
							bt.Seq = append(bt.Seq, int32(s))
							lens[s]++
						}
					}
					bt.Tables = tables
					n := bt.Rows()
					q, k, v := r.rand(n*tc.heads*tc.kd), r.rand(n*tc.kvh*tc.kd), r.rand(n*tc.kvh*tc.vd)
					out := r.poisoned(n * tc.heads * tc.vd)
					r.g.PagedAttention(out.g, q.g, k.g, v.g, gkv, layer, bt, tc.heads, 0.1)
					r.c.PagedAttention(out.c, q.c, k.c, v.c, ckv, layer, bt, tc.heads, 0.1)
					r.check(fmt.Sprintf("step %d", si), out, n*tc.heads*tc.vd, tol)
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
