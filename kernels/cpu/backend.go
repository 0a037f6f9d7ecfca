// Package cpu implements kernels.Backend on the host: float32 accumulation,
// weights used in their storage dtype (f32, bf16 and f16 bits read in place,
// int8 with one scale per row), matmul parallel over output rows on a
// persistent worker pool. The inner loops are the SIMD kernels of
// kernels/cpu/simd and quant (AVX-512 / AVX2 chosen at init with cpuid);
// NewWithKernels forces a path, and the pure-Go paths (simd.Generic,
// quant.Int8Generic) are the reference every other backend is tested against.
package cpu

import (
	"fmt"
	"iter"
	"math"
	"runtime"
	"sync"
	"unsafe"

	"github.com/deepseek-go/deepseek-go/kernels"
	"github.com/deepseek-go/deepseek-go/kernels/cpu/simd"
	"github.com/deepseek-go/deepseek-go/quant"
)

// Backend is the CPU backend. Besides its configuration it holds only the
// worker pool and pools of reusable per-op scratch, so one Backend serves
// any number of sessions concurrently.
type Backend struct {
	threads int
	kern    *simd.Kernels
	ik      *quant.Int8Kernels
	pool    *pool
	mmJobs  sync.Pool // *matmulJob
	atJobs  sync.Pool // *attnJob
	pgJobs  sync.Pool // *pagedJob
	fp8Jobs sync.Pool // *fp8Job (fp8.go)
	hdJobs  sync.Pool // *headsJob (heads.go)
}

var _ kernels.Backend = (*Backend)(nil)

// New returns a CPU backend using up to threads goroutines per op
// (threads <= 0 means runtime.GOMAXPROCS(0)) and the fastest kernels this
// CPU supports.
func New(threads int) *Backend { return NewWithKernels(threads, simd.Best, quant.Int8Best) }

// NewWithKernels is New with the float and int8 kernel paths forced (one of
// simd.Supported() and quant.Int8Supported(); nil means the best).
func NewWithKernels(threads int, k *simd.Kernels, ik *quant.Int8Kernels) *Backend {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	if k == nil {
		k = simd.Best
	}
	if ik == nil {
		ik = quant.Int8Best
	}
	b := &Backend{threads: threads, kern: k, ik: ik, pool: newPool(threads)}
	b.mmJobs.New = func() any { return new(matmulJob) }
	b.atJobs.New = func() any { return new(attnJob) }
	b.pgJobs.New = func() any { return new(pagedJob) }
	// A backend dropped without Close still stops its workers (they hold
	// the pool, not the backend).
	runtime.AddCleanup(b, func(p *pool) { p.close() }, b.pool)
	return b
}

// Name implements kernels.Backend: "cpu:" and the float and int8 paths.
func (b *Backend) Name() string { return "cpu:" + b.kern.Name + "+int8-" + b.ik.Name }

// Close implements kernels.Backend: it stops the worker goroutines. Ops
// after Close still work, on the calling goroutine only.
func (b *Backend) Close() error {
	b.pool.close()
	return nil
}

// Threads reports the goroutine count used per op.
func (b *Backend) Threads() int { return b.threads }

// Matrix is a weight matrix in host memory. Exactly one of f32, u16, i8 is
// set, according to dtype.
type Matrix struct {
	rows, cols int
	dtype      kernels.DType
	parts      []int
	f32        []float32
	u16        []uint16 // bf16 or f16 bits
	i8         []int8
	scales     []float32 // int8 only
	rowSum     []int32   // int8 only: Σ of each row's int8 values (see quant.Int8Kernels.MatMul)
}

// Rows implements kernels.Matrix.
func (m *Matrix) Rows() int { return m.rows }

// Cols implements kernels.Matrix.
func (m *Matrix) Cols() int { return m.cols }

// DType implements kernels.Matrix.
func (m *Matrix) DType() kernels.DType { return m.dtype }

// Parts implements kernels.Matrix.
func (m *Matrix) Parts() []int { return m.parts }

