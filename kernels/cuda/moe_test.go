//go:build linux && cgo

package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/kernels"
	"github.com/deepseek-go/deepseek-go/kernels/cpu"
	"github.com/deepseek-go/deepseek-go/kernels/cpu/simd"
	"github.com/deepseek-go/deepseek-go/kernels/routing"
	"github.com/deepseek-go/deepseek-go/quant"
)

// moeRef is the CPU reference for the MoE tests: the pure-Go kernels, so
// the reference does not depend on this host's SIMD paths.
func moeRef(t *testing.T) *cpu.Backend {
	c := cpu.NewWithKernels(1, simd.Generic, quant.Int8Generic)
	t.Cleanup(func() { c.Close() })
	return c
}

func upload(t *testing.T, be kernels.Backend, v []float32) kernels.Buffer {
	b, err := be.Alloc(len(v))
	require.NoError(t, err)
	require.NoError(t, be.Upload(b, 0, v))
	return b
}

// TestMoERouteParity: the routing kernel against kernels/routing on random
// router logits for the DeepSeek configs, with and without shared experts
// appended: indices exactly equal, weights within 1e-6 relative (the
// shared slots exactly 1), and the selection counters equal to the host's
// histogram of the top-k slots. The "ties" cases quantise logits (and bias) to a few values,
// so that equal scores are common and the lower-index rule decides.
func TestMoERouteParity(t *testing.T) {
	g := newGPU(t, Options{})
	rnd := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	v2lite := routing.Config{Method: routing.TopKGreedy, Scoring: routing.ScoringSoftmax, Experts: 64, TopK: 6, Groups: 1, TopGroups: 1, Scale: 1}
	v2 := routing.Config{Method: routing.TopKGroupLimit, Scoring: routing.ScoringSoftmax, Experts: 160, TopK: 6, Groups: 8, TopGroups: 3, Scale: 16}
	v3 := routing.Config{Method: routing.TopKNoAuxTC, Scoring: routing.ScoringSigmoid, Experts: 256, TopK: 8, Groups: 8, TopGroups: 4,
		NormTopK: true, ScaleAfterNorm: true, Scale: 2.5}
	v1 := routing.Config{Method: routing.TopKGreedy, Scoring: routing.ScoringSoftmax, Experts: 72, TopK: 3, Groups: 1, TopGroups: 1, NormTopK: true, Scale: 1}
	top1 := routing.Config{Method: routing.TopKGreedy, Scoring: routing.ScoringSigmoid, Experts: 40, TopK: 1, Groups: 1, TopGroups: 1, NormTopK: true, Scale: 3}
	shared := func(c routing.Config, s int) routing.Config { c.Shared = s; return c }
	for _, tc := range []struct {
		name string
		cfg  routing.Config
		ties bool
	}{
		{"v2-lite greedy softmax", v2lite, false},
		{"v2-lite greedy softmax ties", v2lite, true},
		{"v2 group_limited_greedy", v2, false},
		{"v2 group_limited_greedy ties", v2, true},
		{"v3 noaux_tc", v3, false},
		{"v3 noaux_tc ties", v3, true},
		{"normalised softmax, 72 experts", v1, false},
		{"sigmoid top-1 (no normalisation)", top1, true},
		{"v2-lite + 2 shared", shared(v2lite, 2), false},
		{"v2 group_limited_greedy + 2 shared, ties", shared(v2, 2), true},
		{"v3 noaux_tc + 1 shared", shared(v3, 1), false},
		{"v3 noaux_tc + 1 shared, ties", shared(v3, 1), true},
		{"sigmoid top-1 + 3 shared", shared(top1, 3), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cfg
			E, k, slots := c.Experts, c.TopK, c.Slots()
			q := func(v float32) float32 { // a few distinct values when testing ties
				if tc.ties {
					return float32(math.Round(float64(v)*2) / 2)
				}
				return v
			}
			var bias []float32
			if c.Method == routing.TopKNoAuxTC {
				bias = make([]float32, E)
				for i := range bias {
					bias[i] = q(float32(rnd.NormFloat64()) * 0.5)
				}
			}
			host, err := routing.New(c, bias)
			require.NoError(t, err)
			r, err := g.NewMoERouter(c, bias)
			require.NoError(t, err)
			const maxRows = 300
			rt, err := g.NewMoERoutes(kernels.MoERoutesSpec{Rows: maxRows, TopK: slots, Experts: E + c.Shared, Hidden: 8, Inter: 8})
			require.NoError(t, err)
			wantCounts := make([]int64, E)
			var rows int64
			for _, n := range []int{1, 33, maxRows} {
				logits := make([]float32, n*E)
				for i := range logits {
					logits[i] = q(float32(rnd.NormFloat64()) * 2)
				}
				g.Route(rt, r, upload(t, g, logits), n)
				gi, gw := make([]int32, n*slots), make([]float32, n*slots)
				require.NoError(t, g.ReadRoutes(rt, n, gi, gw))
				idx, w := make([]int, slots), make([]float32, slots)
				for row := range n {
					host.Route(logits[row*E:(row+1)*E], idx, w)
					for j := range slots {
						require.Equal(t, int32(idx[j]), gi[row*slots+j], "n=%d row %d slot %d: host %v gpu %v", n, row, j, idx, gi[row*slots:(row+1)*slots])
						if j >= k {
							require.Equal(t, float32(1), gw[row*slots+j], "n=%d row %d shared slot %d", n, row, j)
							continue // shared: not counted
						}
						assert.InDelta(t, w[j], gw[row*slots+j], 1e-6*max(1, math.Abs(float64(w[j]))), "n=%d row %d slot %d", n, row, j)
						wantCounts[idx[j]]++
					}
				}
				rows += int64(n)
			}
			tokens, counts, err := r.Counts()
			require.NoError(t, err)
			assert.Equal(t, rows, tokens)
			assert.Equal(t, wantCounts, counts)
			require.NoError(t, r.ResetCounts())
			tokens, counts, err = r.Counts()
			require.NoError(t, err)
			assert.Zero(t, tokens)
			assert.Equal(t, make([]int64, E), counts)
		})
	}
}

