//go:build linux && cgo

package cuda

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/kernels"
)

// TestCapturedBatchStep runs a miniature batched decode step (embed, fused
// QKV, per-row rope, paged attention, output projection) over a few
// sequences plus a padding row that writes only its own block, captured
// once as a graph and replayed at later positions with growing tables,
// against the same ops issued directly on a second cache. GEMV (4 rows)
// and GEMM (16 rows) sizes, f32 and f16 caches; a replaced scratch buffer
// makes the graph stale.
func TestCapturedBatchStep(t *testing.T) {
	for _, kvdt := range []kernels.DType{kernels.F32, kernels.F16} {
		for _, rows := range []int{4, 16} {
			t.Run(fmt.Sprintf("%v/rows=%d", kvdt, rows), func(t *testing.T) {
				capturedBatchStep(t, kvdt, rows)
			})
		}
	}
}

func capturedBatchStep(t *testing.T, kvdt kernels.DType, rows int) {
	g := newGPU(t, Options{KVDType: kvdt})
	rnd := rand.New(rand.NewPCG(rand.Uint64(), 7))
	const vocab, dim, heads, kvh, hd, bs = 50, 64, 4, 2, 16, 16
	mm := newMiniModel(t, g, rnd, vocab, dim, heads, kvh, hd)
	sq, err := g.UploadMatrix([]kernels.HostMatrix{hostMatrix("sq", randVec(rnd, dim*dim), dim, dim, kernels.BF16)}, false)
	require.NoError(t, err)
	spec := kernels.PagedKVSpec{Layers: 1, Blocks: 200, BlockTokens: bs, KVHeads: kvh, KDim: hd, VDim: hd}
	pad := int32(spec.Blocks - 1) // the padding rows' block
	type state struct {
		kv kernels.PagedKV
		miniActs
	}
	const maxRows = 512 // the prompt step's tokens (340 at 16 rows) × 2 widths
	mk := func() *state {
		s := &state{miniActs: mm.acts(g, maxRows*vocab*2)}
		s.kv, err = g.NewPagedKV(spec)
		require.NoError(t, err)
		return s
	}
	step := func(be kernels.Backend, bat kernels.Batcher, s *state, ids []int32, bt *kernels.Batch) {
		n := mm.in(be, s.miniActs, ids)
		bat.RopeRows(s.q, n, heads, hd, bt.Pos, mm.rope)
		bat.RopeRows(s.k, n, kvh, hd, bt.Pos, mm.rope)
		bat.PagedAttention(s.o, s.q, s.k, s.v, s.kv, 0, bt, heads, 0.25)
		mm.out(be, s.miniActs, n)
	}
	direct, graphed := mk(), mk()
	nseq := rows - 1 // the last row pads
	next := int32(0)
	tables := make([][]int32, nseq)
	lens := make([]int, nseq)
	grow := func(s, upto int) {
		for len(tables[s])*bs < upto {
			tables[s] = append(tables[s], next)
			next++
		}
	}
	// Prompts of different lengths, one uncaptured step on both caches.
	var ids []int32
	pbt := &kernels.Batch{}
	for s := range nseq {
		n := 1 + (s*13)%40
		grow(s, n)
		for p := range n {
			ids = append(ids, int32(rnd.IntN(vocab)))
			pbt.Pos = append(pbt.Pos, int32(p))
			pbt.Seq = append(pbt.Seq, int32(s))
		}
		lens[s] = n
	}
	pbt.Tables = tables
	step(g, g, direct, ids, pbt)
	step(g, g, graphed, ids, pbt)
	const width = 8 // up to 128 positions
	var sg kernels.BatchStepGraph
	defer func() {
		if sg != nil {
			sg.Close()
		}
	}()
	cur := make([]int32, rows)
	for s := range nseq {
		cur[s] = int32(rnd.IntN(vocab))
	}
	want, got := make([]float32, nseq*vocab), make([]float32, nseq*vocab)
	for it := range 40 {
		bt := &kernels.Batch{Tables: make([][]int32, rows)}
		for s := range nseq {
			grow(s, lens[s]+1)
			bt.Pos = append(bt.Pos, int32(lens[s]))
			bt.Seq = append(bt.Seq, int32(s))
			bt.Tables[s] = tables[s]
		}
		bt.Pos = append(bt.Pos, 0)
		bt.Seq = append(bt.Seq, int32(nseq))
		bt.Tables[nseq] = []int32{pad}
		step(g, g, direct, cur, bt)
		if it == 25 {
			// A larger 16-bit activation scratch replaces the one graphs
			// may use (every bf16 GEMM converts its input there).
			const n = 2000
			in, err := g.Alloc(n * dim)
			require.NoError(t, err)
			out, err := g.Alloc(n * dim)
			require.NoError(t, err)
			g.MatMul([]kernels.Buffer{out}, in, n, sq, nil)
		}
		if sg == nil {
			sg, err = g.CaptureBatchStep(cur, bt, width, func(be kernels.Backend, bat kernels.Batcher) error {
				step(be, bat, graphed, cur, bt)
				return nil
			})
			require.NoError(t, err)
		} else if err := sg.Replay(cur, bt); err != nil {
			require.True(t, errors.Is(err, kernels.ErrStaleGraph), "step %d: %v", it, err)
			require.Equal(t, 25, it, "only the replaced scratch makes it stale")
			sg.Close()
			sg, err = g.CaptureBatchStep(cur, bt, width, func(be kernels.Backend, bat kernels.Batcher) error {
				step(be, bat, graphed, cur, bt)
				return nil
			})
			require.NoError(t, err)
		}
		require.NoError(t, g.Download(want, direct.lg, 0))
		require.NoError(t, g.Download(got, graphed.lg, 0))
		require.LessOrEqual(t, relErr(got, want), 1e-6, "step %d", it)
		am := make([]int32, nseq)
		require.NoError(t, g.ArgmaxRows(am, graphed.lg, 0, vocab))
		for s := range nseq {
			lens[s]++
			cur[s] = am[s]
		}
	}
	// A table wider than the captured width and a wrong row count are errors.
	wide := &kernels.Batch{Pos: make([]int32, rows), Seq: make([]int32, rows), Tables: [][]int32{make([]int32, width+1)}}
	assert.ErrorContains(t, sg.Replay(cur, wide), "wider than the captured")
	assert.ErrorContains(t, sg.Replay(cur[:1], wide), "step of")
}

