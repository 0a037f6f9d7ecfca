package quant

import "math"

// F32ToFP8E4M3 rounds x to the nearest float8_e4m3fn value (ties to even),
// saturating at ±448 (the largest finite value; e4m3fn has no infinity);
// NaN becomes 0x7f. Synthetic fp8 weights (engine.RandomSource) use it.
func F32ToFP8E4M3(x float32) byte {
	bits := math.Float32bits(x)
	sign := byte(bits>>24) & 0x80
	a := math.Float32frombits(bits &^ (1 << 31))
	switch {
	case a != a: // NaN
		return 0x7f
	case a >= 448:
		return sign | 0x7e
	case a < 1.0/64: // below the smallest normal 2^-6: multiples of 2^-9
		q := math.RoundToEven(float64(a) * 512)
		return sign | byte(q) // q = 8 is 2^-6, code 0x08
	}
	b := math.Float32bits(a)
	code := (b>>23-127+7)<<3 | (b>>20)&7
	rem := b & (1<<20 - 1)
	if rem > 1<<19 || rem == 1<<19 && code&1 == 1 {
		code++ // a carry into the exponent is the next binade's first code
	}
	return sign | byte(min(code, 0x7e))
}