// Bytes implements kernels.Matrix.
func (m *Matrix) Bytes() int64 {
	return int64(len(m.f32))*4 + int64(len(m.u16))*2 + int64(len(m.i8)) + int64(len(m.scales))*4 + int64(len(m.rowSum))*4
}

// rowF32 returns row r converted to float32 into dst (len cols).
func (m *Matrix) rowF32(dst []float32, r int) {
	off := r * m.cols
	switch m.dtype {
	case kernels.F32:
		copy(dst, m.f32[off:off+m.cols])
	case kernels.BF16:
		for i, h := range m.u16[off : off+m.cols] {
			dst[i] = bf16ToF32(h)
		}
	case kernels.F16:
		for i, h := range m.u16[off : off+m.cols] {
			dst[i] = f16ToF32(h)
		}
	case kernels.Int8:
		s := m.scales[r]
		for i, q := range m.i8[off : off+m.cols] {
			dst[i] = float32(q) * s
		}
	}
}

// Buffer is a float32 activation buffer.
type Buffer struct {
	data []float32
}

// Len implements kernels.Buffer.
func (b *Buffer) Len() int { return len(b.data) }

// Data exposes the buffer's storage (tests and CPU-only helpers).
func (b *Buffer) Data() []float32 { return b.data }

// KVCache is a per-layer key/value store.
type KVCache struct {
	spec kernels.KVSpec
	k, v [][]float32 // per layer [MaxTokens, KVHeads, KDim] / [.., VDim]
}

// Spec implements kernels.KVCache.
func (c *KVCache) Spec() kernels.KVSpec { return c.spec }

// Bytes implements kernels.KVCache.
func (c *KVCache) Bytes() int64 {
	var n int64
	for l := range c.k {
		n += int64(len(c.k[l])) * 4
		if c.v != nil {
			n += int64(len(c.v[l])) * 4
		}
	}
	return n
}

// viewU16 reinterprets little-endian bytes as uint16 without copying when
// aligned, copying otherwise (safetensors offsets need not be aligned).
func viewU16(b []byte) []uint16 {
	n := len(b) / 2
	if n == 0 {
		return nil
	}
	if uintptr(unsafe.Pointer(&b[0]))%2 == 0 {
		return unsafe.Slice((*uint16)(unsafe.Pointer(&b[0])), n)
	}
	out := make([]uint16, n)
	for i := range out {
		out[i] = uint16(b[2*i]) | uint16(b[2*i+1])<<8
	}
	return out
}

// viewF32 is viewU16 for float32.
func viewF32(b []byte) []float32 {
	n := len(b) / 4
	if n == 0 {
		return nil
	}
	if uintptr(unsafe.Pointer(&b[0]))%4 == 0 {
		return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), n)
	}
	out := make([]float32, n)
	for i := range out {
		out[i] = math.Float32frombits(uint32(b[4*i]) | uint32(b[4*i+1])<<8 | uint32(b[4*i+2])<<16 | uint32(b[4*i+3])<<24)
	}
	return out
}

// UploadMatrix implements kernels.Backend. A single part in a float dtype is
// used in place (no copy); several parts are concatenated once. With int8,
// float parts are quantised per row (symmetric, scale = max|w|/127).
func (b *Backend) UploadMatrix(parts []kernels.HostMatrix, toInt8 bool) (kernels.Matrix, error) {
	partRows, err := kernels.CheckParts(parts)
	if err != nil {
		return nil, fmt.Errorf("cpu: %w", err)
	}
	cols, dt := parts[0].Cols, parts[0].DType
	if dt == kernels.FP8 {
		return b.uploadFP8(parts, partRows, toInt8)
	}
	m := &Matrix{cols: cols, dtype: dt, parts: partRows}
	for _, r := range partRows {
		m.rows += r
	}
	// Gather the raw data: in place for one part, concatenated otherwise.
	var raw []byte
	if len(parts) == 1 {
		raw = parts[0].Data
	} else {
		raw = make([]byte, 0, m.rows*cols*dt.Size())
		for _, p := range parts {
			raw = append(raw, p.Data...)
		}
	}
	switch dt {
	case kernels.F32:
		m.f32 = viewF32(raw)
	case kernels.BF16, kernels.F16:
		m.u16 = viewU16(raw)
	case kernels.Int8:
		m.i8 = unsafe.Slice((*int8)(unsafe.Pointer(&raw[0])), len(raw))
		for _, p := range parts {
			m.scales = append(m.scales, p.Scales...)
		}
		m.rowSum = make([]int32, m.rows)
		for r := range m.rowSum {
			var s int32
			for _, q := range m.i8[r*cols : (r+1)*cols] {
				s += int32(q)
			}
			m.rowSum[r] = s
		}
	}
	if toInt8 && dt != kernels.Int8 {
		return b.quantizeRows(m, parts[0].Name)
	}
	return m, nil
}

