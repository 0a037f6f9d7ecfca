//go:build linux && cgo

package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/kernels"
	"github.com/deepseek-go/deepseek-go/quant"
)

// fp8Part is one fused part of an fp8 test matrix: its rows, and its first
// row's offset inside its block (ScaleRow0).
type fp8Part struct{ rows, row0 int }

// randFP8 makes an fp8 host matrix of random e4m3 codes (every finite
// encoding, subnormals included, NaN excluded) with positive block scales
// of the sizes real checkpoints have.
func randFP8(r *rand.Rand, name string, rows, cols, br, bc, row0 int) kernels.HostMatrix {
	h := kernels.HostMatrix{Name: name, Rows: rows, Cols: cols, DType: kernels.FP8, Data: make([]byte, rows*cols),
		BlockRows: br, BlockCols: bc, ScaleRow0: row0}
	for i := range h.Data {
		b := byte(r.IntN(256))
		if b&0x7f == 0x7f {
			b &^= 1
		}
		h.Data[i] = b
	}
	h.Scales = make([]float32, (row0+rows+br-1)/br*h.ScaleCols())
	for i := range h.Scales {
		h.Scales[i] = float32(math.Exp2(-12 + 6*r.Float64()))
	}
	return h
}

// fp8Parts makes the parts of a fused fp8 matrix, each with its own scales.
func fp8Parts(r *rand.Rand, ps []fp8Part, cols, br, bc int) []kernels.HostMatrix {
	var hs []kernels.HostMatrix
	for i, p := range ps {
		hs = append(hs, randFP8(r, fmt.Sprintf("w%d", i), p.rows, cols, br, bc, p.row0))
	}
	return hs
}

// TestFP8DescLayout checks, without a GPU, that the kernels' FP8Scales
// descriptor maps every row of a fused matrix to its own part's scale row:
// the descriptor bytes are decoded as fp8.cuh's fp8_srow reads them.
func TestFP8DescLayout(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	full := randFP8(r, "kv_a", 80, 64, 16, 16, 0)
	for _, tc := range []struct {
		name  string
		parts []kernels.HostMatrix
	}{
		{"one", fp8Parts(r, []fp8Part{{130, 0}}, 300, 128, 128)},
		{"row0", fp8Parts(r, []fp8Part{{33, 0}, {40, 5}, {7, 15}}, 64, 16, 16)},
		{"four", fp8Parts(r, []fp8Part{{3, 2}, {17, 0}, {1, 7}, {30, 6}}, 40, 8, 5)},
		// kv_a_proj's latent and rope rows, sliced from one matrix as the
		// engine does: the rope part starts inside a block (ScaleRow0 3).
		{"sliced", []kernels.HostMatrix{full.SliceRows(0, 35, "lat"), full.SliceRows(35, 80, "rope")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows, err := kernels.CheckParts(tc.parts)
			require.NoError(t, err)
			l, sc, err := fp8LayoutOf(tc.parts)
			require.NoError(t, err)
			m := &Matrix{cols: tc.parts[0].Cols, dt: kernels.FP8, parts: rows, fp8: l}
			for _, n := range rows {
				m.rows += n
			}
			d := m.fp8Desc()
			i32 := func(i int) int { return int(*(*int32)(unsafe.Pointer(&d[8+4*i]))) }
			scCols, br := i32(0), i32(1)
			require.Equal(t, tc.parts[0].ScaleCols(), scCols)
			require.Equal(t, tc.parts[0].BlockCols, i32(2))
			g := 0
			for p, h := range tc.parts {
				for lr := range h.Rows {
					off := i32(6)
					switch {
					case g >= i32(5):
						off = i32(9)
					case g >= i32(4):
						off = i32(8)
					case g >= i32(3):
						off = i32(7)
					}
					s := (off + g) / br * scCols
					require.Equal(t, h.BlockScales(lr), sc[s:s+scCols], "part %d row %d (global %d)", p, lr, g)
					g++
				}
			}
			assert.Equal(t, int64(len(sc))*4, l.scaleBytes)
		})
	}
	bad := fp8Parts(r, []fp8Part{{16, 0}}, 32, 16, 16)
	bad = append(bad, randFP8(r, "other", 16, 32, 8, 16, 0))
	_, _, err := fp8LayoutOf(bad)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "other")
}

