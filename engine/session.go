package engine

import (
	"context"
	"fmt"

	"github.com/deepseek-go/deepseek-go/engine/layers"
	"github.com/deepseek-go/deepseek-go/kernels"
)

// defaultChunk is the most prompt tokens one forward pass processes on a
// backend without a preference (WithPrefillChunk): large enough for the
// CPU's matmul tiles to pay off, small enough that activations stay modest.
const defaultChunk = 128

// Session is one sequence being processed: its KV cache, position and
// scratch buffers. A Session is not safe for concurrent use; make one per
// goroutine (they share the Model's weights).
type Session struct {
	m       *Model
	be      kernels.Backend
	kv      kernels.KVCache
	max     int
	chunk   int
	pos     int
	x       kernels.Buffer // hidden state [chunk, hidden]
	scratch map[string]kernels.Buffer
	ids32   []int32
	graph   graphState // decode step as a device graph (device_graph.go)
	// scratchGen counts scratch buffers replaced by larger ones: graphs
	// captured before point at the old ones (batchGraphs).
	scratchGen int
	// logits is the host copy of the last logits Step and Last return,
	// reused so decoding allocates nothing per token.
	logits []float32
	// outs backs matMul's output list (MatMul takes a slice of interfaces,
	// which would otherwise be allocated per call).
	outs [4]kernels.Buffer
	// moe is the MoE layers' routing results and expert scratch on the
	// backend (layers.MoE, MoERoutes), made on first use.
	moe  kernels.MoERoutes
	zero []float32 // backs zeros
	// batch and paged are set for a scheduler step (batch.go): rope and
	// attention then take per-row positions and the shared paged cache.
	batch   *kernels.Batch
	paged   kernels.PagedKV
	batcher kernels.Batcher
	// tp is a sharded model's per-session state (shard.go): the shards'
	// sessions on the driving session, embedding scratch on a shard's.
	tp *shardSession
}

// Rope rotates x for rows at pos0.. (a single sequence) or at the batch's
// per-row positions (layers.Context).
func (s *Session) Rope(x kernels.Buffer, n, heads, headDim, pos0 int, r *kernels.Rope) {
	if s.batch != nil {
		s.batcher.RopeRows(x, n, heads, headDim, s.batch.Pos, r)
		return
	}
	s.be.ApplyRope(x, n, heads, headDim, pos0, r)
}

// Attention is Backend.Attention on the session's cache, or the batched
// paged attention during a scheduler step (layers.Context).
func (s *Session) Attention(out, q, k, v kernels.Buffer, layer, pos0, n, heads int, scale float32) {
	if s.batch != nil {
		s.batcher.PagedAttention(out, q, k, v, s.paged, layer, s.batch, heads, scale)
		return
	}
	s.be.Attention(out, q, k, v, s.kv, layer, pos0, n, heads, scale)
}

// NewSession makes a session for up to maxTokens positions (prompt plus
// generated); maxTokens <= 0 means max_position_embeddings.
func (m *Model) NewSession(maxTokens int) (*Session, error) {
	limit := m.cfg.MaxPositionEmbeddings
	if maxTokens <= 0 {
		maxTokens = limit
	}
	if maxTokens > limit {
		return nil, fmt.Errorf("session of %d tokens exceeds max_position_embeddings %d", maxTokens, limit)
	}
	if m.shards != nil {
		return m.newShardedSession(maxTokens)
	}
	spec := m.kvSpec
	spec.MaxTokens = maxTokens
	kv, err := m.be.NewKVCache(spec)
	if err != nil {
		return nil, fmt.Errorf("allocating KV cache for %d tokens: %w", maxTokens, err)
	}
	s := &Session{m: m, be: m.be, kv: kv, max: maxTokens, chunk: min(m.chunk, maxTokens), scratch: map[string]kernels.Buffer{}}
	if s.x, err = s.Scratch("x", s.chunk*m.cfg.HiddenSize); err != nil {
		return nil, err
	}
	return s, nil
}

// Model returns the session's model.
func (s *Session) Model() *Model { return s.m }

// Backend returns the backend ops run on.
func (s *Session) Backend() kernels.Backend { return s.be }

// KV returns the session's KV cache.
func (s *Session) KV() kernels.KVCache { return s.kv }

// Chunk is the most tokens a Block is asked to process at once; size
// scratch buffers by it (layers.Context).
func (s *Session) Chunk() int { return s.chunk }

// Pos is the number of positions already in the cache.
func (s *Session) Pos() int { return s.pos }

// MaxTokens is the session's capacity in positions.
func (s *Session) MaxTokens() int { return s.max }

// Reset empties the cache so the session can start a new sequence.
func (s *Session) Reset() { s.pos = 0 }

// Truncate keeps only the first n cached positions (e.g. the shared prefix
// of a chat turn); later tokens overwrite the rest.
func (s *Session) Truncate(n int) error {
	if n < 0 || n > s.pos {
		return fmt.Errorf("truncate to %d: the cache holds %d positions", n, s.pos)
	}
	s.pos = n
	return nil
}

