package quant

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// e4m3Def is float8_e4m3fn by its definition: sign, 4-bit exponent with
// bias 7, 3-bit mantissa, subnormals at exponent 0, NaN only at S.1111.111,
// no infinities.
func e4m3Def(b byte) float64 {
	sign := 1.0
	if b&0x80 != 0 {
		sign = -1
	}
	e, m := int(b>>3)&0xf, float64(b&7)
	switch {
	case e == 0xf && m == 7:
		return math.NaN()
	case e == 0:
		return sign * m / 8 * math.Ldexp(1, -6)
	}
	return sign * (1 + m/8) * math.Ldexp(1, e-7)
}

// e5m2Def is float8_e5m2 by its definition: bias 15, 2-bit mantissa, IEEE
// infinities and NaNs.
func e5m2Def(b byte) float64 {
	sign := 1.0
	if b&0x80 != 0 {
		sign = -1
	}
	e, m := int(b>>2)&0x1f, float64(b&3)
	switch {
	case e == 0x1f && m == 0:
		return sign * math.Inf(1)
	case e == 0x1f:
		return math.NaN()
	case e == 0:
		return sign * m / 4 * math.Ldexp(1, -14)
	}
	return sign * (1 + m/4) * math.Ldexp(1, e-15)
}

func TestFP8E4M3AllValues(t *testing.T) {
	nans := 0
	for i := range 256 {
		b := byte(i)
		want, got := e4m3Def(b), FP8E4M3ToF32(b)
		if math.IsNaN(want) {
			nans++
			assert.True(t, isNaN32(got), "%#02x", b)
			continue
		}
		assert.False(t, math.IsInf(float64(got), 0), "%#02x: e4m3fn has no infinities", b)
		assert.Equal(t, want, float64(got), "%#02x", b)
		assert.Equal(t, math.Signbit(want), math.Signbit(float64(got)), "%#02x sign", b)
	}
	assert.Equal(t, 2, nans, "NaN only at 0x7f and 0xff")
	assert.True(t, isNaN32(FP8E4M3ToF32(0x7f)))
	assert.True(t, isNaN32(FP8E4M3ToF32(0xff)))
	anchors := map[byte]float32{
		0x00: 0, 0x38: 1, 0xb8: -1, 0x7e: 448, 0xfe: -448, 0x78: 256,
		0x01: float32(math.Ldexp(1, -9)), 0x07: float32(math.Ldexp(7, -9)), 0x08: float32(math.Ldexp(1, -6)),
		0x3c: 1.5, 0x40: 2,
	}
	for b, want := range anchors {
		assert.Equal(t, want, FP8E4M3ToF32(b), "%#02x", b)
	}
	assert.True(t, math.Signbit(float64(FP8E4M3ToF32(0x80))), "0x80 is -0")

	src := make([]byte, 256)
	for i := range src {
		src[i] = byte(i)
	}
	dst := make([]float32, 256)
	require.NoError(t, DecodeFP8E4M3(dst, src))
	for i := range dst {
		assert.Equal(t, math.Float32bits(FP8E4M3ToF32(byte(i))), math.Float32bits(dst[i]))
	}
}

func TestFP8E5M2AllValues(t *testing.T) {
	for i := range 256 {
		b := byte(i)
		want, got := e5m2Def(b), FP8E5M2ToF32(b)
		if math.IsNaN(want) {
			assert.True(t, isNaN32(got), "%#02x", b)
			continue
		}
		assert.Equal(t, want, float64(got), "%#02x", b)
	}
}

// naiveDequant is the definition: each element times the scale of its block.
func naiveDequant(w []byte, rows, cols int, s []float32, sCols, br, bc int) []float32 {
	out := make([]float32, rows*cols)
	for r := range rows {
		for c := range cols {
			out[r*cols+c] = float32(e4m3Def(w[r*cols+c])) * s[(r/br)*sCols+c/bc]
		}
	}
	return out
}

