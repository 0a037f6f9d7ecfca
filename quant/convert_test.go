package quant

import (
	"encoding/binary"
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/x448/float16"
)

func isNaN32(f float32) bool { return f != f }

func TestF16ToF32AllValues(t *testing.T) {
	// Every half-precision bit pattern against x448/float16, bit for bit
	// except NaNs: x448 quietens signalling NaNs, F16ToF32 keeps the bits.
	for h := range 1 << 16 {
		want := float16.Frombits(uint16(h)).Float32()
		got := F16ToF32(uint16(h))
		if isNaN32(want) {
			require.True(t, isNaN32(got), "h=%#04x", h)
			require.Equal(t, math.Float32bits(want)&^0x00400000, math.Float32bits(got)&^0x00400000, "NaN payload h=%#04x", h)
			continue
		}
		require.Equal(t, math.Float32bits(want), math.Float32bits(got), "h=%#04x", h)
	}
}

func TestF16Anchors(t *testing.T) {
	cases := []struct {
		h    uint16
		want float32
	}{
		{0x0000, 0},
		{0x3c00, 1},
		{0xc000, -2},
		{0x7bff, 65504},
		{0x0001, float32(math.Ldexp(1, -24))}, // smallest subnormal
		{0x03ff, float32(math.Ldexp(1023, -24))},
		{0x0400, float32(math.Ldexp(1, -14))}, // smallest normal
		{0x7c00, float32(math.Inf(1))},
		{0xfc00, float32(math.Inf(-1))},
	}
	for _, tc := range cases {
		assert.Equal(t, tc.want, F16ToF32(tc.h), "%#04x", tc.h)
		assert.Equal(t, tc.h, F32ToF16(tc.want), "%v", tc.want)
	}
	assert.True(t, isNaN32(F16ToF32(0x7e00)))
	assert.Equal(t, math.Float32bits(-0.0*float32(math.Copysign(1, -1))), math.Float32bits(F16ToF32(0x8000)))
	assert.Equal(t, uint16(0x7c00), F32ToF16(1e6), "overflow rounds to +Inf")
	assert.Equal(t, uint16(0x3c00), F32ToF16(1+float32(math.Ldexp(1, -11))), "tie rounds to even")
	assert.Equal(t, uint16(0x3c02), F32ToF16(1+3*float32(math.Ldexp(1, -11))), "tie rounds to even (up)")
}

func TestBF16(t *testing.T) {
	// Round trip of every bf16 pattern (NaNs stay NaN).
	for h := range 1 << 16 {
		f := BF16ToF32(uint16(h))
		got := F32ToBF16(f)
		if isNaN32(f) {
			require.True(t, isNaN32(BF16ToF32(got)), "h=%#04x", h)
			continue
		}
		require.Equal(t, uint16(h), got, "h=%#04x", h)
	}
	cases := []struct {
		name string
		in   float32
		want uint16
	}{
		{"one", 1, 0x3f80},
		{"tie to even down", 1 + float32(math.Ldexp(1, -8)), 0x3f80},
		{"tie to even up", 1 + 3*float32(math.Ldexp(1, -8)), 0x3f82},
		{"above tie", 1 + float32(math.Ldexp(1, -8)) + float32(math.Ldexp(1, -20)), 0x3f81},
		{"overflow to inf", math.MaxFloat32, 0x7f80},
		{"negative", -2.5, 0xc020},
		{"subnormal kept", float32(math.Ldexp(1, -130)), 0x0008}, // 2^-130 = 2^19 ulps of 2^-149
	}
	for _, tc := range cases {
		assert.Equal(t, tc.want, F32ToBF16(tc.in), tc.name)
	}
	nan := math.Float32frombits(0x7fffffff) // rounding carry must not make it Inf
	assert.True(t, isNaN32(BF16ToF32(F32ToBF16(nan))))
	assert.True(t, isNaN32(BF16ToF32(F32ToBF16(math.Float32frombits(0x7f800001)))))
}

func TestSliceConverters(t *testing.T) {
	src := []float32{0, 1, -2.5, 65504, float32(math.Ldexp(1, -24)), 3.140625}
	b16 := make([]byte, 2*len(src))
	got := make([]float32, len(src))

	require.NoError(t, EncodeBF16(b16, src))
	require.NoError(t, DecodeBF16(got, b16))
	for i, f := range src {
		assert.Equal(t, BF16ToF32(F32ToBF16(f)), got[i])
		assert.Equal(t, F32ToBF16(f), binary.LittleEndian.Uint16(b16[2*i:]))
	}
	require.NoError(t, EncodeF16(b16, src))
	require.NoError(t, DecodeF16(got, b16))
	assert.Equal(t, src, got, "all values are exact in f16")

	b32 := make([]byte, 4*len(src))
	for i, f := range src {
		binary.LittleEndian.PutUint32(b32[4*i:], math.Float32bits(f))
	}
	require.NoError(t, DecodeF32(got, b32))
	assert.Equal(t, src, got)
	b64 := make([]byte, 8*len(src))
	for i, f := range src {
		binary.LittleEndian.PutUint64(b64[8*i:], math.Float64bits(float64(f)))
	}
	require.NoError(t, DecodeF64(got, b64))
	assert.Equal(t, src, got)

	for name, err := range map[string]error{
		"DecodeBF16":    DecodeBF16(got, b16[:3]),
		"DecodeF16":     DecodeF16(got[:1], b16),
		"DecodeF32":     DecodeF32(got, b32[:4]),
		"DecodeF64":     DecodeF64(got, b64[:8]),
		"EncodeBF16":    EncodeBF16(b16[:2], src),
		"EncodeF16":     EncodeF16(b16, src[:1]),
		"DecodeFP8E4M3": DecodeFP8E4M3(got, []byte{1}),
		"DecodeFP8E5M2": DecodeFP8E5M2(got, []byte{1}),
	} {
		assert.ErrorContains(t, err, name)
	}
}

func TestDecodeBF16Alignment(t *testing.T) {
	// Every src/dst offset and several lengths, so both the aligned fast
	// path and the byte loop (and the odd tail) are checked against
	// BF16ToF32.
	buf := make([]byte, 2*40+3)
	for i := range buf {
		buf[i] = byte(i*37 + 11)
	}
	out := make([]float32, 40+2)
	for so := range 3 {
		for do := range 2 {
			for _, n := range []int{0, 1, 2, 3, 16, 39} {
				src, dst := buf[so:so+2*n], out[do:do+n]
				for i := range dst {
					dst[i] = -1
				}
				require.NoError(t, DecodeBF16(dst, src))
				for i := range n {
					want := BF16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
					require.Equal(t, math.Float32bits(want), math.Float32bits(dst[i]), "src+%d dst+%d n=%d i=%d", so, do, n, i)
				}
			}
		}
	}
}

func benchDecode(b *testing.B, size int, f func(dst []float32, src []byte) error) {
	const n = 1 << 20
	src := make([]byte, n*size)
	for i := range src {
		src[i] = byte(i * 7)
	}
	dst := make([]float32, n)
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		if err := f(dst, src); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "Gelem/s")
}

func BenchmarkDecodeBF16(b *testing.B)    { benchDecode(b, 2, DecodeBF16) }
func BenchmarkDecodeF16(b *testing.B)     { benchDecode(b, 2, DecodeF16) }
func BenchmarkDecodeFP8E4M3(b *testing.B) { benchDecode(b, 1, DecodeFP8E4M3) }
