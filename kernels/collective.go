package kernels

// Collectives: the capability of a backend that is one rank of a group of
// devices working as one model (tensor and expert parallelism, one
// goroutine per rank, one process). Model code asks for it with a type
// assertion, as for Batcher; a backend without it is a group of one (Solo).
//
// Every rank of a group must issue the same collectives in the same order
// with the same n: a collective returns once every rank has issued it (on
// an accelerator: once it is enqueued on the backend's stream, where later
// ops of that rank wait for it, so a collective can sit inside a captured
// graph). The CPU fake (kernels/cpu.NewGroup) blocks the calling goroutine
// instead. An NCCL implementation (libnccl.so.2 opened with dlopen, one
// communicator per device, ncclAllReduce/ncclAllGather on the backend's
// stream) will implement the same interface; see README.md.

// Collective exchanges float32 buffers between the ranks of a group.
type Collective interface {
	// Rank is this backend's index in the group, 0 ≤ Rank < Size.
	Rank() int
	// Size is the number of ranks in the group.
	Size() int
	// AllReduceSum replaces buf[0:n] on every rank by the sum over ranks
	// of buf[0:n]. The sum is taken in rank order on every rank, so the
	// result is the same bits on every rank and does not depend on which
	// rank arrived first.
	AllReduceSum(buf Buffer, n int)
	// AllGather writes src[0:n] of rank r to dst[r*n:(r+1)*n] on every
	// rank; dst holds Size()*n floats.
	AllGather(dst, src Buffer, n int)
}

// CollectiveAborter is optional: Abort releases every rank blocked in a
// collective and makes later collectives return at once without
// exchanging data (a rank failed, so the others must not wait for it);
// Resume makes the group usable again once every rank has stopped issuing
// work for the failed step. NCCL's equivalent is ncclCommAbort followed by
// new communicators.
type CollectiveAborter interface {
	Abort()
	Resume()
}

// Solo returns the collective of a group of one on be: reductions are
// no-ops and a gather is a copy.
func Solo(be Backend) Collective { return solo{be} }

type solo struct{ be Backend }

func (solo) Rank() int                      { return 0 }
func (solo) Size() int                      { return 1 }
func (solo) AllReduceSum(buf Buffer, n int) {}
func (s solo) AllGather(dst, src Buffer, n int) {
	if dst != src && n > 0 {
		s.be.Copy2D(dst, 0, n, src, 0, n, 1, n)
	}
}

// CollectiveOf returns be's collective, or Solo(be) when be has none.
func CollectiveOf(be Backend) Collective {
	if c, ok := be.(Collective); ok {
		return c
	}
	return Solo(be)
}
