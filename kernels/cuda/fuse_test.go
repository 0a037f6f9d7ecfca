//go:build linux && cgo

package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/kernels"
	"github.com/deepseek-go/deepseek-go/kernels/routing"
)

// TestMatMulAddParity: MatMulAdd (gemv_add up to 8 rows on 16-byte weight
// rows, else MatMul into tmp and add) against the CPU's MatMul + Add, on a
// random out that the product is added to, for every weight dtype.
func TestMatMulAddParity(t *testing.T) {
	r := newRig(t, Options{})
	type mats struct{ g, c kernels.Matrix }
	upload := func(dt kernels.DType, rows, cols int) mats {
		switch dt {
		case kernels.Int8: // the CPU multiplies the dequantised int8 values
			h := hostMatrix("w", randVec(r.rnd, rows*cols), rows, cols, kernels.F32)
			q, err := quantizeParts([]kernels.HostMatrix{h})
			require.NoError(t, err)
			f := make([]float32, rows*cols)
			for i := range f {
				f[i] = float32(int8(q[0].Data[i])) * q[0].Scales[i/cols]
			}
			g, err := r.g.UploadMatrix([]kernels.HostMatrix{h}, true)
			require.NoError(t, err)
			c, err := r.c.UploadMatrix([]kernels.HostMatrix{hostMatrix("w", f, rows, cols, kernels.F32)}, false)
			require.NoError(t, err)
			return mats{g, c}
		case kernels.FP8:
			h := randFP8(r.rnd, "w", rows, cols, 128, 128, 0)
			if cols%16 != 0 {
				h = randFP8(r.rnd, "w", rows, cols, 3, 5, 1) // scalar blocks: the fallback
			}
			g, err := r.g.UploadMatrix([]kernels.HostMatrix{h}, false)
			require.NoError(t, err)
			c, err := r.c.UploadMatrix([]kernels.HostMatrix{h}, false)
			require.NoError(t, err)
			return mats{g, c}
		}
		h := hostMatrix("w", randVec(r.rnd, rows*cols), rows, cols, dt)
		g, err := r.g.UploadMatrix([]kernels.HostMatrix{h}, false)
		require.NoError(t, err)
		c, err := r.c.UploadMatrix([]kernels.HostMatrix{h}, false)
		require.NoError(t, err)
		return mats{g, c}
	}
	for _, dt := range []kernels.DType{kernels.F32, kernels.F16, kernels.BF16, kernels.Int8, kernels.FP8} {
		for _, sh := range []struct {
			rows, cols int
			bias       bool
		}{
			{96, 64, false},
			{2048, 2048, true}, // V2-Lite's o_proj and down (16 × 128 → 2048)
			{7, 256, true},     // fewer rows than a block's warps
			{64, 172, false},   // odd width: the fallback
		} {
			w := upload(dt, sh.rows, sh.cols)
			for _, n := range []int{1, 3, 8, 17} {
				name := fmt.Sprintf("%v/%d×%d/bias=%v/n=%d", dt, sh.rows, sh.cols, sh.bias, n)
				x := r.rand(n * sh.cols)
				out := r.rand(n * sh.rows) // the residual the product is added to
				tmp := r.poisoned(n * sh.rows)
				var gb, cb kernels.Buffer
				if sh.bias {
					b := r.rand(sh.rows)
					gb, cb = b.g, b.c
				}
				r.g.MatMulAdd(out.g, tmp.g, x.g, n, w.g, gb)
				r.c.MatMulAdd(out.c, tmp.c, x.c, n, w.c, cb)
				tol := tolF32
				if n > 8 && dt != kernels.F32 && dt != kernels.Int8 {
					tol = tol16 // cuBLASLt or the tensor-core GEMMs on 16-bit activations
				}
				r.check(name, out, n*sh.rows, tol)
			}
		}
	}
}