// quantizeRows converts a float matrix to symmetric per-row int8
// (quant.QuantizeRow), keeping each row's sum for the u8×s8 kernels. Rows
// are spread over the worker pool: quantising is most of an int8 load.
func (b *Backend) quantizeRows(src *Matrix, name string) (*Matrix, error) {
	q := &Matrix{rows: src.rows, cols: src.cols, dtype: kernels.Int8, parts: src.parts,
		i8: make([]int8, src.rows*src.cols), scales: make([]float32, src.rows), rowSum: make([]int32, src.rows)}
	j := &quantJob{src: src, dst: q, row: make([][]float32, b.threads), errs: make([]error, b.threads)}
	b.pool.run(&j.par, j, src.rows, max(1, src.rows/(8*b.threads)))
	for _, err := range j.errs {
		if err != nil {
			return nil, fmt.Errorf("cpu: UploadMatrix %s: %w", name, err)
		}
	}
	return q, nil
}

// quantJob quantises rows of src into dst; per-worker row buffer and
// first error.
type quantJob struct {
	par      parJob
	src, dst *Matrix
	row      [][]float32
	errs     []error
}

func (j *quantJob) run(lo, hi, w int) {
	cols := j.src.cols
	if j.row[w] == nil {
		j.row[w] = make([]float32, cols)
	}
	for r := lo; r < hi && j.errs[w] == nil; r++ {
		j.src.rowF32(j.row[w], r)
		s, sum, err := quant.QuantizeRow(j.dst.i8[r*cols:(r+1)*cols], j.row[w])
		if err != nil {
			j.errs[w] = fmt.Errorf("row %d: %w", r, err)
			return
		}
		j.dst.scales[r], j.dst.rowSum[r] = s, sum
	}
}

// Alloc implements kernels.Backend.
func (b *Backend) Alloc(n int) (kernels.Buffer, error) {
	if n < 0 {
		return nil, fmt.Errorf("cpu: Alloc: negative size %d", n)
	}
	return &Buffer{data: make([]float32, n)}, nil
}

func buf(x kernels.Buffer) []float32 { return x.(*Buffer).data }

// Upload implements kernels.Backend.
func (b *Backend) Upload(dst kernels.Buffer, off int, src []float32) error {
	d := buf(dst)
	if off < 0 || off+len(src) > len(d) {
		return fmt.Errorf("cpu: Upload of %d floats at %d into buffer of %d", len(src), off, len(d))
	}
	copy(d[off:], src)
	return nil
}

// Download implements kernels.Backend.
func (b *Backend) Download(dst []float32, src kernels.Buffer, off int) error {
	s := buf(src)
	if off < 0 || off+len(dst) > len(s) {
		return fmt.Errorf("cpu: Download of %d floats at %d from buffer of %d", len(dst), off, len(s))
	}
	copy(dst, s[off:])
	return nil
}

