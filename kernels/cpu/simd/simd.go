// Package simd holds the vectorised inner loops of the CPU backend: matrix
// products with weights in their stored dtype (f32, bf16, f16) and float32
// accumulation. Each instruction-set path is a Kernels value; Best is chosen
// once at init from cpuid and every path the machine supports is listed by
// Supported, so tests can force each one. The pure-Go Generic path is the
// fallback on other architectures and CPUs.
//
// The amd64 kernels are hand-written Go assembly produced by asm_gen.go
// (a small generator kept next to them): no cgo, so binaries stay static
// and cross-compile, calls cost a plain function call, and the generator
// keeps the AVX-512 and AVX2 variants of each dtype in step.
//
// On CPUs with AMX-BF16 (and Linux granting the tile state), the AMX path
// multiplies 16-bit weights for 8 or more tokens (prefill, batched decode)
// on tiles: activations are packed once per product (PrepareActs) as two
// bf16 halves, so the products keep ≈ 16 bits of each activation and stay
// within the float32 reference's parity bound; f16 weights are split
// exactly into two bf16 halves per 32-row block.
package simd

import (
	"fmt"
	"math"
	"unsafe"

	"github.com/x448/float16"

	"github.com/deepseek-go/deepseek-go/kernels"
)

type (
	dot1Func  func(x *float32, w unsafe.Pointer, n int) float32
	dot4Func  func(x *float32, w unsafe.Pointer, ldw, n int, out *float32)
	tileFunc  func(x *float32, ldx int, w unsafe.Pointer, ldw, n int, out *float32, ldo int)
	gemvFunc  func(x *float32, w unsafe.Pointer, ldw, n, rows int, out *float32)
	widenFunc func(dst *float32, w unsafe.Pointer, n int)
)

// Kernels is one implementation path. The zero value is not usable; use
// Best, Generic or an element of Supported.
type Kernels struct {
	// Name identifies the path: "avx512", "avx2" or "generic".
	Name string
	// vl is the vector length in float32 lanes: kernels process the first
	// cols - cols%vl elements of each row, Go code the rest.
	vl int
	// tileT is the token count of the tile kernels (0 when absent).
	tileT int
	// indexed by kernels.DType (F32, F16, BF16)
	dot1 [3]dot1Func
	dot4 [3]dot4Func
	tile [3]tileFunc
	// gemv is the single-token kernel over many rows in one call (gemvq).
	gemv [3]gemvFunc
	// gemvRows is the row count gemv's rows must be a multiple of.
	gemvRows int
	sum      func(x *float32, n int) float32 // n a multiple of 4·vl
	axpy     func(y *float32, alpha float32, x *float32, n int)
	// swiglu: out = silu(gate)·up (n a multiple of vl).
	swiglu func(out, gate, up *float32, n int)
	// expsub: x[i] = e^(x[i]-m), returns Σ (n a multiple of vl).
	expsub func(x *float32, m float32, n int) float32
	// wsum: dst = Σ_p a[p]·v[p*ldv:] over d columns (d a multiple of 4·vl).
	wsum func(dst, a, v *float32, ldv, n, d int)
	// widen converts 16-bit weights to float32 (n a multiple of vl).
	widen [3]widenFunc
	// amx16 computes rows r..r+amxRows of a 16-bit product from packed
	// activations (nil: no AMX on this path).
	amx16 func(dt kernels.DType, y []float32, ldy int, a *Acts, w []uint16, r int, s *Scratch)
	// amxPack writes one token's activations in the AMX layout (nil: the
	// Go loop, packActsGo).
	amxPack func(hi, lo *uint32, x *float32, n int)
}

// Generic is the pure-Go path: the fallback and the shape every SIMD path
// must reproduce.
var Generic = &Kernels{
	Name:   "generic",
	vl:     1,
	dot1:   [3]dot1Func{kernels.F32: dot1F32Go, kernels.F16: dot1F16Go, kernels.BF16: dot1BF16Go},
	dot4:   [3]dot4Func{kernels.F32: dot4Go(dot1F32Go, 4), kernels.F16: dot4Go(dot1F16Go, 2), kernels.BF16: dot4Go(dot1BF16Go, 2)},
	sum:    sumGo,
	axpy:   axpyGo,
	swiglu: swigluGo,
	expsub: expsubGo,
	wsum:   wsumGo,
}

