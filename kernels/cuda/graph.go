//go:build linux && cgo

package cuda

import (
	"fmt"
	"runtime"
	"unsafe"

	"github.com/deepseek-go/deepseek-go/kernels"
)

// StepGraph is one decode step captured as a CUDA graph. The captured ops
// read the token id and the position shift from a small device block, so the
// same graph replays every later step: Replay(id, pos) rewrites that block
// (one 8-byte copy) and launches the graph (one call instead of hundreds of
// kernel launches).
type StepGraph struct {
	b       *Backend
	g       graphExec
	params  devptr
	pos0    int
	maxPos  int
	closed  bool
	retains []any // buffers and caches the graph uses stay alive with it
}

// CaptureStep records the ops that fn issues on the backend view it is
// given, as the decode step of token id at position pos, and runs it once.
// The view accepts only compute ops (no Alloc, Upload, Download), Embed of
// exactly one id and positions relative to pos; other sessions' ops wait
// until the capture ends. maxPos bounds the positions Replay accepts (the
// KV cache length). keep lists objects the graph must keep alive.
func (b *Backend) CaptureStep(id, pos, maxPos int, fn func(kernels.Backend) error, keep ...any) (*StepGraph, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, errClosed
	}
	if b.capturing {
		return nil, fmt.Errorf("cuda: nested graph capture")
	}
	if b.err != nil {
		return nil, b.err
	}
	params, err := b.alloc.get(16)
	if err != nil {
		return nil, err
	}
	sg := &StepGraph{b: b, params: params, pos0: pos, maxPos: maxPos, retains: keep}
	if err := b.x.memset32(params, 0, 4); err != nil {
		b.alloc.put(params)
		return nil, err
	}
	if err := b.x.beginCapture(); err != nil {
		b.alloc.put(params)
		return nil, err
	}
	b.capturing, b.dp = true, params
	ferr := fn(captureView{b})
	g, cerr := b.x.endCapture()
	b.capturing, b.dp = false, b.zeroDP
	if ferr == nil {
		ferr = cerr
	}
	if ferr == nil {
		ferr = b.err
	}
	// Errors recorded while capturing belong to the failed capture: nothing
	// ran on the device, so the backend stays usable.
	b.err = nil
	if ferr != nil {
		if cerr == nil {
			b.x.graphDestroy(g)
		}
		b.alloc.put(params)
		return nil, fmt.Errorf("cuda: capturing the decode step: %w", ferr)
	}
	sg.g = g
	if err := sg.replayLocked(id, pos); err != nil {
		sg.closeLocked()
		return nil, err
	}
	runtime.SetFinalizer(sg, func(s *StepGraph) { s.Close() })
	return sg, nil
}

// Replay runs the captured step for token id at position pos.
func (s *StepGraph) Replay(id, pos int) error {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	return s.replayLocked(id, pos)
}

func (s *StepGraph) replayLocked(id, pos int) error {
	if s.closed || s.b.closed {
		return fmt.Errorf("cuda: replay of a closed step graph")
	}
	if pos < 0 || pos >= s.maxPos {
		return fmt.Errorf("cuda: step position %d outside [0, %d)", pos, s.maxPos)
	}
	p := [2]int32{int32(id), int32(pos - s.pos0)}
	if err := s.b.x.htod(s.params, unsafe.Pointer(&p[0]), 8); err != nil {
		return err
	}
	return s.b.x.graphLaunch(s.g)
}

// Close frees the graph.
func (s *StepGraph) Close() error {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	s.closeLocked()
	return nil
}

func (s *StepGraph) closeLocked() {
	if s.closed {
		return
	}
	s.closed = true
	if s.b.closed {
		return // the context and everything in it are gone already
	}
	s.b.x.sync()
	s.b.x.graphDestroy(s.g)
	s.b.alloc.put(s.params)
	s.retains = nil
}

// captureView is the kernels.Backend handed to CaptureStep's fn: the
// backend's ops without taking its lock (CaptureStep holds it).
type captureView struct{ b *Backend }

var _ kernels.Backend = captureView{}

func (v captureView) Name() string { return v.b.Name() + " (capturing)" }
func (v captureView) Close() error { return fmt.Errorf("cuda: Close during graph capture") }
func (v captureView) UploadMatrix([]kernels.HostMatrix, bool) (kernels.Matrix, error) {
	return nil, fmt.Errorf("cuda: UploadMatrix during graph capture")
}
func (v captureView) Alloc(int) (kernels.Buffer, error) {
	return nil, fmt.Errorf("cuda: Alloc during graph capture")
}
func (v captureView) Upload(kernels.Buffer, int, []float32) error {
	return fmt.Errorf("cuda: Upload during graph capture")
}
func (v captureView) Download([]float32, kernels.Buffer, int) error {
	return fmt.Errorf("cuda: Download during graph capture")
}
func (v captureView) NewKVCache(kernels.KVSpec) (kernels.KVCache, error) {
	return nil, fmt.Errorf("cuda: NewKVCache during graph capture")
}
func (v captureView) Embed(out kernels.Buffer, table kernels.Matrix, ids []int32) {
	v.b.embed(out, table, ids)
}
func (v captureView) MatMul(outs []kernels.Buffer, x kernels.Buffer, n int, w kernels.Matrix, bias kernels.Buffer) {
	v.b.matmul(outs, x, n, w, bias)
}
func (v captureView) MatMulAdd(out, tmp, x kernels.Buffer, n int, w kernels.Matrix, bias kernels.Buffer) {
	v.b.matMulAdd(out, tmp, x, n, w, bias)
}
func (v captureView) MatMulHeads(y kernels.Buffer, yRow, yHead int, x kernels.Buffer, xRow, xHead, n int, w kernels.Matrix) {
	v.b.matMulHeads(y, yRow, yHead, x, xRow, xHead, n, w)
}
func (v captureView) MLAPack(k, qabs, q, lat, kr, weight kernels.Buffer, n int, s kernels.MLAPackShape) {
	v.b.mlaPack(k, qabs, q, lat, kr, weight, n, s)
}
func (v captureView) RMSNorm(out, x, weight kernels.Buffer, n, dim int, eps float32) {
	v.b.rmsnorm(out, x, weight, n, dim, eps)
}
func (v captureView) ApplyRope(x kernels.Buffer, n, heads, headDim, pos0 int, r *kernels.Rope) {
	v.b.applyRope(x, n, heads, headDim, pos0, r)
}
func (v captureView) Attention(out, q, k, vv kernels.Buffer, cache kernels.KVCache, layer, pos0, n, heads int, scale float32) {
	v.b.attention(out, q, k, vv, cache, layer, pos0, n, heads, scale)
}
func (v captureView) SwiGLU(out, gate, up kernels.Buffer, n int) { v.b.swiglu(out, gate, up, n) }
func (v captureView) Add(out, a, c kernels.Buffer, n int)        { v.b.add(out, a, c, n) }
func (v captureView) Axpy(y kernels.Buffer, yOff int, x kernels.Buffer, xOff int, alpha float32, n int) {
	v.b.axpy(y, yOff, x, xOff, alpha, n)
}
func (v captureView) Copy2D(dst kernels.Buffer, dstOff, dstStride int, src kernels.Buffer, srcOff, srcStride, rows, cols int) {
	v.b.copy2D(dst, dstOff, dstStride, src, srcOff, srcStride, rows, cols)
}