// NewKVCache implements kernels.Backend.
func (b *Backend) NewKVCache(spec kernels.KVSpec) (kernels.KVCache, error) {
	if spec.Layers <= 0 || spec.MaxTokens <= 0 || spec.KVHeads <= 0 || spec.KDim <= 0 || spec.VDim <= 0 {
		return nil, fmt.Errorf("cpu: NewKVCache: bad spec %+v", spec)
	}
	if spec.VInK && spec.VDim > spec.KDim {
		return nil, fmt.Errorf("cpu: NewKVCache: VInK with VDim %d > KDim %d", spec.VDim, spec.KDim)
	}
	c := &KVCache{spec: spec, k: make([][]float32, spec.Layers)}
	if !spec.VInK {
		c.v = make([][]float32, spec.Layers)
	}
	for l := range spec.Layers {
		c.k[l] = make([]float32, spec.MaxTokens*spec.KVHeads*spec.KDim)
		if !spec.VInK {
			c.v[l] = make([]float32, spec.MaxTokens*spec.KVHeads*spec.VDim)
		}
	}
	return c, nil
}

// Embed implements kernels.Backend.
func (b *Backend) Embed(out kernels.Buffer, table kernels.Matrix, ids []int32) {
	if f, ok := table.(*FP8Matrix); ok {
		f.embed(buf(out), ids)
		return
	}
	m := table.(*Matrix)
	o := buf(out)
	for i, id := range ids {
		m.rowF32(o[i*m.cols:(i+1)*m.cols], int(id))
	}
}

// MatMul implements kernels.Backend. Work is split over output rows so each
// weight row is read once per call and reused for all n tokens (the SIMD
// kernels tile several tokens per weight row).
func (b *Backend) MatMul(outs []kernels.Buffer, x kernels.Buffer, n int, w kernels.Matrix, bias kernels.Buffer) {
	if f, ok := w.(*FP8Matrix); ok {
		b.matMulFP8(outs, x, n, f, bias)
		return
	}
	m := w.(*Matrix)
	if n <= 0 {
		return
	}
	j := b.mmJobs.Get().(*matmulJob)
	j.b, j.m, j.n = b, m, n
	j.set(outs, x, n, m.cols, len(m.parts), bias, n > 1 && m.dtype != kernels.Int8)
	if n > 1 && (m.dtype == kernels.BF16 || m.dtype == kernels.F16) {
		// Packed once here, read by every row chunk (AMX tiles).
		b.kern.PrepareActs(m.dtype, &j.acts, j.x, j.ldx, n, m.cols)
		if len(j.scr) < b.threads {
			j.scr = make([]simd.Scratch, b.threads)
		}
	}
	if m.dtype == kernels.Int8 {
		// Quantise each token's activations once, shared by all rows.
		// Rows go PadStride apart for the same L1-set reason as floats.
		cols, ld := m.cols, m.cols
		if n > 1 {
			ld = 4 * simd.PadStride((m.cols+3)/4)
		}
		if cap(j.xq) < n*ld {
			j.xq = make([]uint8, n*ld)
		}
		if cap(j.xs) < n {
			j.xs = make([]float32, n)
		}
		j.xq, j.xs, j.ldq = j.xq[:n*ld], j.xs[:n], ld
		for t := 0; t < n; t++ {
			j.xs[t] = b.ik.QuantizeActs(j.xq[t*ld:t*ld+cols], j.x[t*cols:(t+1)*cols])
		}
	}
	chunk := b.rowChunk(m.rows, m.cols, n)
	if chunk < m.rows && (m.dtype == kernels.BF16 || m.dtype == kernels.F16) {
		// Whole row blocks of the 16-bit tiles (32 on AMX).
		rb := b.kern.RowBlock(m.dtype, n)
		chunk = (chunk + rb - 1) / rb * rb
	}
	b.pool.run(&j.par, j, m.rows, chunk)
	j.m = nil
	j.release()
	b.mmJobs.Put(j)
}

// rowChunk is how many of rows output rows a pool worker takes at a time:
// a multiple of 4 (the kernels' row block), 16 per thread, so that on a
// shared machine a descheduled helper holds back only a small piece of the
// op. Small products (rows × cols × n tokens) run inline: one chunk.
func (b *Backend) rowChunk(rows, cols, n int) int {
	if rows*cols*n >= 1<<16 && b.threads > 1 {
		return max(16, (rows/(16*b.threads)+3)&^3)
	}
	return rows
}

