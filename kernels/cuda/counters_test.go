//go:build linux && cgo

package cuda

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/kernels"
)

// TestCountsCUDA: an op is one launch, a Download one sync, ops recorded
// into a graph none, and each replay of the graph one launch.
func TestCountsCUDA(t *testing.T) {
	g := newGPU(t, Options{})
	const n = 1024
	a, err := g.Alloc(n)
	require.NoError(t, err)
	c, err := g.Alloc(n)
	require.NoError(t, err)
	out := make([]float32, n)
	delta := func(f func()) (launches, syncs int64) {
		l0, s0 := g.Counts()
		f()
		l1, s1 := g.Counts()
		return l1 - l0, s1 - s0
	}

	l, s := delta(func() { g.Add(c, a, a, n) })
	assert.Equal(t, [2]int64{1, 0}, [2]int64{l, s}, "one op")
	l, s = delta(func() { require.NoError(t, g.Download(out, c, 0)) })
	assert.Equal(t, [2]int64{0, 1}, [2]int64{l, s}, "one download")

	var sg *StepGraph
	l, _ = delta(func() {
		sg, err = g.CaptureStep(0, 0, 8, func(be kernels.Backend) error {
			for range 5 {
				be.Add(c, c, a, n)
			}
			return nil
		})
	})
	require.NoError(t, err)
	defer sg.Close()
	assert.Equal(t, int64(1), l, "capture records 5 ops and runs the graph once")
	l, s = delta(func() {
		for pos := 1; pos < 4; pos++ {
			require.NoError(t, sg.Replay(0, pos))
		}
	})
	assert.Equal(t, [2]int64{3, 0}, [2]int64{l, s}, "three replays")
}
