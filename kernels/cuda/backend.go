//go:build linux && cgo

package cuda

import (
	_ "embed"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"strings"
	"sync"
	"unsafe"

	"github.com/deepseek-go/deepseek-go/kernels"
	"github.com/deepseek-go/deepseek-go/quant"
)

//go:embed kernels.ptx
var ptxImage []byte

// Available reports whether a CUDA device can be used, and why not.
func Available() error {
	_, err := Devices()
	return err
}

// Options configure New.
type Options struct {
	Device int // device ordinal
	// KVDType is the KV-cache storage: kernels.F32 (the zero value; exact
	// float32 attention) or kernels.F16 (half the bytes, tensor-core flash
	// attention for prefill).
	KVDType kernels.DType
	// KVAuto picks the KV dtype per cache: f16 when every matrix uploaded
	// so far is 16-bit, f32 as soon as one is f32 (the engine's choice).
	KVAuto bool
	// NoCublasLt forces the built-in GEMM even when cuBLASLt is present.
	NoCublasLt bool
}

// Backend implements kernels.Backend on one CUDA device. All work goes to
// one stream in issue order; a mutex serialises issuing so sessions may share
// the backend (their device work then runs one op after another).
type Backend struct {
	x         *ctx
	info      DeviceInfo
	mod       module
	fn        map[string]function
	lt        *cublasLt
	ltErr     error
	kvdt      kernels.DType
	kvAuto    bool
	skipStore bool // set by AttentionNoStore
	sawF32    bool

	mu        sync.Mutex
	a         args
	err       error  // first asynchronous failure, reported by Download
	dp        devptr // current step parameters {id, dpos}: zeros or a graph's
	zeroDP    devptr
	capturing bool
	ids       devptr
	idsCap    int
	scratch   devptr // activations converted for cuBLASLt
	scrCap    int64
	samp      sampleBufs // Sample's and SampleRows' (sample.go)
	ropes     map[string]devptr
	bd        batchDev       // last batch descriptor (paged.go)
	bs        batchStepState // batched decode graphs (batchgraph.go)
	fp8       fp8Scratch     // fp8 prefill's dequantised bf16 slice (fp8.go)
	mla       mlaState       // MatMulHeads' staging, test switch (mla.go)
	alloc     *allocator
	closed    bool
	smemMax   int
}

var _ kernels.Backend = (*Backend)(nil)

// entry is a kernel the PTX module defines: its name, and whether its body
// waits for the previous grid (griddepcontrol.wait, PDL_ENTRY in
// kernels.cu), which makes programmatic dependent launch safe for it.
type entry struct {
	name string
	pdl  bool
}

// entries lists the kernels a PTX module defines (its ".entry" lines), so
// that a kernel added to kernels.cu or a *.cuh file it includes needs no
// list here.
func entries(ptx []byte) []entry {
	var es []entry
	for _, line := range strings.Split(string(ptx), "\n") {
		line = strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(line, ".visible .entry "); ok {
			if i := strings.IndexByte(rest, '('); i > 0 {
				es = append(es, entry{name: rest[:i]})
			}
			continue
		}
		if len(es) > 0 && strings.HasPrefix(line, "griddepcontrol.wait") {
			es[len(es)-1].pdl = true
		}
	}
	return es
}

// New opens device opts.Device: primary context, one stream, the embedded
// PTX module and, when found, cuBLASLt. Without a driver or device it
// returns an error starting "cuda unavailable".
func New(opts Options) (*Backend, error) {
	devs, err := Devices()
	if err != nil {
		return nil, err
	}
	if opts.Device < 0 || opts.Device >= len(devs) {
		return nil, fmt.Errorf("cuda: device %d requested, %d present", opts.Device, len(devs))
	}
	if opts.KVDType != kernels.F16 && opts.KVDType != kernels.F32 {
		return nil, fmt.Errorf("cuda: KV cache dtype %v not supported (f16 or f32)", opts.KVDType)
	}
	x, err := newCtx(opts.Device)
	if err != nil {
		return nil, err
	}
	b := &Backend{x: x, info: devs[opts.Device], fn: map[string]function{}, kvdt: opts.KVDType, kvAuto: opts.KVAuto, ropes: map[string]devptr{}}
	b.alloc = newAllocator(x)
	image := ptxImage
	if path := os.Getenv("DSGO_PTX"); path != "" {
		// Freshly built PTX on a GPU host, before it is committed.
		if image, err = os.ReadFile(path); err != nil {
			x.close()
			return nil, fmt.Errorf("cuda: DSGO_PTX: %w", err)
		}
	}
	if b.mod, err = x.loadModule(image); err != nil {
		x.close()
		return nil, fmt.Errorf("cuda: loading kernels.ptx: %w", err)
	}
	for _, e := range entries(image) {
		f, err := x.function(b.mod, e.name)
		if err != nil {
			b.Close()
			return nil, err
		}
		f.pdl = e.pdl
		b.fn[e.name] = f
	}
	// Headroom for the kernels' static shared memory.
	optin := x.attr(attrMaxSharedPerBlockOptin) - 2048
	b.smemMax = optin
	for _, f := range b.fn {
		// A kernel whose static shared memory leaves less than the optin
		// headroom keeps the default 48 KiB dynamic limit; the launch of
		// one that needs more then fails with the driver's error.
		_ = x.setMaxDynSmem(f, optin)
	}
	if b.zeroDP, err = b.alloc.get(16); err == nil {
		err = x.memset32(b.zeroDP, 0, 4)
	}
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("cuda: setup: %w", err)
	}
	b.dp = b.zeroDP
	if !opts.NoCublasLt {
		b.lt, b.ltErr = newCublasLt(x)
	} else {
		b.ltErr = fmt.Errorf("disabled by option")
	}
	return b, nil
}

// Name implements kernels.Backend: "cuda:" and the device name.
func (b *Backend) Name() string { return "cuda:" + b.info.Name }

// Device describes the device in use.
func (b *Backend) Device() DeviceInfo { return b.info }

// CublasLt reports whether cuBLASLt is used for prefill GEMMs, and why not.
func (b *Backend) CublasLt() (bool, error) { return b.lt != nil, b.ltErr }

// MemInfo returns the device's free and total memory in bytes. Free
// counts the caching allocator's idle blocks, which it hands back to the
// driver when an allocation needs them: a budget sized from it does not
// shrink with what earlier sessions freed.
func (b *Backend) MemInfo() (free, total int64, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, 0, errClosed
	}
	if free, total, err = b.x.memInfo(); err != nil {
		return 0, 0, err
	}
	_, idle := b.alloc.stats()
	return min(free+idle, total), total, nil
}