// TestFP8MatMulParity multiplies fused, biased fp8 matrices of odd shapes
// (partial blocks at the edges, parts starting inside a block, widths and
// block widths the vector kernels do not take) on the GPU and on the CPU
// reference backend, which holds fp8 too. Up to 8 tokens (GEMV, float32 on
// the GPU) the bound is the float32 one; more tokens multiply bf16-rounded
// weights and activations on tensor cores (cuBLASLt or gemm_wmma_fp8), so
// the 16-bit one, except where only the scalar kernel applies.
func TestFP8MatMulParity(t *testing.T) {
	r0 := rand.New(rand.NewPCG(7, 8))
	full := randFP8(r0, "kv_a", 576, 512, 128, 128, 0)
	for _, o := range []Options{{}, {NoCublasLt: true}} {
		r := newRig(t, o)
		lt, _ := r.g.CublasLt()
		for _, sh := range []struct {
			name  string
			parts []kernels.HostMatrix
			bias  bool
			vec   bool // widths and block widths in multiples of 16
		}{
			{"v3-block", fp8Parts(r.rnd, []fp8Part{{200, 0}, {203, 0}}, 256, 128, 128), false, true},
			{"row0", fp8Parts(r.rnd, []fp8Part{{33, 0}, {40, 5}, {7, 15}}, 64, 16, 16), true, true},
			{"bc64", fp8Parts(r.rnd, []fp8Part{{100, 17}}, 320, 32, 64), true, true},
			{"kv_a-sliced", []kernels.HostMatrix{full.SliceRows(0, 512, "lat"), full.SliceRows(512, 576, "rope")}, false, true},
			{"kv_a-odd", []kernels.HostMatrix{full.SliceRows(0, 100, "a"), full.SliceRows(100, 333, "b"), full.SliceRows(333, 576, "c")}, true, true},
			{"bc48", fp8Parts(r.rnd, []fp8Part{{50, 0}}, 96, 16, 48), false, true},
			{"cols300", fp8Parts(r.rnd, []fp8Part{{130, 0}}, 300, 128, 128), true, false},
			{"blocks3x5", fp8Parts(r.rnd, []fp8Part{{11, 2}, {6, 0}}, 40, 3, 5), false, false},
			{"wide", fp8Parts(r.rnd, []fp8Part{{1000, 0}}, 1024, 128, 128), true, true},
		} {
			gw, err := r.g.UploadMatrix(sh.parts, false)
			require.NoError(t, err, sh.name)
			cw, err := r.c.UploadMatrix(sh.parts, false)
			require.NoError(t, err, sh.name)
			require.Equal(t, kernels.FP8, gw.DType())
			require.Equal(t, cw.Bytes(), gw.Bytes(), "%s: one byte per value plus every part's scales", sh.name)
			rows := gw.Rows()
			for _, n := range []int{1, 3, 8, 64} {
				name := fmt.Sprintf("lt=%v %s n=%d", lt, sh.name, n)
				x := r.rand(n * gw.Cols())
				var gb, cb kernels.Buffer
				if sh.bias {
					b := r.rand(rows)
					gb, cb = b.g, b.c
				}
				var outs []pair
				var gouts, couts []kernels.Buffer
				for _, pr := range gw.Parts() {
					p := r.poisoned(n * pr)
					outs = append(outs, p)
					gouts, couts = append(gouts, p.g), append(couts, p.c)
				}
				r.g.MatMul(gouts, x.g, n, gw, gb)
				r.c.MatMul(couts, x.c, n, cw, cb)
				tol := tolF32
				if n > 8 && (lt || sh.vec) {
					tol = tol16
				}
				for i, p := range outs {
					r.check(fmt.Sprintf("%s/part%d", name, i), p, n*gw.Parts()[i], tol)
				}
			}
		}
	}
}