// moeFP8 makes an fp8 part of random e4m3 codes (NaN aside) and random
// block scales of br×bc blocks, so that values stay O(1).
func moeFP8(r *rand.Rand, name string, rows, cols, br, bc int) kernels.HostMatrix {
	h := kernels.HostMatrix{Name: name, Rows: rows, Cols: cols, DType: kernels.FP8, Data: make([]byte, rows*cols), BlockRows: br, BlockCols: bc}
	for i := range h.Data {
		b := byte(r.IntN(256))
		if b&0x7f == 0x7f { // NaN encodings
			b &^= 1
		}
		h.Data[i] = b
	}
	h.Scales = make([]float32, ((rows+br-1)/br)*((cols+bc-1)/bc))
	for i := range h.Scales {
		h.Scales[i] = float32(math.Exp2(-11 + 2*r.Float64()))
	}
	return h
}

// moeParts makes cnt random experts of dtype dt (fp8: blocks of br×bc):
// gpu is what the GPU uploads (with int8 when dt is Int8), ref what the
// CPU reference uploads (for Int8 the values the GPU's quantisation gives,
// as f32).
func moeParts(t *testing.T, r *rand.Rand, first, cnt, hidden, inter int, dt kernels.DType, br, bc int) (gpu, ref kernels.ExpertParts, toInt8 bool) {
	gpu.First, ref.First = first, first
	mk := func(name string, rows, cols int) (kernels.HostMatrix, kernels.HostMatrix) {
		if dt == kernels.FP8 {
			h := moeFP8(r, name, rows, cols, br, bc)
			return h, h
		}
		v := randVec(r, rows*cols)
		for i := range v {
			v[i] /= float32(math.Sqrt(float64(cols)))
		}
		if dt != kernels.Int8 {
			h := hostMatrix(name, v, rows, cols, dt)
			return h, h
		}
		h := hostMatrix(name, v, rows, cols, kernels.F32)
		q, err := quantizeParts([]kernels.HostMatrix{h})
		require.NoError(t, err)
		f := make([]float32, rows*cols)
		for i := range f {
			f[i] = float32(int8(q[0].Data[i])) * q[0].Scales[i/cols]
		}
		return h, hostMatrix(name, f, rows, cols, kernels.F32)
	}
	for e := first; e < first+cnt; e++ {
		for _, m := range []struct {
			g, c       *[]kernels.HostMatrix
			name       string
			rows, cols int
		}{{&gpu.Gate, &ref.Gate, "gate", inter, hidden}, {&gpu.Up, &ref.Up, "up", inter, hidden}, {&gpu.Down, &ref.Down, "down", hidden, inter}} {
			gh, ch := mk(fmt.Sprintf("experts.%d.%s_proj.weight", e, m.name), m.rows, m.cols)
			*m.g = append(*m.g, gh)
			*m.c = append(*m.c, ch)
		}
	}
	return gpu, ref, dt == kernels.Int8
}

