package engine

// Tensor and expert parallelism in one process (issue 17): a sharded Model
// drives one shard Model per rank of a kernels.Collective group, each with
// its own backend, its slice of the weights and its own blocks; a Session
// of the sharded model runs every shard's forward pass in its own
// goroutine and the shards meet at the collectives.
//
// The split is Megatron's:
//   - attention: q|k|v split by heads (column-parallel; GQA's KV heads too,
//     or one KV head replicated per shard when there are fewer KV heads
//     than shards), o_proj split by its input columns (row-parallel); MLA
//     splits q_b (or q_proj), kv_b and o_proj by heads and replicates the
//     latent projections q_a and kv_a (its absorbed cache, the latent,
//     is replicated too);
//   - MLP: gate|up split by intermediate features, down by its input
//     columns; MoE shared experts the same way;
//   - MoE routed experts: whole experts placed across shards (a
//     contiguous run per shard); routing is computed on every shard from
//     the replicated hidden state, and each shard runs only its experts;
//   - after attention and after the MLP/MoE, each shard holds a partial
//     sum of the block's output: one AllReduceSum per sub-block combines
//     them (biases of row-split layers are added by one shard only);
//   - the vocabulary: embedding and lm_head split by rows. A shard embeds
//     the ids in its range (zeros elsewhere) and an all-reduce assembles
//     the hidden state; each shard's logits cover its vocabulary slice and
//     the driving session downloads them side by side.
//
// The hidden state, norms and the router are replicated. Every shard
// issues the same collectives in the same order whatever the tokens
// (experts a shard lacks are skipped, not its all-reduce), so the group
// never waits on a rank that is not coming.
//
// The scheduler batches a sharded model as any other: the model's
// backend (shardedBackend) makes a paged KV cache of one part per shard,
// and a step runs every shard's stepForward on its part, the logits
// assembled on the host.

import (
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/deepseek-go/deepseek-go/engine/layers"
	"github.com/deepseek-go/deepseek-go/kernels"
	"github.com/deepseek-go/deepseek-go/kernels/cpu"
)

// WithShards splits the model over n tensor-parallel shards in this
// process (n <= 1: one, the default). Today the shards are CPU backends
// forming a kernels/cpu group (WithDevice "cpu" or "auto"); their results
// match one shard's to float rounding (the partial sums are added in a
// different order). Each shard gets WithThreads goroutines per op, or
// GOMAXPROCS/n when unset.
func WithShards(n int) Option { return func(o *options) { o.shards = n } }

// shardKVHeads is a shard's KV heads in the cache of a model whose cache
// has kvh heads (GQA's KV heads, MLA naive's query heads, or 1 for MLA's
// absorbed latent, which is replicated): its share, or one replicated
// head when there are fewer than shards (layers.GQAShard).
func shardKVHeads(kvh, size int) int {
	if kvh%size == 0 {
		return kvh / size
	}
	return 1
}

// shardRole is a shard model's place in its group.
type shardRole struct {
	rank, size int
	coll       kernels.Collective
	vocab      layers.RowRange // rows of embed_tokens and lm_head this shard holds
}

// openShardBackends opens one backend per shard, forming a collective
// group. Only the CPU fake exists. WithDevices([]int) will map here: one
// CUDA backend per listed device, each with an NCCL communicator (unique
// id from rank 0, ncclCommInitRank per device from its goroutine) whose
// collectives run on that backend's stream (kernels.Collective).
func openShardBackends(o *options) ([]kernels.Backend, error) {
	n := o.shards
	if o.backend != nil {
		return nil, fmt.Errorf("WithShards(%d) with WithBackend: one backend cannot hold %d shards", n, n)
	}
	switch o.device {
	case "", "auto", "cpu":
	default:
		return nil, fmt.Errorf("WithShards(%d) on device %q: multi-device collectives (NCCL) are not implemented yet; shards run on the CPU (WithDevice(\"cpu\"))", n, o.device)
	}
	threads := o.threads
	if threads <= 0 {
		threads = max(1, runtime.GOMAXPROCS(0)/n)
	}
	ms, err := cpu.NewGroup(n, threads)
	if err != nil {
		return nil, fmt.Errorf("WithShards(%d): %w", n, err)
	}
	bes := make([]kernels.Backend, n)
	for i, m := range ms {
		bes[i] = m
	}
	return bes, nil
}

