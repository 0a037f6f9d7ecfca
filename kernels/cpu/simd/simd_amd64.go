//go:build amd64 && !purego

package simd

import (
	"github.com/klauspost/cpuid/v2"

	"github.com/deepseek-go/deepseek-go/kernels"
)

// AVX512 needs AVX-512 F and VL (EVEX 256-bit forms are used in reductions).
var AVX512 = &Kernels{
	Name:     "avx512",
	vl:       16,
	tileT:    4,
	dot1:     [3]dot1Func{kernels.F32: dot1F32AVX512, kernels.F16: dot1F16AVX512, kernels.BF16: dot1BF16AVX512},
	dot4:     [3]dot4Func{kernels.F32: dot4F32AVX512, kernels.F16: dot4F16AVX512, kernels.BF16: dot4BF16AVX512},
	tile:     [3]tileFunc{kernels.F32: tileF32AVX512, kernels.F16: tileF16AVX512, kernels.BF16: tileBF16AVX512},
	sum:      sumAVX512,
	axpy:     axpyAVX512,
	swiglu:   swigluAVX512,
	expsub:   expsubAVX512,
	wsum:     wsumAVX512,
	gemv:     [3]gemvFunc{kernels.F32: gemvqF32AVX512, kernels.F16: gemvqF16AVX512, kernels.BF16: gemvqBF16AVX512},
	gemvRows: 4,
	// No widen: the bf16 tile measured about as fast as widen + f32 tile
	// (64×2048×2048, best of 3 on the shared machine: 54 vs 48 GMAC/s).
}

// AVX2 needs AVX2, FMA and F16C. With 16 vector registers its tile is
// 3 tokens × 4 rows.
var AVX2 = &Kernels{
	Name:     "avx2",
	vl:       8,
	tileT:    3,
	dot1:     [3]dot1Func{kernels.F32: dot1F32AVX2, kernels.F16: dot1F16AVX2, kernels.BF16: dot1BF16AVX2},
	dot4:     [3]dot4Func{kernels.F32: dot4F32AVX2, kernels.F16: dot4F16AVX2, kernels.BF16: dot4BF16AVX2},
	tile:     [3]tileFunc{kernels.F32: tileF32AVX2, kernels.F16: tileF16AVX2, kernels.BF16: tileBF16AVX2},
	sum:      sumAVX2,
	axpy:     axpyAVX2,
	swiglu:   swigluAVX2,
	expsub:   expsubAVX2,
	wsum:     wsumAVX2,
	gemv:     [3]gemvFunc{kernels.F32: gemvqF32AVX2, kernels.F16: gemvqF16AVX2, kernels.BF16: gemvqBF16AVX2},
	gemvRows: 4,
	widen:    [3]widenFunc{kernels.F16: widenF16AVX2, kernels.BF16: widenBF16AVX2},
}

// Supported lists the paths this CPU can run, fastest first; Generic is
// always last.
func Supported() []*Kernels {
	var ks []*Kernels
	if AMX != nil {
		ks = append(ks, AMX)
	}
	if cpuid.CPU.Supports(cpuid.AVX512F, cpuid.AVX512VL) {
		ks = append(ks, AVX512)
	}
	if cpuid.CPU.Supports(cpuid.AVX2, cpuid.FMA3, cpuid.F16C) {
		ks = append(ks, AVX2)
	}
	return append(ks, Generic)
}
