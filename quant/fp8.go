package quant

import (
	"fmt"
	"math"
)

// e4m3Table holds the float32 value of every float8_e4m3fn byte. It is
// computed once at package initialisation and never written afterwards.
var e4m3Table = makeE4M3Table()

// makeE4M3Table builds the table by rebiasing bit fields into float32
// (exponent bias 7 → 127), renormalising subnormals: a different route
// from the arithmetic definition the tests check it against.
func makeE4M3Table() (t [256]float32) {
	for i := range 256 {
		b := uint32(i)
		sign := (b >> 7) << 31
		exp := (b >> 3) & 0xf
		man := b & 7
		var bits uint32
		switch {
		case exp == 0xf && man == 7: // e4m3fn's only NaN encodings: 0x7f, 0xff
			bits = sign | 0x7fc00000
		case exp == 0 && man == 0:
			bits = sign
		case exp == 0: // subnormal: 0.man × 2^-6; shift until the leading 1 is implicit
			e := uint32(127 - 6)
			for man&8 == 0 {
				man <<= 1
				e--
			}
			bits = sign | e<<23 | (man&7)<<20
		default:
			bits = sign | (exp+127-7)<<23 | man<<20
		}
		t[i] = math.Float32frombits(bits)
	}
	return t
}

// FP8E4M3ToF32 converts one float8_e4m3fn value (1 sign bit, 4 exponent bits
// with bias 7, 3 mantissa bits; subnormals; no infinities; NaN at 0x7f and
// 0xff; largest finite ±448) to float32 exactly.
func FP8E4M3ToF32(b byte) float32 { return e4m3Table[b] }

// FP8E5M2ToF32 converts one float8_e5m2 value to float32 exactly: e5m2 is
// the top byte of an IEEE float16.
func FP8E5M2ToF32(b byte) float32 { return F16ToF32(uint16(b) << 8) }

// DecodeFP8E4M3 converts float8_e4m3fn src into dst (no scaling); the
// slices must have equal lengths.
func DecodeFP8E4M3(dst []float32, src []byte) error {
	if err := checkLen("DecodeFP8E4M3", len(src), 1, len(dst)); err != nil {
		return err
	}
	dst = dst[:len(src)]
	for i, b := range src {
		dst[i] = e4m3Table[b]
	}
	return nil
}

// DecodeFP8E5M2 converts float8_e5m2 src into dst (no scaling); the slices
// must have equal lengths.
func DecodeFP8E5M2(dst []float32, src []byte) error {
	if err := checkLen("DecodeFP8E5M2", len(src), 1, len(dst)); err != nil {
		return err
	}
	for i, b := range src {
		dst[i] = FP8E5M2ToF32(b)
	}
	return nil
}

// DequantFP8Blocks dequantises a row-major rows×cols float8_e4m3fn matrix
// w with block scales, as DeepSeek-V3 checkpoints store them: element (r, c)
// is fp8(w[r,c]) × scaleInv[r/blockR, c/blockC] (the hub calls the tensor
// weight_scale_inv, but it is multiplied, not divided). scaleInv is
// row-major sRows×sCols and must be exactly ceil(rows/blockR) ×
// ceil(cols/blockC): the last block row and column may be partial.
func DequantFP8Blocks(w []byte, rows, cols int, scaleInv []float32, sRows, sCols, blockR, blockC int) ([]float32, error) {
	if err := checkFP8Blocks(len(w), rows, cols, len(scaleInv), sRows, sCols, blockR, blockC); err != nil {
		return nil, err
	}
	out := make([]float32, rows*cols)
	dequantFP8Blocks(out, w, rows, cols, scaleInv, sCols, blockR, blockC)
	return out, nil
}

