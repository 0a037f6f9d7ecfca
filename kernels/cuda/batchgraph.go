//go:build linux && cgo

package cuda

import (
	"fmt"
	"runtime"
	"unsafe"

	"github.com/deepseek-go/deepseek-go/kernels"
)

var (
	_ kernels.BatchStepCapturer = (*Backend)(nil)
	_ kernels.RowArgmaxer       = (*Backend)(nil)
)

// batchStepState is the backend's part of batched decode graphs.
type batchStepState struct {
	// in holds the inputs of the batched step being captured (nil when
	// none is): Embed, RopeRows and PagedAttention read from it.
	in *batchIn
	// gen counts replacements of backend-owned buffers that a captured
	// step may use (the cuBLASLt activation scratch, split-KV partials):
	// a graph captured at another gen points at freed memory and must not
	// replay. Code that swaps such a buffer bumps it.
	gen uint64
	// ArgmaxRows' device output.
	arg    devptr
	argCap int
}

// batchIn is the device copy of a batched step's inputs, one allocation
// uploaded in one copy: ids[rows], pos[rows], seq[rows], then the block
// tables [rows][width] (a sequence's unused entries are 0; nothing reads
// them).
type batchIn struct {
	p           devptr
	rows, width int
	host        []int32
	spec        kernels.PagedKVSpec // the cache the step's attention uses
	kv          *PagedKV            // kept alive with the graph
}

func (in *batchIn) ids() devptr { return in.p }
func (in *batchIn) pos() devptr { return in.p + devptr(in.rows)*4 }
func (in *batchIn) seq() devptr { return in.p + devptr(2*in.rows)*4 }
func (in *batchIn) tab() devptr { return in.p + devptr(3*in.rows)*4 }
func (in *batchIn) ints() int   { return in.rows * (3 + in.width) }

// fill lays ids and bt out in in.host, checking them against the
// captured shape (and, once known, the cache's blocks).
func (in *batchIn) fill(ids []int32, bt *kernels.Batch) error {
	r := in.rows
	switch {
	case len(ids) != r || bt.Rows() != r:
		return fmt.Errorf("%d ids and %d batch rows for a step of %d rows", len(ids), bt.Rows(), r)
	case len(bt.Seq) != r:
		return fmt.Errorf("%d sequence slots for %d rows", len(bt.Seq), r)
	case len(bt.Tables) > r:
		return fmt.Errorf("%d block tables for a step of %d rows", len(bt.Tables), r)
	}
	if in.spec.Blocks > 0 { // known once the capture ran the attention
		if err := bt.Check(in.spec); err != nil {
			return err
		}
	}
	need, w := in.ints(), in.width
	if cap(in.host) < need {
		in.host = make([]int32, need)
	}
	h := in.host[:need]
	copy(h, ids)
	copy(h[r:], bt.Pos)
	copy(h[2*r:], bt.Seq)
	tab := h[3*r:]
	for i := range r {
		var t []int32
		if i < len(bt.Tables) {
			t = bt.Tables[i]
		}
		if len(t) > w {
			return fmt.Errorf("block table %d of %d blocks is wider than the captured %d", i, len(t), w)
		}
		row := tab[i*w : (i+1)*w]
		clear(row[copy(row, t):])
	}
	in.host = h
	return nil
}

// BatchGraph is a batched decode step captured as a CUDA graph
// (kernels.BatchStepGraph): its ops read the token ids, positions,
// sequence slots and block tables from device arrays that Replay
// rewrites with one copy before launching the graph.
type BatchGraph struct {
	b      *Backend
	g      graphExec
	in     *batchIn
	gen    uint64
	closed bool
}

// CaptureBatchStep implements kernels.BatchStepCapturer. fn's Backend and
// Batcher accept only compute ops (as CaptureStep's view) and take the
// step's ids, positions and tables from the graph's input arrays (the
// slices they are passed must have the captured row count); other
// sessions' ops wait until the capture ends. Block-table entries beyond
// width are an error, as are positions past width blocks.
func (b *Backend) CaptureBatchStep(ids []int32, bt *kernels.Batch, width int, fn func(kernels.Backend, kernels.Batcher) error) (kernels.BatchStepGraph, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return nil, errClosed
	case b.capturing:
		return nil, fmt.Errorf("cuda: nested graph capture")
	case b.err != nil:
		return nil, b.err
	case len(ids) == 0 || width <= 0:
		return nil, fmt.Errorf("cuda: CaptureBatchStep of %d rows, table width %d", len(ids), width)
	}
	in := &batchIn{rows: len(ids), width: width}
	if err := in.fill(ids, bt); err != nil {
		return nil, fmt.Errorf("cuda: CaptureBatchStep: %w", err)
	}
	p, err := b.alloc.get(int64(in.ints()) * 4)
	if err != nil {
		return nil, fmt.Errorf("cuda: CaptureBatchStep inputs: %w", err)
	}
	in.p = p
	if err := b.x.beginCapture(); err != nil {
		b.alloc.put(p)
		return nil, err
	}
	b.capturing, b.bs.in = true, in
	ferr := fn(batchView{captureView{b}}, batchView{captureView{b}})
	g, cerr := b.x.endCapture()
	b.capturing, b.bs.in = false, nil
	if ferr == nil {
		ferr = cerr
	}
	if ferr == nil {
		ferr = b.err
	}
	if ferr == nil && in.kv == nil {
		ferr = fmt.Errorf("no paged attention in the step")
	}
	// Errors recorded while capturing belong to the failed capture: nothing
	// ran on the device, so the backend stays usable.
	b.err = nil
	if ferr != nil {
		if cerr == nil {
			b.x.graphDestroy(g)
		}
		b.alloc.put(p)
		return nil, fmt.Errorf("cuda: capturing the batched decode step: %w", ferr)
	}
	bg := &BatchGraph{b: b, g: g, in: in, gen: b.bs.gen}
	if err := bg.launchLocked(); err != nil {
		bg.closeLocked()
		return nil, err
	}
	runtime.SetFinalizer(bg, func(g *BatchGraph) { g.Close() })
	return bg, nil
}