// TestFP8Embed: rows of an fp8 table (a part starting inside a block)
// dequantised exactly as the CPU does.
func TestFP8Embed(t *testing.T) {
	r := newRig(t, Options{})
	hs := fp8Parts(r.rnd, []fp8Part{{37, 0}, {30, 9}}, 48, 16, 16)
	gw, err := r.g.UploadMatrix(hs, false)
	require.NoError(t, err)
	cw, err := r.c.UploadMatrix(hs, false)
	require.NoError(t, err)
	ids := []int32{5, 0, 66, 36, 37, 40, 5}
	o := r.poisoned(len(ids) * 48)
	r.g.Embed(o.g, gw, ids)
	r.c.Embed(o.c, cw, ids)
	r.check("embed fp8", o, len(ids)*48, 0)
}

// TestFP8ToInt8: fp8 parts quantised per row to int8 at upload (WithInt8)
// against the CPU running those int8 values dequantised in f32 (the CPU's
// own int8 path also quantises the activations; the GPU keeps them f32, as
// TestInt8Parity explains).
func TestFP8ToInt8(t *testing.T) {
	r := newRig(t, Options{})
	hs := fp8Parts(r.rnd, []fp8Part{{64, 0}, {40, 3}}, 256, 128, 128)
	gw, err := r.g.UploadMatrix(hs, true)
	require.NoError(t, err)
	cw, err := r.c.UploadMatrix(int8Reference(t, hs), false)
	require.NoError(t, err)
	require.Equal(t, kernels.Int8, gw.DType())
	for _, n := range []int{1, 3} {
		x := r.rand(n * 256)
		o0, o1 := r.poisoned(n*64), r.poisoned(n*40)
		r.g.MatMul([]kernels.Buffer{o0.g, o1.g}, x.g, n, gw, nil)
		r.c.MatMul([]kernels.Buffer{o0.c, o1.c}, x.c, n, cw, nil)
		r.check(fmt.Sprintf("fp8→int8 n=%d part0", n), o0, n*64, tolF32)
		r.check(fmt.Sprintf("fp8→int8 n=%d part1", n), o1, n*40, tolF32)
	}
}

// TestFP8Supported: the capability the engine asks before keeping fp8.
func TestFP8Supported(t *testing.T) {
	g := newGPU(t, Options{})
	assert.True(t, kernels.Supports(g, kernels.FP8))
}