// Close implements kernels.Backend: frees all device memory and the context.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	b.x.sync()
	if b.lt != nil {
		b.lt.close(b.x)
	}
	b.alloc.releaseAll()
	if b.mod.m != nil {
		b.x.unloadModule(b.mod)
	}
	b.x.close()
	return nil
}

var errClosed = errors.New("cuda: backend is closed")

// flash2Rows is the query rows of a flash2 block (flash2_fwd<DP, 2, 64>:
// 4 warps of 2 m16 tiles).
const flash2Rows = 128

// flash2Dims is flash2's padded head dim (64 or 128) and dynamic shared
// memory (Q tile, double-buffered K and V tiles of 64 keys) for an f16
// cache of head dim kd with values of the same dim beside the keys; ok is
// false when flash2 does not take the shape or the device lacks the
// shared memory. Attention and PagedAttention (flash2_paged) share it.
func (b *Backend) flash2Dims(dt kernels.DType, vInK bool, kd, vd int) (dp, smem int, ok bool) {
	if dt != kernels.F16 || vInK || kd != vd || kd%8 != 0 || kd <= 32 || kd > 128 {
		return 0, 0, false
	}
	dp = 64
	if kd > 64 {
		dp = 128
	}
	const bn = 64
	smem = (flash2Rows + 4*bn) * (dp + 8) * 2
	return dp, smem, smem <= b.smemMax
}

// dtSuffix names the kernel instance for weights of dt (gemv_bf16_1,
// moe_gateup_dec_fp8, …): "" for a dtype without kernels. A switch, not a
// map literal: the launch paths call it per op.
func dtSuffix(dt kernels.DType) string {
	switch dt {
	case kernels.F32:
		return "f32"
	case kernels.F16:
		return "f16"
	case kernels.BF16:
		return "bf16"
	case kernels.Int8:
		return "i8"
	case kernels.FP8:
		return "fp8"
	}
	return ""
}

// hostErr is the error of op, a host-side call made under b.mu: errClosed
// after Close, a capture error naming op while a graph is being captured.
func (b *Backend) hostErr(op string) error {
	if b.closed {
		return errClosed
	}
	if b.capturing {
		return fmt.Errorf("cuda: %s during graph capture", op)
	}
	return nil
}

// fail records the first asynchronous error; Download reports it.
func (b *Backend) fail(err error) {
	if err != nil && b.err == nil {
		b.err = err
	}
}

func (b *Backend) failf(format string, a ...any) { b.fail(fmt.Errorf("cuda: "+format, a...)) }

// Err returns the first recorded error, if any.
func (b *Backend) Err() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

func (b *Backend) launch(name string, grid, block dim3, smem int, build func(a *args)) {
	if b.closed {
		b.failf("%s after Close", name)
		return
	}
	b.a.reset()
	build(&b.a)
	b.fail(b.x.launch(b.fn[name], grid, block, smem, &b.a))
}

func blocks(n int64, per int) int {
	g := (n + int64(per) - 1) / int64(per)
	if g > 65535*4 {
		g = 65535 * 4
	}
	return int(g)
}

// ---------------------------------------------------------------- memory

// Buffer is a float32 device buffer.
type Buffer struct {
	p devptr
	n int
}

// Len implements kernels.Buffer.
func (x *Buffer) Len() int { return x.n }

// Ptr is the device address (benchmarks, interop).
func (x *Buffer) Ptr() uint64 { return x.p }

func (b *Backend) dev(x kernels.Buffer) *Buffer {
	if x == nil {
		return nil
	}
	d, ok := x.(*Buffer)
	if !ok {
		b.failf("buffer of type %T is not a cuda buffer", x)
		return nil
	}
	return d
}

func bp(x *Buffer, off int) devptr {
	if x == nil {
		return 0
	}
	return x.p + devptr(off)*4
}

// Matrix is a weight matrix in device memory.
type Matrix struct {
	p          devptr
	scales     devptr // int8: one float32 per row; fp8: the block scales
	rows, cols int
	dt         kernels.DType
	parts      []int
	fp8        *fp8Layout // fp8 only (fp8.go)
}

// Rows implements kernels.Matrix.
func (m *Matrix) Rows() int { return m.rows }

// Cols implements kernels.Matrix.
func (m *Matrix) Cols() int { return m.cols }

// DType implements kernels.Matrix.
func (m *Matrix) DType() kernels.DType { return m.dt }

// Parts implements kernels.Matrix.
func (m *Matrix) Parts() []int { return m.parts }

// Bytes implements kernels.Matrix.
func (m *Matrix) Bytes() int64 {
	n := int64(m.rows) * int64(m.cols) * int64(m.dt.Size())
	if m.dt == kernels.Int8 {
		n += int64(m.rows) * 4
	}
	if m.fp8 != nil {
		n += m.fp8.scaleBytes
	}
	return n
}

// Ptr is the device address (benchmarks).
func (m *Matrix) Ptr() uint64 { return m.p }

// stagingSize is each of the two pinned staging buffers used by UploadMatrix.
const stagingSize = 16 << 20

