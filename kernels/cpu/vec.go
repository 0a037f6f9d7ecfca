package cpu

import (
	"math"

	"github.com/x448/float16"
)

// The innermost loops live here as small pure-Go functions so that faster
// (SIMD) versions can replace them behind the same names while these stay
// as the oracle.

// dotF32 returns Σ a[i]·b[i] over len(a) elements (b must be at least as long).
func dotF32(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// bf16ToF32 widens a bfloat16 bit pattern.
func bf16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// f16ToF32 widens an IEEE half bit pattern.
func f16ToF32(h uint16) float32 { return float16.Frombits(h).Float32() }

// dotBF16 returns Σ bf16(w[i])·x[i].
func dotBF16(w []uint16, x []float32) float32 {
	x = x[:len(w)]
	var s0, s1 float32
	i := 0
	for ; i+2 <= len(w); i += 2 {
		s0 += bf16ToF32(w[i]) * x[i]
		s1 += bf16ToF32(w[i+1]) * x[i+1]
	}
	for ; i < len(w); i++ {
		s0 += bf16ToF32(w[i]) * x[i]
	}
	return s0 + s1
}

// dotF16 returns Σ f16(w[i])·x[i].
func dotF16(w []uint16, x []float32) float32 {
	x = x[:len(w)]
	var s float32
	for i, h := range w {
		s += f16ToF32(h) * x[i]
	}
	return s
}

// dotI8 returns Σ w[i]·x[i] (the caller applies the row scale).
func dotI8(w []int8, x []float32) float32 {
	x = x[:len(w)]
	var s0, s1 float32
	i := 0
	for ; i+2 <= len(w); i += 2 {
		s0 += float32(w[i]) * x[i]
		s1 += float32(w[i+1]) * x[i+1]
	}
	for ; i < len(w); i++ {
		s0 += float32(w[i]) * x[i]
	}
	return s0 + s1
}

// axpyF32 computes y[i] += alpha·x[i].
func axpyF32(y []float32, alpha float32, x []float32) {
	x = x[:len(y)]
	for i := range y {
		y[i] += alpha * x[i]
	}
}

// scaleF32 computes y[i] *= alpha.
func scaleF32(y []float32, alpha float32) {
	for i := range y {
		y[i] *= alpha
	}
}