// Scratch returns the session's buffer called name with at least n floats,
// allocating it on first use. Blocks share buffers by name, so use a name
// per live intermediate (e.g. "q", "mlp.gate").
func (s *Session) Scratch(name string, n int) (kernels.Buffer, error) {
	old, ok := s.scratch[name]
	if ok && old.Len() >= n {
		return old, nil
	}
	b, err := s.be.Alloc(n)
	if err != nil {
		return nil, fmt.Errorf("allocating scratch %q of %d floats: %w", name, n, err)
	}
	if ok {
		s.replaced()
	}
	s.scratch[name] = b
	return b, nil
}

// replaced records that a buffer captured graphs may point at was
// replaced by a larger one: the session's decode graph is dropped (it is
// captured again on later steps) and the scheduler's batch graphs see a
// new generation (batchGraphs).
func (s *Session) replaced() {
	if s.graph.g != nil {
		s.graph.g.Close()
		s.graph = graphState{}
	}
	s.scratchGen++
}

// MatMul is Backend.MatMul over the non-nil outs, without allocating the
// output list (layers.Context).
func (s *Session) MatMul(x kernels.Buffer, n int, w kernels.Matrix, bias kernels.Buffer, outs layers.Outs) {
	k := 0
	for k < len(outs) && outs[k] != nil {
		k++
	}
	copy(s.outs[:], outs[:k])
	s.be.MatMul(s.outs[:k], x, n, w, bias)
	clear(s.outs[:k])
}

// MoERoutes returns the session's routing results and expert scratch (one
// for every MoE layer: they run one after another), making them on first
// use, which is never inside a captured step (the first decode step runs
// uncaptured) (layers.Context).
func (s *Session) MoERoutes(mb kernels.MoE, spec kernels.MoERoutesSpec) (kernels.MoERoutes, error) {
	if s.moe != nil && s.moe.Spec() == spec {
		return s.moe, nil
	}
	rt, err := mb.NewMoERoutes(spec)
	if err != nil {
		return nil, fmt.Errorf("moe routing scratch: %w", err)
	}
	if s.moe != nil {
		s.replaced() // captured steps point at the routes being replaced
	}
	s.moe = rt
	return rt, nil
}

// Prefill runs the prompt ids from the current position and returns the
// logits of every prompt position ([len(ids)][vocab]). The rows are the
// caller's: later calls on the session do not change them.
func (s *Session) Prefill(ctx context.Context, ids []int) ([][]float32, error) {
	var out [][]float32
	err := s.run(ctx, ids, func(rows []float32, n int) {
		v := s.m.cfg.VocabSize
		for i := 0; i < n; i++ {
			out = append(out, rows[i*v:(i+1)*v:(i+1)*v])
		}
	}, true)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Step feeds one token and returns the logits for the next. The slice is
// the session's own buffer, valid until the next Step or Last on the
// session (copy it to keep it longer); decoding this way allocates
// nothing per token.
func (s *Session) Step(ctx context.Context, id int) ([]float32, error) {
	return s.Last(ctx, []int{id})
}

// Last runs ids from the current position and returns only the logits of
// the last one (what generation needs; cheaper than Prefill). As with
// Step, the slice is valid until the session's next Step or Last.
func (s *Session) Last(ctx context.Context, ids []int) ([]float32, error) {
	var last []float32
	err := s.run(ctx, ids, func(rows []float32, n int) { last = rows }, false)
	if err != nil {
		return nil, err
	}
	return last, nil
}

// run processes ids in chunks; emit receives logits of each chunk (all
// rows, or only the sequence's last row when all is false).
func (s *Session) run(ctx context.Context, ids []int, emit func(rows []float32, n int), all bool) error {
	c := s.m.cfg
	if s.m.closed.Load() {
		return fmt.Errorf("model is closed")
	}
	if len(ids) == 0 {
		return fmt.Errorf("no tokens to process")
	}
	if s.pos+len(ids) > s.max {
		return fmt.Errorf("context too long: %d tokens in the cache + %d new exceed the session's %d positions (max_position_embeddings %d)",
			s.pos, len(ids), s.max, c.MaxPositionEmbeddings)
	}
	for i, id := range ids {
		if id < 0 || id >= c.VocabSize {
			return fmt.Errorf("token %d at index %d outside vocab_size %d", id, i, c.VocabSize)
		}
	}
	for off := 0; off < len(ids); off += s.chunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(s.chunk, len(ids)-off)
		lastChunk := off+n == len(ids)
		if err := s.forward(ids[off:off+n], all, lastChunk, emit); err != nil {
			return err
		}
	}
	return nil
}