// UploadMatrix implements kernels.Backend. Parts are copied once through two
// pinned staging buffers (the host side may be an mmapped file).
func (b *Backend) UploadMatrix(parts []kernels.HostMatrix, toInt8 bool) (kernels.Matrix, error) {
	partRows, err := kernels.CheckParts(parts)
	if err != nil {
		return nil, fmt.Errorf("cuda: %w", err)
	}
	cols, dt := parts[0].Cols, parts[0].DType
	m := &Matrix{cols: cols, dt: dt, parts: partRows}
	for _, r := range partRows {
		m.rows += r
	}
	if toInt8 && dt != kernels.Int8 {
		q, err := quantizeParts(parts)
		if err != nil {
			return nil, err
		}
		parts, dt = q, kernels.Int8
		m.dt = dt
	}
	var sc []float32 // scales uploaded after the values
	if dt == kernels.FP8 {
		if m.fp8, sc, err = fp8LayoutOf(parts); err != nil {
			return nil, err
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.hostErr("UploadMatrix " + parts[0].Name); err != nil {
		return nil, err
	}
	total := m.Bytes() + 16 // int8, fp8: scales alignment
	p, err := b.alloc.get(total)
	if err != nil {
		free, _, _ := b.x.memInfo()
		return nil, fmt.Errorf("cuda: UploadMatrix %s: %d bytes needed, %d free on the device: %w", parts[0].Name, total, free, err)
	}
	m.p = p
	if dt == kernels.F32 {
		b.sawF32 = true
	}
	if dt == kernels.Int8 || dt == kernels.FP8 {
		// Scales after the one-byte values, 16-byte aligned.
		m.scales = p + devptr((int64(m.rows)*int64(m.cols)+15)&^15)
	}
	if err := b.uploadStaged(p, parts); err != nil {
		b.alloc.put(p)
		return nil, fmt.Errorf("cuda: UploadMatrix %s: %w", parts[0].Name, err)
	}
	if dt == kernels.Int8 {
		for _, part := range parts {
			sc = append(sc, part.Scales...)
		}
	}
	if len(sc) > 0 {
		if err := b.x.htod(m.scales, unsafe.Pointer(&sc[0]), int64(len(sc))*4); err != nil {
			b.alloc.put(p)
			return nil, fmt.Errorf("cuda: UploadMatrix %s scales: %w", parts[0].Name, err)
		}
	}
	return m, nil
}

// quantizeParts converts float parts to symmetric per-row int8 on the host
// (quant.QuantizeRow: scale = max|w|/127), as the CPU backend does.
func quantizeParts(parts []kernels.HostMatrix) ([]kernels.HostMatrix, error) {
	out := make([]kernels.HostMatrix, len(parts))
	for i, p := range parts {
		q := kernels.HostMatrix{Name: p.Name, Rows: p.Rows, Cols: p.Cols, DType: kernels.Int8,
			Data: make([]byte, p.Rows*p.Cols), Scales: make([]float32, p.Rows)}
		row := make([]float32, p.Cols)
		es := p.DType.Size()
		dst := unsafe.Slice((*int8)(unsafe.Pointer(&q.Data[0])), len(q.Data))
		for r := 0; r < p.Rows; r++ {
			src := p.Data[r*p.Cols*es : (r+1)*p.Cols*es]
			var err error
			switch p.DType {
			case kernels.F32:
				err = quant.DecodeF32(row, src)
			case kernels.BF16:
				err = quant.DecodeBF16(row, src)
			case kernels.F16:
				err = quant.DecodeF16(row, src)
			case kernels.FP8:
				dequantFP8Row(row, &p, r)
			default:
				err = fmt.Errorf("dtype %v", p.DType)
			}
			if err != nil {
				return nil, fmt.Errorf("cuda: UploadMatrix %s: row %d: %w", p.Name, r, err)
			}
			if q.Scales[r], _, err = quant.QuantizeRow(dst[r*p.Cols:(r+1)*p.Cols], row); err != nil {
				return nil, fmt.Errorf("cuda: UploadMatrix %s: row %d: %w", p.Name, r, err)
			}
		}
		out[i] = q
	}
	return out, nil
}

// uploadStaged streams the parts' bytes to dst through two pinned buffers:
// the host fills one while the copy engine drains the other.
func (b *Backend) uploadStaged(dst devptr, parts []kernels.HostMatrix) error {
	var st [2]pinned
	var ev [2]event
	var used [2]bool
	for i := range st {
		var err error
		if st[i], err = b.x.allocHost(stagingSize); err != nil {
			return err
		}
		defer b.x.freeHost(st[i])
		if ev[i], err = b.x.newEvent(); err != nil {
			return err
		}
		defer b.x.destroyEvent(ev[i])
	}
	k := 0
	off := dst
	for _, p := range parts {
		data := p.Data
		for len(data) > 0 {
			n := min(len(data), stagingSize)
			if used[k] {
				if err := b.x.waitEvent(ev[k]); err != nil {
					return err
				}
			}
			fillPinned(st[k], 0, data[:n])
			if err := b.x.htodPinned(off, st[k], n); err != nil {
				return err
			}
			if err := b.x.record(ev[k]); err != nil {
				return err
			}
			used[k] = true
			off += devptr(n)
			data = data[n:]
			k ^= 1
		}
	}
	return b.x.sync()
}

// Alloc implements kernels.Backend.
func (b *Backend) Alloc(n int) (kernels.Buffer, error) {
	if n < 0 {
		return nil, fmt.Errorf("cuda: Alloc: negative size %d", n)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.allocBuf(n)
}

func (b *Backend) allocBuf(n int) (*Buffer, error) {
	if err := b.hostErr("Alloc"); err != nil {
		return nil, err
	}
	p, err := b.alloc.get(int64(max(n, 1)) * 4)
	if err != nil {
		free, _, _ := b.x.memInfo()
		return nil, fmt.Errorf("cuda: Alloc %d floats (%d bytes free): %w", n, free, err)
	}
	if err := b.x.memset32(p, 0, int64(max(n, 1))); err != nil {
		return nil, err
	}
	buf := &Buffer{p: p, n: n}
	al := b.alloc
	runtime.SetFinalizer(buf, func(x *Buffer) { al.put(x.p) })
	return buf, nil
}

// Upload implements kernels.Backend.
func (b *Backend) Upload(dst kernels.Buffer, off int, src []float32) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errClosed
	}
	d := b.dev(dst)
	if d == nil {
		return b.err
	}
	if off < 0 || off+len(src) > d.n {
		return fmt.Errorf("cuda: Upload of %d floats at %d into buffer of %d", len(src), off, d.n)
	}
	if b.capturing {
		return fmt.Errorf("cuda: Upload during graph capture")
	}
	if len(src) == 0 {
		return nil
	}
	err := b.x.htod(bp(d, off), unsafe.Pointer(&src[0]), int64(len(src))*4)
	runtime.KeepAlive(dst)
	return err
}

// Download implements kernels.Backend: it waits for all issued work and
// returns the first error any of it recorded.
func (b *Backend) Download(dst []float32, src kernels.Buffer, off int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errClosed
	}
	s := b.dev(src)
	if s == nil {
		return b.err
	}
	if off < 0 || off+len(dst) > s.n {
		return fmt.Errorf("cuda: Download of %d floats at %d from buffer of %d", len(dst), off, s.n)
	}
	if b.capturing {
		return fmt.Errorf("cuda: Download during graph capture")
	}
	if b.err != nil {
		return b.err
	}
	var err error
	if len(dst) > 0 {
		err = b.x.dtoh(unsafe.Pointer(&dst[0]), bp(s, off), int64(len(dst))*4)
	} else {
		err = b.x.sync()
	}
	runtime.KeepAlive(src)
	b.fail(err)
	return b.err
}

// KVCache is a device-resident cache: per layer K [MaxTokens, KVHeads, KDim]
// and V [MaxTokens, KVHeads, VDim] in f16 or f32.
type KVCache struct {
	spec kernels.KVSpec
	kvMem
}