// TestMatMulAddErrors: bad calls are errors naming the op, not crashes.
func TestMatMulAddErrors(t *testing.T) {
	r := newRig(t, Options{})
	h := hostMatrix("w", randVec(r.rnd, 32*64), 32, 64, kernels.F32)
	w, err := r.g.UploadMatrix([]kernels.HostMatrix{h, h}, false)
	require.NoError(t, err)
	x, out := r.rand(64), r.rand(64)
	r.g.MatMulAdd(out.g, out.g, x.g, 1, w, nil)
	require.ErrorContains(t, r.g.Err(), "MatMulAdd")
}

// TestRouteMatMulParity: RouteMatMul (moe_router_dec up to 8 rows of a
// router with 16-byte rows, else MatMul and Route) against MatMul and Route
// on the GPU, which TestMoERouteParity checks against kernels/routing: the
// same logits, indices, weights and selection counters bit for bit; and the
// logits against the CPU's MatMul. Each size runs twice, so the second
// launch finds the finished-block counter reset.
func TestRouteMatMulParity(t *testing.T) {
	r := newRig(t, Options{})
	v2lite := routing.Config{Method: routing.TopKGreedy, Scoring: routing.ScoringSoftmax, Experts: 64, TopK: 6, Groups: 1, TopGroups: 1, Scale: 1}
	v3 := routing.Config{Method: routing.TopKNoAuxTC, Scoring: routing.ScoringSigmoid, Experts: 256, TopK: 8, Groups: 8, TopGroups: 4,
		NormTopK: true, ScaleAfterNorm: true, Scale: 2.5, Shared: 1}
	small := routing.Config{Method: routing.TopKGreedy, Scoring: routing.ScoringSoftmax, Experts: 5, TopK: 2, Groups: 1, TopGroups: 1, NormTopK: true, Scale: 1, Shared: 2}
	for _, tc := range []struct {
		name   string
		cfg    routing.Config
		hidden int
		dt     kernels.DType
	}{
		{"v2-lite bf16", v2lite, 2048, kernels.BF16},
		{"v3 bf16", v3, 1024, kernels.BF16},
		{"v3 f32", v3, 512, kernels.F32},
		{"small f16", small, 96, kernels.F16},
		{"odd width (fallback)", v2lite, 100, kernels.BF16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cfg
			E, slots := c.Experts, c.Slots()
			var bias []float32
			if c.Method == routing.TopKNoAuxTC {
				bias = randVec(r.rnd, E)
			}
			h := hostMatrix("gate", randVec(r.rnd, E*tc.hidden), E, tc.hidden, tc.dt)
			gw, err := r.g.UploadMatrix([]kernels.HostMatrix{h}, false)
			require.NoError(t, err)
			cw, err := r.c.UploadMatrix([]kernels.HostMatrix{h}, false)
			require.NoError(t, err)
			const rows = 9
			spec := kernels.MoERoutesSpec{Rows: rows, TopK: slots, Experts: E + c.Shared, Hidden: 8, Inter: 8}
			fused, err := r.g.NewMoERouter(c, bias)
			require.NoError(t, err)
			plain, err := r.g.NewMoERouter(c, bias)
			require.NoError(t, err)
			frt, err := r.g.NewMoERoutes(spec)
			require.NoError(t, err)
			prt, err := r.g.NewMoERoutes(spec)
			require.NoError(t, err)
			for _, n := range []int{1, 1, 3, 8, 8, 9} {
				name := fmt.Sprintf("n=%d", n)
				x := r.rand(n * tc.hidden)
				fl, pl := r.poisoned(rows*E), r.poisoned(rows*E)
				r.g.RouteMatMul(frt, fused, fl.g, x.g, n, gw)
				r.g.MatMul([]kernels.Buffer{pl.g}, x.g, n, gw, nil)
				r.g.Route(prt, plain, pl.g, n)
				r.c.MatMul([]kernels.Buffer{fl.c}, x.c, n, cw, nil)
				tol := tolF32
				if n > 8 && tc.dt != kernels.F32 {
					tol = tol16
				}
				r.check(name+" logits", fl, n*E, tol)
				gotL, wantL := make([]float32, n*E), make([]float32, n*E)
				require.NoError(t, r.g.Download(gotL, fl.g, 0))
				require.NoError(t, r.g.Download(wantL, pl.g, 0))
				require.Equal(t, wantL, gotL, "%s: logits of MatMul", name)
				fi, fwt := make([]int32, n*slots), make([]float32, n*slots)
				pi, pwt := make([]int32, n*slots), make([]float32, n*slots)
				require.NoError(t, r.g.ReadRoutes(frt, n, fi, fwt))
				require.NoError(t, r.g.ReadRoutes(prt, n, pi, pwt))
				require.Equal(t, pi, fi, "%s: indices", name)
				require.Equal(t, pwt, fwt, "%s: weights", name)
			}
			ft, fc, err := fused.Counts()
			require.NoError(t, err)
			pt, pc, err := plain.Counts()
			require.NoError(t, err)
			assert.Equal(t, pt, ft, "rows counted")
			assert.Equal(t, pc, fc, "selections counted")
		})
	}
}

