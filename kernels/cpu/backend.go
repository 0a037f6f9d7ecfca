// Package cpu is the pure-Go reference implementation of kernels.Backend:
// float32 accumulation, weights used in their storage dtype (f32, bf16 and
// f16 bits read in place, int8 with one scale per row), matmul parallel over
// output rows. Every other backend is tested against it.
package cpu

import (
	"fmt"
	"math"
	"runtime"
	"unsafe"

	"github.com/deepseek-go/deepseek-go/kernels"
)

// Backend is the CPU backend. It holds no mutable state besides its
// configuration, so one Backend serves any number of sessions concurrently.
type Backend struct {
	threads int
}

var _ kernels.Backend = (*Backend)(nil)

// New returns a CPU backend using up to threads goroutines per op
// (threads <= 0 means runtime.GOMAXPROCS(0)).
func New(threads int) *Backend {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	return &Backend{threads: threads}
}

// Name implements kernels.Backend.
func (b *Backend) Name() string { return "cpu" }

// Close implements kernels.Backend; the CPU backend holds no resources.
func (b *Backend) Close() error { return nil }

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
	return int64(len(m.f32))*4 + int64(len(m.u16))*2 + int64(len(m.i8)) + int64(len(m.scales))*4
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

// dot returns row r of m dotted with x.
func (m *Matrix) dot(r int, x []float32) float32 {
	off := r * m.cols
	switch m.dtype {
	case kernels.F32:
		return dotF32(m.f32[off:off+m.cols], x)
	case kernels.BF16:
		return dotBF16(m.u16[off:off+m.cols], x)
	case kernels.F16:
		return dotF16(m.u16[off:off+m.cols], x)
	default:
		return dotI8(m.i8[off:off+m.cols], x) * m.scales[r]
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
	if len(parts) == 0 {
		return nil, fmt.Errorf("cpu: UploadMatrix: no parts")
	}
	cols, dt := parts[0].Cols, parts[0].DType
	m := &Matrix{cols: cols, dtype: dt}
	for _, p := range parts {
		if p.Cols != cols {
			return nil, fmt.Errorf("cpu: UploadMatrix %s: %d cols, first part %s has %d", p.Name, p.Cols, parts[0].Name, cols)
		}
		if p.DType != dt {
			return nil, fmt.Errorf("cpu: UploadMatrix %s: dtype %v differs from %v of %s", p.Name, p.DType, dt, parts[0].Name)
		}
		if p.Rows <= 0 || p.Cols <= 0 {
			return nil, fmt.Errorf("cpu: UploadMatrix %s: bad shape %dx%d", p.Name, p.Rows, p.Cols)
		}
		if want := p.Rows * p.Cols * dt.Size(); len(p.Data) != want {
			return nil, fmt.Errorf("cpu: UploadMatrix %s: %d bytes, want %d for %dx%d %v", p.Name, len(p.Data), want, p.Rows, p.Cols, dt)
		}
		if dt == kernels.Int8 && len(p.Scales) != p.Rows {
			return nil, fmt.Errorf("cpu: UploadMatrix %s: %d scales for %d rows", p.Name, len(p.Scales), p.Rows)
		}
		m.parts = append(m.parts, p.Rows)
		m.rows += p.Rows
	}
	if dt.Size() == 0 {
		return nil, fmt.Errorf("cpu: UploadMatrix %s: unsupported dtype %v", parts[0].Name, dt)
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
	}
	if toInt8 && dt != kernels.Int8 {
		return quantizeRows(m), nil
	}
	return m, nil
}

// quantizeRows converts a float matrix to symmetric per-row int8.
func quantizeRows(src *Matrix) *Matrix {
	q := &Matrix{rows: src.rows, cols: src.cols, dtype: kernels.Int8, parts: src.parts,
		i8: make([]int8, src.rows*src.cols), scales: make([]float32, src.rows)}
	row := make([]float32, src.cols)
	for r := 0; r < src.rows; r++ {
		src.rowF32(row, r)
		var mx float32
		for _, v := range row {
			mx = max(mx, float32(math.Abs(float64(v))))
		}
		if mx == 0 {
			continue
		}
		s := mx / 127
		q.scales[r] = s
		dst := q.i8[r*src.cols : (r+1)*src.cols]
		for i, v := range row {
			dst[i] = int8(math.Round(float64(v / s)))
		}
	}
	return q
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
	m := table.(*Matrix)
	o := buf(out)
	for i, id := range ids {
		m.rowF32(o[i*m.cols:(i+1)*m.cols], int(id))
	}
}

// MatMul implements kernels.Backend. Work is split over output rows so each
// weight row is read once per call and reused for all n tokens.
func (b *Backend) MatMul(outs []kernels.Buffer, x kernels.Buffer, n int, w kernels.Matrix, bias kernels.Buffer) {
	m := w.(*Matrix)
	xs := buf(x)
	var bs []float32
	if bias != nil {
		bs = buf(bias)
	}
	// Map each global row to (part, row within part).
	ys := make([][]float32, len(m.parts))
	starts := make([]int, len(m.parts)+1)
	for i, p := range m.parts {
		ys[i] = buf(outs[i])
		starts[i+1] = starts[i] + p
	}
	minChunk := max(1, 16384/max(1, m.cols*n))
	parallelFor(m.rows, b.threads, minChunk, func(r0, r1 int) {
		p := 0
		for r := r0; r < r1; r++ {
			for r >= starts[p+1] {
				p++
			}
			width, rr := m.parts[p], r-starts[p]
			y := ys[p]
			var bv float32
			if bs != nil {
				bv = bs[r]
			}
			for t := 0; t < n; t++ {
				y[t*width+rr] = m.dot(r, xs[t*m.cols:(t+1)*m.cols]) + bv
			}
		}
	})
}

// RMSNorm implements kernels.Backend.
func (b *Backend) RMSNorm(out, x, weight kernels.Buffer, n, dim int, eps float32) {
	o, xs, w := buf(out), buf(x), buf(weight)
	for t := 0; t < n; t++ {
		row := xs[t*dim : (t+1)*dim]
		ss := dotF32(row, row)
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
	xs := buf(x)
	half := r.Dim / 2
	cs := make([]float32, half)
	sn := make([]float32, half)
	for t := 0; t < n; t++ {
		pos := float64(pos0 + t)
		for j := 0; j < half; j++ {
			s, c := math.Sincos(pos * float64(r.InvFreq[j]))
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

// Attention implements kernels.Backend.
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
	qs, o := buf(q), buf(out)
	group := heads / kvh
	total := pos0 + n
	parallelFor(n*heads, b.threads, 4, func(s, e int) {
		scores := make([]float32, total)
		for th := s; th < e; th++ {
			t, h := th/heads, th%heads
			g := h / group
			qv := qs[(t*heads+h)*kd : (t*heads+h+1)*kd]
			last := pos0 + t
			mx := float32(math.Inf(-1))
			for j := 0; j <= last; j++ {
				sc := dotF32(qv, kc[(j*kvh+g)*kd:(j*kvh+g+1)*kd]) * scale
				scores[j] = sc
				mx = max(mx, sc)
			}
			var sum float32
			for j := 0; j <= last; j++ {
				e := float32(math.Exp(float64(scores[j] - mx)))
				scores[j] = e
				sum += e
			}
			dst := o[(t*heads+h)*vd : (t*heads+h+1)*vd]
			clear(dst)
			for j := 0; j <= last; j++ {
				axpyF32(dst, scores[j]/sum, vc[(j*kvh+g)*vstride:(j*kvh+g)*vstride+vd])
			}
		}
	})
}

// SwiGLU implements kernels.Backend.
func (b *Backend) SwiGLU(out, gate, up kernels.Buffer, n int) {
	o, g, u := buf(out), buf(gate), buf(up)
	for i := 0; i < n; i++ {
		x := g[i]
		o[i] = x / (1 + float32(math.Exp(float64(-x)))) * u[i]
	}
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
	axpyF32(buf(y)[yOff:yOff+n], alpha, buf(x)[xOff:xOff+n])
}

// Copy2D implements kernels.Backend.
func (b *Backend) Copy2D(dst kernels.Buffer, dstOff, dstStride int, src kernels.Buffer, srcOff, srcStride, rows, cols int) {
	d, s := buf(dst), buf(src)
	for r := 0; r < rows; r++ {
		copy(d[dstOff+r*dstStride:dstOff+r*dstStride+cols], s[srcOff+r*srcStride:srcOff+r*srcStride+cols])
	}
}