func wsumGo(dst, a, v *float32, ldv, n, d int) {
	if d == 0 {
		return
	}
	ds := unsafe.Slice(dst, d)
	clear(ds)
	if n == 0 {
		return
	}
	as := unsafe.Slice(a, n)
	vs := unsafe.Slice(v, (n-1)*ldv+d)
	for p, w := range as {
		for c, x := range vs[p*ldv : p*ldv+d] {
			ds[c] += w * x
		}
	}
}

func expsubGo(x *float32, m float32, n int) float32 {
	if n == 0 {
		return 0
	}
	var sum float32
	xs := unsafe.Slice(x, n)
	for i, v := range xs {
		e := float32(math.Exp(float64(v - m)))
		xs[i] = e
		sum += e
	}
	return sum
}

func swigluGo(out, gate, up *float32, n int) {
	if n == 0 {
		return
	}
	o, g, u := unsafe.Slice(out, n), unsafe.Slice(gate, n), unsafe.Slice(up, n)
	for i, x := range g {
		o[i] = x / (1 + float32(math.Exp(float64(-x)))) * u[i]
	}
}

func axpyGo(y *float32, alpha float32, x *float32, n int) {
	if n == 0 {
		return
	}
	ys, xs := unsafe.Slice(y, n), unsafe.Slice(x, n)
	for i, v := range xs {
		ys[i] += alpha * v
	}
}

func sumGo(x *float32, n int) float32 {
	if n == 0 {
		return 0
	}
	var s0, s1, s2, s3 float32
	xs := unsafe.Slice(x, n)
	i := 0
	for ; i+4 <= n; i += 4 {
		s0 += xs[i]
		s1 += xs[i+1]
		s2 += xs[i+2]
		s3 += xs[i+3]
	}
	for ; i < n; i++ {
		s0 += xs[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// Best is the fastest path this CPU supports, chosen once at init.
var Best = Supported()[0]

// String returns the path name.
func (k *Kernels) String() string { return k.Name }

func dot1F32Go(x *float32, w unsafe.Pointer, n int) float32 {
	if n == 0 {
		return 0
	}
	xs, ws := unsafe.Slice(x, n), unsafe.Slice((*float32)(w), n)
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= n; i += 4 {
		s0 += xs[i] * ws[i]
		s1 += xs[i+1] * ws[i+1]
		s2 += xs[i+2] * ws[i+2]
		s3 += xs[i+3] * ws[i+3]
	}
	for ; i < n; i++ {
		s0 += xs[i] * ws[i]
	}
	return (s0 + s1) + (s2 + s3)
}

func dot1BF16Go(x *float32, w unsafe.Pointer, n int) float32 {
	if n == 0 {
		return 0
	}
	xs, ws := unsafe.Slice(x, n), unsafe.Slice((*uint16)(w), n)
	var s0, s1 float32
	i := 0
	for ; i+2 <= n; i += 2 {
		s0 += xs[i] * BF16ToF32(ws[i])
		s1 += xs[i+1] * BF16ToF32(ws[i+1])
	}
	for ; i < n; i++ {
		s0 += xs[i] * BF16ToF32(ws[i])
	}
	return s0 + s1
}

func dot1F16Go(x *float32, w unsafe.Pointer, n int) float32 {
	if n == 0 {
		return 0
	}
	xs, ws := unsafe.Slice(x, n), unsafe.Slice((*uint16)(w), n)
	var s float32
	for i, h := range ws {
		s += xs[i] * float16.Frombits(h).Float32()
	}
	return s
}

// dot4Go builds a 4-row kernel from a 1-row one (esz: bytes per element).
func dot4Go(d dot1Func, esz int) dot4Func {
	return func(x *float32, w unsafe.Pointer, ldw, n int, out *float32) {
		o := unsafe.Slice(out, 4)
		for r := range o {
			o[r] = d(x, unsafe.Add(w, r*ldw*esz), n)
		}
	}
}

// BF16ToF32 widens a bfloat16 bit pattern.
func BF16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// MatMulF32 computes y[t*ldy + r-r0] = Σ_i x[t*ldx+i]·w[r*cols+i] for
// t < n and r0 <= r < r1: rows r0..r1 of x·wᵀ for n tokens. Each weight row
// is read once for a tile of tokens.
func (k *Kernels) MatMulF32(y []float32, ldy int, x []float32, ldx, n int, w []float32, cols, r0, r1 int) {
	if n == 0 || r0 >= r1 {
		return
	}
	check(len(y), ldy, len(x), ldx, n, len(w), cols, r0, r1)
	k.matmul(kernels.F32, y, ldy, x, ldx, n, unsafe.Pointer(unsafe.SliceData(w)), cols, cols, r0, r1)
}

// MatMulF32Strided is MatMulF32 with weight rows ldw floats apart (rows of
// one head in a KV cache): y[t*ldy + r-r0] = Σ_i x[t*ldx+i]·w[r*ldw+i].
func (k *Kernels) MatMulF32Strided(y []float32, ldy int, x []float32, ldx, n int, w []float32, ldw, cols, r0, r1 int) {
	if n == 0 || r0 >= r1 {
		return
	}
	if ldw < cols || len(w) < (r1-1)*ldw+cols {
		panic(fmt.Sprintf("simd: MatMulF32Strided: rows [%d,%d) of %d at stride %d need %d floats, have %d", r0, r1, cols, ldw, (r1-1)*ldw+cols, len(w)))
	}
	check(len(y), ldy, len(x), ldx, n, r1*cols, cols, r0, r1)
	k.matmul(kernels.F32, y, ldy, x, ldx, n, unsafe.Pointer(unsafe.SliceData(w)), ldw, cols, r0, r1)
}

// MatMul16 is MatMulF32 for 16-bit weights: dt is kernels.BF16 or kernels.F16.
func (k *Kernels) MatMul16(dt kernels.DType, y []float32, ldy int, x []float32, ldx, n int, w []uint16, cols, r0, r1 int) {
	if dt != kernels.BF16 && dt != kernels.F16 {
		panic(fmt.Sprintf("simd: MatMul16 with dtype %v", dt))
	}
	if n == 0 || r0 >= r1 {
		return
	}
	check(len(y), ldy, len(x), ldx, n, len(w), cols, r0, r1)
	k.matmul(dt, y, ldy, x, ldx, n, unsafe.Pointer(unsafe.SliceData(w)), cols, cols, r0, r1)
}

// check panics (a programming error, like an index out of range) when the
// slices are too short for the requested product.
func check(ny, ldy, nx, ldx, n, nw, cols, r0, r1 int) {
	if r0 < 0 || cols <= 0 || nw < r1*cols || nx < (n-1)*ldx+cols || ny < (n-1)*ldy+(r1-r0) || ldx < cols || ldy < r1-r0 {
		panic(fmt.Sprintf("simd: matmul shapes out of range: len(y)=%d ldy=%d len(x)=%d ldx=%d n=%d len(w)=%d cols=%d rows=[%d,%d)",
			ny, ldy, nx, ldx, n, nw, cols, r0, r1))
	}
}

// widenMin is the token count from which a 16-bit weight block is widened
// to float32 once and multiplied with the f32 tile kernel: the widening
// instructions then cost once per block instead of once per token tile
// (≈ a third of the issue slots of the 16-bit tile loop).
const widenMin = 8

func (k *Kernels) matmul(dt kernels.DType, y []float32, ldy int, x []float32, ldx, n int, w unsafe.Pointer, ldw, cols, r0, r1 int) {
	if dt != kernels.F32 && n >= widenMin && k.widen[dt] != nil && k.tile[kernels.F32] != nil && r1-r0 >= 4 {
		k.matmulWiden(dt, y, ldy, x, ldx, n, w, ldw, cols, r0, r1)
		return
	}
	esz := dt.Size()
	main := cols - cols%k.vl
	if n == 1 && k.gemv[dt] != nil && r1-r0 >= k.gemvRows {
		// Decode: all row blocks in one kernel call, then column tails
		// and leftover rows.
		blocks := (r1 - r0) - (r1-r0)%k.gemvRows
		k.gemv[dt](&x[0], unsafe.Add(w, r0*ldw*esz), ldw, main, blocks, &y[0])
		if main < cols {
			tail := Generic.dot1[dt]
			for r := r0; r < r0+blocks; r++ {
				y[r-r0] += tail(&x[main], unsafe.Add(w, (r*ldw+main)*esz), cols-main)
			}
		}
		r0 += blocks
		if r0 == r1 {
			return
		}
		y = y[blocks:]
	}
	dot1, dot4, tile := k.dot1[dt], k.dot4[dt], k.tile[dt]
	tail := Generic.dot1[dt]
	r := r0
	for ; r+4 <= r1; r += 4 {
		wr := unsafe.Add(w, r*ldw*esz)
		t := 0
		if tile != nil {
			for ; t+k.tileT <= n; t += k.tileT {
				tile(&x[t*ldx], ldx, wr, ldw, main, &y[t*ldy+r-r0], ldy)
			}
		}
		for ; t < n; t++ {
			dot4(&x[t*ldx], wr, ldw, main, &y[t*ldy+r-r0])
		}
		if main < cols {
			for t := 0; t < n; t++ {
				for j := 0; j < 4; j++ {
					y[t*ldy+r+j-r0] += tail(&x[t*ldx+main], unsafe.Add(wr, (j*ldw+main)*esz), cols-main)
				}
			}
		}
	}
	for ; r < r1; r++ {
		wr := unsafe.Add(w, r*ldw*esz)
		for t := 0; t < n; t++ {
			s := dot1(&x[t*ldx], wr, main)
			if main < cols {
				s += tail(&x[t*ldx+main], unsafe.Add(wr, main*esz), cols-main)
			}
			y[t*ldy+r-r0] = s
		}
	}
}

// Dot returns Σ a[i]·b[i] over len(a) elements (b at least as long).
func (k *Kernels) Dot(a, b []float32) float32 {
	n := len(a)
	if n == 0 {
		return 0
	}
	b = b[:n]
	main := n - n%k.vl
	s := k.dot1[kernels.F32](&a[0], unsafe.Pointer(&b[0]), main)
	if main < n {
		s += dot1F32Go(&a[main], unsafe.Pointer(&b[main]), n-main)
	}
	return s
}

// Sum returns Σ a[i]. It streams memory as fast as the path can load, so
// the benchmarks use it to measure read bandwidth.
func (k *Kernels) Sum(a []float32) float32 {
	n := len(a)
	if n == 0 {
		return 0
	}
	main := n - n%(4*k.vl)
	s := k.sum(&a[0], main)
	if main < n {
		s += sumGo(&a[main], n-main)
	}
	return s
}

// matmulWiden is matmul for 16-bit weights and many tokens: each block of 4
// rows is widened into a float32 scratch (allocated per call: prefill only)
// and multiplied as f32; leftover rows take the plain path.
func (k *Kernels) matmulWiden(dt kernels.DType, y []float32, ldy int, x []float32, ldx, n int, w unsafe.Pointer, ldw, cols, r0, r1 int) {
	esz := dt.Size()
	ld := PadStride(cols)
	blk := make([]float32, 4*ld)
	main := cols - cols%k.vl
	r := r0
	for ; r+4 <= r1; r += 4 {
		for j := 0; j < 4; j++ {
			wr := unsafe.Add(w, (r+j)*ldw*esz)
			k.widen[dt](&blk[j*ld], wr, main)
			for i := main; i < cols; i++ {
				blk[j*ld+i] = k.widenOne(dt, wr, i)
			}
		}
		k.matmulF32Strided(y[r-r0:], ldy, x, ldx, n, blk, ld, cols)
	}
	if r < r1 {
		k.matmul(dt, y[r-r0:], ldy, x, ldx, n, unsafe.Add(w, r*ldw*esz), ldw, cols, 0, r1-r)
	}
}

func (k *Kernels) widenOne(dt kernels.DType, w unsafe.Pointer, i int) float32 {
	h := *(*uint16)(unsafe.Add(w, 2*i))
	if dt == kernels.BF16 {
		return BF16ToF32(h)
	}
	return float16.Frombits(h).Float32()
}

// matmulF32Strided multiplies n tokens with 4 float32 rows stored ld apart.
func (k *Kernels) matmulF32Strided(y []float32, ldy int, x []float32, ldx, n int, w []float32, ld, cols int) {
	main := cols - cols%k.vl
	wp := unsafe.Pointer(&w[0])
	t := 0
	for ; t+k.tileT <= n; t += k.tileT {
		k.tile[kernels.F32](&x[t*ldx], ldx, wp, ld, main, &y[t*ldy], ldy)
	}
	for ; t < n; t++ {
		k.dot4[kernels.F32](&x[t*ldx], wp, ld, main, &y[t*ldy])
	}
	if main < cols {
		for t := 0; t < n; t++ {
			for j := 0; j < 4; j++ {
				y[t*ldy+j] += dot1F32Go(&x[t*ldx+main], unsafe.Pointer(&w[j*ld+main]), cols-main)
			}
		}
	}
}

// PadStride returns a row stride (in float32s) for cols-wide rows of a
// multi-row operand: a multiple of 16 floats that is not a multiple of
// 4 KiB. Rows exactly 4 KiB apart fall into the same L1 sets and the tile
// kernels run ≈ 4× slower (measured: 11.6 vs 48.6 GMAC/s, f32, 2048 cols).
func PadStride(cols int) int {
	ld := (cols + 15) &^ 15
	if ld%1024 == 0 {
		ld += 16
	}
	return ld
}

// Axpy computes y[i] += alpha·x[i] over len(y) elements (x at least as long).
func (k *Kernels) Axpy(y []float32, alpha float32, x []float32) {
	n := len(y)
	if n == 0 {
		return
	}
	x = x[:n]
	main := n - n%k.vl
	k.axpy(&y[0], alpha, &x[0], main)
	if main < n {
		axpyGo(&y[main], alpha, &x[main], n-main)
	}
}

// SwiGLU computes out[i] = silu(gate[i])·up[i] = gate·up/(1+e^-gate) over
// len(out) elements. The SIMD paths use a polynomial e^x (relative error
// ≈ 1e-7, see TestSwiGLUAllPaths) instead of one math.Exp call per element.
func (k *Kernels) SwiGLU(out, gate, up []float32) {
	n := len(out)
	if n == 0 {
		return
	}
	gate, up = gate[:n], up[:n]
	main := n - n%k.vl
	k.swiglu(&out[0], &gate[0], &up[0], main)
	if main < n {
		swigluGo(&out[main], &gate[main], &up[main], n-main)
	}
}

// ExpSub replaces x[i] by e^(x[i]-m) and returns their sum (softmax
// numerators and denominator; m is normally max(x)). The SIMD paths use
// the polynomial e^x of SwiGLU.
func (k *Kernels) ExpSub(x []float32, m float32) float32 {
	n := len(x)
	if n == 0 {
		return 0
	}
	main := n - n%k.vl
	s := k.expsub(&x[0], m, main)
	if main < n {
		s += expsubGo(&x[main], m, n-main)
	}
	return s
}

// DotRows computes y[r] = Σ_i x[i]·w[r*ldw+i] for r < len(y): one token
// against rows ldw apart (attention scores over a KV cache, where rows of
// one head are KVHeads·KDim apart). x and the rows are len(x) long.
func (k *Kernels) DotRows(y, x, w []float32, ldw int) {
	rows, n := len(y), len(x)
	if rows == 0 {
		return
	}
	if n == 0 || ldw < n || len(w) < (rows-1)*ldw+n {
		if n == 0 {
			clear(y)
			return
		}
		panic(fmt.Sprintf("simd: DotRows: %d rows of %d at stride %d need %d floats, have %d", rows, n, ldw, (rows-1)*ldw+n, len(w)))
	}
	main := n - n%k.vl
	r := 0
	for ; r+4 <= rows; r += 4 {
		k.dot4[kernels.F32](&x[0], unsafe.Pointer(&w[r*ldw]), ldw, main, &y[r])
		if main < n {
			for j := 0; j < 4; j++ {
				y[r+j] += dot1F32Go(&x[main], unsafe.Pointer(&w[(r+j)*ldw+main]), n-main)
			}
		}
	}
	for ; r < rows; r++ {
		y[r] = k.Dot(x, w[r*ldw:r*ldw+n])
	}
}

// WeightedSum sets dst[c] = Σ_p a[p]·v[p*ldv+c] for c < len(dst), p <
// len(a): attention's probability-weighted sum of value rows ldv apart.
func (k *Kernels) WeightedSum(dst, a, v []float32, ldv int) {
	d, n := len(dst), len(a)
	if d == 0 {
		return
	}
	if n > 0 && (ldv < d || len(v) < (n-1)*ldv+d) {
		panic(fmt.Sprintf("simd: WeightedSum: %d rows of %d at stride %d need %d floats, have %d", n, d, ldv, (n-1)*ldv+d, len(v)))
	}
	if n == 0 {
		clear(dst)
		return
	}
	main := d - d%(4*k.vl)
	k.wsum(&dst[0], &a[0], &v[0], ldv, n, main)
	if main < d {
		wsumGo(&dst[main], &a[0], &v[main], ldv, n, d-main)
	}
}

// amxRows is the row block of the AMX kernel (two 16-row tiles).
const amxRows = 32

// amxMin is the token count from which the AMX tiles beat the AVX-512 ones
// (BenchmarkMatMulActs, one thread, 2048×2048, two runs): bf16 from 8
// tokens (0.42–0.47 vs 0.61–0.65 ms; at 4, 0.44 vs 0.32–0.34: the tile pair
// is padded to 32 tokens); f16 from 16 (0.93–1.03 vs 1.07 ms; at 8,
// 0.94–1.53 vs 0.61–0.72), as each 32-row block is first split into two
// bf16 blocks whatever the token count.
func amxMin(dt kernels.DType) int {
	if dt == kernels.F16 {
		return 16
	}
	return 8
}

// Acts is the activation operand of a multi-token 16-bit product, prepared
// once per product by PrepareActs and then shared, read-only, by every row
// range and thread (MatMul16Acts). On the AMX path it holds the tokens as
// bf16 pairs in the tile layout: each activation split into hi = bf16(x)
// and lo = bf16(x − hi), both multiplied, so ≈ 16 significant bits of x
// reach the product instead of bf16's 8 (the f32 reference's parity bound
// holds; TestMatMulActsAllPaths).
type Acts struct {
	x            []float32
	ldx, n, cols int
	// AMX layout: token block b (16 tokens, zero-padded to an even count
	// of blocks), column pair j, token t at uint32 index (b·kmain/2 + j)·16
	// + t of the hi half; the lo half follows all hi blocks.
	packed []uint32
	kmain  int // columns in packed: cols rounded down to 32 (0: not packed)
	ntb    int // 16-token blocks in packed (even)
}

// PrepareActs points a at n activation rows ldx apart, cols wide, and packs
// them when this path multiplies weights of dtype dt on tiles. a's buffer
// is reused across calls, so a steady state allocates nothing.
func (k *Kernels) PrepareActs(dt kernels.DType, a *Acts, x []float32, ldx, n, cols int) {
	if n > 0 && (cols <= 0 || ldx < cols || len(x) < (n-1)*ldx+cols) {
		panic(fmt.Sprintf("simd: PrepareActs: %d rows of %d at stride %d need %d floats, have %d", n, cols, ldx, (n-1)*ldx+cols, len(x)))
	}
	a.x, a.ldx, a.n, a.cols = x, ldx, n, cols
	a.kmain, a.ntb = 0, 0
	if k.amx16 == nil || (dt != kernels.BF16 && dt != kernels.F16) || n < amxMin(dt) || cols < 32 {
		return
	}
	kmain := cols &^ 31
	ntb := (n + 31) / 32 * 2
	blk := kmain / 2 * 16 // uint32s per token block
	size := 2 * ntb * blk
	if cap(a.packed) < size {
		a.packed = make([]uint32, size)
	}
	a.kmain, a.ntb, a.packed = kmain, ntb, a.packed[:size]
	hi, lo := a.packed[:ntb*blk], a.packed[ntb*blk:]
	if n < ntb*16 {
		clear(a.packed) // padding tokens multiply as zeros
	}
	for t := 0; t < n; t++ {
		off := t/16*blk + t%16
		row := x[t*ldx : t*ldx+kmain]
		if k.amxPack != nil {
			k.amxPack(&hi[off], &lo[off], &row[0], kmain)
			continue
		}
		packActsGo(hi[off:], lo[off:], row)
	}
}

// packActsGo is packActs (asm_gen.go) in Go: row's column pairs as bf16
// hi and lo halves, pair j at index 16·j.
func packActsGo(hi, lo []uint32, row []float32) {
	for j := 0; j < len(row)/2; j++ {
		h0, l0 := splitBF16(row[2*j])
		h1, l1 := splitBF16(row[2*j+1])
		hi[j*16] = uint32(h0) | uint32(h1)<<16
		lo[j*16] = uint32(l0) | uint32(l1)<<16
	}
}

// splitBF16 returns hi = bf16(v) (round to nearest even) and lo = bf16(v −
// hi) (truncated: its own rounding error is below 2^-16 of v).
func splitBF16(v float32) (hi, lo uint16) {
	u := math.Float32bits(v)
	hi = uint16((u + 0x7fff + (u >> 16 & 1)) >> 16)
	return hi, uint16(math.Float32bits(v-BF16ToF32(hi)) >> 16)
}

// Scratch is the working memory of one goroutine's MatMul16Acts calls (f16
// weight blocks split for the tiles). Keep one per worker and steady-state
// calls allocate nothing; the zero value is ready, nil allocates per call.
type Scratch struct{ u16 []uint16 }

// MatMul16Acts is MatMul16 with the activations of PrepareActs (made by the
// same Kernels): rows r0..r1 of x·wᵀ for a.n tokens, cols = a.cols.
func (k *Kernels) MatMul16Acts(dt kernels.DType, y []float32, ldy int, a *Acts, w []uint16, r0, r1 int, s *Scratch) {
	if a.kmain == 0 || dt == kernels.F32 {
		k.MatMul16(dt, y, ldy, a.x, a.ldx, a.n, w, a.cols, r0, r1)
		return
	}
	if dt != kernels.BF16 && dt != kernels.F16 {
		panic(fmt.Sprintf("simd: MatMul16Acts with dtype %v", dt))
	}
	if a.n == 0 || r0 >= r1 {
		return
	}
	check(len(y), ldy, len(a.x), a.ldx, a.n, len(w), a.cols, r0, r1)
	r := r0
	for ; r+amxRows <= r1; r += amxRows {
		k.amx16(dt, y[r-r0:], ldy, a, w, r, s)
	}
	if r < r1 {
		k.MatMul16(dt, y[r-r0:], ldy, a.x, a.ldx, a.n, w, a.cols, r, r1)
	}
}

// RowBlock is the row granularity at which MatMul16Acts runs at full speed
// for n tokens of dtype dt: row ranges split at multiples of it avoid
// leftover rows on the slower path.
func (k *Kernels) RowBlock(dt kernels.DType, n int) int {
	if k.amx16 != nil && (dt == kernels.BF16 || dt == kernels.F16) && n >= amxMin(dt) {
		return amxRows
	}
	return 4
}