// TestArgmaxRows: one launch for many rows against the host scan (lowest
// index on ties, NaN never wins, all-NaN rows give 0).
func TestArgmaxRows(t *testing.T) {
	g := newGPU(t, Options{})
	rnd := rand.New(rand.NewPCG(rand.Uint64(), 9))
	for _, n := range []int{1, 5, 1000, 102400} {
		const rows = 37
		v := randVec(rnd, rows*n+3)
		x := v[3:]
		if n > 2 {
			x[1] = float32(math.NaN())
			x[n+4] = 50 // a tie in row 1: the lower index wins
			x[n+2] = 50
		}
		for i := range n {
			x[2*n+i] = float32(math.NaN())
		}
		buf, err := g.Alloc(len(v))
		require.NoError(t, err)
		require.NoError(t, g.Upload(buf, 0, v))
		got := make([]int32, rows)
		require.NoError(t, g.ArgmaxRows(got, buf, 3, n))
		for r := range rows {
			row := x[r*n : (r+1)*n]
			best, bi := float32(math.Inf(-1)), -1
			for i, e := range row {
				if e > best || (bi < 0 && e == e) {
					best, bi = e, i
				}
			}
			assert.Equal(t, int32(max(bi, 0)), got[r], "n=%d row %d", n, r)
		}
	}
	buf, _ := g.Alloc(10)
	assert.ErrorContains(t, g.ArgmaxRows(make([]int32, 3), buf, 2, 3), "buffer of 10")
}