// kvMem is the device memory of a cache (contiguous or paged): keys,
// values (0 when they live in the keys) and the split-KV partials.
type kvMem struct {
	dt      kernels.DType
	k, v    devptr
	part    devptr // split-KV partials
	partCap int64  // floats
}

// newKVMem allocates and zeroes kn key and vn value elements (vn 0: no
// values) in the backend's KV dtype; the finalizer of owner frees them.
func (b *Backend) newKVMem(kn, vn int64) (kvMem, error) {
	m := kvMem{dt: b.kvdt}
	if b.kvAuto {
		m.dt = kernels.F16
		if b.sawF32 {
			m.dt = kernels.F32
		}
	}
	es := int64(m.dt.Size())
	var err error
	if m.k, err = b.alloc.get(kn * es); err != nil {
		free, _, _ := b.x.memInfo()
		return m, fmt.Errorf("%d bytes needed, %d free: %w", (kn+vn)*es, free, err)
	}
	b.fail(b.x.memset32(m.k, 0, kn*es/4))
	if vn > 0 {
		if m.v, err = b.alloc.get(vn * es); err != nil {
			b.alloc.put(m.k)
			free, _, _ := b.x.memInfo()
			return m, fmt.Errorf("%d bytes needed, %d free: %w", (kn+vn)*es, free, err)
		}
		b.fail(b.x.memset32(m.v, 0, vn*es/4))
	}
	return m, nil
}

// growPartials makes the split-KV partials hold at least need floats;
// false (the failure recorded) when the device is out of memory.
func (b *Backend) growPartials(m *kvMem, need int64) bool {
	if m.partCap >= need {
		return true
	}
	if m.part != 0 {
		b.alloc.put(m.part)
		b.bs.gen++ // graphs that captured the old partials are stale
	}
	p, err := b.alloc.get(need * 4)
	if err != nil {
		b.fail(err)
		return false
	}
	m.part, m.partCap = p, need
	return true
}

// release frees the cache memory (from a finalizer).
func (m *kvMem) release(al *allocator) {
	for _, p := range []devptr{m.k, m.v, m.part} {
		if p != 0 {
			al.put(p)
		}
	}
}

// Spec implements kernels.KVCache.
func (c *KVCache) Spec() kernels.KVSpec { return c.spec }

// Bytes implements kernels.KVCache.
func (c *KVCache) Bytes() int64 {
	s := c.spec
	n := int64(s.Layers) * int64(s.MaxTokens) * int64(s.KVHeads) * int64(s.KDim)
	if !s.VInK {
		n += int64(s.Layers) * int64(s.MaxTokens) * int64(s.KVHeads) * int64(s.VDim)
	}
	return n * int64(c.dt.Size())
}

// NewKVCache implements kernels.Backend.
func (b *Backend) NewKVCache(spec kernels.KVSpec) (kernels.KVCache, error) {
	if spec.Layers <= 0 || spec.MaxTokens <= 0 || spec.KVHeads <= 0 || spec.KDim <= 0 || spec.VDim <= 0 {
		return nil, fmt.Errorf("cuda: NewKVCache: bad spec %+v", spec)
	}
	if spec.VInK && spec.VDim > spec.KDim {
		return nil, fmt.Errorf("cuda: NewKVCache: VInK with VDim %d > KDim %d", spec.VDim, spec.KDim)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.hostErr("NewKVCache"); err != nil {
		return nil, err
	}
	kn := int64(spec.Layers) * int64(spec.MaxTokens) * int64(spec.KVHeads) * int64(spec.KDim)
	var vn int64
	if !spec.VInK {
		vn = int64(spec.Layers) * int64(spec.MaxTokens) * int64(spec.KVHeads) * int64(spec.VDim)
	}
	mem, err := b.newKVMem(kn, vn)
	if err != nil {
		return nil, fmt.Errorf("cuda: NewKVCache: %w", err)
	}
	c := &KVCache{spec: spec, kvMem: mem}
	al := b.alloc
	runtime.SetFinalizer(c, func(c *KVCache) { c.release(al) })
	return c, nil
}

// ---------------------------------------------------------------- ops

// Embed implements kernels.Backend.
func (b *Backend) Embed(out kernels.Buffer, table kernels.Matrix, ids []int32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.embed(out, table, ids)
}

func (b *Backend) embed(out kernels.Buffer, table kernels.Matrix, ids []int32) {
	o := b.dev(out)
	m, ok := table.(*Matrix)
	if o == nil || !ok || len(ids) == 0 {
		if !ok {
			b.failf("Embed: table of type %T", table)
		}
		return
	}
	if o.n < len(ids)*m.cols {
		b.failf("Embed: output of %d floats for %d ids × %d", o.n, len(ids), m.cols)
		return
	}
	var idp devptr
	if in := b.bs.in; in != nil { // a batched step: ids from its input array
		if len(ids) != in.rows {
			b.failf("Embed of %d ids in a captured step of %d rows", len(ids), in.rows)
			return
		}
		idp = in.ids()
	} else if b.capturing {
		if len(ids) != 1 {
			b.failf("Embed of %d ids in a captured step (one token per step)", len(ids))
			return
		}
	} else {
		for _, id := range ids {
			if id < 0 || int(id) >= m.rows {
				b.failf("Embed: token id %d outside the vocabulary of %d", id, m.rows)
				return
			}
		}
		if b.idsCap < len(ids) {
			if b.ids != 0 {
				b.alloc.put(b.ids)
			}
			n := max(len(ids), 4096)
			p, err := b.alloc.get(int64(n) * 4)
			if err != nil {
				b.fail(err)
				return
			}
			b.ids, b.idsCap = p, n
		}
		b.fail(b.x.htod(b.ids, unsafe.Pointer(&ids[0]), int64(len(ids))*4))
		idp = b.ids
	}
	name := map[kernels.DType]string{kernels.F32: "embed_f32", kernels.F16: "embed_f16", kernels.BF16: "embed_bf16", kernels.Int8: "embed_i8", kernels.FP8: "embed_fp8"}[m.dt]
	b.launch(name, dim3{len(ids), 1, 1}, dim3{256, 1, 1}, 0, func(a *args) {
		a.ptr(o.p).ptr(m.p).ptr(idp).ptr(b.dp).i32(m.cols).i32(m.rows)
		switch m.dt {
		case kernels.Int8:
			a.ptr(m.scales)
		case kernels.FP8:
			d := m.fp8Desc()
			a.raw(d[:], 8)
		}
	})
}

// MatMul implements kernels.Backend. Up to 8 tokens use the GEMV kernels
// (one pass over the weights, all fused parts in one launch); more use
// cuBLASLt when present, else the tiled kernel.
func (b *Backend) MatMul(outs []kernels.Buffer, x kernels.Buffer, n int, w kernels.Matrix, bias kernels.Buffer) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.matmul(outs, x, n, w, bias)
}

