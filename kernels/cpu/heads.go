package cpu

import (
	"fmt"
	"math"

	"github.com/deepseek-go/deepseek-go/kernels"
	"github.com/deepseek-go/deepseek-go/kernels/cpu/simd"
)

// MatMulHeads implements kernels.Backend. Items are (head, block of rows)
// spread over the worker pool; each runs the dtype's matmul kernel on the
// head's weight rows with x and y read and written in place at their row
// strides (the kernels take ldx and ldy), so nothing is copied. Int8
// quantises each head's slice of every token once; fp8 widens tiles of
// rows (or takes decode dot products straight from the bytes) as MatMul.
// Invalid shapes panic with CheckHeads' message, like other misuse of the
// CPU backend.
func (b *Backend) MatMulHeads(y kernels.Buffer, yRow, yHead int, x kernels.Buffer, xRow, xHead, n int, w kernels.Matrix) {
	if n <= 0 {
		return
	}
	heads, rows, err := kernels.CheckHeads(y, yRow, yHead, x, xRow, xHead, n, w)
	if err != nil {
		panic("cpu: " + err.Error())
	}
	j, _ := b.hdJobs.Get().(*headsJob)
	if j == nil {
		j = new(headsJob)
	}
	j.b, j.n, j.rows, j.cols = b, n, rows, w.Cols()
	j.y, j.yRow, j.yHead = buf(y), yRow, yHead
	j.x, j.xRow, j.xHead = buf(x), xRow, xHead
	j.m, j.f8 = nil, nil
	switch m := w.(type) {
	case *FP8Matrix:
		j.f8, j.wide = m, fp8WidenerFor(b.kern)
		j.ld = simd.PadStride(m.cols)
		j.tile = max(4, min(64, fp8TileFloatsMulti/j.ld&^3))
		if len(j.scr) < b.threads {
			j.scr = make([][]float32, b.threads)
		}
	case *Matrix:
		j.m = m
		if m.dtype == kernels.Int8 {
			j.quantize(heads)
		}
	default:
		panic(fmt.Sprintf("cpu: MatMulHeads: matrix of type %T", w))
	}
	// Row blocks (multiples of 4, the kernels' row block) so that the
	// items number a few per thread even with few heads; small products
	// run inline.
	j.rb = rows
	if work := heads * rows * j.cols * n; work >= 1<<16 && b.threads > 1 {
		per := max(1, (4*b.threads+heads-1)/heads)
		j.rb = min(rows, max(16, (rows/per+3)&^3))
	}
	j.nb = (rows + j.rb - 1) / j.rb
	b.pool.run(&j.par, j, heads*j.nb, 1)
	j.b, j.m, j.f8, j.x, j.y = nil, nil, nil, nil, nil
	b.hdJobs.Put(j)
}

// headsJob is one MatMulHeads in flight (reused through Backend.hdJobs).
type headsJob struct {
	par           parJob
	b             *Backend
	m             *Matrix
	f8            *FP8Matrix
	n, rows, cols int
	y, x          []float32
	yRow, yHead   int
	xRow, xHead   int
	rb, nb        int       // rows per item, items per head
	xq            []uint8   // int8: quantised activations [heads][n][ldq]
	xs            []float32 // int8: their scales [heads][n]
	ldq           int
	wide          fp8Widener
	ld, tile      int         // fp8: widened tile stride and rows
	scr           [][]float32 // fp8: per worker, tile × ld floats
}

// quantize fills xq and xs for every (head, token) slice of x.
func (j *headsJob) quantize(heads int) {
	j.ldq = j.cols
	need := heads * j.n * j.ldq
	if cap(j.xq) < need {
		j.xq = make([]uint8, need)
	}
	if cap(j.xs) < heads*j.n {
		j.xs = make([]float32, heads*j.n)
	}
	j.xq, j.xs = j.xq[:need], j.xs[:heads*j.n]
	for h := range heads {
		for t := range j.n {
			i := h*j.n + t
			src := j.x[t*j.xRow+h*j.xHead : t*j.xRow+h*j.xHead+j.cols]
			j.xs[i] = j.b.ik.QuantizeActs(j.xq[i*j.ldq:i*j.ldq+j.cols], src)
		}
	}
}

