//go:build amd64 && !purego

package cpu

import (
	"github.com/klauspost/cpuid/v2"

	"github.com/deepseek-go/deepseek-go/kernels/cpu/simd"
)

// fp8WidenAVX512 and fp8WidenAVX2 (fp8_amd64.s) widen n e4m3 values (n a
// multiple of 16, resp. 8) in blocks of bc columns, scales[i] applying to
// block i. Each value is moved into float16 bit positions (sign, then
// exponent and mantissa one bit lower: e4m3's exponent bias 7 against
// f16's 15), converted with VCVTPH2PS (exact, subnormals included) and
// multiplied by 256·scale to undo the bias difference. NaN bytes (0x7f,
// 0xff, absent from real checkpoints) come out as ±480·scale.
//
//go:noescape
func fp8WidenAVX512(f *float32, w *byte, n int, scales *float32, bc int)

// fp8DotAVX512 is one decode row: Σ f[i]·e4m3(w[i])·scales[i/bc] over n
// values (n and bc multiples of 64), widened in registers only.
//
//go:noescape
func fp8DotAVX512(f *float32, w *byte, n int, scales *float32, bc int) float32

// fp8DotAVX2 is fp8DotAVX512 for AVX2 (n and bc multiples of 32).
//
//go:noescape
func fp8DotAVX2(f *float32, w *byte, n int, scales *float32, bc int) float32

//go:noescape
func fp8WidenAVX2(f *float32, w *byte, n int, scales *float32, bc int)

var (
	fp8AVX512 = fp8Widener{name: "avx512", vl: 16, fn: fp8WidenAVX512, dot: fp8DotAVX512, dotVL: 64}
	fp8AVX2   = fp8Widener{name: "avx2", vl: 8, fn: fp8WidenAVX2, dot: fp8DotAVX2, dotVL: 32}
)

// fp8WidenerFor picks the widener matching a float kernel path: the
// vector one of the same instruction set (AVX-512 also for the AMX path),
// the table for Generic.
func fp8WidenerFor(k *simd.Kernels) fp8Widener {
	hasAVX512 := cpuid.CPU.Supports(cpuid.AVX512F, cpuid.AVX512BW, cpuid.AVX512VL)
	hasAVX2 := cpuid.CPU.Supports(cpuid.AVX2, cpuid.F16C)
	switch {
	case k == simd.Generic:
		return fp8Generic
	case k.Name != "avx2" && hasAVX512:
		return fp8AVX512
	case hasAVX2:
		return fp8AVX2
	}
	return fp8Generic
}