// opMatrix is w as this backend's matrix for op on n rows: false when
// there is nothing to do (n ≤ 0) or, after a failure naming op, when w is
// another backend's matrix.
func (b *Backend) opMatrix(op string, w kernels.Matrix, n int) (*Matrix, bool) {
	if n <= 0 {
		return nil, false
	}
	m, ok := w.(*Matrix)
	if !ok {
		b.failf("%s: matrix of type %T", op, w)
	}
	return m, ok
}

func (b *Backend) matmul(outs []kernels.Buffer, x kernels.Buffer, n int, w kernels.Matrix, bias kernels.Buffer) {
	m, ok := b.opMatrix("MatMul", w, n)
	if !ok {
		return
	}
	if len(m.parts) > 4 { // a matrix of heads (MatMulHeads) has more
		b.failf("MatMul: %d fused parts, at most 4", len(m.parts))
		return
	}
	xb, bb := b.dev(x), b.dev(bias)
	if xb == nil || len(outs) != len(m.parts) {
		b.failf("MatMul: %d outputs for %d parts", len(outs), len(m.parts))
		return
	}
	if xb.n < n*m.cols {
		b.failf("MatMul: input of %d floats for %d × %d", xb.n, n, m.cols)
		return
	}
	if bb != nil && bb.n < m.rows {
		b.failf("MatMul: bias of %d floats for %d rows", bb.n, m.rows)
		return
	}
	var ys [4]devptr
	var starts [5]int
	s := 0
	for i, r := range m.parts {
		o := b.dev(outs[i])
		if o == nil || o.n < n*r {
			b.failf("MatMul: output %d too small for %d × %d", i, n, r)
			return
		}
		ys[i] = o.p
		starts[i] = s
		s += r
	}
	for i := len(m.parts); i < 4; i++ {
		starts[i] = m.rows
	}
	starts[4] = m.rows
	// Parts struct {float* y0..y3; int s1, s2, s3, rows}.
	var parts [48]byte
	for i := 0; i < 4; i++ {
		*(*uint64)(unsafe.Pointer(&parts[8*i])) = ys[i]
	}
	for i := 1; i <= 3; i++ {
		*(*int32)(unsafe.Pointer(&parts[32+4*(i-1)])) = int32(starts[i])
	}
	*(*int32)(unsafe.Pointer(&parts[44])) = int32(m.rows)
	if m.dt == kernels.FP8 {
		b.matmulFP8(m, xb, n, parts[:], ys, starts, bb)
		return
	}
	biasp := bp(bb, 0)
	dts := dtSuffix(m.dt)
	scp := m.scales
	el := 16 / m.dt.Size()
	if n <= 8 {
		nt := 8
		if n == 1 {
			nt = 1
		} else if n <= 4 {
			nt = 4
		}
		if m.cols%el == 0 {
			const rowsPerWarp = 2 // NOTES.md: 1 and 4 rows per warp measured slower
			warps := (m.rows + rowsPerWarp - 1) / rowsPerWarp
			b.launch(fmt.Sprintf("gemv_%s_%d", dts, nt), dim3{(warps + 7) / 8, 1, 1}, dim3{256, 1, 1}, 0, func(a *args) {
				a.ptr(m.p).ptr(xb.p).i32(n).raw(parts[:], 8).ptr(biasp).i32(m.cols).ptr(scp)
			})
		} else {
			b.launch("gemvs_"+dts, dim3{(m.rows + 7) / 8, 1, 1}, dim3{256, 1, 1}, 0, func(a *args) {
				a.ptr(m.p).ptr(xb.p).i32(n).raw(parts[:], 8).ptr(biasp).i32(m.cols).ptr(scp)
			})
		}
		return
	}
	if b.lt != nil && m.dt != kernels.Int8 {
		if b.matmulLt(m, xb, n, ys, starts, bb) {
			return
		}
	}
	if (m.dt == kernels.BF16 || m.dt == kernels.F16) && m.cols%8 == 0 {
		// Tensor-core fallback on activations rounded to the weight dtype.
		x16, ok := b.to16(m.dt, xb, n, m.cols)
		if !ok {
			return
		}
		b.launch("gemm_wmma_"+dts, dim3{(m.rows + 63) / 64, (n + 63) / 64, 1}, dim3{128, 1, 1}, 0, func(a *args) {
			a.ptr(m.p).ptr(x16).i32(n).raw(parts[:], 8).ptr(biasp).i32(m.cols)
		})
		return
	}
	b.launch("gemm_"+dts, dim3{(m.rows + 63) / 64, (n + 63) / 64, 1}, dim3{256, 1, 1}, 0, func(a *args) {
		a.ptr(m.p).ptr(xb.p).i32(n).raw(parts[:], 8).ptr(biasp).i32(m.cols).ptr(scp)
	})
}

// matmulLt runs one cuBLASLt GEMM per fused part (the parts are contiguous
// row ranges of the weight); it reports false when cuBLASLt cannot plan the
// shape so the caller falls back.
func (b *Backend) matmulLt(m *Matrix, xb *Buffer, n int, ys [4]devptr, starts [5]int, bias *Buffer) bool {
	ab := ltR32F
	xin := xb.p
	switch m.dt {
	case kernels.BF16, kernels.F16:
		ab = ltR16BF
		if m.dt == kernels.F16 {
			ab = ltR16F
		}
		x16, ok := b.to16(m.dt, xb, n, m.cols)
		if !ok {
			return true // the failure is recorded
		}
		xin = x16
	}
	es := devptr(m.dt.Size())
	for i, r := range m.parts {
		A := m.p + devptr(starts[i])*devptr(m.cols)*es
		if err := b.lt.matmul(b.x, ab, A, xin, ys[i], r, n, m.cols); err != nil {
			if i == 0 {
				return false // not plannable: the built-in kernel takes it
			}
			b.fail(err)
			return true
		}
		b.addPartBias(ys[i], bias, starts[i], n, r)
	}
	return true
}

// addPartBias adds rows start..start+r of bias (nil: none) to y[n, r], the
// output of one part of a cuBLASLt GEMM (which has no bias epilogue here).
func (b *Backend) addPartBias(y devptr, bias *Buffer, start, n, r int) {
	if bias == nil {
		return
	}
	bptr := bias.p + devptr(start)*4
	b.launch("add_bias", dim3{blocks(int64(n)*int64(r), 256), 1, 1}, dim3{256, 1, 1}, 0, func(a *args) {
		a.ptr(y).ptr(bptr).i32(n).i32(r)
	})
}

