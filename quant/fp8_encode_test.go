package quant

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestF32ToFP8E4M3(t *testing.T) {
	// Every finite code round-trips, both signs.
	for c := range 0x7f {
		v := FP8E4M3ToF32(byte(c))
		assert.Equal(t, byte(c), F32ToFP8E4M3(v), "code %#x (%g)", c, v)
		if c != 0 {
			assert.Equal(t, byte(c)|0x80, F32ToFP8E4M3(-v), "code -%#x", c)
		}
	}
	// Midpoints round to the even code, just above/below to the nearer.
	for c := range 0x7e {
		lo, hi := FP8E4M3ToF32(byte(c)), FP8E4M3ToF32(byte(c+1))
		mid := (lo + hi) / 2
		even := byte(c)
		if c&1 == 1 {
			even = byte(c + 1)
		}
		assert.Equal(t, even, F32ToFP8E4M3(mid), "midpoint of %#x and %#x", c, c+1)
		assert.Equal(t, byte(c), F32ToFP8E4M3(math.Nextafter32(mid, 0)), "below midpoint of %#x", c)
		assert.Equal(t, byte(c+1), F32ToFP8E4M3(math.Nextafter32(mid, 1000)), "above midpoint of %#x", c)
	}
	for _, tc := range []struct {
		x    float32
		want byte
	}{
		{1, 0x38}, {-2, 0xc0}, {448, 0x7e}, {1e6, 0x7e}, {-1e6, 0xfe}, {float32(math.Inf(1)), 0x7e},
		{1e-9, 0}, {float32(math.NaN()), 0x7f}, {0.5 / 512, 0}, {1.5 / 512, 2},
	} {
		assert.Equal(t, tc.want, F32ToFP8E4M3(tc.x), "%g", tc.x)
	}
}