func TestDequantFP8Blocks(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	cases := []struct {
		rows, cols, br, bc int
	}{
		{32, 32, 16, 16}, // whole blocks
		{40, 64, 16, 16}, // partial last block row (as kv_a_proj in the fixture)
		{37, 45, 16, 16}, // partial in both directions
		{5, 3, 128, 128}, // smaller than one block
		{300, 260, 128, 128},
		{7, 9, 1, 4},
		{0, 8, 16, 16}, // empty
	}
	for _, tc := range cases {
		sR, sC := ceilDiv(tc.rows, tc.br), ceilDiv(tc.cols, tc.bc)
		w := make([]byte, tc.rows*tc.cols)
		for i := range w {
			w[i] = byte(rng.IntN(256))
			if w[i]&0x7f == 0x7f {
				w[i] ^= 1 // keep NaN out so equality is meaningful
			}
		}
		s := make([]float32, sR*sC)
		for i := range s {
			s[i] = rng.Float32()*0.01 + 1e-4
		}
		want := naiveDequant(w, tc.rows, tc.cols, s, sC, tc.br, tc.bc)
		got, err := DequantFP8Blocks(w, tc.rows, tc.cols, s, sR, sC, tc.br, tc.bc)
		require.NoError(t, err)
		require.Equal(t, want, got, "%+v", tc)

		into := make([]float32, len(want))
		for i := range into {
			into[i] = float32(math.NaN()) // poison: every element must be written
		}
		require.NoError(t, DequantFP8BlocksInto(into, w, tc.rows, tc.cols, s, sR, sC, tc.br, tc.bc))
		require.Equal(t, want, into)

		bf := make([]byte, 2*len(want))
		require.NoError(t, DequantFP8BlocksToBF16(bf, w, tc.rows, tc.cols, s, sR, sC, tc.br, tc.bc))
		for i, f := range want {
			require.Equal(t, F32ToBF16(f), uint16(bf[2*i])|uint16(bf[2*i+1])<<8, "element %d", i)
		}
	}
}

func TestDequantFP8BlocksErrors(t *testing.T) {
	w := make([]byte, 40*64)
	s := make([]float32, 3*4)
	cases := []struct {
		name                 string
		w                    []byte
		rows, cols           int
		s                    []float32
		sRows, sCols, br, bc int
		want                 string
	}{
		{"scale rows", w, 40, 64, s[:8], 2, 4, 16, 16, "scale_inv shape 2×4, want 3×4"},
		{"scale cols", w, 40, 64, s[:9], 3, 3, 16, 16, "scale_inv shape 3×3, want 3×4"},
		{"scale length", w, 40, 64, s[:11], 3, 4, 16, 16, "holds 11 values"},
		{"weight length", w[:100], 40, 64, s, 3, 4, 16, 16, "weight holds 100 bytes"},
		{"zero block", w, 40, 64, s, 3, 4, 0, 16, "block size"},
		{"negative rows", w, -1, 64, s, 3, 4, 16, 16, "negative shape"},
		{"overflow", w, math.MaxInt / 2, 4, s, 3, 4, 16, 16, "overflows"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DequantFP8Blocks(tc.w, tc.rows, tc.cols, tc.s, tc.sRows, tc.sCols, tc.br, tc.bc)
			require.Error(t, err)
			assert.ErrorContains(t, err, tc.want)
			assert.ErrorContains(t, DequantFP8BlocksInto(make([]float32, 1), tc.w, tc.rows, tc.cols, tc.s, tc.sRows, tc.sCols, tc.br, tc.bc), tc.want)
			assert.ErrorContains(t, DequantFP8BlocksToBF16(make([]byte, 2), tc.w, tc.rows, tc.cols, tc.s, tc.sRows, tc.sCols, tc.br, tc.bc), tc.want)
		})
	}
	assert.ErrorContains(t, DequantFP8BlocksInto(make([]float32, 5), w, 40, 64, s, 3, 4, 16, 16), "destination holds 5")
	assert.ErrorContains(t, DequantFP8BlocksToBF16(make([]byte, 5), w, 40, 64, s, 3, 4, 16, 16), "destination holds 5")
}

func BenchmarkDequantFP8Blocks(b *testing.B) {
	const rows, cols, blk = 512, 2048, 128
	w := make([]byte, rows*cols)
	for i := range w {
		w[i] = byte(i*31) &^ 0x80 >> 1
	}
	sR, sC := ceilDiv(rows, blk), ceilDiv(cols, blk)
	s := make([]float32, sR*sC)
	for i := range s {
		s[i] = 0.001
	}
	dst := make([]float32, rows*cols)
	b.SetBytes(int64(len(w)))
	for b.Loop() {
		if err := DequantFP8BlocksInto(dst, w, rows, cols, s, sR, sC, blk, blk); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(rows*cols)*float64(b.N)/b.Elapsed().Seconds()/1e9, "Gelem/s")
}