// newShardedModel builds one shard model per rank and the Model that
// drives them.
func newShardedModel(cfg *Config, fam Family, src TensorSource, total int64, closer func() error, o *options, start time.Time) (*Model, error) {
	n := o.shards
	if cfg.VocabSize < n {
		return nil, fmt.Errorf("WithShards(%d): vocab_size %d is smaller than the shard count", n, cfg.VocabSize)
	}
	bes, err := openShardBackends(o)
	if err != nil {
		return nil, err
	}
	m := &Model{cfg: cfg, fam: fam, closer: closer, tok: o.tok, genRoom: initialGenRoom}
	for r, be := range bes {
		m.shards = append(m.shards, &Model{cfg: cfg, fam: fam, be: be, ownBE: true, genRoom: initialGenRoom,
			tp: &shardRole{rank: r, size: n, coll: kernels.CollectiveOf(be), vocab: layers.SplitRange(cfg.VocabSize, r, n)}})
	}
	for r, sm := range m.shards {
		so := *o
		if o.progress != nil { // one progress over all shards
			so.progress = func(done, tot int64) { o.progress(int64(r)*tot+done, int64(n)*tot) }
		}
		if err := sm.build(src, total, &so); err != nil {
			m.Close()
			return nil, fmt.Errorf("shard %d of %d: %w", r, n, err)
		}
	}
	m.be = &shardedBackend{Backend: bes[0], ranks: bes}
	m.kvSpec = fam.KVSpec(cfg)
	// Params come from shard 0, which fetched every tensor whole (and
	// counted the experts it does not hold); bytes add up over shards.
	m.info = m.shards[0].info
	m.info.Backend = m.be.Name()
	m.info.BytesByDType = map[string]int64{}
	m.info.KVBytesPerTok = 0
	for _, sm := range m.shards {
		for k, v := range sm.info.BytesByDType {
			m.info.BytesByDType[k] += v
		}
		m.info.KVBytesPerTok += sm.info.KVBytesPerTok
	}
	m.info.Load = time.Since(start)
	return m, nil
}

// Shards is the number of tensor-parallel shards the model runs on (1
// when not sharded).
func (m *Model) Shards() int { return max(len(m.shards), 1) }

// shardedBackend is what a sharded model shows where one Backend is
// expected (Model.Backend, Info, the scheduler): rank 0's backend with
// only the Backend methods, so rank 0's own optional capabilities
// (StepCapturer, DeviceSampler, MemInfoer) are hidden and callers take
// their host paths, plus a Batcher whose paged caches have a part per
// shard. The shard models own and close the real backends.
type shardedBackend struct {
	kernels.Backend
	ranks []kernels.Backend
}

var _ kernels.Batcher = (*shardedBackend)(nil)

func (b *shardedBackend) Name() string {
	return fmt.Sprintf("%s ×%d shards", b.Backend.Name(), len(b.ranks))
}

func (b *shardedBackend) Close() error { return nil }

// Download implements kernels.Backend; it also reads the logits a
// sharded step assembled on the host.
func (b *shardedBackend) Download(dst []float32, src kernels.Buffer, off int) error {
	h, ok := src.(*hostBuffer)
	if !ok {
		return b.Backend.Download(dst, src, off)
	}
	if off < 0 || off+len(dst) > len(h.data) {
		return fmt.Errorf("sharded logits: download of %d floats at %d from %d", len(dst), off, len(h.data))
	}
	copy(dst, h.data[off:])
	return nil
}

// NewPagedKV implements kernels.Batcher: one paged cache per shard, each
// with the shard's KV heads; block ids are shared, so one block table
// addresses every part.
func (b *shardedBackend) NewPagedKV(spec kernels.PagedKVSpec) (kernels.PagedKV, error) {
	kv := &shardedPagedKV{spec: spec}
	for r, be := range b.ranks {
		bb, ok := be.(kernels.Batcher)
		if !ok {
			return nil, fmt.Errorf("shard %d: backend %s cannot batch", r, be.Name())
		}
		rs := spec
		rs.KVHeads = shardKVHeads(spec.KVHeads, len(b.ranks))
		p, err := bb.NewPagedKV(rs)
		if err != nil {
			return nil, fmt.Errorf("shard %d: %w", r, err)
		}
		kv.parts = append(kv.parts, p)
	}
	return kv, nil
}

// RopeRows implements kernels.Batcher. A sharded model's blocks run on
// the shards' own backends, never on this one.
func (b *shardedBackend) RopeRows(kernels.Buffer, int, int, int, []int32, *kernels.Rope) {
	panic("engine: a sharded model's ops run on its shards' backends")
}