// moeShape is a layer's routing (E experts top-k, then shared experts
// E, …, E+shared-1 in every row) and a run of its experts [first,
// first+cnt) of hidden → inter → hidden; br×bc the fp8 blocks.
type moeShape struct {
	E, k, shared, hidden, inter, first, cnt int
	br, bc                                  int
}

// moeParity routes fresh logits for each row count n on both backends
// (indices must agree), runs the experts gex (GPU) and cex (CPU) writing
// and accumulating, and checks the relative error against the CPU's: tolF32,
// or tol16 where the GPU's grouped GEMMs run on tensor cores (n > 8).
func moeParity(t *testing.T, g *Backend, c *cpu.Backend, rnd *rand.Rand, sh moeShape, gex, cex kernels.Experts, ns []int) {
	cfg := routing.Config{Method: routing.TopKGreedy, Scoring: routing.ScoringSoftmax, Experts: sh.E, TopK: sh.k,
		Groups: 1, TopGroups: 1, NormTopK: true, Scale: 1, Shared: sh.shared}
	slots := cfg.Slots()
	gr, err := g.NewMoERouter(cfg, nil)
	require.NoError(t, err)
	cr, err := c.NewMoERouter(cfg, nil)
	require.NoError(t, err)
	spec := kernels.MoERoutesSpec{Rows: slices.Max(ns), TopK: slots, Experts: sh.E + sh.shared, Hidden: sh.hidden, Inter: sh.inter}
	grt, err := g.NewMoERoutes(spec)
	require.NoError(t, err)
	crt, err := c.NewMoERoutes(spec)
	require.NoError(t, err)
	for _, n := range ns {
		logits := randVec(rnd, n*sh.E)
		g.Route(grt, gr, upload(t, g, logits), n)
		c.Route(crt, cr, upload(t, c, logits), n)
		gi, ci := make([]int32, n*slots), make([]int32, n*slots)
		gw, cw := make([]float32, n*slots), make([]float32, n*slots)
		require.NoError(t, g.ReadRoutes(grt, n, gi, gw))
		require.NoError(t, c.ReadRoutes(crt, n, ci, cw))
		require.Equal(t, ci, gi, "routing")
		x := randVec(rnd, n*sh.hidden)
		gx, cx := upload(t, g, x), upload(t, c, x)
		for _, acc := range []bool{false, true} {
			name := fmt.Sprintf("E=%d k=%d shared=%d %d→%d experts [%d,+%d) %v n=%d acc=%v", sh.E, sh.k, sh.shared, sh.hidden, sh.inter, sh.first, sh.cnt, gex.DType(), n, acc)
			if gex.DType() == kernels.FP8 {
				name += fmt.Sprintf(" blocks %d×%d", sh.br, sh.bc)
			}
			init := randVec(rnd, n*sh.hidden)
			if !acc {
				for i := range init {
					init[i] = float32(math.NaN()) // unwritten elements fail
				}
			}
			gout, cout := upload(t, g, init), upload(t, c, init)
			g.MoEExperts(gout, gx, n, gex, grt, acc)
			c.MoEExperts(cout, cx, n, cex, crt, acc)
			got, ref := make([]float32, n*sh.hidden), make([]float32, n*sh.hidden)
			require.NoError(t, g.Download(got, gout, 0), name)
			require.NoError(t, c.Download(ref, cout, 0), name)
			tol := tolF32
			if n > moeDecodeRows && gex.(*Experts).mma() {
				tol = tol16 // tensor-core tiles on activations (and fp8 weights) rounded to 16 bits
			}
			e := relErr(got, ref)
			assert.LessOrEqual(t, e, tol, "%s: relative error %.3g", name, e)
		}
	}
}