// TestFP8ActivationQuantError is the study behind the fp8 prefill path
// (CPU only, no GPU needed): the relative L2 error of y = x·Wᵀ for
// DeepSeek-V3-shaped fp8 weights (K = 7168, 128×128 blocks) against the
// exact product of the dequantised weights, for the activation schemes a
// prefill GEMM can use:
//   - bf16: activations and dequantised weights rounded to bf16, f32
//     accumulation (what ships: cuBLASLt bf16 or gemm_wmma_fp8);
//   - bf16 x, exact w: the share of the activation rounding alone;
//   - fp8 1×128: activations quantised to e4m3 per token and 128 columns
//     (amax/448 scales, DeepSeek-V3's training recipe and cuBLASLt's
//     VEC128_32F × BLK128x128_32F mode), exact fp8 weights;
//   - fp8 per token: one e4m3 scale per token row.
//
// Activations are Gaussian, then Gaussian with a few outlier channels
// (100×, as LLM residual streams have). The errors are logged; the test
// asserts the ordering the choice rests on.
func TestFP8ActivationQuantError(t *testing.T) {
	const rows, K, tokens, blk = 64, 7168, 8, 128
	r := rand.New(rand.NewPCG(11, 12))
	// Weights: Gaussian, quantised per 128×128 block with amax/448 scales.
	w := make([]float64, rows*K)
	for i := range w {
		w[i] = r.NormFloat64() * 0.02
	}
	wq := make([]float64, rows*K) // dequantised fp8
	for rb := 0; rb < rows; rb += blk {
		for cb := 0; cb < K; cb += blk {
			amax := 0.0
			for i := rb; i < min(rb+blk, rows); i++ {
				for c := cb; c < cb+blk; c++ {
					amax = max(amax, math.Abs(w[i*K+c]))
				}
			}
			s := float32(amax / 448)
			for i := rb; i < min(rb+blk, rows); i++ {
				for c := cb; c < cb+blk; c++ {
					wq[i*K+c] = float64(quant.FP8E4M3ToF32(quant.F32ToFP8E4M3(float32(w[i*K+c])/s)) * s)
				}
			}
		}
	}
	bf := func(v float64) float64 { return float64(quant.BF16ToF32(quant.F32ToBF16(float32(v)))) }
	wbf := make([]float64, len(wq))
	for i, v := range wq {
		wbf[i] = bf(v)
	}
	// fp8q quantises x in groups of g columns to e4m3 with amax/448 scales.
	fp8q := func(x []float64, g int) []float64 {
		out := make([]float64, len(x))
		for c0 := 0; c0 < len(x); c0 += g {
			amax := 0.0
			for _, v := range x[c0 : c0+g] {
				amax = max(amax, math.Abs(v))
			}
			s := float32(amax / 448)
			for c := c0; c < c0+g; c++ {
				out[c] = float64(quant.FP8E4M3ToF32(quant.F32ToFP8E4M3(float32(x[c])/s)) * s)
			}
		}
		return out
	}
	outliers := []int{17, 911, 2048, 5000}
	for _, dist := range []string{"gaussian", "outliers"} {
		errs := map[string]float64{}
		var num = map[string]float64{}
		var den float64
		for range tokens {
			x := make([]float64, K)
			for c := range x {
				x[c] = r.NormFloat64()
			}
			if dist == "outliers" {
				for _, c := range outliers {
					x[c] *= 100
				}
			}
			xbf := make([]float64, K)
			for c, v := range x {
				xbf[c] = bf(v)
			}
			schemes := []struct {
				name string
				x, w []float64
			}{
				{"bf16", xbf, wbf},
				{"bf16 x, exact w", xbf, wq},
				{"fp8 1x128", fp8q(x, blk), wq},
				{"fp8 per token", fp8q(x, K), wq},
			}
			for i := range rows {
				ref := 0.0
				for c := range K {
					ref += x[c] * wq[i*K+c]
				}
				den += ref * ref
				for _, s := range schemes {
					y := 0.0
					for c := range K {
						y += s.x[c] * s.w[i*K+c]
					}
					num[s.name] += (y - ref) * (y - ref)
				}
			}
		}
		for k, v := range num {
			errs[k] = math.Sqrt(v / den)
		}
		t.Logf("%s activations: rel L2 error bf16 %.2e (bf16 x, exact w %.2e), fp8 1x128 %.2e, fp8 per token %.2e",
			dist, errs["bf16"], errs["bf16 x, exact w"], errs["fp8 1x128"], errs["fp8 per token"])
		assert.Less(t, errs["bf16"], 5e-3, dist)
		assert.Greater(t, errs["fp8 1x128"], 2*errs["bf16"], dist)
		assert.GreaterOrEqual(t, errs["fp8 per token"], errs["fp8 1x128"], dist)
	}
}

