package cpu

import (
	"math"

	"github.com/x448/float16"
)

// Scalar dtype widening for the cold paths (Embed, int8 quantisation at
// load). The hot loops are the SIMD kernels of kernels/cpu/simd and quant;
// their pure-Go paths (simd.Generic, quant.Int8Generic) are the oracle the
// SIMD paths are tested against.

// bf16ToF32 widens a bfloat16 bit pattern.
func bf16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// f16ToF32 widens an IEEE half bit pattern.
func f16ToF32(h uint16) float32 { return float16.Frombits(h).Float32() }