// run computes items [lo, hi): item it is rows [blk*rb, (blk+1)*rb) of
// head it/nb.
func (j *headsJob) run(lo, hi, w int) {
	r, cols := j.rows, j.cols
	for it := lo; it < hi; it++ {
		h, blk := it/j.nb, it%j.nb
		a, e := blk*j.rb, min(r, (blk+1)*j.rb)
		y := j.y[h*j.yHead+a:]
		x := j.x[h*j.xHead:]
		if j.f8 != nil {
			j.runFP8(y, x, h, a, e, w)
			continue
		}
		m, k := j.m, j.b.kern
		wlo, whi := h*r*cols, (h+1)*r*cols
		switch m.dtype {
		case kernels.F32:
			k.MatMulF32(y, j.yRow, x, j.xRow, j.n, m.f32[wlo:whi], cols, a, e)
		case kernels.BF16, kernels.F16:
			k.MatMul16(m.dtype, y, j.yRow, x, j.xRow, j.n, m.u16[wlo:whi], cols, a, e)
		case kernels.Int8:
			q := j.xq[h*j.n*j.ldq:]
			j.b.ik.MatMul(y, j.yRow, q, j.ldq, j.xs[h*j.n:(h+1)*j.n], j.n, m.i8[wlo:whi],
				m.scales[h*r:(h+1)*r], m.rowSum[h*r:(h+1)*r], cols, a, e)
		}
	}
}

// runFP8 computes rows [a, e) of head h (part h of the fp8 matrix).
func (j *headsJob) runFP8(y, x []float32, h, a, e, w int) {
	cols := j.cols
	sp := &j.f8.scale[h]
	if j.n == 1 && j.wide.dot != nil && sp.bc%j.wide.dotVL == 0 {
		for i := a; i < e; i++ {
			y[i-a] = j.wide.dotRow(x[:cols], sp.row(i, cols), sp.rowScales(i), sp.bc)
		}
		return
	}
	if len(j.scr[w]) < j.tile*j.ld {
		j.scr[w] = make([]float32, j.tile*j.ld)
	}
	scr := j.scr[w]
	for r := a; r < e; r += j.tile {
		re := min(r+j.tile, e)
		for i := r; i < re; i++ {
			j.wide.row(scr[(i-r)*j.ld:(i-r)*j.ld+cols], sp.row(i, cols), sp.rowScales(i), sp.bc)
		}
		j.b.kern.MatMulF32Strided(y[r-a:], j.yRow, x, j.xRow, j.n, scr, j.ld, cols, 0, re-r)
	}
}

// MLAPack implements kernels.Backend with RMSNorm's arithmetic; invalid
// shapes panic with CheckMLAPack's message, as MatMulHeads does.
func (b *Backend) MLAPack(k, qabs, q, lat, kr, weight kernels.Buffer, n int, s kernels.MLAPackShape) {
	if n <= 0 {
		return
	}
	if err := kernels.CheckMLAPack(k, qabs, q, lat, kr, weight, n, s); err != nil {
		panic("cpu: " + err.Error())
	}
	ks, qa, qs, ls, rs, w := buf(k), buf(qabs), buf(q), buf(lat), buf(kr), buf(weight)
	kd, qh := s.Lora+s.Rope, s.Nope+s.Rope
	for t := range n {
		row := ls[t*s.Lora : (t+1)*s.Lora]
		inv := float32(1 / math.Sqrt(float64(b.kern.Dot(row, row)/float32(s.Lora)+s.Eps)))
		dst := ks[t*kd : (t+1)*kd]
		for i, v := range row {
			dst[i] = v * inv * w[i]
		}
		copy(dst[s.Lora:], rs[t*s.Rope:(t+1)*s.Rope])
		for h := range s.Heads {
			copy(qa[(t*s.Heads+h)*kd+s.Lora:(t*s.Heads+h+1)*kd], qs[(t*s.Heads+h)*qh+s.Nope:(t*s.Heads+h+1)*qh])
		}
	}
	if s.RoPE != nil { // the copies rotated as ApplyRope would have rotated their sources
		r := *s.RoPE
		r.Off = s.Lora
		rope(ks, n, 1, kd, s.Pos0, nil, &r)
		rope(qa, n, s.Heads, kd, s.Pos0, nil, &r)
	}
}