// BenchmarkFP8GEMV: one-token fp8 GEMV on DeepSeek-V3's projection shapes
// (2 rows per warp), next to bf16 weights of
// the same shape (bytes moved per second: fp8 moves half the bytes, so at
// memory speed it takes half the time).
func BenchmarkFP8GEMV(b *testing.B) {
	if err := Available(); err != nil {
		b.Skipf("no GPU: %v", err)
	}
	r := rand.New(rand.NewPCG(5, 6))
	shapes := []struct {
		name       string
		rows, cols int
	}{
		{"q_a", 1536, 7168}, {"kv_a", 576, 7168}, {"q_b", 24576, 1536}, {"o", 7168, 16384},
		{"expert_gate_up", 2 * 2048, 7168}, {"expert_down", 7168, 2048}, {"dense_gate_up", 2 * 18432, 7168},
	}
	hosts := make([]kernels.HostMatrix, len(shapes))
	for i, c := range shapes {
		hosts[i] = randFP8(r, c.name, c.rows, c.cols, 128, 128, 0)
	}
	be, err := New(Options{})
	require.NoError(b, err)
	defer be.Close()
	for i, c := range shapes {
		// Copies cycled through, 128 MiB of weights at least, so that
		// repeats do not run from the 50 MB L2.
		copies := max(1, (128<<20)/len(hosts[i].Data))
		var w8s, w16s []kernels.Matrix
		for range copies {
			w8, err := be.UploadMatrix([]kernels.HostMatrix{hosts[i]}, false)
			require.NoError(b, err)
			w8s = append(w8s, w8)
			w16, err := be.RandomMatrix(c.rows, c.cols, kernels.BF16, 9, 0.02)
			require.NoError(b, err)
			w16s = append(w16s, w16)
		}
		x, err := be.Alloc(c.cols)
		require.NoError(b, err)
		require.NoError(b, be.RandomBuffer(x, 3, 0, 1))
		y, err := be.Alloc(c.rows)
		require.NoError(b, err)
		for _, ws := range [][]kernels.Matrix{w8s, w16s} {
			dt, bytes := ws[0].DType(), float64(ws[0].Bytes())
			b.Run(fmt.Sprintf("%s/%dx%d/%v", c.name, c.rows, c.cols, dt), func(b *testing.B) {
				const reps = 64
				for range b.N {
					ms, err := be.Time(func() {
						for i := range reps {
							be.MatMul([]kernels.Buffer{y}, x, 1, ws[i%len(ws)], nil)
						}
					})
					require.NoError(b, err)
					us := ms * 1e3 / reps
					b.ReportMetric(us, "us/op")
					b.ReportMetric(bytes/(us*1e3), "GB/s")
					b.Logf("%s %v %dx%d: %.1f us, %.0f GB/s", c.name, dt, c.rows, c.cols, us, bytes/(us*1e3))
				}
			})
		}
	}
}

// BenchmarkFP8Prefill: a prefill GEMM (n tokens) with fp8 weights through
// cuBLASLt (dequantised bf16 slices) and through gemm_wmma_fp8, next to
// bf16 weights through cuBLASLt.
func BenchmarkFP8Prefill(b *testing.B) {
	if err := Available(); err != nil {
		b.Skipf("no GPU: %v", err)
	}
	r := rand.New(rand.NewPCG(5, 6))
	const rows, cols = 2 * 18432, 7168
	h := randFP8(r, "gate_up", rows, cols, 128, 128, 0)
	for _, o := range []Options{{}, {NoCublasLt: true}} {
		be, err := New(o)
		require.NoError(b, err)
		w8, err := be.UploadMatrix([]kernels.HostMatrix{h}, false)
		require.NoError(b, err)
		w16, err := be.RandomMatrix(rows, cols, kernels.BF16, 9, 0.02)
		require.NoError(b, err)
		for _, n := range []int{64, 512, 2048} {
			x, err := be.Alloc(n * cols)
			require.NoError(b, err)
			require.NoError(b, be.RandomBuffer(x, 3, 0, 1))
			y, err := be.Alloc(n * rows)
			require.NoError(b, err)
			for _, w := range []kernels.Matrix{w8, w16} {
				b.Run(fmt.Sprintf("lt=%v/n=%d/%v", !o.NoCublasLt, n, w.DType()), func(b *testing.B) {
					for range b.N {
						be.MatMul([]kernels.Buffer{y}, x, n, w, nil) // plans, scratch
						ms, err := be.Time(func() {
							for range 5 {
								be.MatMul([]kernels.Buffer{y}, x, n, w, nil)
							}
						})
						require.NoError(b, err)
						ms /= 5
						tf := 2 * float64(n) * rows * cols / (ms / 1e3) / 1e12
						b.ReportMetric(ms, "ms/op")
						b.ReportMetric(tf, "TFLOP/s")
						b.Logf("lt=%v n=%d %v %dx%d: %.3f ms, %.0f TFLOP/s", !o.NoCublasLt, n, w.DType(), rows, cols, ms, tf)
					}
				})
			}
		}
		be.Close()
	}
}
