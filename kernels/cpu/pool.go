package cpu

import (
	"sync"
	"sync/atomic"
)

// pool is a fixed set of worker goroutines started with the backend. An op
// posts one *parJob; the caller and up to workers helpers take chunks of it
// from an atomic counter, so a busy or slow core (two cores shared with
// other processes) just takes fewer chunks. Nothing is allocated per op:
// jobs come from sync.Pools and only pointers travel on the channel.
type pool struct {
	workers int // helpers besides the calling goroutine
	tasks   chan *parJob
	quit    chan struct{}
	once    sync.Once
}

// ranger is the work of one parallel op over [0, n). worker numbers the
// goroutines taking part in the op (0 ≤ worker < threads), so a job can
// keep per-worker scratch.
type ranger interface {
	run(lo, hi, worker int)
}

// parJob is one parallel op in flight.
type parJob struct {
	fn       ranger
	n, chunk int
	next     atomic.Int64
	ids      atomic.Int32 // hands out worker numbers
	wg       sync.WaitGroup
}

func newPool(threads int) *pool {
	p := &pool{workers: max(0, threads-1), quit: make(chan struct{})}
	p.tasks = make(chan *parJob, 4*p.workers+1)
	for range p.workers {
		go p.worker()
	}
	return p
}

func (p *pool) worker() {
	for {
		select {
		case j := <-p.tasks:
			j.work()
			j.wg.Done()
		case <-p.quit:
			return
		}
	}
}

// close stops the workers; later ops run on the caller alone. It must not
// race with an op in flight (like closing a file that is being read).
func (p *pool) close() { p.once.Do(func() { close(p.quit) }) }

// work runs chunks until none are left.
func (j *parJob) work() {
	id := int(j.ids.Add(1) - 1)
	for {
		lo := int(j.next.Add(1)-1) * j.chunk
		if lo >= j.n {
			return
		}
		j.fn.run(lo, min(lo+j.chunk, j.n), id)
	}
}

// run executes fn over [0, n) in chunks of chunk items using j as the
// (reusable) job record, returning when every chunk is done.
func (p *pool) run(j *parJob, fn ranger, n, chunk int) {
	if n <= 0 {
		return
	}
	chunk = max(chunk, 1)
	j.fn, j.n, j.chunk = fn, n, chunk
	j.next.Store(0)
	j.ids.Store(0)
	helpers := min(p.workers, (n+chunk-1)/chunk-1)
	select {
	case <-p.quit:
		helpers = 0 // closed: the caller does it all
	default:
	}
	j.wg.Add(helpers)
	for range helpers {
		p.tasks <- j
	}
	j.work()
	j.wg.Wait()
	j.fn = nil
}