// PagedAttention implements kernels.Batcher; see RopeRows.
func (b *shardedBackend) PagedAttention(kernels.Buffer, kernels.Buffer, kernels.Buffer, kernels.Buffer, kernels.PagedKV, int, *kernels.Batch, int, float32) {
	panic("engine: a sharded model's ops run on its shards' backends")
}

// shardedPagedKV is a paged KV cache with one part per shard.
type shardedPagedKV struct {
	spec  kernels.PagedKVSpec
	parts []kernels.PagedKV
}

func (k *shardedPagedKV) Spec() kernels.PagedKVSpec { return k.spec }

func (k *shardedPagedKV) Bytes() int64 {
	var n int64
	for _, p := range k.parts {
		n += p.Bytes()
	}
	return n
}

// hostBuffer is a sharded step's logits, assembled on the host from the
// shards' vocabulary slices (shardedBackend.Download reads it).
type hostBuffer struct{ data []float32 }

func (h *hostBuffer) Len() int { return len(h.data) }

// shardSession is a Session's sharding state: on the driving session the
// shards' sessions and per-rank results, on a shard's session the
// vocabulary-split embedding's scratch.
type shardSession struct {
	ranks []*Session
	lg    []kernels.Buffer
	rows  []int
	errs  []error
	host  [][]float32 // each rank's logits slice, downloaded
	in    []int       // the chunk's ids, shared by the ranks
	step  hostBuffer  // a scheduler step's assembled logits

	ids []int32 // shard: ids of its vocabulary slice, relative to its start
	at  []int   // shard: the row each of ids goes to
}

// newShardedSession makes a session on every shard and one driving them.
func (m *Model) newShardedSession(maxTokens int) (*Session, error) {
	t := newShardSession(len(m.shards))
	for r, sm := range m.shards {
		rs, err := sm.NewSession(maxTokens)
		if err != nil {
			return nil, fmt.Errorf("shard %d: %w", r, err)
		}
		rs.tp = &shardSession{}
		t.ranks[r] = rs
	}
	first := t.ranks[0]
	return &Session{m: m, be: m.be, max: first.max, chunk: first.chunk, scratch: map[string]kernels.Buffer{}, tp: t}, nil
}

func newShardSession(n int) *shardSession {
	return &shardSession{ranks: make([]*Session, n), lg: make([]kernels.Buffer, n), rows: make([]int, n),
		errs: make([]error, n), host: make([][]float32, n)}
}

// onShards runs fn for every rank's session in its own goroutine. A rank
// that fails aborts the group's collectives so the others do not wait
// for it; the first error is returned.
func (s *Session) onShards(fn func(r int, rs *Session) error) error {
	t := s.tp
	// Sessions share the shards' collective group, whose ranks must see
	// one sequence of collectives: concurrent sessions take turns.
	s.m.shardMu.Lock()
	defer s.m.shardMu.Unlock()
	var wg sync.WaitGroup
	for r, rs := range t.ranks {
		wg.Go(func() {
			if t.errs[r] = fn(r, rs); t.errs[r] != nil {
				if ab, ok := rs.m.tp.coll.(kernels.CollectiveAborter); ok {
					ab.Abort()
				}
			}
		})
	}
	wg.Wait()
	var err error
	for r, e := range t.errs {
		if e != nil && err == nil {
			err = fmt.Errorf("shard %d: %w", r, e)
		}
	}
	if err != nil {
		clear(t.errs)
		// Every rank has stopped: the group works again for the next step
		// (before another session can take its turn).
		if ab, ok := t.ranks[0].m.tp.coll.(kernels.CollectiveAborter); ok {
			ab.Resume()
		}
	}
	return err
}

// shardForward runs one chunk on every shard, each in its own goroutine,
// and assembles the logits from the shards' vocabulary slices.
func (s *Session) shardForward(ids []int, all, lastChunk bool, emit func([]float32, int)) error {
	t := s.tp
	// The goroutines get the session's copy: ids itself would escape to
	// the heap, and with it every Step's one-id slice.
	t.in = append(t.in[:0], ids...)
	err := s.onShards(func(r int, rs *Session) error {
		rs.pos = s.pos
		var err error
		t.lg[r], t.rows[r], err = rs.forwardOps(t.in, all, lastChunk)
		return err
	})
	if err != nil {
		return err
	}
	n := len(ids)
	if t.lg[0] == nil {
		s.pos += n
		return nil
	}
	rows := t.rows[0]
	var out []float32
	if all {
		out = make([]float32, rows*s.m.cfg.VocabSize)
	} else {
		out = s.logitsBuf(rows * s.m.cfg.VocabSize)
	}
	if err := t.gatherLogits(out, rows, s.m.cfg.VocabSize); err != nil {
		return err
	}
	s.pos += n
	emit(out, rows)
	return nil
}