// TestMoEExpertsParity: the routed experts on the GPU against the CPU
// reference for every weight dtype, on the decode kernels (n ≤ 8) and the
// sorted grouped kernels (n > 8), writing and accumulating, for all of a
// layer's experts and for a shard's run of them (pairs routed elsewhere add
// nothing). Both sides compute in float32 from the same weight values, so
// the float32 bound holds for every dtype, except the tensor-core tiles of
// 16-bit and fp8 weights (n > 8), which round the activations (and the
// dequantised fp8 weights) to 16 bits. fp8 experts stay fp8: random codes
// and block scales, resident bytes the fp8 bytes plus the scales (the
// CPU's), the block shapes of the fixture (16×16), V3's (128×128, one
// block column per 8 chunks of 16) scaled down, and shapes the vector
// loops do not take (block widths not multiples of 16, odd widths).
func TestMoEExpertsParity(t *testing.T) {
	g := newGPU(t, Options{})
	c := moeRef(t)
	rnd := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	for _, sh := range []moeShape{
		{E: 8, k: 2, hidden: 64, inter: 32, first: 0, cnt: 8},     // the fixtures' shape
		{E: 8, k: 2, hidden: 64, inter: 32, first: 2, cnt: 3},     // a shard's run of experts
		{E: 16, k: 6, hidden: 100, inter: 72, first: 0, cnt: 16},  // rows not 16-byte multiples for 16-bit and int8: scalar loads
		{E: 64, k: 6, hidden: 512, inter: 160, first: 0, cnt: 64}, // V2-Lite's routing
	} {
		for _, dt := range []kernels.DType{kernels.F32, kernels.F16, kernels.BF16, kernels.Int8} {
			gp, cp, toInt8 := moeParts(t, rnd, sh.first, sh.cnt, sh.hidden, sh.inter, dt, 0, 0)
			gex, err := g.UploadExperts(gp, toInt8)
			require.NoError(t, err)
			cex, err := c.UploadExperts(cp, false)
			require.NoError(t, err)
			require.Equal(t, dt, gex.DType())
			moeParity(t, g, c, rnd, sh, gex, cex, []int{1, 5, 8, 9, 70})
		}
	}
	for _, sh := range []moeShape{
		{E: 8, k: 2, hidden: 64, inter: 32, first: 0, cnt: 8, br: 16, bc: 16},       // the fp8 fixture
		{E: 8, k: 2, hidden: 64, inter: 32, first: 2, cnt: 3, br: 16, bc: 16},       // a shard's run
		{E: 16, k: 8, hidden: 512, inter: 256, first: 0, cnt: 16, br: 128, bc: 128}, // V3's blocks (chunk c in block column c >> 3)
		{E: 16, k: 4, hidden: 336, inter: 208, first: 0, cnt: 16, br: 16, bc: 32},   // partial last block columns, cshift 1
		{E: 16, k: 6, hidden: 96, inter: 48, first: 0, cnt: 16, br: 16, bc: 24},     // blocks not 16 wide: scalar decode loops, tensor-core grouped GEMMs
		{E: 16, k: 6, hidden: 96, inter: 48, first: 0, cnt: 16, br: 16, bc: 12},     // blocks not 8 wide: scalar decode loops, FMA grouped GEMMs
		{E: 16, k: 6, hidden: 100, inter: 72, first: 0, cnt: 16, br: 4, bc: 8},      // odd widths: scalar loads; FMA grouped GEMMs
		{E: 64, k: 6, hidden: 512, inter: 160, first: 8, cnt: 48, br: 32, bc: 64},   // V2-Lite's routing, a shard
	} {
		gp, cp, _ := moeParts(t, rnd, sh.first, sh.cnt, sh.hidden, sh.inter, kernels.FP8, sh.br, sh.bc)
		gex, err := g.UploadExperts(gp, false)
		require.NoError(t, err)
		cex, err := c.UploadExperts(cp, false)
		require.NoError(t, err)
		require.Equal(t, kernels.FP8, gex.DType(), "fp8 experts stay fp8")
		var bytes int64
		for _, ps := range [][]kernels.HostMatrix{gp.Gate, gp.Up, gp.Down} {
			for _, h := range ps {
				bytes += int64(len(h.Data)) + 4*int64(len(h.Scales))
			}
		}
		assert.Equal(t, bytes, gex.Bytes(), "resident: the fp8 bytes and the block scales")
		assert.Equal(t, cex.Bytes(), gex.Bytes(), "resident bytes, GPU vs CPU")
		moeParity(t, g, c, rnd, sh, gex, cex, []int{1, 3, 8, 9, 64})
	}
}

