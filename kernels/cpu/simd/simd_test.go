package simd

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/x448/float16"

	"github.com/deepseek-go/deepseek-go/kernels"
)

// randWeights returns rows×cols weights encoded in dt and their exact
// float64 values.
func randWeights(r *rand.Rand, dt kernels.DType, n int) (f32 []float32, u16 []uint16, exact []float64) {
	exact = make([]float64, n)
	switch dt {
	case kernels.F32:
		f32 = make([]float32, n)
		for i := range f32 {
			f32[i] = float32(r.NormFloat64())
			exact[i] = float64(f32[i])
		}
	case kernels.BF16:
		u16 = make([]uint16, n)
		for i := range u16 {
			u16[i] = uint16(math.Float32bits(float32(r.NormFloat64())) >> 16)
			exact[i] = float64(BF16ToF32(u16[i]))
		}
	case kernels.F16:
		u16 = make([]uint16, n)
		for i := range u16 {
			u16[i] = float16.Fromfloat32(float32(r.NormFloat64())).Bits()
			exact[i] = float64(float16.Frombits(u16[i]).Float32())
		}
	}
	return
}

func TestMatMulAllPaths(t *testing.T) {
	shapes := []struct{ n, rows, cols, r0 int }{
		{1, 1, 1, 0}, {1, 4, 16, 0}, {1, 7, 37, 0}, {1, 9, 129, 2},
		{2, 5, 33, 1}, {3, 8, 64, 0}, {4, 12, 100, 4}, {5, 13, 257, 3},
		{9, 17, 15, 0}, {12, 9, 77, 1}, {8, 64, 2048, 0}, {16, 8, 40, 0},
	}
	require.NotEmpty(t, Supported())
	require.Equal(t, Generic, Supported()[len(Supported())-1])
	for _, k := range Supported() {
		for _, dt := range []kernels.DType{kernels.F32, kernels.BF16, kernels.F16} {
			for _, s := range shapes {
				t.Run(fmt.Sprintf("%s/%s/n%d_r%d_c%d_from%d", k, dt, s.n, s.rows, s.cols, s.r0), func(t *testing.T) {
					r := rand.New(rand.NewPCG(uint64(s.cols), uint64(s.n)))
					ldx, ldy := s.cols+3, s.rows-s.r0+2 // strides wider than the data
					x := make([]float32, (s.n-1)*ldx+s.cols)
					for i := range x {
						x[i] = float32(r.NormFloat64())
					}
					f32, u16, exact := randWeights(r, dt, s.rows*s.cols)
					y := make([]float32, (s.n-1)*ldy+s.rows-s.r0)
					for i := range y {
						y[i] = float32(math.NaN()) // poison: every output must be written
					}
					if dt == kernels.F32 {
						k.MatMulF32(y, ldy, x, ldx, s.n, f32, s.cols, s.r0, s.rows)
					} else {
						k.MatMul16(dt, y, ldy, x, ldx, s.n, u16, s.cols, s.r0, s.rows)
					}
					requireProduct(t, y, ldy, x, ldx, s.n, exact, s.cols, s.r0, s.rows)
				})
			}
		}
	}
}

// requireProduct checks y[t*ldy+r-r0] = Σ_i x[t*ldx+i]·w[r*cols+i] against
// float64 (w given exactly), within 1e-5 of Σ|x·w|: the bound every path
// meets.
func requireProduct(t *testing.T, y []float32, ldy int, x []float32, ldx, n int, exact []float64, cols, r0, rows int) {
	t.Helper()
	for tk := 0; tk < n; tk++ {
		for row := r0; row < rows; row++ {
			var want, mag float64
			for i := 0; i < cols; i++ {
				p := float64(x[tk*ldx+i]) * exact[row*cols+i]
				want += p
				mag += math.Abs(p)
			}
			require.InDelta(t, want, float64(y[tk*ldy+row-r0]), 1e-5*mag+1e-6, "token %d row %d", tk, row)
		}
	}
}

func TestMatMulBadShapePanics(t *testing.T) {
	y := make([]float32, 4)
	x := make([]float32, 8)
	w := make([]float32, 4*8)
	require.Panics(t, func() { Best.MatMulF32(y, 4, x, 8, 2, w, 8, 0, 4) }, "x too short for 2 tokens")
	require.Panics(t, func() { Best.MatMul16(kernels.F32, y, 4, x, 8, 1, nil, 8, 0, 4) }, "wrong dtype")
	require.NotPanics(t, func() { Best.MatMulF32(y, 4, x, 8, 1, w, 8, 0, 4) })
}

