package cpu

import (
	"fmt"
	"sync"

	"github.com/deepseek-go/deepseek-go/kernels"
)

// Member is a CPU backend that is one rank of a Group: the CPU fake of a
// multi-device group, so sharded model code runs (and is tested) without
// accelerators. It is a full Backend (and Batcher) plus kernels.Collective
// and kernels.CollectiveAborter.
type Member struct {
	*Backend
	g    *group
	rank int
}

var (
	_ kernels.Collective        = (*Member)(nil)
	_ kernels.CollectiveAborter = (*Member)(nil)
	_ kernels.Batcher           = (*Member)(nil)
)

// NewGroup returns size CPU backends forming one group, each with threads
// goroutines per op (threads <= 0: GOMAXPROCS). Rank r's goroutine uses
// members[r]; every rank must call the same collectives in the same order.
func NewGroup(size, threads int) ([]*Member, error) {
	if size < 1 {
		return nil, fmt.Errorf("cpu: NewGroup: size %d, want >= 1", size)
	}
	g := &group{size: size, slots: make([]slot, size)}
	g.cond = sync.NewCond(&g.mu)
	ms := make([]*Member, size)
	for r := range ms {
		ms[r] = &Member{Backend: New(threads), g: g, rank: r}
	}
	return ms, nil
}

// Rank implements kernels.Collective.
func (m *Member) Rank() int { return m.rank }

// Size implements kernels.Collective.
func (m *Member) Size() int { return m.g.size }

// AllReduceSum implements kernels.Collective: the last rank to arrive sums
// the buffers in rank order and writes the sum to every rank's buffer.
func (m *Member) AllReduceSum(b kernels.Buffer, n int) {
	d := buf(b)[:n]
	m.g.meet(m.rank, opReduce, n, d, nil)
}

// AllGather implements kernels.Collective.
func (m *Member) AllGather(dst, src kernels.Buffer, n int) {
	m.g.meet(m.rank, opGather, n, buf(dst)[:n*m.g.size], buf(src)[:n])
}

// Abort implements kernels.CollectiveAborter.
func (m *Member) Abort() { m.g.abort() }

// Resume implements kernels.CollectiveAborter.
func (m *Member) Resume() { m.g.resume() }

type op uint8

const (
	opReduce op = iota + 1
	opGather
)

func (o op) String() string {
	if o == opReduce {
		return "AllReduceSum"
	}
	return "AllGather"
}

// slot is what one rank brought to the current collective.
type slot struct {
	dst, src []float32
}

// group is the rendezvous of a Group's ranks: a generation-counted
// barrier whose last arrival does the exchange while the others wait, so
// no rank touches its buffer while another reads or writes it.
type group struct {
	mu      sync.Mutex
	cond    *sync.Cond
	size    int
	arrived int
	gen     uint64
	op      op
	n       int
	slots   []slot
	sum     []float32
	aborted bool
}

func (g *group) meet(rank int, o op, n int, dst, src []float32) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.aborted {
		return
	}
	if g.arrived == 0 {
		g.op, g.n = o, n
	} else if g.op != o || g.n != n {
		// Ranks disagreeing on the sequence of collectives is a bug in the
		// sharded model code, never bad input: fail loudly.
		panic(fmt.Sprintf("cpu group: rank %d issued %v of %d floats while others issued %v of %d", rank, o, n, g.op, g.n))
	}
	g.slots[rank] = slot{dst: dst, src: src}
	g.arrived++
	if g.arrived < g.size {
		gen := g.gen
		for gen == g.gen {
			g.cond.Wait()
		}
		return
	}
	switch o {
	case opReduce:
		if cap(g.sum) < n {
			g.sum = make([]float32, n)
		}
		sum := g.sum[:n]
		copy(sum, g.slots[0].dst)
		for _, s := range g.slots[1:] {
			for i, v := range s.dst {
				sum[i] += v
			}
		}
		for _, s := range g.slots {
			copy(s.dst, sum)
		}
	case opGather:
		for _, d := range g.slots {
			for r, s := range g.slots {
				copy(d.dst[r*n:(r+1)*n], s.src)
			}
		}
	}
	g.release()
}

// release starts the next generation and wakes the waiting ranks (mu held).
func (g *group) release() {
	g.arrived = 0
	clear(g.slots)
	g.gen++
	g.cond.Broadcast()
}

func (g *group) abort() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.aborted = true
	g.release()
}

func (g *group) resume() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.aborted = false
	g.arrived = 0
	clear(g.slots)
}