// forward runs one chunk through the network and, when wanted, the output
// head. On error the cache position is left unchanged.
func (s *Session) forward(ids []int, all, lastChunk bool, emit func([]float32, int)) error {
	if s.tp != nil && s.tp.ranks != nil {
		return s.shardForward(ids, all, lastChunk, emit)
	}
	if len(ids) == 1 && !all && lastChunk {
		// Backends that can replay a captured decode step (cuda) take it.
		if handled, err := s.graphStep(ids[0], emit); handled {
			return err
		}
	}
	n := len(ids)
	lg, rows, err := s.forwardOps(ids, all, lastChunk)
	if err != nil {
		return err
	}
	if lg == nil {
		s.pos += n
		return nil
	}
	// Every row (Prefill) goes to a fresh slice the caller keeps; the last
	// row alone (Step, Last) reuses the session's buffer.
	var out []float32
	if all {
		out = make([]float32, rows*s.m.cfg.VocabSize)
	} else {
		out = s.logitsBuf(rows * s.m.cfg.VocabSize)
	}
	if err := s.be.Download(out, lg, 0); err != nil {
		return fmt.Errorf("reading logits: %w", err)
	}
	s.pos += n
	emit(out, rows)
	return nil
}

// logitsBuf returns the session's host logits buffer resized to n floats.
func (s *Session) logitsBuf(n int) []float32 {
	if cap(s.logits) < n {
		s.logits = make([]float32, n)
	}
	s.logits = s.logits[:n]
	return s.logits
}

// zeros returns n host zeros (callers must not write them).
func (s *Session) zeros(n int) []float32 {
	if len(s.zero) < n {
		s.zero = make([]float32, max(n, s.chunk*s.m.cfg.HiddenSize))
	}
	return s.zero[:n]
}

// forwardOps issues the chunk's ops on s.be (device work only, so a decode
// step can be captured as a graph) and returns the logits buffer with its
// row count, or nil when no logits are wanted for this chunk.
func (s *Session) forwardOps(ids []int, all, lastChunk bool) (kernels.Buffer, int, error) {
	m := s.m
	n := len(ids)
	s.ids32 = s.ids32[:0]
	for _, id := range ids {
		s.ids32 = append(s.ids32, int32(id))
	}
	if err := s.embed(); err != nil {
		return nil, 0, err
	}
	for i, b := range m.blocks {
		if err := b.Forward(s, s.x, n, s.pos); err != nil {
			return nil, 0, fmt.Errorf("layer %d: %w", i, err)
		}
	}
	if !all && !lastChunk {
		return nil, 0, nil
	}
	rows, src := n, 0
	if !all {
		rows, src = 1, n-1
	}
	lg, err := s.head(nil, src, rows)
	return lg, rows, err
}

// head runs the final norm and lm_head on rows of s.x: the rows listed in
// pick, or rows consecutive rows from src when pick is nil.
func (s *Session) head(pick []int, src, rows int) (kernels.Buffer, error) {
	m, c := s.m, s.m.cfg
	hid, vocab := c.HiddenSize, m.lmHead.Rows() // a shard's vocabulary slice, or all of it
	if pick != nil {
		rows = len(pick)
	}
	xr, err := s.Scratch("head.x", rows*hid)
	if err != nil {
		return nil, err
	}
	xn, err := s.Scratch("head.xn", rows*hid)
	if err != nil {
		return nil, err
	}
	if pick == nil {
		s.be.Copy2D(xr, 0, hid, s.x, src*hid, hid, rows, hid)
	}
	for i := 0; i < len(pick); { // one copy per run of consecutive rows
		j := i + 1
		for j < len(pick) && pick[j] == pick[j-1]+1 {
			j++
		}
		s.be.Copy2D(xr, i*hid, hid, s.x, pick[i]*hid, hid, j-i, hid)
		i = j
	}
	s.be.RMSNorm(xn, xr, m.norm, rows, hid, float32(c.RMSNormEps))
	lg, err := s.Scratch("head.logits", rows*vocab)
	if err != nil {
		return nil, err
	}
	s.MatMul(xn, rows, m.lmHead, nil, layers.Outs{lg})
	return lg, nil
}

// stepForward runs one scheduler step: ids are the batch's rows (bt gives
// their positions and sequences) and want the rows whose logits are
// returned, in that order, as a [len(want), vocab] device buffer.
func (s *Session) stepForward(ids []int, bt *kernels.Batch, want []int) (kernels.Buffer, error) {
	if s.m.closed.Load() {
		return nil, fmt.Errorf("model is closed")
	}
	if s.m.shards != nil {
		return s.shardStepForward(ids, bt, want)
	}
	if err := bt.Check(s.paged.Spec()); err != nil {
		return nil, err
	}
	n := len(ids)
	s.ids32 = s.ids32[:0]
	for _, id := range ids {
		s.ids32 = append(s.ids32, int32(id))
	}
	s.batch = bt
	defer func() { s.batch = nil }()
	if err := s.embed(); err != nil {
		return nil, err
	}
	for i, b := range s.m.blocks {
		if err := b.Forward(s, s.x, n, 0); err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
	}
	if len(want) == 0 {
		return nil, nil
	}
	return s.head(want, 0, 0)
}