// TestMoEExpertsSharedParity: layers whose shared experts run as extra
// experts after the routed ones (routing.Config.Shared: k + shared slots
// per row, ids E, …), on the decode kernels (n ≤ 8) and the sorted grouped
// kernels (n = 64, 300: every row's pairs to the shared experts make them
// the largest buckets), against the CPU; and a shard's run that does not
// hold the shared experts (their pairs add nothing).
func TestMoEExpertsSharedParity(t *testing.T) {
	g := newGPU(t, Options{})
	c := moeRef(t)
	rnd := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	ns := []int{1, 3, 8, 64, 300}
	for _, sh := range []moeShape{
		{E: 8, k: 2, shared: 1, hidden: 64, inter: 32, first: 0, cnt: 9},     // the V3 fixtures
		{E: 8, k: 2, shared: 2, hidden: 64, inter: 32, first: 0, cnt: 10},    // the V2-Lite fixtures
		{E: 64, k: 6, shared: 2, hidden: 512, inter: 160, first: 0, cnt: 66}, // V2-Lite's routing
		{E: 16, k: 6, shared: 2, hidden: 100, inter: 72, first: 0, cnt: 18},  // scalar loads
		{E: 8, k: 2, shared: 2, hidden: 64, inter: 32, first: 2, cnt: 3},     // a shard without the shared experts
		{E: 256, k: 8, shared: 1, hidden: 64, inter: 32, first: 0, cnt: 257}, // V3's routing: 257 sort buckets
	} {
		for _, dt := range []kernels.DType{kernels.F32, kernels.BF16, kernels.Int8} {
			gp, cp, toInt8 := moeParts(t, rnd, sh.first, sh.cnt, sh.hidden, sh.inter, dt, 0, 0)
			gex, err := g.UploadExperts(gp, toInt8)
			require.NoError(t, err)
			cex, err := c.UploadExperts(cp, false)
			require.NoError(t, err)
			moeParity(t, g, c, rnd, sh, gex, cex, ns)
		}
	}
	for _, sh := range []moeShape{
		{E: 8, k: 2, shared: 1, hidden: 64, inter: 32, first: 0, cnt: 9, br: 16, bc: 16},       // the fp8 fixture
		{E: 16, k: 8, shared: 1, hidden: 512, inter: 256, first: 0, cnt: 17, br: 128, bc: 128}, // V3's blocks
		{E: 16, k: 6, shared: 2, hidden: 96, inter: 48, first: 0, cnt: 18, br: 16, bc: 12},     // FMA grouped GEMMs
	} {
		gp, cp, _ := moeParts(t, rnd, sh.first, sh.cnt, sh.hidden, sh.inter, kernels.FP8, sh.br, sh.bc)
		gex, err := g.UploadExperts(gp, false)
		require.NoError(t, err)
		cex, err := c.UploadExperts(cp, false)
		require.NoError(t, err)
		moeParity(t, g, c, rnd, sh, gex, cex, ns)
	}
}

