//go:build linux && cgo

package cuda

import (
	"fmt"
	"math"
	"math/bits"
	"unsafe"

	"github.com/deepseek-go/deepseek-go/kernels"
	"github.com/deepseek-go/deepseek-go/quant"
)

// fp8 weights (float8_e4m3fn with float32 block scales, as DeepSeek-V3
// stores its linear layers) stay one byte per value on the device, followed
// by the block scales of every fused part (fp8.cuh):
//   - decode (n ≤ 8): gemv_fp8_* widen 16 values per 16-byte load in
//     registers (cvt e4m3x2 → f16x2 → f32) and scale each 16-value partial
//     dot product by its block's scale; float32 throughout, like the CPU.
//   - prefill: with cuBLASLt, slices of rows are dequantised to f16 in a
//     scratch (fp8_to_f16) and multiplied by the f16 GEMM on activations
//     converted to f16 (saturating): f16's mantissa keeps the fp8 fixture
//     at 4–8e-3 where bf16 rounding gave 5e-2 (engine/fp8_study_test.go);
//     without cuBLASLt, gemm_wmma_fp8 dequantises each weight tile to bf16
//     in shared memory.
// Shapes the vector kernels do not take (widths or block widths that are
// not multiples of 16, non-power-of-two block widths) use gemvs_fp8.

var _ kernels.DTypeSupporter = (*Backend)(nil)

// SupportsDType implements kernels.DTypeSupporter: the engine keeps fp8
// weights as fp8 on this backend.
func (b *Backend) SupportsDType(d kernels.DType) bool {
	switch d {
	case kernels.F32, kernels.F16, kernels.BF16, kernels.Int8, kernels.FP8:
		return true
	}
	return false
}

// fp8Layout is the block-scale layout of an FP8 Matrix: one block shape
// for all parts, and per part the offset that maps its rows to rows of the
// concatenated scale grids (fp8.cuh's FP8Scales: part p's row r uses scale
// row (off[p] + r) / br, r counted over the whole stacked matrix).
type fp8Layout struct {
	sc, br, bc int
	off        [4]int32
	scaleBytes int64
}

// fp8LayoutOf checks that checked FP8 parts (kernels.CheckParts) share a
// block shape and returns their layout and concatenated scales.
func fp8LayoutOf(parts []kernels.HostMatrix) (*fp8Layout, []float32, error) {
	f := parts[0]
	l := &fp8Layout{sc: f.ScaleCols(), br: f.BlockRows, bc: f.BlockCols}
	var sc []float32
	start, base := 0, 0
	for i, p := range parts {
		if p.BlockRows != l.br || p.BlockCols != l.bc {
			return nil, nil, fmt.Errorf("cuda: UploadMatrix %s: fp8 blocks %d×%d differ from %d×%d of %s (fused parts must share a block shape)",
				p.Name, p.BlockRows, p.BlockCols, l.br, l.bc, f.Name)
		}
		l.off[i] = int32(base*l.br + p.ScaleRow0 - start)
		sc = append(sc, p.Scales...)
		base += len(p.Scales) / l.sc
		start += p.Rows
	}
	if int64(base)*int64(l.br) > math.MaxInt32 || int64(start)*int64(f.Cols) > math.MaxInt64/2 {
		return nil, nil, fmt.Errorf("cuda: UploadMatrix %s: fp8 matrix of %d rows too large", f.Name, start)
	}
	for i := len(parts); i < 4; i++ {
		l.off[i] = l.off[len(parts)-1] // rows never reach absent parts
	}
	l.scaleBytes = int64(len(sc)) * 4
	return l, sc, nil
}

// fp8Desc is the kernels' FP8Scales argument for m.
func (m *Matrix) fp8Desc() [48]byte { return fp8DescOf(m.scales, m.fp8, m.parts, m.rows) }

// fp8DescOf is an FP8Scales argument (48 bytes: the scale pointer, sc, br,
// bc, the first rows of parts 1..3, the four offsets) for scales laid out
// as l over parts of a matrix of rows rows.
func fp8DescOf(scales devptr, l *fp8Layout, parts []int, rows int) [48]byte {
	var d [48]byte
	*(*uint64)(unsafe.Pointer(&d[0])) = uint64(scales)
	put := func(i int, v int32) { *(*int32)(unsafe.Pointer(&d[8+4*i])) = v }
	put(0, int32(l.sc))
	put(1, int32(l.br))
	put(2, int32(l.bc))
	s := 0
	for i := 1; i <= 3; i++ {
		if i-1 < len(parts) {
			s += parts[i-1]
		}
		put(2+i, int32(min(s, rows)))
	}
	for i, o := range l.off {
		put(6+i, o)
	}
	return d
}

// fp8CShift is the vector kernels' block-column shift for block width bc
// (a 16-value chunk c lies in block column c >> shift), or -1 when bc is
// not 16 times a power of two (scalar kernels).
func fp8CShift(bc int) int {
	if bc%16 != 0 || bits.OnesCount(uint(bc/16)) != 1 {
		return -1
	}
	return bits.TrailingZeros(uint(bc / 16))
}

// fp8Scratch is the f16 slice of dequantised weights the cuBLASLt prefill
// path multiplies (grown as needed, never during capture).
type fp8Scratch struct {
	p   devptr
	cap int64
}

// fp8SliceBytes bounds the f16 scratch: a V3 projection (7168 columns) is
// dequantised 4608 rows at a time, each slice one large cuBLASLt GEMM.
const fp8SliceBytes = 64 << 20