// mmIO is what a MatMul job reads and writes: the activations x (n rows,
// ldx apart), the bias (nil for none) and one output per fused part.
type mmIO struct {
	x    []float32
	ldx  int // row stride of x
	xp   []float32
	bias []float32
	ys   [][]float32
}

// set points o at a call's buffers; with pad, x is first copied to rows of
// a padded stride (simd.PadStride, in xp, reused) so the tile kernels'
// token rows do not share L1 sets.
func (o *mmIO) set(outs []kernels.Buffer, x kernels.Buffer, n, cols, parts int, bias kernels.Buffer, pad bool) {
	o.x, o.ldx = buf(x), cols
	o.bias = nil
	if bias != nil {
		o.bias = buf(bias)
	}
	o.ys = o.ys[:0]
	for i := range parts {
		o.ys = append(o.ys, buf(outs[i]))
	}
	if !pad {
		return
	}
	ld := simd.PadStride(cols)
	if cap(o.xp) < n*ld {
		o.xp = make([]float32, n*ld)
	}
	o.xp = o.xp[:n*ld]
	for t := range n {
		copy(o.xp[t*ld:t*ld+cols], o.x[t*cols:(t+1)*cols])
	}
	o.x, o.ldx = o.xp, ld
}

// release drops the call's buffers so a pooled job holds none.
func (o *mmIO) release() {
	o.x, o.bias = nil, nil
	clear(o.ys)
}

// addBias adds the bias of global rows [a, e) to y, the part's output from
// row a on: n token rows, rows apart.
func (o *mmIO) addBias(y []float32, rows, n, a, e int) {
	if o.bias == nil {
		return
	}
	for t := range n {
		yt := y[t*rows : t*rows+e-a]
		for i, bv := range o.bias[a:e] {
			yt[i] += bv
		}
	}
}

// partSpan is where a chunk of global output rows meets one fused part.
type partSpan struct {
	part, rows int // the part and its row count
	first      int // the part's first global row
	a, e       int // the rows of the chunk in the part: [a, e), global
}

// partSpans yields the fused parts (row counts parts) that global rows
// [lo, hi) overlap, in order.
func partSpans(parts []int, lo, hi int) iter.Seq[partSpan] {
	return func(yield func(partSpan) bool) {
		start := 0
		for p, rows := range parts {
			ps := start
			start += rows
			a, e := max(lo, ps), min(hi, start)
			if a < e && !yield(partSpan{p, rows, ps, a, e}) {
				return
			}
		}
	}
}

// matmulJob is one MatMul in flight; reused through Backend.mmJobs so that a
// token step allocates nothing.
type matmulJob struct {
	par parJob
	b   *Backend
	m   *Matrix
	n   int
	mmIO
	xq   []uint8        // int8: quantised activations, n × cols
	xs   []float32      // int8: their per-token scales
	ldq  int            // int8: row stride of xq
	acts simd.Acts      // 16-bit, n > 1: x prepared for MatMul16Acts
	scr  []simd.Scratch // per worker, for MatMul16Acts
}

// run computes global rows [lo, hi), split at fused-part boundaries.
func (j *matmulJob) run(lo, hi, w int) {
	m, k := j.m, j.b.kern
	for s := range partSpans(m.parts, lo, hi) {
		p, rows, a, e := s.part, s.rows, s.a, s.e
		y := j.ys[p][a-s.first:]
		switch m.dtype {
		case kernels.F32:
			k.MatMulF32(y, rows, j.x, j.ldx, j.n, m.f32, m.cols, a, e)
		case kernels.BF16, kernels.F16:
			if j.n > 1 {
				k.MatMul16Acts(m.dtype, y, rows, &j.acts, m.u16, a, e, &j.scr[w])
			} else {
				k.MatMul16(m.dtype, y, rows, j.x, j.ldx, j.n, m.u16, m.cols, a, e)
			}
		case kernels.Int8:
			j.b.ik.MatMul(y, rows, j.xq, j.ldq, j.xs, j.n, m.i8, m.scales, m.rowSum, m.cols, a, e)
		}
		j.addBias(y, rows, j.n, a, e)
	}
}

