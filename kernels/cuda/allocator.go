//go:build linux && cgo

package cuda

import (
	"fmt"
	"sync"
)

// allocator is a caching device allocator: freed blocks are kept by size
// class and reused, so sessions that come and go do not call cuMemAlloc
// (which synchronises the device) on every step. Classes are 512-byte
// multiples below 1 MiB and 2 MiB multiples above. Idle cached blocks
// count as free memory (Backend.MemInfo): an allocation the driver
// cannot serve releases them and tries again.
type allocator struct {
	mu    sync.Mutex
	x     devMem
	free  map[int64][]devptr
	size  map[devptr]int64 // live and cached blocks
	live  int64
	cache int64
}

// devMem is the driver memory an allocator draws on (*ctx; a fake in
// tests).
type devMem interface {
	malloc(n int64) (devptr, error)
	free(p devptr) error
	sync() error
}

func newAllocator(x devMem) *allocator {
	return &allocator{x: x, free: map[int64][]devptr{}, size: map[devptr]int64{}}
}

func sizeClass(n int64) int64 {
	if n <= 0 {
		n = 1
	}
	if n < 1<<20 {
		return (n + 511) &^ 511
	}
	return (n + (2<<20 - 1)) &^ (2<<20 - 1)
}

// get returns a block of at least n bytes; on out-of-memory it releases the
// cache and tries once more.
func (a *allocator) get(n int64) (devptr, error) {
	c := sizeClass(n)
	a.mu.Lock()
	defer a.mu.Unlock()
	if l := a.free[c]; len(l) > 0 {
		p := l[len(l)-1]
		a.free[c] = l[:len(l)-1]
		a.cache -= c
		a.live += c
		return p, nil
	}
	p, err := a.x.malloc(c)
	if err != nil && a.cache > 0 {
		a.releaseCachedLocked()
		p, err = a.x.malloc(c)
	}
	if err != nil {
		return 0, fmt.Errorf("cuda: allocating %d bytes: %w", c, err)
	}
	a.size[p] = c
	a.live += c
	return p, nil
}

// put returns a block to the cache (safe from finalizers: no CUDA call).
func (a *allocator) put(p devptr) { a.release(p, false) }

// drop frees a live block to the driver at once instead of caching it:
// for large, rarely repeated sizes (a scheduler's KV pool) whose memory
// others should get back. Not from finalizers (it calls CUDA).
func (a *allocator) drop(p devptr) { a.release(p, true) }

func (a *allocator) release(p devptr, toDriver bool) {
	if p == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.size[p]
	if !ok {
		return // released with the backend
	}
	if !toDriver {
		a.free[c] = append(a.free[c], p)
		a.live -= c
		a.cache += c
		return
	}
	for _, q := range a.free[c] {
		if q == p {
			return // already cached (put before): it stays there
		}
	}
	a.x.sync() // work in flight may still use it
	a.x.free(p)
	delete(a.size, p)
	a.live -= c
}

func (a *allocator) releaseCachedLocked() {
	a.x.sync()
	for c, l := range a.free {
		for _, p := range l {
			a.x.free(p)
			delete(a.size, p)
		}
		delete(a.free, c)
	}
	a.cache = 0
}

// releaseAll frees every block, live or cached (Backend.Close).
func (a *allocator) releaseAll() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for p := range a.size {
		a.x.free(p)
	}
	a.size = map[devptr]int64{}
	a.free = map[int64][]devptr{}
	a.live, a.cache = 0, 0
}

// stats returns the bytes in use and cached.
func (a *allocator) stats() (live, cached int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.live, a.cache
}
