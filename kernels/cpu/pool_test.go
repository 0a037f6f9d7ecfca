package cpu

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

type countJob struct{ seen []atomic.Int32 }

func (c *countJob) run(lo, hi, _ int) {
	for i := lo; i < hi; i++ {
		c.seen[i].Add(1)
	}
}

// TestPoolCoversEveryItemOnce, with more chunks than workers, repeatedly.
func TestPoolCoversEveryItemOnce(t *testing.T) {
	p := newPool(3)
	defer p.close()
	var j parJob
	for _, tc := range []struct{ n, chunk int }{{1, 1}, {10, 3}, {100, 7}, {1000, 1000}, {5, 0}} {
		c := &countJob{seen: make([]atomic.Int32, tc.n)}
		for range 20 {
			p.run(&j, c, tc.n, tc.chunk)
		}
		for i := range c.seen {
			assert.Equal(t, int32(20), c.seen[i].Load(), "n=%d chunk=%d item %d", tc.n, tc.chunk, i)
		}
	}
}

// BenchmarkPoolDispatch: the cost of one parallel op with trivial work,
// paid ≈ 120 times per decode step (measured ≈ 1.3 µs: spinning workers
// would not pay).
func BenchmarkPoolDispatch(b *testing.B) {
	p := newPool(2)
	defer p.close()
	var j parJob
	c := &countJob{seen: make([]atomic.Int32, 64)}
	for b.Loop() {
		p.run(&j, c, 64, 8)
	}
}

// TestDroppedBackendStopsWorkers: workers of an unreachable backend exit.
func TestDroppedBackendStopsWorkers(t *testing.T) {
	before := runtime.NumGoroutine()
	for range 10 {
		_ = New(4)
	}
	assert.Eventually(t, func() bool {
		runtime.GC()
		return runtime.NumGoroutine() <= before+2
	}, 5*time.Second, 20*time.Millisecond, "goroutines: %d before", before)
}