// RMSNorm implements kernels.Backend.
func (b *Backend) RMSNorm(out, x, weight kernels.Buffer, n, dim int, eps float32) {
	o, xs, w := buf(out), buf(x), buf(weight)
	for t := 0; t < n; t++ {
		row := xs[t*dim : (t+1)*dim]
		ss := b.kern.Dot(row, row)
		inv := float32(1 / math.Sqrt(float64(ss/float32(dim)+eps)))
		dst := o[t*dim : (t+1)*dim]
		for i, v := range row {
			dst[i] = v * inv * w[i]
		}
	}
}

// ApplyRope implements kernels.Backend. Angles are computed in float64 so
// long positions do not lose precision.
func (b *Backend) ApplyRope(x kernels.Buffer, n, heads, headDim, pos0 int, r *kernels.Rope) {
	rope(buf(x), n, heads, headDim, pos0, nil, r)
}

// rope rotates n rows of xs; row t is at position pos[t] when pos is not
// nil, else at pos0+t.
func rope(xs []float32, n, heads, headDim, pos0 int, pos []int32, r *kernels.Rope) {
	half := r.Dim / 2
	var csBuf, snBuf [256]float32 // head dims up to 512 without allocating
	cs, sn := csBuf[:], snBuf[:]
	if half > len(cs) {
		cs, sn = make([]float32, half), make([]float32, half)
	}
	for t := 0; t < n; t++ {
		p := float64(pos0 + t)
		if pos != nil {
			p = float64(pos[t])
		}
		for j := 0; j < half; j++ {
			s, c := math.Sincos(p * float64(r.InvFreq[j]))
			cs[j] = float32(c) * r.Scale
			sn[j] = float32(s) * r.Scale
		}
		for h := 0; h < heads; h++ {
			v := xs[(t*heads+h)*headDim+r.Off:]
			if r.Interleaved {
				for j := 0; j < half; j++ {
					a, c := v[2*j], v[2*j+1]
					v[2*j] = a*cs[j] - c*sn[j]
					v[2*j+1] = c*cs[j] + a*sn[j]
				}
			} else {
				for j := 0; j < half; j++ {
					a, c := v[j], v[j+half]
					v[j] = a*cs[j] - c*sn[j]
					v[j+half] = c*cs[j] + a*sn[j]
				}
			}
		}
	}
}

// Attention implements kernels.Backend: it stores the new keys and values,
// then runs attnJob items in parallel (see attnJob.run). Score rows live in
// per-worker scratch sized once for the cache, so a step allocates nothing.
func (b *Backend) Attention(out, q, k, v kernels.Buffer, cache kernels.KVCache, layer, pos0, n, heads int, scale float32) {
	c := cache.(*KVCache)
	sp := c.spec
	kd, vd, kvh := sp.KDim, sp.VDim, sp.KVHeads
	ks := buf(k)
	kc := c.k[layer]
	copy(kc[pos0*kvh*kd:(pos0+n)*kvh*kd], ks[:n*kvh*kd])
	vc, vstride := kc, kd // values are the first VDim floats of each key
	if !sp.VInK {
		vs := buf(v)
		vc, vstride = c.v[layer], vd
		copy(vc[pos0*kvh*vd:(pos0+n)*kvh*vd], vs[:n*kvh*vd])
	}
	if n >= 2 {
		b.contigTiles(buf(out), buf(q), kc, vc, pos0, n, kd, vd, kvh, vstride, heads, scale)
		return
	}
	j := b.atJobs.Get().(*attnJob)
	scratch := j.scores
	group := heads / kvh
	hs := min(group, attnHeadsPerItem)
	*j = attnJob{kern: b.kern, q: buf(q), out: buf(out), kc: kc, vc: vc,
		kd: kd, vd: vd, kvh: kvh, vstride: vstride, heads: heads, pos0: pos0, scale: scale,
		group: group, hs: hs, subs: (group + hs - 1) / hs}
	// Per-worker score rows (hs heads × the whole cache), sized once.
	if len(scratch) < b.threads || len(scratch[0]) < hs*sp.MaxTokens {
		scratch = make([][]float32, b.threads)
		for i := range scratch {
			scratch[i] = make([]float32, hs*sp.MaxTokens)
		}
	}
	j.scores = scratch
	items := n * kvh * j.subs
	// Work per item grows with the context: parallelise only when it pays.
	chunk := items
	if n*heads*(pos0+n)*(kd+vd) >= 1<<15 {
		chunk = max(1, items/(4*b.threads))
	}
	b.pool.run(&j.par, j, items, chunk)
	*j = attnJob{scores: scratch}
	b.atJobs.Put(j)
}

