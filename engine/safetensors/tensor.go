package safetensors

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"unsafe"

	"github.com/deepseek-go/deepseek-go/quant"
)

// Tensor is a view of one tensor of a checkpoint. Data is the tensor's
// little-endian bytes in place: it usually aliases a read-only memory map,
// must not be modified, and is valid only until the Checkpoint is closed.
type Tensor struct {
	Name  string
	DType DType
	Shape []int
	Data  []byte
	File  string // the file holding the tensor, for error messages
}

// errorf returns an error naming the file and the tensor.
func (t *Tensor) errorf(format string, a ...any) error {
	return fmt.Errorf("%s: tensor %q: %s", t.File, t.Name, fmt.Sprintf(format, a...))
}

// NumElements returns the product of the dimensions (1 for a scalar).
func (t *Tensor) NumElements() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// ExpectShape returns an error naming the file and tensor unless the shape
// is exactly dims.
func (t *Tensor) ExpectShape(dims ...int) error {
	if !slices.Equal(t.Shape, dims) {
		return t.errorf("shape %v, want %v", t.Shape, dims)
	}
	return nil
}

// ExpectDType returns an error naming the file and tensor unless the dtype
// is one of dts.
func (t *Tensor) ExpectDType(dts ...DType) error {
	if !slices.Contains(dts, t.DType) {
		return t.errorf("dtype %s, want one of %v", t.DType, dts)
	}
	return nil
}

// Float32 returns the tensor converted to a new float32 slice, which the
// caller may modify. Every float dtype converts (F32, F64, F16, BF16,
// F8_E4M3 and F8_E5M2; fp8 without any block scale applied).
func (t *Tensor) Float32() ([]float32, error) {
	if !t.DType.IsFloat() {
		return nil, t.errorf("dtype %s is not a float type", t.DType)
	}
	out := make([]float32, t.NumElements())
	var err error
	switch t.DType {
	case F32:
		err = quant.DecodeF32(out, t.Data)
	case F64:
		err = quant.DecodeF64(out, t.Data)
	case F16:
		err = quant.DecodeF16(out, t.Data)
	case BF16:
		err = quant.DecodeBF16(out, t.Data)
	case F8E4M3:
		err = quant.DecodeFP8E4M3(out, t.Data)
	case F8E5M2:
		err = quant.DecodeFP8E5M2(out, t.Data)
	}
	if err != nil { // only for a hand-built Tensor whose Data does not match its shape
		return nil, t.errorf("%v", err)
	}
	return out, nil
}

// Float32View returns an F32 tensor's data without copying when the bytes
// are 4-byte aligned on a little-endian host (the common case for files
// written by safetensors, which pads the header to 8 bytes). The result
// aliases Data: it is read-only (writing to a memory-mapped file faults) and
// valid until Close. Other dtypes and unaligned data are converted into a
// new slice as by Float32.
func (t *Tensor) Float32View() ([]float32, error) {
	if t.DType == F32 && nativeLittleEndian && len(t.Data) == 4*t.NumElements() {
		if len(t.Data) == 0 {
			return []float32{}, nil
		}
		p := unsafe.Pointer(unsafe.SliceData(t.Data))
		if uintptr(p)%unsafe.Alignof(float32(0)) == 0 {
			return unsafe.Slice((*float32)(p), len(t.Data)/4), nil
		}
	}
	return t.Float32()
}

var nativeLittleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// Int64s returns an integer or BOOL tensor widened to int64 in a new slice.
// U64 values above math.MaxInt64 are an error.
func (t *Tensor) Int64s() ([]int64, error) {
	n := t.NumElements()
	if t.DType.IsFloat() || len(t.Data) != n*t.DType.Size() {
		return nil, t.errorf("dtype %s with %d bytes cannot be read as %d integers", t.DType, len(t.Data), n)
	}
	out := make([]int64, n)
	for i := range out {
		v, ok := t.intAt(i)
		if !ok {
			return nil, t.errorf("element %d does not fit int64", i)
		}
		out[i] = v
	}
	return out, nil
}

// Int32s returns an integer or BOOL tensor converted to int32 in a new
// slice; a value outside the int32 range is an error naming its index.
func (t *Tensor) Int32s() ([]int32, error) {
	n := t.NumElements()
	if t.DType.IsFloat() || len(t.Data) != n*t.DType.Size() {
		return nil, t.errorf("dtype %s with %d bytes cannot be read as %d integers", t.DType, len(t.Data), n)
	}
	out := make([]int32, n)
	for i := range out {
		v, ok := t.intAt(i)
		if !ok || v < math.MinInt32 || v > math.MaxInt32 {
			return nil, t.errorf("element %d does not fit int32", i)
		}
		out[i] = int32(v)
	}
	return out, nil
}

// intAt reads integer element i; ok is false for a U64 beyond int64.
func (t *Tensor) intAt(i int) (int64, bool) {
	le := binary.LittleEndian
	d := t.Data
	switch t.DType {
	case BOOL, U8:
		return int64(d[i]), true
	case I8:
		return int64(int8(d[i])), true
	case I16:
		return int64(int16(le.Uint16(d[2*i:]))), true
	case U16:
		return int64(le.Uint16(d[2*i:])), true
	case I32:
		return int64(int32(le.Uint32(d[4*i:]))), true
	case U32:
		return int64(le.Uint32(d[4*i:])), true
	case I64:
		return int64(le.Uint64(d[8*i:])), true
	case U64:
		v := le.Uint64(d[8*i:])
		return int64(v), v <= math.MaxInt64
	}
	return 0, false
}