// Replay implements kernels.BatchStepGraph.
func (g *BatchGraph) Replay(ids []int32, bt *kernels.Batch) error {
	g.b.mu.Lock()
	defer g.b.mu.Unlock()
	if g.closed || g.b.closed {
		return fmt.Errorf("cuda: replay of a closed batched step graph")
	}
	if g.gen != g.b.bs.gen {
		return fmt.Errorf("cuda: batched step graph of %d rows: %w", g.in.rows, kernels.ErrStaleGraph)
	}
	if err := g.in.fill(ids, bt); err != nil {
		return fmt.Errorf("cuda: batched step replay: %w", err)
	}
	return g.launchLocked()
}

// launchLocked uploads the host inputs and launches the graph.
func (g *BatchGraph) launchLocked() error {
	b := g.b
	if err := b.x.htod(g.in.p, unsafe.Pointer(&g.in.host[0]), int64(g.in.ints())*4); err != nil {
		return err
	}
	return b.x.graphLaunch(g.g)
}

// Close implements kernels.BatchStepGraph.
func (g *BatchGraph) Close() error {
	g.b.mu.Lock()
	defer g.b.mu.Unlock()
	g.closeLocked()
	return nil
}

func (g *BatchGraph) closeLocked() {
	if g.closed {
		return
	}
	g.closed = true
	runtime.SetFinalizer(g, nil)
	if g.b.closed {
		return // the context and everything in it are gone already
	}
	g.b.x.sync()
	g.b.x.graphDestroy(g.g)
	g.b.alloc.put(g.in.p)
	g.in.kv = nil
}

// batchView is the Backend and Batcher handed to CaptureBatchStep's fn:
// captureView's ops (Embed reads the step's ids array) plus the batched
// ops reading the step's descriptor arrays.
type batchView struct{ captureView }

var _ kernels.Batcher = batchView{}

func (v batchView) Name() string { return v.b.Name() + " (capturing a batched step)" }
func (v batchView) NewPagedKV(kernels.PagedKVSpec) (kernels.PagedKV, error) {
	return nil, fmt.Errorf("cuda: NewPagedKV during graph capture")
}
func (v batchView) RopeRows(x kernels.Buffer, n, heads, headDim int, pos []int32, r *kernels.Rope) {
	v.b.ropeRows(x, n, heads, headDim, pos, r)
}
func (v batchView) PagedAttention(out, q, k, vv kernels.Buffer, kv kernels.PagedKV, layer int, bt *kernels.Batch, heads int, scale float32) {
	if c, ok := kv.(*PagedKV); ok && v.b.bs.in != nil {
		v.b.bs.in.kv = c
	}
	v.b.pagedAttention(out, q, k, vv, kv, layer, bt, heads, scale)
}

// readBuf is x's device buffer for a call that reads results back to the
// host; nil with errClosed after Close, nil with the pending error when x
// is not a buffer of b. b.mu is held.
func (b *Backend) readBuf(x kernels.Buffer) (*Buffer, error) {
	if b.closed {
		return nil, errClosed
	}
	xb := b.dev(x)
	if xb == nil {
		return nil, b.err
	}
	return xb, nil
}

// ArgmaxRows implements kernels.RowArgmaxer: one block per row (the argmax
// kernel), one download of the ids. It waits for pending work and reports
// its errors.
func (b *Backend) ArgmaxRows(dst []int32, x kernels.Buffer, off, n int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	xb, err := b.readBuf(x)
	if xb == nil {
		return err
	}
	rows := len(dst)
	if rows == 0 {
		return nil
	}
	if off < 0 || n <= 0 || off+rows*n > xb.n {
		return fmt.Errorf("cuda: ArgmaxRows of %d rows of %d at %d in buffer of %d", rows, n, off, xb.n)
	}
	if b.capturing {
		return fmt.Errorf("cuda: ArgmaxRows during graph capture")
	}
	if b.bs.argCap < rows {
		if b.bs.arg != 0 {
			b.alloc.put(b.bs.arg)
		}
		c := max(rows, 256)
		p, err := b.alloc.get(int64(c) * 4)
		if err != nil {
			b.bs.arg, b.bs.argCap = 0, 0
			return fmt.Errorf("cuda: ArgmaxRows output: %w", err)
		}
		b.bs.arg, b.bs.argCap = p, c
	}
	b.launch("argmax", dim3{rows, 1, 1}, dim3{1024, 1, 1}, 0, func(a *args) {
		a.ptr(b.bs.arg).ptr(bp(xb, off)).i32(n)
	})
	b.fail(b.x.dtoh(unsafe.Pointer(&dst[0]), b.bs.arg, int64(rows)*4))
	runtime.KeepAlive(x)
	return b.err
}