// attnHeadsPerItem caps the query heads of one KV head handled together:
// they share every K and V row read (GQA groups; MLA's single latent head
// with 16–128 query heads is split so that it still parallelises).
const attnHeadsPerItem = 8

// attnJob is one Attention call in flight (reused via Backend.atJobs).
type attnJob struct {
	par                         parJob
	kern                        *simd.Kernels
	q, out, kc, vc              []float32
	kd, vd, kvh, vstride, heads int
	pos0                        int
	scale                       float32
	group, hs, subs             int         // heads per KV head; per item; items per KV head
	scores                      [][]float32 // per worker, hs × MaxTokens each
}

// run handles items (token, KV head, sub-group of ≤ hs query heads): the
// scores of those heads in one strided matmul over the cached keys (each
// key row read once for the group; the tile kernel uses every key vector
// for several heads), softmax per head with the vectorised e^x, then each
// head's probability-weighted sum of value rows with its output in
// registers.
func (j *attnJob) run(lo, hi, worker int) {
	kd, vd, kvh := j.kd, j.vd, j.kvh
	for it := lo; it < hi; it++ {
		t, rest := it/(kvh*j.subs), it%(kvh*j.subs)
		g, sub := rest/j.subs, rest%j.subs
		h0 := g*j.group + sub*j.hs
		nh := min(j.hs, (g+1)*j.group-h0)
		npos := j.pos0 + t + 1
		qs := j.q[(t*j.heads+h0)*kd : (t*j.heads+h0+nh)*kd]
		sc := j.scores[worker][:nh*npos]
		// sc[i*npos+p] = q_{h0+i} · k_p of KV head g.
		j.kern.MatMulF32Strided(sc, npos, qs, kd, nh, j.kc[g*kd:], kvh*kd, kd, 0, npos)
		for i := 0; i < nh; i++ {
			row := sc[i*npos : (i+1)*npos]
			softmaxScaled(j.kern, row, j.scale)
			h := h0 + i
			dst := j.out[(t*j.heads+h)*vd : (t*j.heads+h+1)*vd]
			j.kern.WeightedSum(dst, row, j.vc[g*j.vstride:], kvh*j.vstride)
		}
	}
}

// SwiGLU implements kernels.Backend (vectorised e^x on the SIMD paths).
func (b *Backend) SwiGLU(out, gate, up kernels.Buffer, n int) {
	b.kern.SwiGLU(buf(out)[:n], buf(gate), buf(up))
}

// Add implements kernels.Backend.
func (b *Backend) Add(out, a, c kernels.Buffer, n int) {
	o, x, y := buf(out), buf(a), buf(c)
	for i := 0; i < n; i++ {
		o[i] = x[i] + y[i]
	}
}

// Axpy implements kernels.Backend.
func (b *Backend) Axpy(y kernels.Buffer, yOff int, x kernels.Buffer, xOff int, alpha float32, n int) {
	b.kern.Axpy(buf(y)[yOff:yOff+n], alpha, buf(x)[xOff:xOff+n])
}

// Copy2D implements kernels.Backend.
func (b *Backend) Copy2D(dst kernels.Buffer, dstOff, dstStride int, src kernels.Buffer, srcOff, srcStride, rows, cols int) {
	d, s := buf(dst), buf(src)
	for r := 0; r < rows; r++ {
		copy(d[dstOff+r*dstStride:dstOff+r*dstStride+cols], s[srcOff+r*srcStride:srcOff+r*srcStride+cols])
	}
}