// TestMoEExpertsFP8Rejects: fp8 experts whose rows do not fill whole
// blocks cannot share one stacked scale grid; the error names the tensor.
func TestMoEExpertsFP8Rejects(t *testing.T) {
	g := newGPU(t, Options{})
	rnd := rand.New(rand.NewPCG(1, 2))
	gp, _, _ := moeParts(t, rnd, 0, 4, 64, 40, kernels.FP8, 16, 16) // gate/up of 40 rows
	_, err := g.UploadExperts(gp, false)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "experts.0.gate_proj.weight")
	assert.Contains(t, err.Error(), "whole row blocks")

	gp, _, _ = moeParts(t, rnd, 0, 4, 64, 32, kernels.FP8, 16, 16)
	gp.Up[1].ScaleRow0 = 8 // a slice starting inside a block
	gp.Up[1].Scales = make([]float32, 3*4)
	_, err = g.UploadExperts(gp, false)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "experts.1.up_proj.weight")
	assert.Contains(t, err.Error(), "whole row blocks")

	gp, _, _ = moeParts(t, rnd, 0, 4, 64, 32, kernels.FP8, 16, 16)
	gp.Down[2].BlockCols = 32 // another block shape
	gp.Down[2].Scales = make([]float32, 4)
	_, err = g.UploadExperts(gp, false)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "experts.2.down_proj.weight")
	assert.Contains(t, err.Error(), "blocks 16×32 differ")

	// With int8 they are quantised per row like float parts: no block rule.
	gp, _, _ = moeParts(t, rnd, 0, 4, 64, 40, kernels.FP8, 16, 16)
	ex, err := g.UploadExperts(gp, true)
	require.NoError(t, err)
	assert.Equal(t, kernels.Int8, ex.DType())
}

// TestMoECaptured: a one-row MoE layer (route, gate|up, down) captured as
// a step graph and replayed gives the uncaptured result.
func TestMoECaptured(t *testing.T) {
	g := newGPU(t, Options{})
	rnd := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	const E, k, hid, inter = 16, 4, 128, 64
	gp, _, _ := moeParts(t, rnd, 0, E, hid, inter, kernels.BF16, 0, 0)
	ex, err := g.UploadExperts(gp, false)
	require.NoError(t, err)
	cfg := routing.Config{Method: routing.TopKNoAuxTC, Scoring: routing.ScoringSigmoid, Experts: E, TopK: k, Groups: 4, TopGroups: 2,
		NormTopK: true, ScaleAfterNorm: true, Scale: 2.5}
	r, err := g.NewMoERouter(cfg, randVec(rnd, E))
	require.NoError(t, err)
	rt, err := g.NewMoERoutes(kernels.MoERoutesSpec{Rows: 4, TopK: k, Experts: E, Hidden: hid, Inter: inter})
	require.NoError(t, err)
	logits, x := upload(t, g, randVec(rnd, E)), upload(t, g, randVec(rnd, hid))
	want, got := make([]float32, hid), make([]float32, hid)
	out, err := g.Alloc(hid)
	require.NoError(t, err)
	g.Route(rt, r, logits, 1)
	g.MoEExperts(out, x, 1, ex, rt, false)
	require.NoError(t, g.Download(want, out, 0))
	require.NoError(t, g.Upload(out, 0, make([]float32, hid)))
	sg, err := g.CaptureStep(0, 0, 8, func(be kernels.Backend) error {
		mb, ok := be.(kernels.MoE)
		require.True(t, ok, "the capture view forwards kernels.MoE")
		mb.Route(rt, r, logits, 1)
		mb.MoEExperts(out, x, 1, ex, rt, false)
		return nil
	})
	require.NoError(t, err)
	defer sg.Close()
	require.NoError(t, sg.Replay(0, 1))
	require.NoError(t, g.Download(got, out, 0))
	assert.Equal(t, want, got)
	tokens, _, err := r.Counts()
	require.NoError(t, err)
	assert.Equal(t, int64(3), tokens, "one uncaptured step, the capture's run and one replay")
}

