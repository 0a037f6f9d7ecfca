//go:build linux && cgo

package cuda

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeMem is a driver with a fixed capacity (no GPU needed).
type fakeMem struct {
	capacity, used int64
	next           devptr
	blocks         map[devptr]int64
	syncs          int
}

func newFakeMem(capacity int64) *fakeMem {
	return &fakeMem{capacity: capacity, next: 1 << 20, blocks: map[devptr]int64{}}
}

func (f *fakeMem) malloc(n int64) (devptr, error) {
	if f.used+n > f.capacity {
		return 0, errors.New("out of memory")
	}
	p := f.next
	f.next += devptr(n)
	f.blocks[p] = n
	f.used += n
	return p, nil
}

func (f *fakeMem) free(p devptr) error {
	n, ok := f.blocks[p]
	if !ok {
		return errors.New("double free")
	}
	delete(f.blocks, p)
	f.used -= n
	return nil
}

func (f *fakeMem) sync() error { f.syncs++; return nil }

// TestAllocatorIdleCountsAsFree is the KV-budget fix: memory freed by an
// earlier session sits idle in the cache, the driver sees it as used, and
// a request larger than any cached block still gets it (the cache is
// released and the allocation retried), so free + idle is what a budget
// may count on.
func TestAllocatorIdleCountsAsFree(t *testing.T) {
	const mib = 1 << 20
	f := newFakeMem(100 * mib)
	a := newAllocator(f)
	var ps []devptr
	for range 4 {
		p, err := a.get(20 * mib)
		require.NoError(t, err)
		ps = append(ps, p)
	}
	for _, p := range ps {
		a.put(p)
	}
	live, idle := a.stats()
	assert.Zero(t, live)
	assert.Equal(t, int64(80*mib), idle)
	assert.Equal(t, int64(80*mib), f.used, "cached blocks stay with the allocator")
	driverFree := f.capacity - f.used
	// A same-class request reuses a cached block without the driver.
	p, err := a.get(19 * mib)
	require.NoError(t, err)
	assert.Contains(t, ps, p)
	a.put(p)
	// A bigger one than the driver has free: the cache goes back first.
	big := driverFree + idle - 2*mib
	q, err := a.get(big)
	require.NoError(t, err, "free %d + idle %d must be allocatable", driverFree, idle)
	live, idle = a.stats()
	assert.Equal(t, sizeClass(big), live)
	assert.Zero(t, idle)
	// drop gives a live block straight back to the driver.
	a.drop(q)
	live, idle = a.stats()
	assert.Zero(t, live+idle)
	assert.Zero(t, f.used)
	assert.Positive(t, f.syncs, "frees wait for work in flight")
	// Dropping again, or a pointer the allocator never gave, is a no-op.
	a.drop(q)
	a.drop(12345)
	assert.Zero(t, f.used)
}

// TestAllocatorDropKeepsCacheConsistent: dropping a block that was already
// put back leaves it cached (no double free later).
func TestAllocatorDropKeepsCacheConsistent(t *testing.T) {
	f := newFakeMem(1 << 30)
	a := newAllocator(f)
	p, err := a.get(4096)
	require.NoError(t, err)
	a.put(p)
	a.drop(p)
	_, idle := a.stats()
	assert.Equal(t, int64(4096), idle)
	q, err := a.get(4000)
	require.NoError(t, err)
	assert.Equal(t, p, q)
	a.releaseAll()
	assert.Zero(t, f.used)
}

func TestAllocatorOutOfMemory(t *testing.T) {
	a := newAllocator(newFakeMem(8 << 20))
	_, err := a.get(16 << 20)
	require.ErrorContains(t, err, "allocating 16777216 bytes")
}