// TestRouteMatMulCaptured: the fused router inside a captured step, the
// input changed between replays: every replay routes its own input (the
// last block resets the counter, so the next launch finds a last block too).
func TestRouteMatMulCaptured(t *testing.T) {
	g := newGPU(t, Options{})
	rnd := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	const E, k, hid = 64, 6, 256
	cfg := routing.Config{Method: routing.TopKGreedy, Scoring: routing.ScoringSoftmax, Experts: E, TopK: k, Groups: 1, TopGroups: 1, Scale: 1}
	w, err := g.UploadMatrix([]kernels.HostMatrix{hostMatrix("gate", randVec(rnd, E*hid), E, hid, kernels.BF16)}, false)
	require.NoError(t, err)
	fused, err := g.NewMoERouter(cfg, nil)
	require.NoError(t, err)
	plain, err := g.NewMoERouter(cfg, nil)
	require.NoError(t, err)
	spec := kernels.MoERoutesSpec{Rows: 1, TopK: k, Experts: E, Hidden: 8, Inter: 8}
	frt, err := g.NewMoERoutes(spec)
	require.NoError(t, err)
	prt, err := g.NewMoERoutes(spec)
	require.NoError(t, err)
	x, fl, pl := upload(t, g, randVec(rnd, hid)), upload(t, g, make([]float32, E)), upload(t, g, make([]float32, E))
	g.RouteMatMul(frt, fused, fl, x, 1, w) // the first step runs uncaptured
	sg, err := g.CaptureStep(0, 0, 8, func(be kernels.Backend) error {
		rm, ok := be.(kernels.MoERouteMatMul)
		require.True(t, ok, "the capture view forwards kernels.MoERouteMatMul")
		rm.RouteMatMul(frt, fused, fl, x, 1, w)
		return nil
	})
	require.NoError(t, err)
	defer sg.Close()
	for i := range 3 {
		require.NoError(t, g.Upload(x, 0, randVec(rnd, hid)))
		require.NoError(t, sg.Replay(0, 1))
		g.MatMul([]kernels.Buffer{pl}, x, 1, w, nil)
		g.Route(prt, plain, pl, 1)
		fi, fwt, pi, pwt := make([]int32, k), make([]float32, k), make([]int32, k), make([]float32, k)
		require.NoError(t, g.ReadRoutes(frt, 1, fi, fwt))
		require.NoError(t, g.ReadRoutes(prt, 1, pi, pwt))
		require.Equal(t, pi, fi, "replay %d: indices", i)
		require.Equal(t, pwt, fwt, "replay %d: weights", i)
	}
	tokens, _, err := fused.Counts()
	require.NoError(t, err)
	assert.Equal(t, int64(5), tokens, "one uncaptured step, the capture's run and three replays")
}

