//go:build amd64 && !purego

package simd

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/deepseek-go/deepseek-go/kernels"
)

// BenchmarkWiden decides per dtype whether prefill should widen 16-bit
// weight blocks to f32 first (one thread, 64 tokens × 2048×2048).
func BenchmarkWiden(b *testing.B) {
	const rows, cols, n = 2048, 2048, 64
	r := rand.New(rand.NewPCG(1, 1))
	ldx := PadStride(cols)
	x := make([]float32, n*ldx)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	y := make([]float32, n*rows)
	widen := map[string][3]widenFunc{
		"avx512": {kernels.F16: widenF16AVX512, kernels.BF16: widenBF16AVX512},
		"avx2":   {kernels.F16: widenF16AVX2, kernels.BF16: widenBF16AVX2},
	}
	for _, k := range Supported()[:len(Supported())-1] {
		for _, dt := range []kernels.DType{kernels.BF16, kernels.F16} {
			_, u16, _ := randWeights(r, dt, rows*cols)
			for _, on := range []bool{false, true} {
				kk := *k
				kk.widen = [3]widenFunc{}
				if on {
					kk.widen = widen[k.Name]
				}
				b.Run(fmt.Sprintf("%s/%s/widen=%v", k, dt, on), func(b *testing.B) {
					for b.Loop() {
						kk.MatMul16(dt, y, rows, x, ldx, n, u16, cols, 0, rows)
					}
					b.ReportMetric(float64(rows*cols*n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GMAC/s")
				})
			}
		}
	}
}

// BenchmarkPrefetch: single-thread bf16 decode over 1 GiB of weights (past
// the 480 MiB L3) with and without software prefetch in the 4-row kernel.
func BenchmarkPrefetch(b *testing.B) {
	const rows, cols = 32768, 16384
	w := make([]uint16, rows*cols)
	for i := range w {
		w[i] = 0x3f80 | uint16(i&0x7f)
	}
	x := make([]float32, cols)
	for i := range x {
		x[i] = 1
	}
	y := make([]float32, rows)
	for _, v := range []struct {
		name string
		f    dot4Func
	}{{"none", dot4nopfBF16AVX512}, {"pf2048", dot4BF16AVX512}} {
		kk := *AVX512
		kk.dot4[kernels.BF16] = v.f
		b.Run(v.name, func(b *testing.B) {
			for b.Loop() {
				kk.MatMul16(kernels.BF16, y, rows, x, cols, 1, w, cols, 0, rows)
			}
			b.ReportMetric(float64(rows*cols*2)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
		})
	}
}