// DequantFP8BlocksInto is DequantFP8Blocks writing into dst, which must
// hold rows×cols elements.
func DequantFP8BlocksInto(dst []float32, w []byte, rows, cols int, scaleInv []float32, sRows, sCols, blockR, blockC int) error {
	if err := checkFP8Blocks(len(w), rows, cols, len(scaleInv), sRows, sCols, blockR, blockC); err != nil {
		return err
	}
	if len(dst) != rows*cols {
		return fmt.Errorf("quant: DequantFP8Blocks: destination holds %d elements, want %d×%d", len(dst), rows, cols)
	}
	dequantFP8Blocks(dst, w, rows, cols, scaleInv, sCols, blockR, blockC)
	return nil
}

// DequantFP8BlocksToBF16 is DequantFP8Blocks writing little-endian bfloat16
// into dst (2·rows·cols bytes), for backends that keep weights in bf16: the
// product of an fp8 value and its scale is rounded once, to nearest even.
func DequantFP8BlocksToBF16(dst []byte, w []byte, rows, cols int, scaleInv []float32, sRows, sCols, blockR, blockC int) error {
	if err := checkFP8Blocks(len(w), rows, cols, len(scaleInv), sRows, sCols, blockR, blockC); err != nil {
		return err
	}
	if len(dst) != 2*rows*cols {
		return fmt.Errorf("quant: DequantFP8BlocksToBF16: destination holds %d bytes, want 2×%d×%d", len(dst), rows, cols)
	}
	for r := range rows {
		srow := scaleInv[(r/blockR)*sCols:]
		wrow := w[r*cols : (r+1)*cols]
		drow := dst[2*r*cols : 2*(r+1)*cols]
		for c0 := 0; c0 < cols; c0 += blockC {
			s := srow[c0/blockC]
			c1 := min(c0+blockC, cols)
			for c := c0; c < c1; c++ {
				h := F32ToBF16(e4m3Table[wrow[c]] * s)
				drow[2*c] = byte(h)
				drow[2*c+1] = byte(h >> 8)
			}
		}
	}
	return nil
}

func dequantFP8Blocks(out []float32, w []byte, rows, cols int, scaleInv []float32, sCols, blockR, blockC int) {
	for r := range rows {
		srow := scaleInv[(r/blockR)*sCols:]
		wrow := w[r*cols : (r+1)*cols]
		orow := out[r*cols : (r+1)*cols]
		for c0 := 0; c0 < cols; c0 += blockC {
			s := srow[c0/blockC]
			c1 := min(c0+blockC, cols)
			wb, ob := wrow[c0:c1], orow[c0:c1]
			ob = ob[:len(wb)]
			for i, b := range wb {
				ob[i] = e4m3Table[b] * s
			}
		}
	}
}

// checkFP8Blocks validates every size DequantFP8Blocks relies on, so that
// bad shapes from a checkpoint give an error instead of an index panic.
func checkFP8Blocks(nw, rows, cols, nScale, sRows, sCols, blockR, blockC int) error {
	const op = "quant: DequantFP8Blocks"
	if rows < 0 || cols < 0 {
		return fmt.Errorf("%s: negative shape %d×%d", op, rows, cols)
	}
	if blockR <= 0 || blockC <= 0 {
		return fmt.Errorf("%s: block size %d×%d must be positive", op, blockR, blockC)
	}
	if cols != 0 && rows > math.MaxInt/cols {
		return fmt.Errorf("%s: shape %d×%d overflows", op, rows, cols)
	}
	if nw != rows*cols {
		return fmt.Errorf("%s: weight holds %d bytes, want %d×%d", op, nw, rows, cols)
	}
	wantR, wantC := ceilDiv(rows, blockR), ceilDiv(cols, blockC)
	if sRows != wantR || sCols != wantC {
		return fmt.Errorf("%s: scale_inv shape %d×%d, want %d×%d for a %d×%d weight in %d×%d blocks",
			op, sRows, sCols, wantR, wantC, rows, cols, blockR, blockC)
	}
	if nScale != sRows*sCols {
		return fmt.Errorf("%s: scale_inv holds %d values, want %d×%d", op, nScale, sRows, sCols)
	}
	return nil
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }
