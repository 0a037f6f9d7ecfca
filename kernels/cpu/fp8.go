package cpu

import (
	"fmt"

	"github.com/deepseek-go/deepseek-go/kernels"
	"github.com/deepseek-go/deepseek-go/kernels/cpu/simd"
	"github.com/deepseek-go/deepseek-go/quant"
)

// fp8 weights (float8_e4m3fn with float32 block scales, as DeepSeek-V3
// checkpoints store them) stay one byte per value: the bytes are used in
// place (memory-mapped). For one token (decode) each row's dot product is
// taken straight from the bytes, widened in registers (fp8DotAVX512/AVX2);
// for several tokens MatMul widens a tile of rows to float32 (value × its
// block's scale) in per-worker scratch that stays in L2, then runs the
// float32 SIMD kernels on it. The widened values equal the dequantised
// weights bit for bit, so results match a float32 matmul on
// quant.DequantFP8Blocks' output up to summation order.

// SupportsDType implements kernels.DTypeSupporter: the CPU backend holds
// fp8 weights as fp8.
func (b *Backend) SupportsDType(d kernels.DType) bool {
	switch d {
	case kernels.F32, kernels.F16, kernels.BF16, kernels.Int8, kernels.FP8:
		return true
	}
	return false
}

// fp8Part is one fused part of an fp8 matrix: its e4m3 bytes (the
// caller's, in place: no copy even when parts are fused) and its block
// scales.
type fp8Part struct {
	data                []byte
	scales              []float32
	sCols, br, bc, row0 int
}

// row returns the part's row r.
func (p *fp8Part) row(r, cols int) []byte { return p.data[r*cols : (r+1)*cols] }

// rowScales returns the block scales of the part's row r.
func (p *fp8Part) rowScales(r int) []float32 {
	i := (p.row0 + r) / p.br * p.sCols
	return p.scales[i : i+p.sCols]
}

// FP8Matrix is an fp8 weight matrix in host memory: each part's e4m3 bytes
// (the checkpoint's, in place) and block scales.
type FP8Matrix struct {
	rows, cols int
	parts      []int
	scale      []fp8Part
}

// Rows implements kernels.Matrix.
func (m *FP8Matrix) Rows() int { return m.rows }

// Cols implements kernels.Matrix.
func (m *FP8Matrix) Cols() int { return m.cols }

// DType implements kernels.Matrix: kernels.FP8.
func (m *FP8Matrix) DType() kernels.DType { return kernels.FP8 }

// Parts implements kernels.Matrix.
func (m *FP8Matrix) Parts() []int { return m.parts }

// Bytes implements kernels.Matrix: one byte per value plus the scales.
func (m *FP8Matrix) Bytes() int64 {
	var n int64
	for _, p := range m.scale {
		n += int64(len(p.data)) + int64(len(p.scales))*4
	}
	return n
}

// uploadFP8 makes an FP8Matrix from checked parts (kernels.CheckParts). With
// toInt8 the values are dequantised and quantised per row like float parts.
func (b *Backend) uploadFP8(parts []kernels.HostMatrix, partRows []int, toInt8 bool) (kernels.Matrix, error) {
	m := &FP8Matrix{cols: parts[0].Cols, parts: partRows}
	for _, r := range partRows {
		m.rows += r
	}
	for _, p := range parts {
		m.scale = append(m.scale, fp8Part{data: p.Data, scales: p.Scales, sCols: p.ScaleCols(), br: p.BlockRows, bc: p.BlockCols, row0: p.ScaleRow0})
	}
	if !toInt8 {
		return m, nil
	}
	f := &Matrix{rows: m.rows, cols: m.cols, dtype: kernels.F32, parts: partRows, f32: make([]float32, m.rows*m.cols)}
	k := fp8WidenerFor(b.kern)
	for r := range m.rows {
		p, lr := m.partOf(r)
		sp := &m.scale[p]
		k.row(f.f32[r*m.cols:(r+1)*m.cols], sp.row(lr, m.cols), sp.rowScales(lr), sp.bc)
	}
	return b.quantizeRows(f, parts[0].Name)
}

// partOf returns the part holding global row r and r's row inside it.
func (m *FP8Matrix) partOf(r int) (part, row int) {
	for p, n := range m.parts {
		if r < n {
			return p, r
		}
		r -= n
	}
	panic(fmt.Sprintf("cpu: fp8 row %d out of range", r))
}

// embed writes rows ids, dequantised, to out (an fp8 embedding table).
func (m *FP8Matrix) embed(out []float32, ids []int32) {
	for i, id := range ids {
		p, r := m.partOf(int(id))
		sp := &m.scale[p]
		fp8Generic.row(out[i*m.cols:(i+1)*m.cols], sp.row(r, m.cols), sp.rowScales(r), sp.bc)
	}
}

// fp8TileFloats bounds the widened tile (rows × cols floats): 64 KiB for
// one token (it only has to stay in cache until the dot products read it),
// 512 KiB for several, in L2 (2 MiB) with a block of fp8TokBlock tokens'
// activations: every widened row then meets each token block from L2
// rather than streaming all tokens from L3 per 4 rows.
const (
	fp8TileFloats      = 16384
	fp8TileFloatsMulti = 131072
	fp8TokBlock        = 16
)