func TestDotAndSumAllPaths(t *testing.T) {
	for _, k := range Supported() {
		for _, n := range []int{0, 1, 7, 16, 63, 64, 65, 200, 1031} {
			r := rand.New(rand.NewPCG(uint64(n), 1))
			a, b := make([]float32, n), make([]float32, n+3)
			var dot, sum, mag float64
			for i := range a {
				a[i], b[i] = float32(r.NormFloat64()), float32(r.NormFloat64())
				dot += float64(a[i]) * float64(b[i])
				sum += float64(a[i])
				mag += math.Abs(float64(a[i])) * (1 + math.Abs(float64(b[i])))
			}
			require.InDelta(t, dot, k.Dot(a, b), 1e-5*mag+1e-6, "%s dot n=%d", k, n)
			require.InDelta(t, sum, k.Sum(a), 1e-5*mag+1e-6, "%s sum n=%d", k, n)
			y := make([]float32, n)
			for i := range y {
				y[i] = float32(i)
			}
			k.Axpy(y, 0.5, b)
			for i := range y {
				require.InDelta(t, float64(i)+0.5*float64(b[i]), float64(y[i]), 1e-6*(float64(i)+1), "%s axpy n=%d i=%d", k, n, i)
			}
		}
	}
}

// BenchmarkMatVec: one thread, one token, a 5504×2048 matrix (a 1.3B FFN
// projection, 22 MB in bf16: far beyond cache), weight bytes per second.
func BenchmarkMatVec(b *testing.B) {
	const rows, cols = 5504, 2048
	r := rand.New(rand.NewPCG(1, 1))
	x := make([]float32, cols)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	y := make([]float32, rows)
	for _, k := range Supported() {
		for _, dt := range []kernels.DType{kernels.F32, kernels.BF16, kernels.F16} {
			f32, u16, _ := randWeights(r, dt, rows*cols)
			b.Run(fmt.Sprintf("%s/%s", k, dt), func(b *testing.B) {
				for b.Loop() {
					if dt == kernels.F32 {
						k.MatMulF32(y, rows, x, cols, 1, f32, cols, 0, rows)
					} else {
						k.MatMul16(dt, y, rows, x, cols, 1, u16, cols, 0, rows)
					}
				}
				b.ReportMetric(float64(rows*cols*dt.Size())*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
			})
		}
	}
}

// BenchmarkSum: single-thread read bandwidth of Sum over 256 MiB.
func BenchmarkSum(b *testing.B) {
	a := make([]float32, 64<<20)
	for i := range a {
		a[i] = 1
	}
	for _, k := range Supported() {
		b.Run(k.Name, func(b *testing.B) {
			for b.Loop() {
				k.Sum(a)
			}
			b.ReportMetric(float64(len(a)*4)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
		})
	}
}

// BenchmarkMatMulPrefill: one thread, 64 tokens × a 2048×2048 matrix, with
// and without widening 16-bit blocks to f32 first; GMAC/s.
func BenchmarkMatMulPrefill(b *testing.B) {
	const rows, cols, n = 2048, 2048, 64
	r := rand.New(rand.NewPCG(1, 1))
	ldx := PadStride(cols)
	x := make([]float32, n*ldx)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	y := make([]float32, n*rows)
	for _, k := range Supported()[:len(Supported())-1] {
		for _, dt := range []kernels.DType{kernels.F32, kernels.BF16} {
			f32, u16, _ := randWeights(r, dt, rows*cols)
			for _, widen := range []bool{true, false} {
				if dt == kernels.F32 && !widen {
					continue
				}
				kk := *k
				if !widen {
					kk.widen = [3]widenFunc{}
				}
				b.Run(fmt.Sprintf("%s/%s/widen=%v", k, dt, widen), func(b *testing.B) {
					for b.Loop() {
						if dt == kernels.F32 {
							kk.MatMulF32(y, rows, x, ldx, n, f32, cols, 0, rows)
						} else {
							kk.MatMul16(dt, y, rows, x, ldx, n, u16, cols, 0, rows)
						}
					}
					b.ReportMetric(float64(rows*cols*n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GMAC/s")
				})
			}
		}
	}
}

// TestSwiGLUAllPaths compares silu(g)·u with float64 over a wide range of
// gates (saturation both ways) and odd lengths.
func TestSwiGLUAllPaths(t *testing.T) {
	for _, k := range Supported() {
		for _, n := range []int{0, 1, 5, 16, 33, 1000} {
			r := rand.New(rand.NewPCG(uint64(n), 3))
			g, u, out := make([]float32, n), make([]float32, n), make([]float32, n)
			for i := range g {
				g[i] = float32(r.NormFloat64() * 8)
				u[i] = float32(r.NormFloat64())
			}
			if n > 4 {
				g[0], g[1], g[2], g[3] = -100, 100, 0, -87.5
			}
			k.SwiGLU(out, g, u)
			for i := range g {
				x := float64(g[i])
				want := x / (1 + math.Exp(-x)) * float64(u[i])
				require.InDelta(t, want, float64(out[i]), 2e-6*math.Abs(want)+1e-30, "%s n=%d g=%v", k, n, g[i])
			}
		}
	}
}

func BenchmarkSwiGLU(b *testing.B) {
	const n = 5504
	g, u, out := make([]float32, n), make([]float32, n), make([]float32, n)
	for i := range g {
		g[i], u[i] = float32(i%100)/10-5, 1
	}
	for _, k := range Supported() {
		b.Run(k.Name, func(b *testing.B) {
			for b.Loop() {
				k.SwiGLU(out, g, u)
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "Gelem/s")
		})
	}
}

func TestExpSubAndDotRowsAllPaths(t *testing.T) {
	for _, k := range Supported() {
		for _, n := range []int{0, 1, 7, 16, 37, 130} {
			r := rand.New(rand.NewPCG(uint64(n), 9))
			x := make([]float32, n)
			m := float32(0)
			for i := range x {
				x[i] = float32(r.NormFloat64() * 10)
				m = max(m, x[i])
			}
			want := make([]float64, n)
			var wsum float64
			for i, v := range x {
				want[i] = math.Exp(float64(v - m))
				wsum += want[i]
			}
			got := k.ExpSub(x, m)
			require.InDelta(t, wsum, float64(got), 2e-6*wsum+1e-30, "%s n=%d sum", k, n)
			for i := range x {
				require.InDelta(t, want[i], float64(x[i]), 2e-6*want[i]+1e-37, "%s n=%d i=%d", k, n, i)
			}
			// DotRows: rows of len n at stride n+5.
			rows, ld := 9, n+5
			w := make([]float32, rows*ld)
			for i := range w {
				w[i] = float32(r.NormFloat64())
			}
			q := make([]float32, n)
			for i := range q {
				q[i] = float32(r.NormFloat64())
			}
			y := make([]float32, rows)
			k.DotRows(y, q, w, ld)
			for row := 0; row < rows; row++ {
				var s, mag float64
				for i := 0; i < n; i++ {
					s += float64(q[i]) * float64(w[row*ld+i])
					mag += math.Abs(float64(q[i]) * float64(w[row*ld+i]))
				}
				require.InDelta(t, s, float64(y[row]), 1e-5*mag+1e-6, "%s n=%d row=%d", k, n, row)
			}
		}
	}
}

func TestWeightedSumAllPaths(t *testing.T) {
	for _, k := range Supported() {
		for _, tc := range []struct{ n, d, ld int }{{0, 5, 5}, {1, 1, 1}, {3, 64, 70}, {17, 128, 256}, {9, 77, 80}, {40, 512, 576}} {
			r := rand.New(rand.NewPCG(uint64(tc.n), uint64(tc.d)))
			a := make([]float32, tc.n)
			for i := range a {
				a[i] = float32(r.Float64())
			}
			v := make([]float32, max(0, (tc.n-1)*tc.ld+tc.d))
			for i := range v {
				v[i] = float32(r.NormFloat64())
			}
			dst := make([]float32, tc.d)
			for i := range dst {
				dst[i] = float32(math.NaN()) // must be overwritten, not accumulated
			}
			k.WeightedSum(dst, a, v, tc.ld)
			for c := range dst {
				var want, mag float64
				for p := range a {
					want += float64(a[p]) * float64(v[p*tc.ld+c])
					mag += math.Abs(float64(a[p]) * float64(v[p*tc.ld+c]))
				}
				require.InDelta(t, want, float64(dst[c]), 1e-5*mag+1e-7, "%s n=%d d=%d c=%d", k, tc.n, tc.d, c)
			}
		}
	}
}

// TestTablesComplete: every path fills every kernel slot (a missing entry
// would silently fall back or crash only on the shapes that reach it).
func TestTablesComplete(t *testing.T) {
	for _, k := range Supported() {
		for _, dt := range []kernels.DType{kernels.F32, kernels.F16, kernels.BF16} {
			assert.NotNil(t, k.dot1[dt], "%s dot1 %v", k, dt)
			assert.NotNil(t, k.dot4[dt], "%s dot4 %v", k, dt)
			if k != Generic {
				assert.NotNil(t, k.tile[dt], "%s tile %v", k, dt)
				assert.NotNil(t, k.gemv[dt], "%s gemv %v", k, dt)
			}
		}
		assert.NotNil(t, k.sum, "%s sum", k)
		assert.NotNil(t, k.axpy, "%s axpy", k)
		assert.NotNil(t, k.swiglu, "%s swiglu", k)
		assert.NotNil(t, k.expsub, "%s expsub", k)
		assert.NotNil(t, k.wsum, "%s wsum", k)
	}
}

// TestMatMulF32StridedAllPaths: weight rows further apart than cols (a KV
// cache head), every path, decode and tile shapes, tails.
func TestMatMulF32StridedAllPaths(t *testing.T) {
	for _, k := range Supported() {
		for _, s := range []struct{ n, rows, cols, ldw, r0 int }{
			{1, 9, 37, 80, 0}, {1, 40, 128, 2048, 3}, {3, 11, 64, 64, 0}, {4, 13, 130, 260, 1}, {8, 17, 19, 57, 2},
		} {
			r := rand.New(rand.NewPCG(uint64(s.ldw), uint64(s.n)))
			x := make([]float32, s.n*s.cols)
			for i := range x {
				x[i] = float32(r.NormFloat64())
			}
			w := make([]float32, (s.rows-1)*s.ldw+s.cols)
			for i := range w {
				w[i] = float32(r.NormFloat64())
			}
			ldy := s.rows - s.r0
			y := make([]float32, s.n*ldy)
			for i := range y {
				y[i] = float32(math.NaN())
			}
			k.MatMulF32Strided(y, ldy, x, s.cols, s.n, w, s.ldw, s.cols, s.r0, s.rows)
			for tk := 0; tk < s.n; tk++ {
				for row := s.r0; row < s.rows; row++ {
					var want, mag float64
					for i := 0; i < s.cols; i++ {
						p := float64(x[tk*s.cols+i]) * float64(w[row*s.ldw+i])
						want += p
						mag += math.Abs(p)
					}
					require.InDelta(t, want, float64(y[tk*ldy+row-s.r0]), 1e-5*mag+1e-6, "%s %+v t%d r%d", k, s, tk, row)
				}
			}
		}
	}
}

// TestMatMulActsAllPaths: MatMul16Acts (the AMX tiles where the CPU has
// them) against float64 on fresh random inputs: token counts around the
// 16-token tile and 128-token group edges, row ranges that start and end
// off the 32-row block, columns below, at and past the 32-column block and
// the f16 split chunk (256), with Acts reused across shapes.
func TestMatMulActsAllPaths(t *testing.T) {
	shapes := []struct{ n, rows, cols, r0 int }{
		{1, 40, 64, 0}, {3, 33, 96, 1}, {4, 32, 32, 0}, {5, 70, 77, 3},
		{16, 64, 300, 0}, {17, 96, 31, 5}, {33, 65, 600, 0}, {64, 128, 2048, 32},
		{70, 37, 129, 2}, {130, 64, 64, 0}, {8, 160, 5504 / 4, 16},
	}
	for _, k := range Supported() {
		var a Acts
		var scr Scratch
		for _, dt := range []kernels.DType{kernels.BF16, kernels.F16} {
			for _, s := range shapes {
				t.Run(fmt.Sprintf("%s/%s/n%d_r%d_c%d_from%d", k, dt, s.n, s.rows, s.cols, s.r0), func(t *testing.T) {
					r := rand.New(rand.NewPCG(uint64(s.cols)*7+uint64(s.rows), uint64(s.n)))
					ldx, ldy := s.cols+5, s.rows-s.r0+3
					x := make([]float32, (s.n-1)*ldx+s.cols)
					for i := range x {
						x[i] = float32(r.NormFloat64() * math.Exp(r.NormFloat64())) // spread of magnitudes
					}
					_, u16, exact := randWeights(r, dt, s.rows*s.cols)
					y := make([]float32, (s.n-1)*ldy+s.rows-s.r0)
					for i := range y {
						y[i] = float32(math.NaN())
					}
					k.PrepareActs(dt, &a, x, ldx, s.n, s.cols)
					if k.amx16 != nil && s.n >= amxMin(dt) && s.cols >= 32 {
						require.Positive(t, a.kmain, "the tiles must be used")
					}
					k.MatMul16Acts(dt, y, ldy, &a, u16, s.r0, s.rows, &scr)
					requireProduct(t, y, ldy, x, ldx, s.n, exact, s.cols, s.r0, s.rows)
				})
			}
		}
	}
}

func TestRowBlock(t *testing.T) {
	for _, k := range Supported() {
		for _, dt := range []kernels.DType{kernels.BF16, kernels.F16, kernels.F32} {
			rb := k.RowBlock(dt, 64)
			require.Positive(t, rb)
			require.Zero(t, rb%4, k.Name)
			require.Equal(t, 4, k.RowBlock(dt, 1), "%s: one token never uses the tiles", k)
			if k.amx16 != nil && dt != kernels.F32 {
				require.Equal(t, amxRows, rb, "%s %s", k, dt)
				require.Equal(t, 4, k.RowBlock(dt, amxMin(dt)-1), "%s %s", k, dt)
			}
		}
	}
}

// BenchmarkMatMulActs: one thread, n tokens × a 2048×2048 16-bit matrix
// through PrepareActs + MatMul16Acts (the prefill and batched-decode path),
// GMAC/s; the packing is timed too.
func BenchmarkMatMulActs(b *testing.B) {
	const rows, cols = 2048, 2048
	r := rand.New(rand.NewPCG(1, 1))
	ldx := PadStride(cols)
	x := make([]float32, 64*ldx)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	y := make([]float32, 64*rows)
	for _, k := range Supported()[:len(Supported())-1] {
		for _, dt := range []kernels.DType{kernels.BF16, kernels.F16} {
			_, u16, _ := randWeights(r, dt, rows*cols)
			for _, n := range []int{4, 8, 16, 32, 64} {
				b.Run(fmt.Sprintf("%s/%s/n=%d", k, dt, n), func(b *testing.B) {
					var a Acts
					var s Scratch
					for b.Loop() {
						k.PrepareActs(dt, &a, x, ldx, n, cols)
						k.MatMul16Acts(dt, y, rows, &a, u16, 0, rows, &s)
					}
					b.ReportMetric(float64(rows*cols*n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GMAC/s")
				})
			}
		}
	}
}

// TestPackActsMatchesGo: every path's activation packing is bit-identical
// to packActsGo (rounding ties, signs, zeros, tiny and huge values).
func TestPackActsMatchesGo(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	const n = 96
	row := make([]float32, n)
	for i := range row {
		row[i] = float32(r.NormFloat64() * math.Exp(4*r.NormFloat64()))
	}
	row[0], row[1], row[2] = 0, float32(math.Copysign(0, -1)), math.Float32frombits(0x3f808000) // a tie
	row[3] = math.Float32frombits(0x3f818000)                                                   // a tie rounding up
	wantHi, wantLo := make([]uint32, n/2*16), make([]uint32, n/2*16)
	packActsGo(wantHi, wantLo, row)
	for _, k := range Supported() {
		if k.amxPack == nil {
			continue
		}
		hi, lo := make([]uint32, n/2*16), make([]uint32, n/2*16)
		k.amxPack(&hi[0], &lo[0], &row[0], n)
		require.Equal(t, wantHi, hi, k.Name)
		require.Equal(t, wantLo, lo, k.Name)
	}
	h, l := splitBF16(row[2])
	require.Equal(t, uint16(0x3f80), h, "tie to even (down)")
	require.Equal(t, float32(1.0/256), BF16ToF32(l))
	h, _ = splitBF16(row[3])
	require.Equal(t, uint16(0x3f82), h, "tie to even (up)")
}