// to16 converts x[n, cols] to the 16-bit weight dtype in the backend's
// scratch buffer (grown as needed, never during capture).
func (b *Backend) to16(dt kernels.DType, xb *Buffer, n, cols int) (devptr, bool) {
	need := int64(n) * int64(cols) * 2
	if b.scrCap < need {
		if b.capturing {
			b.failf("MatMul: activation scratch of %d bytes needed during graph capture", need)
			return 0, false
		}
		if b.scratch != 0 {
			b.alloc.put(b.scratch)
			b.bs.gen++ // graphs that captured the old scratch are stale
		}
		p, err := b.alloc.get(need)
		if err != nil {
			b.fail(err)
			return 0, false
		}
		b.scratch, b.scrCap = p, need
	}
	cvt := "cvt_f32_bf16"
	if dt == kernels.F16 {
		cvt = "cvt_f32_f16"
	}
	total := int64(n) * int64(cols)
	b.launch(cvt, dim3{blocks(total, 256), 1, 1}, dim3{256, 1, 1}, 0, func(a *args) {
		a.ptr(b.scratch).ptr(xb.p).i64(total)
	})
	return b.scratch, true
}

// RMSNorm implements kernels.Backend.
func (b *Backend) RMSNorm(out, x, weight kernels.Buffer, n, dim int, eps float32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.rmsnorm(out, x, weight, n, dim, eps)
}

func (b *Backend) rmsnorm(out, x, weight kernels.Buffer, n, dim int, eps float32) {
	o, xb, wb := b.dev(out), b.dev(x), b.dev(weight)
	if o == nil || xb == nil || wb == nil || n <= 0 {
		return
	}
	if o.n < n*dim || xb.n < n*dim || wb.n < dim {
		b.failf("RMSNorm: buffers too small for %d × %d", n, dim)
		return
	}
	threads := 256
	if dim >= 4096 {
		threads = 1024
	}
	b.launch("rmsnorm", dim3{n, 1, 1}, dim3{threads, 1, 1}, 0, func(a *args) {
		a.ptr(o.p).ptr(xb.p).ptr(wb.p).i32(dim).f32(eps)
	})
}

// ropeFreqs returns the device copy of r.InvFreq, uploaded once per distinct
// table (keyed by content: callers may pass a fresh *Rope each time).
func (b *Backend) ropeFreqs(r *kernels.Rope) devptr {
	key := unsafe.String((*byte)(unsafe.Pointer(&r.InvFreq[0])), len(r.InvFreq)*4)
	if p, ok := b.ropes[key]; ok {
		return p
	}
	if b.capturing {
		b.failf("ApplyRope: a new rope table during graph capture (run one uncaptured step first)")
		return 0
	}
	p, err := b.alloc.get(int64(len(r.InvFreq)) * 4)
	if err != nil {
		b.fail(err)
		return 0
	}
	b.fail(b.x.htod(p, unsafe.Pointer(&r.InvFreq[0]), int64(len(r.InvFreq))*4))
	b.ropes[string([]byte(key))] = p
	return p
}

// ApplyRope implements kernels.Backend.
func (b *Backend) ApplyRope(x kernels.Buffer, n, heads, headDim, pos0 int, r *kernels.Rope) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.applyRope(x, n, heads, headDim, pos0, r)
}

func (b *Backend) applyRope(x kernels.Buffer, n, heads, headDim, pos0 int, r *kernels.Rope) {
	xb := b.dev(x)
	if xb == nil || n <= 0 || r == nil || r.Dim <= 0 {
		return
	}
	if len(r.InvFreq) < r.Dim/2 || r.Off+r.Dim > headDim || xb.n < n*heads*headDim {
		b.failf("ApplyRope: bad rope %d+%d in head %d (%d freqs) or buffer %d", r.Off, r.Dim, headDim, len(r.InvFreq), xb.n)
		return
	}
	f := b.ropeFreqs(r)
	if f == 0 {
		return
	}
	total := int64(n) * int64(heads) * int64(r.Dim/2)
	inter := 0
	if r.Interleaved {
		inter = 1
	}
	b.launch("rope", dim3{int((total + 255) / 256), 1, 1}, dim3{256, 1, 1}, 0, func(a *args) {
		a.ptr(xb.p).i32(n).i32(heads).i32(headDim).i32(pos0).ptr(b.dp).ptr(0).ptr(f).i32(r.Off).i32(r.Dim).f32(r.Scale).i32(inter)
	})
}

// splitKeys is the key-chunk of the split-KV attention kernel.
const splitKeys = 128

// maxSplitQueries is the query rows per split-KV launch.
const maxSplitQueries = 16

// Attention implements kernels.Backend.
func (b *Backend) Attention(out, q, k, v kernels.Buffer, cache kernels.KVCache, layer, pos0, n, heads int, scale float32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.attention(out, q, k, v, cache, layer, pos0, n, heads, scale)
}

