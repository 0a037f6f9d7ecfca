package cpu

import (
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/kernels"
)

// onRanks runs fn on every rank in its own goroutine and waits for all.
func onRanks(ms []*Member, fn func(m *Member)) {
	var wg sync.WaitGroup
	for _, m := range ms {
		wg.Go(func() { fn(m) })
	}
	wg.Wait()
}

func TestGroupAllReduceSum(t *testing.T) {
	for _, tc := range []struct {
		name    string
		size, n int
		rounds  int
	}{
		{"one rank", 1, 7, 3},
		{"two ranks", 2, 33, 20},
		{"three ranks", 3, 5, 20},
		{"four ranks", 4, 130, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ms, err := NewGroup(tc.size, 1)
			require.NoError(t, err)
			defer onRanks(ms, func(m *Member) { m.Close() })
			rng := rand.New(rand.NewPCG(1, uint64(tc.size)))
			for round := range tc.rounds {
				// Large values of alternating sign: a different summation
				// order would change the low bits, so equality below pins
				// the rank order.
				in := make([][]float32, tc.size)
				for r := range in {
					in[r] = randVec(rng, tc.n)
					for i := range in[r] {
						in[r][i] *= 1e7 * float32(1-2*((r+i)%2))
					}
				}
				want := make([]float32, tc.n)
				copy(want, in[0])
				for _, v := range in[1:] {
					for i := range want {
						want[i] += v[i]
					}
				}
				bufs := make([]kernels.Buffer, tc.size)
				for r, m := range ms {
					bufs[r], err = m.Alloc(tc.n + 3) // longer than n: the tail stays
					require.NoError(t, err)
					require.NoError(t, m.Upload(bufs[r], 0, in[r]))
					require.NoError(t, m.Upload(bufs[r], tc.n, []float32{-1, -2, -3}))
				}
				// Ranks arrive in a different order each round.
				delay := rng.Perm(tc.size)
				onRanks(ms, func(m *Member) {
					time.Sleep(time.Duration(delay[m.Rank()]) * 100 * time.Microsecond)
					m.AllReduceSum(bufs[m.Rank()], tc.n)
				})
				for r := range ms {
					got := bufs[r].(*Buffer).Data()
					require.Equal(t, want, got[:tc.n], "round %d rank %d", round, r)
					require.Equal(t, []float32{-1, -2, -3}, got[tc.n:], "round %d rank %d: past n untouched", round, r)
				}
			}
		})
	}
}

func TestGroupAllGather(t *testing.T) {
	for _, size := range []int{1, 2, 4} {
		ms, err := NewGroup(size, 1)
		require.NoError(t, err)
		const n = 3
		dst := make([]kernels.Buffer, size)
		src := make([]kernels.Buffer, size)
		want := make([]float32, 0, size*n)
		for r, m := range ms {
			dst[r], _ = m.Alloc(size * n)
			src[r], _ = m.Alloc(n)
			v := []float32{float32(10 * r), float32(10*r + 1), float32(10*r + 2)}
			require.NoError(t, m.Upload(src[r], 0, v))
			want = append(want, v...)
		}
		onRanks(ms, func(m *Member) { m.AllGather(dst[m.Rank()], src[m.Rank()], n) })
		for r := range ms {
			assert.Equal(t, want, dst[r].(*Buffer).Data(), "size %d rank %d", size, r)
			assert.Equal(t, size, ms[r].Size())
		}
		onRanks(ms, func(m *Member) { m.Close() })
	}
}

// TestGroupAbort: a rank that never arrives (it failed) would block the
// others forever; Abort releases them, later collectives return at once,
// and Resume makes the group work again.
func TestGroupAbort(t *testing.T) {
	ms, err := NewGroup(2, 1)
	require.NoError(t, err)
	b0, _ := ms[0].Alloc(2)
	b1, _ := ms[1].Alloc(2)
	require.NoError(t, ms[0].Upload(b0, 0, []float32{1, 2}))
	require.NoError(t, ms[1].Upload(b1, 0, []float32{10, 20}))
	done := make(chan struct{})
	go func() {
		ms[0].AllReduceSum(b0, 2)
		ms[0].AllReduceSum(b0, 2) // after the abort: returns at once
		close(done)
	}()
	// Wait until rank 0 is parked in the rendezvous.
	for i := 0; ; i++ {
		ms[0].g.mu.Lock()
		parked := ms[0].g.arrived == 1
		ms[0].g.mu.Unlock()
		if parked {
			break
		}
		require.Less(t, i, 10000, "rank 0 never reached the collective")
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
	ms[1].Abort()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Abort did not release the waiting rank")
	}
	assert.Equal(t, []float32{1, 2}, b0.(*Buffer).Data(), "an aborted reduce leaves the buffer")
	ms[0].Resume()
	onRanks(ms, func(m *Member) { m.AllReduceSum([]kernels.Buffer{b0, b1}[m.Rank()], 2) })
	assert.Equal(t, []float32{11, 22}, b0.(*Buffer).Data())
	assert.Equal(t, []float32{11, 22}, b1.(*Buffer).Data())
}

func TestGroupMismatchPanics(t *testing.T) {
	ms, err := NewGroup(2, 1)
	require.NoError(t, err)
	b0, _ := ms[0].Alloc(4)
	b1, _ := ms[1].Alloc(8)
	done := make(chan struct{})
	go func() {
		ms[0].AllReduceSum(b0, 4)
		close(done)
	}()
	for {
		ms[0].g.mu.Lock()
		parked := ms[0].g.arrived == 1
		ms[0].g.mu.Unlock()
		if parked {
			break
		}
		time.Sleep(time.Millisecond)
	}
	assert.PanicsWithValue(t, "cpu group: rank 1 issued AllGather of 4 floats while others issued AllReduceSum of 4", func() {
		ms[1].AllGather(b1, b1, 4)
	})
	ms[1].Abort()
	<-done
}

func TestNewGroupBadSize(t *testing.T) {
	_, err := NewGroup(0, 1)
	assert.ErrorContains(t, err, "size 0")
}

func TestSoloCollective(t *testing.T) {
	be := New(1)
	defer be.Close()
	c := kernels.CollectiveOf(be)
	assert.Equal(t, 0, c.Rank())
	assert.Equal(t, 1, c.Size())
	x, _ := be.Alloc(3)
	require.NoError(t, be.Upload(x, 0, []float32{1, 2, 3}))
	c.AllReduceSum(x, 3)
	assert.Equal(t, []float32{1, 2, 3}, x.(*Buffer).Data(), "a group of one sums to itself")
	y, _ := be.Alloc(3)
	c.AllGather(y, x, 3)
	assert.Equal(t, []float32{1, 2, 3}, y.(*Buffer).Data(), "a gather of one copies")

	ms, err := NewGroup(2, 1)
	require.NoError(t, err)
	assert.Same(t, ms[1], kernels.CollectiveOf(ms[1]), "a member is its own collective")
}
