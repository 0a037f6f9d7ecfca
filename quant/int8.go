package quant

import (
	"fmt"
	"math"
	"unsafe"
)

// Int8 path: weights are quantised once at load, symmetric per output row
// (w ≈ q·scale, q in [-127, 127]); activations are quantised per token at
// run time the same way and stored offset by +128 as unsigned bytes, the
// operand order of VPDPBUSD (u8 × s8). The offset is removed exactly with
// the row sums of q: Σ(xq+128)·q = Σ xq·q + 128·Σq.

// QuantizeRow quantises src into dst (same length) and returns the scale
// (max|src|/127, 0 for an all-zero row) and Σ dst, which MatMul needs.
func QuantizeRow(dst []int8, src []float32) (scale float32, sum int32, err error) {
	if len(dst) != len(src) {
		return 0, 0, fmt.Errorf("quant: QuantizeRow: %d outputs for %d inputs", len(dst), len(src))
	}
	// Integer compares on the bits: the float min/max builtins' NaN
	// handling made this loop most of an int8 model's load time.
	var mxBits uint32
	for _, v := range src {
		mxBits = max(mxBits, math.Float32bits(v)&0x7fffffff)
	}
	if mxBits >= 0x7f800000 {
		return 0, 0, fmt.Errorf("quant: QuantizeRow: non-finite value (max |v| = %v)", math.Float32frombits(mxBits))
	}
	if mxBits == 0 {
		clear(dst)
		return 0, 0, nil
	}
	mx := math.Float32frombits(mxBits)
	scale = mx / 127
	inv := 1 / scale
	for i, v := range src {
		q := int32(math.RoundToEven(float64(v * inv)))
		if q > 127 {
			q = 127
		} else if q < -127 {
			q = -127
		}
		dst[i] = int8(q)
		sum += q
	}
	return scale, sum, nil
}

// QuantizeActs quantises one token's activations to offset bytes
// (q+128, q = round(x/s)) and returns s = max|x|/127 (0 for a zero row,
// whose bytes are all 128). dst must be at least as long as src.
func QuantizeActs(dst []uint8, src []float32) float32 {
	dst = dst[:len(src)]
	var mx float32
	for _, v := range src {
		mx = max(mx, float32(math.Abs(float64(v))))
	}
	if !(mx > 0) || math.IsInf(float64(mx), 0) {
		// NaN/Inf activations have no int8 form; fill with zeros (128) and
		// let the NaN scale propagate so the output shows the problem.
		for i := range dst {
			dst[i] = 128
		}
		if mx == 0 {
			return 0
		}
		return float32(math.NaN())
	}
	quantActsGo(dst, src, 127/mx)
	return mx / 127
}

// quantActsGo writes round(v·inv)+128 (nearest even, as VCVTPS2DQ does).
func quantActsGo(dst []uint8, src []float32, inv float32) {
	for i, v := range src {
		dst[i] = uint8(int32(math.RoundToEven(float64(v*inv))) + 128)
	}
}

// QuantizeActs is the package-level QuantizeActs run with this path's
// vector code where it has one (the results are identical).
func (k *Int8Kernels) QuantizeActs(dst []uint8, src []float32) float32 {
	if !k.fastActs() || len(src) < 64 {
		return QuantizeActs(dst, src)
	}
	dst = dst[:len(src)]
	n := len(src)
	main := n &^ 15
	mx := k.maxAbs(src[:main])
	for _, v := range src[main:] {
		mx = max(mx, float32(math.Abs(float64(v))))
	}
	if !(mx > 0) || math.IsInf(float64(mx), 0) {
		return QuantizeActs(dst, src) // zero, NaN or Inf: the careful path
	}
	inv := 127 / mx
	k.quantActs(dst[:main], src[:main], inv)
	quantActsGo(dst[main:], src[main:], inv)
	return mx / 127
}

// Int8Kernels is one implementation path of the int8 matrix product.
type Int8Kernels struct {
	// Name identifies the path: "avx512vnni", "avxvnni", "avx2" or "generic".
	Name  string
	kind  int8kind
	vl    int // bytes per vector step; Go handles cols % vl
	tileT int // tokens per tile kernel (0: none)
}

type int8kind uint8

const (
	kindGeneric int8kind = iota
	kindVNNI512
	kindAVXVNNI
	kindAVX2
)

// Int8Generic is the pure-Go path: the fallback and the oracle.
var Int8Generic = &Int8Kernels{Name: "generic", kind: kindGeneric, vl: 1}

// Int8Best is the fastest path this CPU supports, chosen once at init.
var Int8Best = Int8Supported()[0]

// String returns the path name.
func (k *Int8Kernels) String() string { return k.Name }