// TestMLAPackRopeParity: MLAPack rotating the rope parts itself
// (MLAPackShape.RoPE) against the CPU's, DeepSeek's interleaved YaRN-scaled
// rope and a rotate-half one, at the start and deep into a context; and
// against the GPU's ApplyRope on q and kr followed by MLAPack without it.
func TestMLAPackRopeParity(t *testing.T) {
	r := newRig(t, Options{})
	freqs := func(dim int) []float32 {
		f := make([]float32, dim/2)
		for i := range f {
			f[i] = float32(1 / math.Pow(10000, float64(2*i)/float64(dim)))
		}
		return f
	}
	for _, s := range []kernels.MLAPackShape{
		{Heads: 16, Nope: 128, Rope: 64, Lora: 512, Eps: 1e-6},
		{Heads: 128, Nope: 128, Rope: 64, Lora: 512, Eps: 1e-6},
		{Heads: 3, Nope: 5, Rope: 6, Lora: 37, Eps: 1e-5},
	} {
		kd, qh := s.Lora+s.Rope, s.Nope+s.Rope
		for _, interleaved := range []bool{true, false} {
			rope := kernels.Rope{Dim: s.Rope, InvFreq: freqs(s.Rope), Scale: 1.23, Interleaved: interleaved}
			for _, pos0 := range []int{0, 4000} {
				for _, n := range []int{1, 7} {
					name := fmt.Sprintf("%+v interleaved=%v pos0=%d n=%d", s, interleaved, pos0, n)
					q, lat, kr, w := r.rand(n*s.Heads*qh), r.rand(n*s.Lora), r.rand(n*s.Rope), r.rand(s.Lora)
					k, qabs := r.poisoned(n*kd), r.rand(n*s.Heads*kd)
					sr := s
					sr.RoPE, sr.Pos0 = &rope, pos0
					r.g.MLAPack(k.g, qabs.g, q.g, lat.g, kr.g, w.g, n, sr)
					r.c.MLAPack(k.c, qabs.c, q.c, lat.c, kr.c, w.c, n, sr)
					r.check(name+" k", k, k.n, tolF32)
					r.check(name+" q_abs", qabs, qabs.n, tolF32)

					// The unfused GPU path: the same bits.
					k2, qabs2 := r.poisoned(n*kd), r.poisoned(n*s.Heads*kd)
					cp := make([]float32, qabs.n)
					require.NoError(t, r.g.Download(cp, qabs.g, 0))
					require.NoError(t, r.g.Upload(qabs2.g, 0, cp)) // the latent parts MLAPack leaves
					rq, rk := rope, rope
					rq.Off = s.Nope
					r.g.ApplyRope(q.g, n, s.Heads, qh, pos0, &rq)
					r.g.ApplyRope(kr.g, n, 1, s.Rope, pos0, &rk)
					r.g.MLAPack(k2.g, qabs2.g, q.g, lat.g, kr.g, w.g, n, s)
					for _, c := range []struct {
						name      string
						got, want kernels.Buffer
						len       int
					}{{"k", k2.g, k.g, k.n}, {"q_abs", qabs2.g, qabs.g, qabs.n}} {
						got, want := make([]float32, c.len), make([]float32, c.len)
						require.NoError(t, r.g.Download(got, c.got, 0))
						require.NoError(t, r.g.Download(want, c.want, 0))
						require.Equal(t, want, got, "%s %s: ApplyRope then MLAPack", name, c.name)
					}
				}
			}
		}
	}
	// A rope that does not match the shape is an error at the next sync.
	s := kernels.MLAPackShape{Heads: 2, Nope: 4, Rope: 4, Lora: 8, Eps: 1e-6, RoPE: &kernels.Rope{Dim: 6, InvFreq: freqs(6), Scale: 1}}
	b := func(n int) kernels.Buffer { return r.rand(n).g }
	r.g.MLAPack(b(12), b(24), b(16), b(8), b(4), b(8), 1, s)
	require.ErrorContains(t, r.g.Sync(), "MLAPack: rope")
}
