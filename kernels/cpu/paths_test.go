package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/kernels"
	"github.com/deepseek-go/deepseek-go/kernels/cpu/simd"
	"github.com/deepseek-go/deepseek-go/quant"
)

// backendPaths returns one backend per supported (float, int8) path pair
// plus the all-Go reference, each with 3 threads so chunking is exercised.
func backendPaths(t *testing.T) map[string]*Backend {
	t.Helper()
	bs := map[string]*Backend{}
	ik := quant.Int8Supported()
	for i, k := range simd.Supported() {
		b := NewWithKernels(3, k, ik[min(i, len(ik)-1)])
		t.Cleanup(func() { _ = b.Close() })
		bs[b.Name()] = b
	}
	for _, q := range ik {
		b := NewWithKernels(3, simd.Generic, q)
		t.Cleanup(func() { _ = b.Close() })
		bs[b.Name()] = b
	}
	return bs
}

// TestMatMulPathsAgree runs fused, biased products of odd shapes through
// every kernel path and compares with the pure-Go reference backend.
func TestMatMulPathsAgree(t *testing.T) {
	ref := NewWithKernels(1, simd.Generic, quant.Int8Generic)
	defer ref.Close()
	for _, tc := range []struct {
		dt    kernels.DType
		int8  bool
		n     int
		cols  int
		parts []int
	}{
		{kernels.F32, false, 1, 2048, []int{96, 33}},
		{kernels.BF16, false, 7, 131, []int{13, 64, 6}},
		{kernels.F16, false, 5, 67, []int{40}},
		{kernels.BF16, true, 1, 300, []int{70, 9}},
		{kernels.F32, true, 9, 129, []int{21, 20}},
		// Token counts that take the AMX tiles where present (row chunks
		// rounded to 32-row blocks, parts with leftover rows, column tails).
		{kernels.BF16, false, 40, 161, []int{64, 96, 33}},
		{kernels.F16, false, 33, 96, []int{64, 40}},
	} {
		for name, be := range backendPaths(t) {
			t.Run(fmt.Sprintf("%s/%v_int8=%v_n%d", name, tc.dt, tc.int8, tc.n), func(t *testing.T) {
				r := rand.New(rand.NewPCG(uint64(tc.cols), 9))
				var hosts []kernels.HostMatrix
				rows := 0
				for i, p := range tc.parts {
					h, _ := hostMatrix(t, fmt.Sprint("w", i), randVec(r, p*tc.cols), p, tc.cols, tc.dt)
					hosts = append(hosts, h)
					rows += p
				}
				x, bias := randVec(r, tc.n*tc.cols), randVec(r, rows)
				run := func(be *Backend) [][]float32 {
					m, err := be.UploadMatrix(hosts, tc.int8)
					require.NoError(t, err)
					xb, _ := be.Alloc(len(x))
					require.NoError(t, be.Upload(xb, 0, x))
					bb, _ := be.Alloc(rows)
					require.NoError(t, be.Upload(bb, 0, bias))
					var outs []kernels.Buffer
					for _, p := range tc.parts {
						o, _ := be.Alloc(tc.n * p)
						d := o.(*Buffer).Data()
						for i := range d {
							d[i] = float32(math.NaN())
						}
						outs = append(outs, o)
					}
					be.MatMul(outs, xb, tc.n, m, bb)
					var res [][]float32
					for _, o := range outs {
						res = append(res, o.(*Buffer).Data())
					}
					return res
				}
				want, got := run(ref), run(be)
				for p := range want {
					assert.Less(t, relErr(got[p], want[p]), 1e-5, "part %d", p)
				}
			})
		}
	}
}