// matMulFP8 is MatMul for an FP8Matrix: rows are split over the worker
// pool like the other dtypes, each chunk widened a tile at a time.
func (b *Backend) matMulFP8(outs []kernels.Buffer, x kernels.Buffer, n int, m *FP8Matrix, bias kernels.Buffer) {
	if n <= 0 {
		return
	}
	j, _ := b.fp8Jobs.Get().(*fp8Job)
	if j == nil {
		j = new(fp8Job)
	}
	j.m, j.n, j.kern, j.wide = m, n, b.kern, fp8WidenerFor(b.kern)
	j.set(outs, x, n, m.cols, len(m.parts), bias, n > 1)
	j.ld = simd.PadStride(m.cols)
	j.tile = max(4, min(64, fp8TileFloats/j.ld&^3))
	if n > 1 {
		j.tile = max(4, min(64, fp8TileFloatsMulti/j.ld&^3))
	}
	if len(j.scr) < b.threads {
		j.scr = make([][]float32, b.threads)
	}
	b.pool.run(&j.par, j, m.rows, b.rowChunk(m.rows, m.cols, n))
	j.m = nil
	j.release()
	b.fp8Jobs.Put(j)
}

// fp8Job is one fp8 MatMul in flight (reused through Backend.fp8Jobs).
type fp8Job struct {
	par  parJob
	m    *FP8Matrix
	n    int
	kern *simd.Kernels
	wide fp8Widener
	mmIO
	ld, tile int         // widened tile: row stride and rows
	scr      [][]float32 // per worker, tile × ld floats
}

// run computes global rows [lo, hi), split at fused-part boundaries (each
// part has its own scales).
func (j *fp8Job) run(lo, hi, w int) {
	m := j.m
	if len(j.scr[w]) < j.tile*j.ld {
		j.scr[w] = make([]float32, j.tile*j.ld)
	}
	scr := j.scr[w]
	for s := range partSpans(m.parts, lo, hi) {
		p, rows, ps, a, e := s.part, s.rows, s.first, s.a, s.e
		sp := &m.scale[p]
		y := j.ys[p]
		if j.n == 1 && j.wide.dot != nil && sp.bc%j.wide.dotVL == 0 {
			// Decode: each row's dot product straight from the fp8 bytes.
			x := j.x[:m.cols]
			for i := a - ps; i < e-ps; i++ {
				y[i] = j.wide.dotRow(x, sp.row(i, m.cols), sp.rowScales(i), sp.bc)
			}
		} else {
			j.widened(y, rows, a-ps, e-ps, scr, sp)
		}
		j.addBias(y[a-ps:], rows, j.n, a, e)
	}
}

// widened computes rows [r0, r1) of part sp (rows rows) a tile at a time:
// widen tile rows into scr, then the f32 kernels for all n tokens.
func (j *fp8Job) widened(y []float32, rows, r0, r1 int, scr []float32, sp *fp8Part) {
	m := j.m
	for r := r0; r < r1; r += j.tile {
		re := min(r+j.tile, r1)
		for i := r; i < re; i++ {
			j.wide.row(scr[(i-r)*j.ld:(i-r)*j.ld+m.cols], sp.row(i, m.cols), sp.rowScales(i), sp.bc)
		}
		for t0 := 0; t0 < j.n; t0 += fp8TokBlock {
			tn := min(fp8TokBlock, j.n-t0)
			j.kern.MatMulF32Strided(y[t0*rows+r:], rows, j.x[t0*j.ldx:], j.ldx, tn, scr, j.ld, m.cols, 0, re-r)
		}
	}
}

// fp8Widener converts e4m3 bytes to float32 times a block scale: fn (nil
// on the pure-Go path) handles whole vectors of vl values and whole blocks
// of bc columns when bc is a multiple of vl.
type fp8Widener struct {
	name string
	vl   int
	fn   func(dst *float32, src *byte, n int, scales *float32, bc int)
	// dot (nil: widen and use the f32 kernels) is a whole decode row with
	// the values widened in registers, for n a multiple of dotVL and
	// blocks of a multiple of dotVL columns.
	dot   func(x *float32, w *byte, n int, scales *float32, bc int) float32
	dotVL int
}

// dotRow returns Σ x[c]·e4m3(w[c])·scales[c/bc] (k.dot must be set and bc
// a multiple of k.dotVL).
func (k fp8Widener) dotRow(x []float32, w []byte, scales []float32, bc int) float32 {
	cols := len(w)
	main := cols - cols%k.dotVL
	var s float32
	if main > 0 {
		s = k.dot(&x[0], &w[0], main, &scales[0], bc)
	}
	for c := main; c < cols; c++ {
		s += x[c] * quant.FP8E4M3ToF32(w[c]) * scales[c/bc]
	}
	return s
}

// row widens one row: dst[c] = e4m3(src[c]) × scales[c/bc].
func (k fp8Widener) row(dst []float32, src []byte, scales []float32, bc int) {
	cols := len(src)
	dst = dst[:cols]
	c := 0
	if k.fn != nil && bc%k.vl == 0 {
		if main := cols - cols%k.vl; main > 0 {
			k.fn(&dst[0], &src[0], main, &scales[0], bc)
			c = main
		}
	}
	for c0 := c; c0 < cols; {
		s := scales[c0/bc]
		c1 := min((c0/bc+1)*bc, cols)
		d := dst[c0:c1]
		for i, q := range src[c0:c1] {
			d[i] = quant.FP8E4M3ToF32(q) * s
		}
		c0 = c1
	}
}

// fp8Generic is the pure-Go widener (a 256-entry table lookup per value).
var fp8Generic = fp8Widener{name: "generic", vl: 1}