// gatherLogits downloads each rank's logits (rows of its vocabulary
// slice) side by side into out [rows, vocab].
func (t *shardSession) gatherLogits(out []float32, rows, vocab int) error {
	for r, rs := range t.ranks {
		vr := rs.m.tp.vocab
		w := vr.Len()
		if cap(t.host[r]) < rows*w {
			t.host[r] = make([]float32, rows*w)
		}
		h := t.host[r][:rows*w]
		if err := rs.be.Download(h, t.lg[r], 0); err != nil {
			return fmt.Errorf("shard %d: reading logits: %w", r, err)
		}
		for i := range rows {
			copy(out[i*vocab+vr.Lo:i*vocab+vr.Hi], h[i*w:(i+1)*w])
		}
		t.lg[r] = nil
	}
	return nil
}

// shardStepForward is stepForward on a sharded model: every shard runs
// the batch on its part of the paged cache, and the wanted rows' logits
// come back assembled on the host.
func (s *Session) shardStepForward(ids []int, bt *kernels.Batch, want []int) (kernels.Buffer, error) {
	kv, ok := s.paged.(*shardedPagedKV)
	if !ok || len(kv.parts) != len(s.m.shards) {
		return nil, fmt.Errorf("sharded step: the paged KV cache was not made by the sharded model's backend")
	}
	if s.tp == nil { // first step: a step session per shard
		t := newShardSession(len(s.m.shards))
		for r, sm := range s.m.shards {
			b, ok := sm.be.(kernels.Batcher)
			if !ok { // NewPagedKV checked it
				return nil, fmt.Errorf("shard %d: backend %s cannot batch", r, sm.be.Name())
			}
			rs, err := sm.newStepSession(s.chunk, kv.parts[r], b)
			if err != nil {
				return nil, fmt.Errorf("shard %d: %w", r, err)
			}
			rs.tp = &shardSession{}
			t.ranks[r] = rs
		}
		s.tp = t
	}
	t := s.tp
	t.in = append(t.in[:0], ids...)
	err := s.onShards(func(r int, rs *Session) error {
		var err error
		t.lg[r], err = rs.stepForward(t.in, bt, want)
		return err
	})
	if err != nil || len(want) == 0 {
		return nil, err
	}
	vocab := s.m.cfg.VocabSize
	if cap(t.step.data) < len(want)*vocab {
		t.step.data = make([]float32, len(want)*vocab)
	}
	t.step.data = t.step.data[:len(want)*vocab]
	if err := t.gatherLogits(t.step.data, len(want), vocab); err != nil {
		return nil, err
	}
	return &t.step, nil
}

// embed writes the embeddings of s.ids32 to s.x: a table lookup, or on a
// shard its vocabulary slice's rows (zeros for other ids) summed over the
// shards.
func (s *Session) embed() error {
	m := s.m
	if m.tp == nil {
		s.be.Embed(s.x, m.embed, s.ids32)
		return nil
	}
	t := s.tp
	hid, n := m.cfg.HiddenSize, len(s.ids32)
	t.ids, t.at = t.ids[:0], t.at[:0]
	for i, id := range s.ids32 {
		if int(id) >= m.tp.vocab.Lo && int(id) < m.tp.vocab.Hi {
			t.ids = append(t.ids, id-int32(m.tp.vocab.Lo))
			t.at = append(t.at, i)
		}
	}
	if err := s.be.Upload(s.x, 0, s.zeros(n*hid)); err != nil {
		return fmt.Errorf("embedding: %w", err)
	}
	if len(t.ids) > 0 {
		e, err := s.Scratch("embed.shard", s.chunk*hid)
		if err != nil {
			return err
		}
		s.be.Embed(e, m.embed, t.ids)
		for j, row := range t.at {
			s.be.Copy2D(s.x, row*hid, hid, e, j*hid, hid, 1, hid)
		}
	}
	s.AllReduce(s.x, n*hid) // one shard's row plus zeros: exact
	return nil
}

// AllReduce sums buf[0:n] over the shards; a no-op when not sharded
// (layers.Context).
func (s *Session) AllReduce(buf kernels.Buffer, n int) {
	if t := s.m.tp; t != nil && t.size > 1 {
		t.coll.AllReduceSum(buf, n)
	}
}