// TestAttentionPathsAgree compares attention (prefill then steps, GQA, and
// the VInK layout) between each float path and the reference.
func TestAttentionPathsAgree(t *testing.T) {
	ref := NewWithKernels(1, simd.Generic, quant.Int8Generic)
	defer ref.Close()
	r := rand.New(rand.NewPCG(5, 6))
	for _, tc := range []struct {
		heads, kvh int
		vink       bool
	}{
		{8, 2, false}, {8, 2, true}, // GQA groups of 4
		{4, 4, false},  // MHA
		{12, 1, true},  // MLA-like: one latent head, 12 query heads (sub-groups 8 + 4)
		{20, 2, false}, // groups of 10: sub-groups 8 + 2
	} {
		heads, kvh, vink := tc.heads, tc.kvh, tc.vink
		const kd, vd, n = 37, 19, 40
		spec := kernels.KVSpec{Layers: 1, MaxTokens: n, KVHeads: kvh, KDim: kd, VDim: vd, VInK: vink}
		q, k, v := randVec(r, n*heads*kd), randVec(r, n*kvh*kd), randVec(r, n*kvh*vd)
		run := func(be *Backend) []float32 {
			c, err := be.NewKVCache(spec)
			require.NoError(t, err)
			out := make([]float32, 0, n*heads*vd)
			step := func(p0, m int) {
				qb, _ := be.Alloc(m * heads * kd)
				require.NoError(t, be.Upload(qb, 0, q[p0*heads*kd:(p0+m)*heads*kd]))
				kb, _ := be.Alloc(m * kvh * kd)
				require.NoError(t, be.Upload(kb, 0, k[p0*kvh*kd:(p0+m)*kvh*kd]))
				vb, _ := be.Alloc(m * kvh * vd)
				require.NoError(t, be.Upload(vb, 0, v[p0*kvh*vd:(p0+m)*kvh*vd]))
				ob, _ := be.Alloc(m * heads * vd)
				be.Attention(ob, qb, kb, vb, c, 0, p0, m, heads, 0.3)
				out = append(out, ob.(*Buffer).Data()...)
			}
			step(0, 25)
			for p := 25; p < n; p++ {
				step(p, 1)
			}
			return out
		}
		want := run(ref)
		// The reference backend against a naive float64 causal attention.
		naive := make([]float32, n*heads*vd)
		for tk := 0; tk < n; tk++ {
			for h := 0; h < heads; h++ {
				g := h / (heads / kvh)
				sc := make([]float64, tk+1)
				mx := math.Inf(-1)
				for p := 0; p <= tk; p++ {
					var d float64
					for i := 0; i < kd; i++ {
						d += float64(q[(tk*heads+h)*kd+i]) * float64(k[(p*kvh+g)*kd+i])
					}
					sc[p] = d * 0.3
					mx = math.Max(mx, sc[p])
				}
				var sum float64
				for p := range sc {
					sc[p] = math.Exp(sc[p] - mx)
					sum += sc[p]
				}
				for c := 0; c < vd; c++ {
					var o float64
					for p := range sc {
						vv := float64(v[(p*kvh+g)*vd+c])
						if vink {
							vv = float64(k[(p*kvh+g)*kd+c])
						}
						o += sc[p] / sum * vv
					}
					naive[(tk*heads+h)*vd+c] = float32(o)
				}
			}
		}
		require.Less(t, relErr(want, naive), 1e-5, "reference vs naive %+v", tc)
		for name, be := range backendPaths(t) {
			assert.Less(t, relErr(run(be), want), 1e-5, "%s %+v", name, tc)
		}
	}
}

// allocsBackend is a two-thread backend for the allocation tests, which
// skip under -race (it allocates, and randomises sync.Pool).
func allocsBackend(t *testing.T) *Backend {
	if raceEnabled {
		t.Skip("the race detector allocates and randomises sync.Pool")
	}
	be := New(2)
	t.Cleanup(func() { be.Close() })
	return be
}

