//go:build linux && cgo

package cuda

import (
	"fmt"

	"github.com/deepseek-go/deepseek-go/kernels"
)

// RandomMatrix makes a rows×cols weight matrix of uniform values in
// [-scale, scale) directly on the device (synthetic benchmarks: no host
// data, no files). parts splits it into fused parts as UploadMatrix would.
func (b *Backend) RandomMatrix(rows, cols int, dt kernels.DType, seed uint32, scale float32, parts ...int) (*Matrix, error) {
	if dt != kernels.BF16 && dt != kernels.F32 {
		return nil, fmt.Errorf("cuda: RandomMatrix: dtype %v (bf16 or f32)", dt)
	}
	if len(parts) == 0 {
		parts = []int{rows}
	}
	sum := 0
	for _, p := range parts {
		sum += p
	}
	if sum != rows || len(parts) > 4 {
		return nil, fmt.Errorf("cuda: RandomMatrix: parts %v for %d rows", parts, rows)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	m := &Matrix{rows: rows, cols: cols, dt: dt, parts: parts}
	p, err := b.alloc.get(m.Bytes())
	if err != nil {
		return nil, err
	}
	m.p = p
	n := int64(rows) * int64(cols)
	name := "rand_bf16"
	if dt == kernels.F32 {
		name = "rand_f32"
		b.sawF32 = true
	}
	b.launch(name, dim3{blocks(n, 256), 1, 1}, dim3{256, 1, 1}, 0, func(a *args) {
		a.ptr(p).i64(n).u32(seed).f32(scale)
		if dt == kernels.F32 {
			a.f32(0)
		}
	})
	return m, b.err
}

// RandomBuffer fills buf with uniform values in [center-scale, center+scale).
func (b *Backend) RandomBuffer(buf kernels.Buffer, seed uint32, center, scale float32) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	d := b.dev(buf)
	if d == nil {
		return b.err
	}
	n := int64(d.n)
	b.launch("rand_f32", dim3{blocks(n, 256), 1, 1}, dim3{256, 1, 1}, 0, func(a *args) {
		a.ptr(d.p).i64(n).u32(seed).f32(scale).f32(center)
	})
	return b.err
}

// Time runs fn (which issues device work) between two events and returns
// the device time in milliseconds.
func (b *Backend) Time(fn func()) (float64, error) {
	b.mu.Lock()
	e0, err := b.x.newEvent()
	if err != nil {
		b.mu.Unlock()
		return 0, err
	}
	defer b.x.destroyEvent(e0)
	e1, err := b.x.newEvent()
	if err != nil {
		b.mu.Unlock()
		return 0, err
	}
	defer b.x.destroyEvent(e1)
	b.fail(b.x.record(e0))
	b.mu.Unlock()
	fn()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fail(b.x.record(e1))
	b.fail(b.x.waitEvent(e1))
	if b.err != nil {
		return 0, b.err
	}
	ms, err := b.x.elapsed(e0, e1)
	return float64(ms), err
}

// Sync waits for all issued work and returns the first recorded error.
func (b *Backend) Sync() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fail(b.x.sync())
	return b.err
}