// dot4Generic: out[r] = Σ x[i]·w[r*ldw+i] for r < 4.
func dot4Generic(x *uint8, w *int8, ldw, n int, out *int32) {
	o := unsafe.Slice(out, 4)
	if n == 0 {
		clear(o)
		return
	}
	xs := unsafe.Slice(x, n)
	for r := range o {
		ws := unsafe.Slice((*int8)(unsafe.Add(unsafe.Pointer(w), r*ldw)), n)
		var s int32
		for i, v := range ws {
			s += int32(xs[i]) * int32(v)
		}
		o[r] = s
	}
}

func dot1Generic(x []uint8, w []int8) int32 {
	var s int32
	for i, v := range w {
		s += int32(x[i]) * int32(v)
	}
	return s
}

// MatMul computes rows r0..r1 of x·wᵀ for n tokens from quantised operands:
//
//	y[t*ldy + r-r0] = (Σ_i xq[t*ldx+i]·w[r*cols+i] − 128·rowSum[r]) · xScale[t] · wScale[r]
//
// xq holds QuantizeActs output (ldx bytes per token), w/wScale/rowSum the
// QuantizeRow output. Σ fits int32 for cols < 66000.
func (k *Int8Kernels) MatMul(y []float32, ldy int, xq []uint8, ldx int, xScale []float32, n int,
	w []int8, wScale []float32, rowSum []int32, cols, r0, r1 int) {
	if n == 0 || r0 >= r1 {
		return
	}
	if r0 < 0 || cols <= 0 || len(w) < r1*cols || len(wScale) < r1 || len(rowSum) < r1 ||
		len(xq) < (n-1)*ldx+cols || len(xScale) < n || len(y) < (n-1)*ldy+(r1-r0) || ldx < cols || ldy < r1-r0 {
		panic(fmt.Sprintf("quant: int8 MatMul shapes out of range: len(y)=%d ldy=%d len(xq)=%d ldx=%d n=%d len(w)=%d cols=%d rows=[%d,%d)",
			len(y), ldy, len(xq), ldx, n, len(w), cols, r0, r1))
	}
	main := cols - cols%k.vl
	if n == 1 && r1-r0 >= 4 && k.kind != kindGeneric {
		// Decode: one kernel call over all 4-row blocks (4 sequential
		// streams), raw int32 sums staged in y's own memory, then
		// column tails and rescaling in place.
		blocks := (r1 - r0) &^ 3
		raw := unsafe.Slice((*int32)(unsafe.Pointer(&y[0])), blocks)
		if k.gemvq(&xq[0], &w[r0*cols], cols, main, blocks, &raw[0]) {
			for i := range blocks {
				r := r0 + i
				s := raw[i]
				if main < cols {
					s += dot1Generic(xq[main:cols], w[r*cols+main:(r+1)*cols])
				}
				y[i] = float32(s-128*rowSum[r]) * xScale[0] * wScale[r]
			}
			r0 += blocks
			y = y[blocks:]
			if r0 == r1 {
				return
			}
		}
	}
	var acc [16]int32 // [token][row] of one tile
	r := r0
	for ; r+4 <= r1; r += 4 {
		wr := &w[r*cols]
		t := 0
		if k.tileT > 0 {
			for ; t+k.tileT <= n; t += k.tileT {
				k.tile(&xq[t*ldx], ldx, wr, cols, main, &acc[0])
				for tt := 0; tt < k.tileT; tt++ {
					k.finish(y[(t+tt)*ldy+r-r0:], acc[4*tt:4*tt+4], xq[(t+tt)*ldx:], xScale[t+tt], w, wScale, rowSum, cols, main, r)
				}
			}
		}
		for ; t < n; t++ {
			k.dot4(&xq[t*ldx], wr, cols, main, &acc[0])
			k.finish(y[t*ldy+r-r0:], acc[:4], xq[t*ldx:], xScale[t], w, wScale, rowSum, cols, main, r)
		}
	}
	for ; r < r1; r++ {
		for t := 0; t < n; t++ {
			s := dot1Generic(xq[t*ldx:t*ldx+cols], w[r*cols:(r+1)*cols])
			y[t*ldy+r-r0] = float32(s-128*rowSum[r]) * xScale[t] * wScale[r]
		}
	}
}

// finish adds the column tail to 4 row sums and rescales them into y[0:4].
func (k *Int8Kernels) finish(y []float32, acc []int32, x []uint8, xs float32, w []int8, ws []float32, rowSum []int32, cols, main, r int) {
	for j := 0; j < 4; j++ {
		s := acc[j]
		if main < cols {
			s += dot1Generic(x[main:cols], w[(r+j)*cols+main:(r+j+1)*cols])
		}
		y[j] = float32(s-128*rowSum[r+j]) * xs * ws[r+j]
	}
}