// TestDecodeAllocs: a token step's matmul and attention allocate nothing.
func TestDecodeAllocs(t *testing.T) {
	be := allocsBackend(t)
	r := rand.New(rand.NewPCG(1, 1))
	for _, int8 := range []bool{false, true} {
		h, _ := hostMatrix(t, "w", randVec(r, 256*512), 256, 512, kernels.BF16)
		m, err := be.UploadMatrix([]kernels.HostMatrix{h}, int8)
		require.NoError(t, err)
		x, _ := be.Alloc(512)
		y, _ := be.Alloc(256)
		outs := []kernels.Buffer{y}
		allocs := testing.AllocsPerRun(50, func() { be.MatMul(outs, x, 1, m, nil) })
		assert.Zero(t, allocs, "matmul int8=%v", int8)
	}
	spec := kernels.KVSpec{Layers: 1, MaxTokens: 64, KVHeads: 2, KDim: 64, VDim: 64}
	c, err := be.NewKVCache(spec)
	require.NoError(t, err)
	q, _ := be.Alloc(8 * 64)
	kv, _ := be.Alloc(2 * 64)
	o, _ := be.Alloc(8 * 64)
	pos := 0
	allocs := testing.AllocsPerRun(50, func() {
		be.Attention(o, q, kv, kv, c, 0, pos, 1, 8, 0.1)
		pos++
	})
	assert.Zero(t, allocs, "attention")
	rope := &kernels.Rope{Dim: 64, InvFreq: make([]float32, 32), Scale: 1}
	assert.Zero(t, testing.AllocsPerRun(20, func() { be.ApplyRope(q, 1, 8, 64, 3, rope) }), "rope")
}

// TestClosedBackendStillComputes: ops after Close run on the caller.
func TestClosedBackendStillComputes(t *testing.T) {
	be := New(4)
	require.NoError(t, be.Close())
	require.NoError(t, be.Close())
	h, exact := hostMatrix(t, "w", randVec(rand.New(rand.NewPCG(2, 2)), 64*512), 64, 512, kernels.F32)
	m, err := be.UploadMatrix([]kernels.HostMatrix{h}, false)
	require.NoError(t, err)
	x, _ := be.Alloc(512)
	require.NoError(t, be.Upload(x, 0, exact[:512]))
	y, _ := be.Alloc(64)
	be.MatMul([]kernels.Buffer{y}, x, 1, m, nil)
	assert.InDelta(t, simd.Generic.Dot(exact[:512], exact[:512]), y.(*Buffer).Data()[0], 1e-2)
}

// TestPrequantisedInt8: an Int8 host matrix (weights and scales given, as a
// pre-quantised checkpoint would) multiplies like its dequantised values on
// every path (the row sums for the u8×s8 kernels are computed at upload).
func TestPrequantisedInt8(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	const rows, cols, n = 10, 70, 3
	data := make([]byte, rows*cols)
	scales := make([]float32, rows)
	deq := make([]float32, rows*cols)
	for i := range data {
		q := int8(r.IntN(255) - 127)
		data[i] = byte(q)
		deq[i] = float32(q)
	}
	for row := range scales {
		scales[row] = float32(r.Float64()*0.1 + 0.01)
		for c := 0; c < cols; c++ {
			deq[row*cols+c] *= scales[row]
		}
	}
	x := randVec(r, n*cols)
	for name, be := range backendPaths(t) {
		m, err := be.UploadMatrix([]kernels.HostMatrix{{Name: "q", Rows: rows, Cols: cols, DType: kernels.Int8, Data: data, Scales: scales}}, false)
		require.NoError(t, err)
		xb, _ := be.Alloc(len(x))
		require.NoError(t, be.Upload(xb, 0, x))
		y, _ := be.Alloc(n * rows)
		be.MatMul([]kernels.Buffer{y}, xb, n, m, nil)
		want := make([]float32, n*rows)
		for tk := 0; tk < n; tk++ {
			for row := 0; row < rows; row++ {
				var s float64
				for c := 0; c < cols; c++ {
					s += float64(x[tk*cols+c]) * float64(deq[row*cols+c])
				}
				want[tk*rows+row] = float32(s)
			}
		}
		// Only the activations are quantised here: ≈ 0.6% expected.
		assert.Less(t, relErr(y.(*Buffer).Data(), want), 0.015, name)
	}
}