func (b *Backend) attention(out, q, k, v kernels.Buffer, cache kernels.KVCache, layer, pos0, n, heads int, scale float32) {
	c, ok := cache.(*KVCache)
	if !ok {
		b.failf("Attention: cache of type %T", cache)
		return
	}
	sp := c.spec
	ob, qb, kb, vb, ok := b.attnBufs("Attention", out, q, k, v, sp.VInK, n, heads, sp.KVHeads, sp.KDim, sp.VDim)
	if !ok {
		return
	}
	kd, vd, kvh := sp.KDim, sp.VDim, sp.KVHeads
	if layer < 0 || layer >= sp.Layers || pos0 < 0 || pos0+n > sp.MaxTokens {
		b.failf("Attention: layer %d positions %d..%d outside cache %d×%d", layer, pos0, pos0+n, sp.Layers, sp.MaxTokens)
		return
	}
	es := devptr(c.dt.Size())
	kw, vw := kvh*kd, kvh*vd
	kbase := c.k + devptr(layer)*devptr(sp.MaxTokens)*devptr(kw)*es
	vbase, vstride, vhs := kbase, kw, kd
	if !sp.VInK {
		vbase, vstride, vhs = c.v+devptr(layer)*devptr(sp.MaxTokens)*devptr(vw)*es, vw, vd
	}
	dts := "f16"
	if c.dt == kernels.F32 {
		dts = "f32"
	}
	if !b.skipStore {
		vp := bp(vb, 0)
		vcp := vbase
		if sp.VInK {
			vcp = 0
		}
		total := int64(n) * int64(kw+map[bool]int{true: 0, false: vw}[sp.VInK])
		name := "kv_store_" + dts
		if dts == "f16" && kw%4 == 0 && vw%4 == 0 {
			name, total = "kv_store_f16x4", total/4
		}
		b.launch(name, dim3{blocks(total, 256), 1, 1}, dim3{256, 1, 1}, 0, func(a *args) {
			a.ptr(kbase).ptr(vcp).ptr(kb.p).ptr(vp).i32(n).i32(pos0).ptr(b.dp).i32(kw).i32(vw)
		})
	}
	if b.useMLA(sp.VInK, kvh, kd, vd, c.dt) {
		b.mlaAttention(c, ob, qb, kbase, pos0, n, heads, scale)
		return
	}
	if n > maxSplitQueries && !b.capturing {
		if dp, smem, ok := b.flash2Dims(c.dt, sp.VInK, kd, vd); ok {
			// flash2 (NOTES.md v7: 64-key tiles, VAR 327 won over v1, 32-key
			// tiles and the other variants).
			b.launch(fmt.Sprintf("flash2_fwd_%d", dp), dim3{(n + flash2Rows - 1) / flash2Rows, heads, 1}, dim3{128, 1, 1}, smem, func(a *args) {
				a.ptr(ob.p).ptr(qb.p).ptr(kbase).ptr(vbase).i32(n).i32(pos0).ptr(b.dp).i32(heads).i32(kvh).i32(kd).f32(scale * math.Log2E)
			})
			return
		}
		if c.dt == kernels.F16 && !sp.VInK && kd == vd && kd%8 == 0 && kd <= 32 {
			// Head dims 16 and 32: the v1 kernel, 4 warps of 16 query rows.
			dp := 16
			for dp < kd {
				dp *= 2
			}
			const nw, bm = 4, 16 * 4
			smem := 2 * 2 * 64 * (dp + 8) * 2
			b.launch(fmt.Sprintf("flash_fwd_%d", dp), dim3{(n + bm - 1) / bm, heads, 1}, dim3{32 * nw, 1, 1}, smem, func(a *args) {
				a.ptr(ob.p).ptr(qb.p).ptr(kbase).ptr(vbase).i32(n).i32(pos0).ptr(b.dp).i32(heads).i32(kvh).i32(kd).f32(scale * math.Log2E)
			})
			return
		}
	}
	// Split-KV path: chunks of up to 16 query rows.
	G := heads / kvh
	maxT := pos0 + n
	if b.capturing {
		maxT = sp.MaxTokens // the position moves on replay
	}
	nsplit := (maxT + splitKeys - 1) / splitKeys
	L := splitKeys
	if b.capturing && nsplit > 32 {
		nsplit = 32
		L = (sp.MaxTokens + nsplit - 1) / nsplit
		L = (L + 31) &^ 31
	}
	capSplits := (sp.MaxTokens + splitKeys - 1) / splitKeys
	// cuMemAlloc is legal during a relaxed-mode capture; the graph keeps
	// the pointer, and the scratch never shrinks afterwards.
	if !b.growPartials(&c.kvMem, int64(maxSplitQueries)*int64(heads)*int64(capSplits)*int64(vd+2)) {
		return
	}
	smem := G*(kd+L)*4 + 128*8*4 // q, scores, value partial sums
	if G > 64 || smem > b.smemMax {
		b.failf("Attention: %d bytes of shared memory for group %d, kd %d", smem, G, kd)
		return
	}
	for i0 := 0; i0 < n; i0 += maxSplitQueries {
		nq := min(maxSplitQueries, n-i0)
		ns := nsplit
		if !b.capturing {
			ns = (pos0 + i0 + nq + L - 1) / L
		}
		qp := qb.p + devptr(i0*heads*kd)*4
		op := ob.p + devptr(i0*heads*vd)*4
		p0 := pos0 + i0
		if b.useDec(c.dt, sp.VInK, kd, vd) { // one pass (decode.cuh)
			gb := decHeads(G)
			b.launch("attn_dec_f16_"+decSuffix(gb), dim3{ns, kvh * ((G + gb - 1) / gb), nq}, dim3{128, 1, 1}, decSmem(gb, kd), func(a *args) {
				a.ptr(c.part).ptr(qp).ptr(kbase).ptr(vbase).i32(p0).ptr(b.dp).i32(heads).i32(kvh).i32(kd).
					i32(kw).i32(vstride).f32(scale).i32(L).i32(ns)
			})
		} else {
			b.launch("attn_split_"+dts, dim3{ns, kvh, nq}, dim3{128, 1, 1}, smem, func(a *args) {
				a.ptr(c.part).ptr(qp).ptr(kbase).ptr(vbase).i32(nq).i32(p0).ptr(b.dp).i32(heads).i32(kvh).i32(kd).i32(vd).
					i32(kw).i32(vstride).f32(scale).i32(L).i32(ns).i32(vhs)
			})
		}
		b.launch("attn_combine", dim3{nq * heads, 1, 1}, dim3{128, 1, 1}, 0, func(a *args) {
			a.ptr(op).ptr(c.part).i32(heads).i32(vd).i32(ns)
		})
	}
}

// attnBufs resolves the buffers of an attention op (v only without VInK)
// and checks the head grouping and their sizes for n rows; ok is false
// (the failure recorded) when the op cannot run.
func (b *Backend) attnBufs(op string, out, q, k, v kernels.Buffer, vInK bool, n, heads, kvh, kd, vd int) (ob, qb, kb, vb *Buffer, ok bool) {
	ob, qb, kb = b.dev(out), b.dev(q), b.dev(k)
	if !vInK {
		vb = b.dev(v)
	}
	if ob == nil || qb == nil || kb == nil || (!vInK && vb == nil) || n <= 0 {
		return nil, nil, nil, nil, false
	}
	if heads <= 0 || heads%kvh != 0 || (heads/kvh > 64 && !(vInK && kvh == 1)) {
		// Groups over 64 run only on the MLA kernel (useMLA).
		b.failf("%s: %d heads over %d kv heads (group at most 64)", op, heads, kvh)
		return nil, nil, nil, nil, false
	}
	if qb.n < n*heads*kd || ob.n < n*heads*vd || kb.n < n*kvh*kd || (vb != nil && vb.n < n*kvh*vd) {
		b.failf("%s: buffers too small for %d rows", op, n)
		return nil, nil, nil, nil, false
	}
	return ob, qb, kb, vb, true
}

