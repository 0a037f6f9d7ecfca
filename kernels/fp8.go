package kernels

import (
	"errors"
	"fmt"
	"math"
)

// DTypeSupporter is the optional capability of a backend that holds some
// storage dtypes beyond F32, F16, BF16 and Int8 (which every backend takes).
// Model code passes an FP8 HostMatrix to UploadMatrix only when
// SupportsDType reports the backend takes it, and dequantises otherwise.
type DTypeSupporter interface {
	SupportsDType(DType) bool
}

// Supports reports whether be takes weights of dtype d in UploadMatrix: the
// four base dtypes always, others when be implements DTypeSupporter and
// says so.
func Supports(be Backend, d DType) bool {
	switch d {
	case F32, F16, BF16, Int8:
		return true
	}
	s, ok := be.(DTypeSupporter)
	return ok && s.SupportsDType(d)
}

// ScaleCols is the number of block columns of an FP8 matrix's Scales.
func (h *HostMatrix) ScaleCols() int {
	if h.BlockCols <= 0 {
		return 0
	}
	return (h.Cols + h.BlockCols - 1) / h.BlockCols
}

// scaleRows is the number of block rows of an FP8 matrix's Scales.
func (h *HostMatrix) scaleRows() int {
	return (h.ScaleRow0 + h.Rows + h.BlockRows - 1) / h.BlockRows
}

// checkFP8Scales validates the block shape and scale count of an FP8 part.
func (h *HostMatrix) checkFP8Scales() error {
	switch {
	case h.BlockRows <= 0 || h.BlockCols <= 0:
		return fmt.Errorf("fp8 block shape %d×%d must be positive", h.BlockRows, h.BlockCols)
	case h.ScaleRow0 < 0 || h.ScaleRow0 >= h.BlockRows:
		return fmt.Errorf("fp8 first row offset %d outside a block of %d rows", h.ScaleRow0, h.BlockRows)
	case h.Rows > math.MaxInt/2-h.BlockRows:
		return errors.New("fp8 shape overflows")
	}
	want := h.scaleRows() * h.ScaleCols()
	if len(h.Scales) != want {
		return fmt.Errorf("%d fp8 block scales, want %d×%d for %d×%d in %d×%d blocks (row offset %d)",
			len(h.Scales), h.scaleRows(), h.ScaleCols(), h.Rows, h.Cols, h.BlockRows, h.BlockCols, h.ScaleRow0)
	}
	return nil
}

// BlockScales returns the scales of row r of an FP8 matrix: one per block
// of BlockCols columns (the caller checked the matrix with CheckParts).
func (h *HostMatrix) BlockScales(r int) []float32 {
	sc := h.ScaleCols()
	i := (h.ScaleRow0 + r) / h.BlockRows * sc
	return h.Scales[i : i+sc]
}

// SliceRows returns rows [r0, r1) of h without copying, named name: data
// of any dtype, and for Int8 and FP8 the scales those rows use.
func (h HostMatrix) SliceRows(r0, r1 int, name string) HostMatrix {
	es := h.DType.Size()
	out := h
	out.Name, out.Rows = name, r1-r0
	out.Data = h.Data[r0*h.Cols*es : r1*h.Cols*es]
	switch h.DType {
	case Int8:
		out.Scales = h.Scales[r0:r1]
	case FP8:
		sc := h.ScaleCols()
		first, last := (h.ScaleRow0+r0)/h.BlockRows, (h.ScaleRow0+r1-1)/h.BlockRows
		if r1 <= r0 {
			last = first - 1
		}
		out.ScaleRow0 = (h.ScaleRow0 + r0) % h.BlockRows
		out.Scales = h.Scales[first*sc : (last+1)*sc]
	}
	return out
}

// SliceCols returns columns [c0, c1) of h in new data, named name: any
// dtype, Int8 keeping its row scales, FP8 the block columns of those
// columns, which must start a block (c0 a multiple of BlockCols, c1 too or
// the last column). The whole matrix is h itself, renamed.
func (h HostMatrix) SliceCols(c0, c1 int, name string) (HostMatrix, error) {
	if c0 < 0 || c1 > h.Cols || c0 >= c1 {
		return HostMatrix{}, fmt.Errorf("%s: columns [%d, %d) of %d", h.Name, c0, c1, h.Cols)
	}
	out := h
	out.Name, out.Cols = name, c1-c0
	if c0 == 0 && c1 == h.Cols {
		return out, nil
	}
	if h.DType == FP8 && (h.BlockCols <= 0 || c0%h.BlockCols != 0 || (c1%h.BlockCols != 0 && c1 != h.Cols)) {
		return HostMatrix{}, fmt.Errorf("%s: fp8 columns [%d, %d) do not start and end on blocks of %d columns", h.Name, c0, c1, h.BlockCols)
	}
	es, w := h.DType.Size(), c1-c0
	out.Data = make([]byte, h.Rows*w*es)
	for r := range h.Rows {
		copy(out.Data[r*w*es:(r+1)*w*es], h.Data[(r*h.Cols+c0)*es:(r*h.Cols+c1)*es])
	}
	if h.DType == FP8 {
		sc, b0, b1 := h.ScaleCols(), c0/h.BlockCols, (c1+h.BlockCols-1)/h.BlockCols
		out.Scales = make([]float32, 0, h.scaleRows()*(b1-b0))
		for r := range h.scaleRows() {
			out.Scales = append(out.Scales, h.Scales[r*sc+b0:r*sc+b1]...)
		}
	}
	return out, nil
}