// matmulFP8 is MatMul for an FP8 matrix; parts, ys, starts and bias as
// matmul resolved them.
func (b *Backend) matmulFP8(m *Matrix, xb *Buffer, n int, parts []byte, ys [4]devptr, starts [5]int, bias *Buffer) {
	desc := m.fp8Desc()
	biasp := bp(bias, 0)
	// The vector kernels take 16-value chunks inside one block column.
	vec := m.cols%16 == 0 && m.fp8.bc%16 == 0
	cshift := -1
	if vec {
		cshift = fp8CShift(m.fp8.bc)
	}
	scalar := func() {
		b.launch("gemvs_fp8", dim3{(m.rows + 7) / 8, 1, 1}, dim3{256, 1, 1}, 0, func(a *args) {
			a.ptr(m.p).ptr(xb.p).i32(n).raw(parts, 8).ptr(biasp).i32(m.cols).raw(desc[:], 8)
		})
	}
	if n <= 8 {
		if cshift < 0 {
			scalar()
			return
		}
		nt := 8
		if n == 1 {
			nt = 1
		} else if n <= 4 {
			nt = 4
		}
		const rowsPerWarp = 2
		warps := (m.rows + rowsPerWarp - 1) / rowsPerWarp
		b.launch(fmt.Sprintf("gemv_fp8_%d", nt), dim3{(warps + 7) / 8, 1, 1}, dim3{256, 1, 1}, 0, func(a *args) {
			a.ptr(m.p).ptr(xb.p).i32(n).raw(parts, 8).ptr(biasp).i32(m.cols).raw(desc[:], 8).i32(cshift)
		})
		return
	}
	if b.lt != nil && b.matmulLtFP8(m, desc, xb, n, ys, starts, bias) {
		return
	}
	if !vec {
		scalar()
		return
	}
	x16, ok := b.to16(kernels.BF16, xb, n, m.cols)
	if !ok {
		return
	}
	b.launch("gemm_wmma_fp8", dim3{(m.rows + 63) / 64, (n + 63) / 64, 1}, dim3{128, 1, 1}, 0, func(a *args) {
		a.ptr(m.p).ptr(x16).i32(n).raw(parts, 8).ptr(biasp).i32(m.cols).raw(desc[:], 8)
	})
}

// matmulLtFP8 dequantises slices of each part's rows to f16 and multiplies
// them with cuBLASLt on activations converted to f16 (saturating at
// ±65504, as cvt_f32_f16 does for f16 weights). It reports
// false, having computed nothing, when cuBLASLt cannot plan the first slice.
func (b *Backend) matmulLtFP8(m *Matrix, desc [48]byte, xb *Buffer, n int, ys [4]devptr, starts [5]int, bias *Buffer) bool {
	// Slices of a multiple of 64 rows keep the output offsets 256-byte
	// aligned (cuBLASLt's default alignment assumption); at most 65472
	// rows (the dequant kernel's grid.y).
	slice := min(max(64, fp8SliceBytes/(2*m.cols)&^63), 65472)
	maxPart := 0
	for _, r := range m.parts {
		maxPart = max(maxPart, r)
	}
	slice = min(slice, maxPart)
	need := int64(slice) * int64(m.cols) * 2
	if b.fp8.cap < need {
		if b.capturing {
			b.failf("MatMul: fp8 dequantisation scratch of %d bytes needed during graph capture", need)
			return true
		}
		if b.fp8.p != 0 {
			b.alloc.put(b.fp8.p)
			b.fp8 = fp8Scratch{}
			b.bs.gen++ // graphs that captured the old scratch are stale
		}
		p, err := b.alloc.get(need)
		if err != nil {
			b.fail(fmt.Errorf("cuda: MatMul: fp8 dequantisation scratch: %w", err))
			return true
		}
		b.fp8 = fp8Scratch{p: p, cap: need}
	}
	x16, ok := b.to16(kernels.F16, xb, n, m.cols)
	if !ok {
		return true
	}
	per := 1
	if m.cols%16 == 0 && m.fp8.bc%16 == 0 {
		per = 16
	}
	gx := (m.cols/per + 255) / 256
	for i, r := range m.parts {
		for r0 := 0; r0 < r; r0 += slice {
			rr := min(slice, r-r0)
			row0 := starts[i] + r0
			b.launch("fp8_to_f16", dim3{gx, rr, 1}, dim3{256, 1, 1}, 0, func(a *args) {
				a.ptr(b.fp8.p).ptr(m.p).raw(desc[:], 8).i32(row0).i32(m.cols)
			})
			D := ys[i] + devptr(r0)*4
			if err := b.lt.matmulLd(b.x, ltR16F, b.fp8.p, x16, D, rr, n, m.cols, r); err != nil {
				if i == 0 && r0 == 0 {
					return false // not plannable: the built-in kernels take it
				}
				b.fail(err)
				return true
			}
		}
		b.addPartBias(ys[i], bias, starts[i], n, r)
	}
	return true
}

// dequantFP8Row writes row r of an fp8 host part as float32 (value × its
// block scale), for UploadMatrix's int8 quantisation.
func dequantFP8Row(dst []float32, p *kernels.HostMatrix, r int) {
	sc := p.BlockScales(r)
	for c, q := range p.Data[r*p.Cols : (r+1)*p.Cols] {
		dst[c] = quant.FP8E4M3ToF32(q) * sc[c/p.BlockCols]
	}
}
