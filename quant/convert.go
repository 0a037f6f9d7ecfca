package quant

import (
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"

	"github.com/x448/float16"
)

// BF16ToF32 widens a bfloat16 (the top 16 bits of a float32) exactly.
func BF16ToF32(h uint16) float32 {
	return math.Float32frombits(uint32(h) << 16)
}

// F32ToBF16 narrows f to bfloat16 with round-to-nearest-even, as PyTorch
// does. NaN stays NaN (quietened) so the rounding carry cannot turn it into
// infinity.
func F32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 { // NaN
		return uint16(b>>16) | 0x0040
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// F16ToF32 widens an IEEE 754 binary16 exactly (subnormals, ±Inf and NaN
// payloads included).
func F16ToF32(h uint16) float32 {
	// Move exponent and mantissa into float32 position and rebias; subnormal
	// halves are renormalised by one float subtraction instead of a loop.
	const magic = 113 << 23 // float32 bits of 2^-14
	o := uint32(h&0x7fff) << 13
	exp := o & (0x7c00 << 13)
	o += (127 - 15) << 23
	switch exp {
	case 0x7c00 << 13: // Inf/NaN: exponent all ones
		o += (128 - 16) << 23
	case 0: // zero/subnormal
		o += 1 << 23
		o = math.Float32bits(math.Float32frombits(o) - math.Float32frombits(magic))
	}
	return math.Float32frombits(o | uint32(h&0x8000)<<16)
}

// F32ToF16 narrows f to IEEE binary16 with round-to-nearest-even; values
// beyond the float16 range become ±Inf.
func F32ToF16(f float32) uint16 {
	return float16.Fromfloat32(f).Bits()
}

// checkLen reports a mismatch between a byte slice and an element slice.
func checkLen(op string, nBytes, elemSize, nElems int) error {
	if nBytes != elemSize*nElems {
		return fmt.Errorf("quant: %s: %d bytes for %d elements of %d bytes", op, nBytes, nElems, elemSize)
	}
	return nil
}

// DecodeBF16 converts little-endian bfloat16 src into dst; len(src) must be
// 2·len(dst).
func DecodeBF16(dst []float32, src []byte) error {
	if err := checkLen("DecodeBF16", len(src), 2, len(dst)); err != nil {
		return err
	}
	i := 0
	if nativeLittleEndian && len(dst) >= 2 &&
		uintptr(unsafe.Pointer(&src[0]))%4 == 0 && uintptr(unsafe.Pointer(&dst[0]))%8 == 0 {
		// Two values per step: one 4-byte load and one 8-byte store, about
		// 2.5× the byte loop. Only with aligned slices (checkptr insists).
		n := len(dst) / 2
		in := unsafe.Slice((*uint32)(unsafe.Pointer(&src[0])), n)
		out := unsafe.Slice((*uint64)(unsafe.Pointer(&dst[0])), n)
		out = out[:len(in)]
		for j, v := range in {
			out[j] = uint64(v&0xffff)<<16 | uint64(v>>16)<<48
		}
		i = 2 * n
	}
	src = src[:2*len(dst)]
	for ; i < len(dst); i++ {
		// Byte loads written out so the compiler drops bounds checks.
		dst[i] = math.Float32frombits(uint32(src[2*i])<<16 | uint32(src[2*i+1])<<24)
	}
	return nil
}

// nativeLittleEndian gates the reinterpreting fast paths.
var nativeLittleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// DecodeF16 converts little-endian float16 src into dst; len(src) must be
// 2·len(dst).
func DecodeF16(dst []float32, src []byte) error {
	if err := checkLen("DecodeF16", len(src), 2, len(dst)); err != nil {
		return err
	}
	src = src[:2*len(dst)]
	for i := range dst {
		dst[i] = F16ToF32(uint16(src[2*i]) | uint16(src[2*i+1])<<8)
	}
	return nil
}

// DecodeF32 copies little-endian float32 src into dst; len(src) must be
// 4·len(dst).
func DecodeF32(dst []float32, src []byte) error {
	if err := checkLen("DecodeF32", len(src), 4, len(dst)); err != nil {
		return err
	}
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
	return nil
}

// DecodeF64 narrows little-endian float64 src into dst; len(src) must be
// 8·len(dst).
func DecodeF64(dst []float32, src []byte) error {
	if err := checkLen("DecodeF64", len(src), 8, len(dst)); err != nil {
		return err
	}
	for i := range dst {
		dst[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(src[8*i:])))
	}
	return nil
}

// EncodeBF16 writes src as little-endian bfloat16 (round-to-nearest-even)
// into dst; len(dst) must be 2·len(src).
func EncodeBF16(dst []byte, src []float32) error {
	if err := checkLen("EncodeBF16", len(dst), 2, len(src)); err != nil {
		return err
	}
	for i, f := range src {
		binary.LittleEndian.PutUint16(dst[2*i:], F32ToBF16(f))
	}
	return nil
}

// EncodeF16 writes src as little-endian float16 (round-to-nearest-even)
// into dst; len(dst) must be 2·len(src).
func EncodeF16(dst []byte, src []float32) error {
	if err := checkLen("EncodeF16", len(dst), 2, len(src)); err != nil {
		return err
	}
	for i, f := range src {
		binary.LittleEndian.PutUint16(dst[2*i:], F32ToF16(f))
	}
	return nil
}