// BenchmarkMoELayer times one MoE layer's routed part (route, then the
// experts: the decode kernels up to 8 rows, the sort and grouped kernels
// above) at DeepSeek-V3's shape (256 experts top-8 of 2048 features over
// 7168, 8 groups keep 4: 22.5 GB of bf16 experts, 11.3 GB of fp8) and
// V2-Lite's (64 top-6, 1408 over 2048, bf16 only: not whole 128-row
// blocks), bf16 and fp8 weights made on the device. For one row it
// reports the bandwidth of the k experts' weights read.
func BenchmarkMoELayer(b *testing.B) {
	if err := Available(); err != nil {
		b.Skipf("no GPU: %v", err)
	}
	g, err := New(Options{})
	require.NoError(b, err)
	defer g.Close()
	for _, sh := range []struct {
		name          string
		cfg           routing.Config
		hidden, inter int
	}{
		{"v3", routing.Config{Method: routing.TopKNoAuxTC, Scoring: routing.ScoringSigmoid, Experts: 256, TopK: 8, Groups: 8, TopGroups: 4,
			NormTopK: true, ScaleAfterNorm: true, Scale: 2.5}, 7168, 2048},
		{"v2-lite", routing.Config{Method: routing.TopKGreedy, Scoring: routing.ScoringSoftmax, Experts: 64, TopK: 6, Groups: 1, TopGroups: 1, Scale: 1}, 2048, 1408},
	} {
		c := sh.cfg
		var bias []float32
		if c.Method == routing.TopKNoAuxTC {
			bias = make([]float32, c.Experts)
		}
		r, err := g.NewMoERouter(c, bias)
		require.NoError(b, err)
		for _, dt := range []kernels.DType{kernels.BF16, kernels.FP8} {
			if dt == kernels.FP8 && (sh.hidden%128 != 0 || sh.inter%128 != 0) {
				continue
			}
			ex, err := g.RandomExperts(0, c.Experts, sh.hidden, sh.inter, dt, 1, 0.02)
			require.NoError(b, err)
			moeBenchLayer(b, g, sh.name, dt, c, r, ex, sh.hidden, sh.inter)
		}
	}
}

// moeBenchLayer runs BenchmarkMoELayer's row counts for one layer's experts.
func moeBenchLayer(b *testing.B, g *Backend, name string, dt kernels.DType, c routing.Config, r kernels.MoERouter, ex *Experts, hidden, inter int) {
	for _, n := range []int{1, 8, 128} {
		b.Run(fmt.Sprintf("%s/%v/rows=%d", name, dt, n), func(b *testing.B) {
			rt, err := g.NewMoERoutes(kernels.MoERoutesSpec{Rows: n, TopK: c.TopK, Experts: c.Experts, Hidden: hidden, Inter: inter})
			require.NoError(b, err)
			logits, err := g.Alloc(n * c.Experts)
			require.NoError(b, err)
			x, err := g.Alloc(n * hidden)
			require.NoError(b, err)
			out, err := g.Alloc(n * hidden)
			require.NoError(b, err)
			require.NoError(b, g.RandomBuffer(logits, 3, 0, 4))
			require.NoError(b, g.RandomBuffer(x, 4, 0, 1))
			g.Route(rt, r, logits, n)
			g.MoEExperts(out, x, n, ex, rt, false)
			require.NoError(b, g.Sync())
			var ms float64 // device time between events around each layer
			for b.Loop() {
				t, err := g.Time(func() {
					g.Route(rt, r, logits, n)
					g.MoEExperts(out, x, n, ex, rt, false)
				})
				require.NoError(b, err)
				ms += t
			}
			per := ms / 1e3 / float64(b.N)
			b.ReportMetric(per*1e6, "µs/layer")
			if n == 1 {
				bytes := float64(c.TopK) * 3 * float64(hidden) * float64(inter) * float64(dt.Size())
				b.ReportMetric(bytes/per/1e9, "GB/s")
			}
		})
	}
}