// AttentionNoStore is Attention over keys already in the cache: k and v
// are not stored (benchmarks separate the attention kernels from the cache
// write this way; positions pos0..pos0+n-1 must have been stored before).
func (b *Backend) AttentionNoStore(out, q kernels.Buffer, cache kernels.KVCache, layer, pos0, n, heads int, scale float32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.skipStore = true
	defer func() { b.skipStore = false }()
	b.attention(out, q, q, q, cache, layer, pos0, n, heads, scale)
}

// SwiGLU implements kernels.Backend.
func (b *Backend) SwiGLU(out, gate, up kernels.Buffer, n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.swiglu(out, gate, up, n)
}

func (b *Backend) swiglu(out, gate, up kernels.Buffer, n int) {
	o, g, u := b.dev(out), b.dev(gate), b.dev(up)
	if o == nil || g == nil || u == nil || n <= 0 {
		return
	}
	if o.n < n || g.n < n || u.n < n {
		b.failf("SwiGLU: buffers shorter than %d", n)
		return
	}
	b.launch("swiglu", dim3{blocks(int64(n), 256), 1, 1}, dim3{256, 1, 1}, 0, func(a *args) {
		a.ptr(o.p).ptr(g.p).ptr(u.p).i64(int64(n))
	})
}

// Add implements kernels.Backend.
func (b *Backend) Add(out, x, y kernels.Buffer, n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.add(out, x, y, n)
}

func (b *Backend) add(out, x, y kernels.Buffer, n int) {
	o, xb, yb := b.dev(out), b.dev(x), b.dev(y)
	if o == nil || xb == nil || yb == nil || n <= 0 {
		return
	}
	if o.n < n || xb.n < n || yb.n < n {
		b.failf("Add: buffers shorter than %d", n)
		return
	}
	b.launch("add", dim3{blocks(int64(n), 256), 1, 1}, dim3{256, 1, 1}, 0, func(a *args) {
		a.ptr(o.p).ptr(xb.p).ptr(yb.p).i64(int64(n))
	})
}

// Axpy implements kernels.Backend.
func (b *Backend) Axpy(y kernels.Buffer, yOff int, x kernels.Buffer, xOff int, alpha float32, n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.axpy(y, yOff, x, xOff, alpha, n)
}

func (b *Backend) axpy(y kernels.Buffer, yOff int, x kernels.Buffer, xOff int, alpha float32, n int) {
	yb, xb := b.dev(y), b.dev(x)
	if yb == nil || xb == nil || n <= 0 {
		return
	}
	if yOff < 0 || xOff < 0 || yOff+n > yb.n || xOff+n > xb.n {
		b.failf("Axpy: ranges [%d,+%d) [%d,+%d) outside buffers %d, %d", yOff, n, xOff, n, yb.n, xb.n)
		return
	}
	b.launch("axpy", dim3{blocks(int64(n), 256), 1, 1}, dim3{256, 1, 1}, 0, func(a *args) {
		a.ptr(bp(yb, yOff)).ptr(bp(xb, xOff)).f32(alpha).i64(int64(n))
	})
}

// Copy2D implements kernels.Backend.
func (b *Backend) Copy2D(dst kernels.Buffer, dstOff, dstStride int, src kernels.Buffer, srcOff, srcStride, rows, cols int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.copy2D(dst, dstOff, dstStride, src, srcOff, srcStride, rows, cols)
}

func (b *Backend) copy2D(dst kernels.Buffer, dstOff, dstStride int, src kernels.Buffer, srcOff, srcStride, rows, cols int) {
	d, s := b.dev(dst), b.dev(src)
	if d == nil || s == nil || rows <= 0 || cols <= 0 {
		return
	}
	if dstOff < 0 || srcOff < 0 || dstOff+(rows-1)*dstStride+cols > d.n || srcOff+(rows-1)*srcStride+cols > s.n {
		b.failf("Copy2D: %d×%d outside buffers", rows, cols)
		return
	}
	b.launch("copy2d", dim3{blocks(int64(rows)*int64(cols), 256), 1, 1}, dim3{256, 1, 1}, 0, func(a *args) {
		a.ptr(bp(d, dstOff)).i32(dstStride).ptr(bp(s, srcOff)).i32(srcStride).i32(rows).i32(cols)
	})
}

// MatMulAdd implements kernels.Backend: up to 8 tokens on 16-byte weight
// rows through gemv_add (fuse.cuh: the product added to out in the GEMV's
// epilogue, one launch); others as MatMul into tmp and add.
func (b *Backend) MatMulAdd(out, tmp, x kernels.Buffer, n int, w kernels.Matrix, bias kernels.Buffer) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.matMulAdd(out, tmp, x, n, w, bias)
}

func (b *Backend) matMulAdd(out, tmp, x kernels.Buffer, n int, w kernels.Matrix, bias kernels.Buffer) {
	m, ok := b.opMatrix("MatMulAdd", w, n)
	if !ok {
		return
	}
	ob, xb, bb := b.dev(out), b.dev(x), b.dev(bias)
	if ob == nil || xb == nil || b.dev(tmp) == nil {
		return
	}
	if err := kernels.CheckMatMulAdd(out, tmp, x, n, w, bias); err != nil {
		b.fail(fmt.Errorf("cuda: %w", err))
		return
	}
	dts := dtSuffix(m.dt)
	if dts == "" {
		b.failf("MatMulAdd: %v weights not supported", m.dt)
		return
	}
	vec := m.cols%(16/m.dt.Size()) == 0
	cshift := -1
	var desc [48]byte
	scp := m.scales // int8's row scales
	if m.dt == kernels.FP8 {
		if vec = m.cols%16 == 0; vec {
			cshift = fp8CShift(m.fp8.bc)
		}
		vec = vec && cshift >= 0
		desc, scp = m.fp8Desc(), 0
	}
	if n <= 8 && vec {
		nt := 8
		if n == 1 {
			nt = 1
		}
		const rowsPerWarp = 2 // gemv_add_rows' R
		warps := (m.rows + rowsPerWarp - 1) / rowsPerWarp
		b.launch(fmt.Sprintf("gemv_add_%s_%d", dts, nt), dim3{(warps + 7) / 8, 1, 1}, dim3{256, 1, 1}, 0, func(a *args) {
			a.ptr(m.p).ptr(xb.p).i32(n).ptr(ob.p).i32(m.rows).ptr(bp(bb, 0)).i32(m.cols).ptr(scp).raw(desc[:], 8).i32(cshift)
		})
		return
	}
	b.matmul([]kernels.Buffer{tmp}, x, n, w, bias)
	b.add(out, out, tmp, n*m.rows)
}
