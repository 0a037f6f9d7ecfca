package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/deepseek-go/deepseek-go/kernels"
)

// Request is one generation submitted to a Scheduler. The prompt is token
// ids: apply the chat template and encode in the caller.
type Request struct {
	Prompt    []int          // prompt token ids, not empty
	MaxTokens int            // new tokens at most; 0 = until a stop id or the context is full
	Sampling  SamplerOptions // per request; the zero value is greedy
	StopIDs   []int          // stop ids besides the model's EOS ids (never yielded)
	IgnoreEOS bool           // do not stop at the model's EOS ids
	// Logprobs fills Token.Logprob; TopLogprobs (0..20) fills Token.Top
	// with that many most likely ids. Both are of the model's raw
	// distribution (log-softmax of the logits, before sampling settings).
	Logprobs    bool
	TopLogprobs int
}

// maxTopLogprobs is the most alternatives a request may ask for (OpenAI's
// limit).
const maxTopLogprobs = 20

// Logprob is a token id with its log-probability.
type Logprob struct {
	ID      int
	Logprob float32
}

// FinishReason says why a request stopped generating.
type FinishReason string

// Finish reasons; FinishContext is reported to OpenAI clients as "length".
const (
	FinishStop    FinishReason = "stop"    // a stop id (EOS) was sampled
	FinishLength  FinishReason = "length"  // MaxTokens reached
	FinishContext FinishReason = "context" // the context is full
)

// Result describes a finished request.
type Result struct {
	PromptTokens, GeneratedTokens int
	CachedTokens                  int           // prompt tokens served from the prefix cache
	Finish                        FinishReason  // empty when the request ended with an error
	Queued                        time.Duration // from Submit to first scheduled
	FirstToken                    time.Duration // from Submit to the first token (0 without one)
	Elapsed                       time.Duration // from Submit to the end
	Preemptions                   int           // times its KV blocks were taken back and recomputed later
}

// SchedulerOptions sizes a Scheduler; zero values pick the defaults.
type SchedulerOptions struct {
	MaxSeqs     int   // sequences per step (default 64)
	TokenBudget int   // rows per step, decode rows and prefill chunks together (default 512, at least MaxSeqs)
	KVBytes     int64 // KV cache budget (default: MaxSeqs full contexts, at most 4 GiB)
}

// SchedulerStats is a snapshot of a scheduler's load.
type SchedulerStats struct {
	Running, Waiting int
	// KVBlocksUsed counts blocks held by live sequences; idle prefix-cache
	// blocks, which are reclaimed on demand, do not count.
	KVBlocksUsed, KVBlocksTotal int
	// PrefixHitBlocks of PrefixQueryBlocks full prompt blocks were found
	// in the prefix cache (cumulative).
	PrefixHitBlocks, PrefixQueryBlocks int64
	// GraphReplays counts decode steps replayed from a captured device
	// graph (cumulative; backends with kernels.BatchStepCapturer).
	GraphReplays int64
}

// KVUsage is the share of KV blocks held by live sequences, 0..1.
func (s *SchedulerStats) KVUsage() float64 {
	if s.KVBlocksTotal == 0 {
		return 0
	}
	return float64(s.KVBlocksUsed) / float64(s.KVBlocksTotal)
}

// Errors of Submit and of streams; validation errors wrap ErrInvalid.
var (
	ErrInvalid = errors.New("invalid request")
	ErrClosed  = errors.New("scheduler closed")
)

// Scheduler runs many generations at once by continuous batching: each
// step packs one decode row of every running sequence and prompt chunks
// of others under a token budget, reading the weights once for all of
// them. Requests join and leave between steps. The KV cache is paged and
// owned here: when blocks run out the newest sequences are preempted and
// recomputed later (their full blocks usually survive in the prefix cache).
// Backends without the kernels.Batcher capability run each sequence in its
// own Session within the step (same results, no shared weight reads).
type Scheduler struct {
	m       *Model
	o       SchedulerOptions
	batcher kernels.Batcher
	sampler kernels.DeviceSampler // nil: every row is sampled on the host
	kv      kernels.PagedKV
	pool    *blockPool
	sess    *Session            // the step's scratch (batched path)
	limit   int                 // positions a sequence may reach
	stops   []int               // the model's EOS ids
	graphs  *batchGraphs        // decode-only steps as device graphs; nil without
	argmax  kernels.RowArgmaxer // greedy rows in one launch; nil without
	argIDs  []int32

	// A step's device rows in one call; nil without (tests may clear it
	// before the first Submit to sample row by row).
	sampRows kernels.RowSampler
	rowArgs  []kernels.SampleRow

	mu     sync.Mutex // guards inbox, stats, closed
	inbox  []*seqState
	stats  SchedulerStats
	closed bool
	wake   chan struct{}
	quit   chan struct{}
	done   chan struct{}

	// Owned by the loop goroutine.
	waiting, running []*seqState
	hits, queries    int64
	logits           []float32
}

// seqState is one request inside the scheduler.
type seqState struct {
	req      Request
	ctx      context.Context
	st       *Stream
	smp      *Sampler
	tokens   []int // prompt, then generated ids
	nPrompt  int
	maxNew   int
	computed int     // positions whose KV is in the cache
	blocks   []int32 // block table
	hashes   []uint64
	started  bool
	sess     *Session // unbatched backends: the sequence's own session
}

// NewScheduler starts a scheduler over the model; Close stops it.
func (m *Model) NewScheduler(o SchedulerOptions) (*Scheduler, error) {
	if o.MaxSeqs < 0 || o.TokenBudget < 0 || o.KVBytes < 0 {
		return nil, fmt.Errorf("scheduler: negative option in %+v", o)
	}
	if o.MaxSeqs == 0 {
		o.MaxSeqs = 64
	}
	if o.TokenBudget == 0 {
		o.TokenBudget = 512
	}
	o.TokenBudget = max(o.TokenBudget, o.MaxSeqs)
	c := m.cfg
	s := &Scheduler{m: m, o: o, limit: c.MaxPositionEmbeddings, stops: c.StopIDs(),
		wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	s.sampler, _ = m.be.(kernels.DeviceSampler)
	if s.sampler != nil {
		s.argmax, _ = m.be.(kernels.RowArgmaxer)
		s.sampRows, _ = m.be.(kernels.RowSampler)
	}
	if b, ok := m.be.(kernels.Batcher); ok {
		s.batcher = b
		spec := kernels.PagedKVSpec{Layers: m.kvSpec.Layers, BlockTokens: blockTokens, KVHeads: m.kvSpec.KVHeads,
			KDim: m.kvSpec.KDim, VDim: m.kvSpec.VDim, VInK: m.kvSpec.VInK}
		// The backend picks the cache dtype: a one-block probe tells the
		// real bytes per block.
		spec.Blocks = 1
		probe, err := s.batcher.NewPagedKV(spec)
		if err != nil {
			return nil, fmt.Errorf("scheduler: %w", err)
		}
		perBlock := probe.Bytes()
		if c, ok := probe.(io.Closer); ok {
			c.Close()
		}
		budget := o.KVBytes
		if budget == 0 {
			budget = defaultKVBytes(m.be, int64(o.MaxSeqs)*int64((c.MaxPositionEmbeddings+blockTokens-1)/blockTokens)*perBlock)
		}
		blocks := int(budget / perBlock)
		if blocks < 1 {
			return nil, fmt.Errorf("scheduler: KV budget of %d bytes is less than one block (%d bytes)", budget, perBlock)
		}
		spec.Blocks = blocks
		capturer, graphs := batchCapturerOf(m.be)
		graphs = graphs && m.shards == nil
		if graphs {
			spec.Blocks++ // the padding rows' block, beyond the budget: scheduling is the same without graphs
		}
		if s.kv, err = s.batcher.NewPagedKV(spec); err != nil {
			return nil, fmt.Errorf("scheduler: allocating %d KV blocks: %w", spec.Blocks, err)
		}
		s.pool = newBlockPool(blocks)
		s.limit = min(s.limit, blocks*blockTokens)
		rows := o.TokenBudget
		if graphs {
			s.graphs = newBatchGraphs(capturer, o.MaxSeqs, (s.limit+blockTokens-1)/blockTokens, int32(blocks))
			rows = max(rows, s.graphs.maxRows)
		}
		if s.sess, err = m.newStepSession(rows, s.kv, s.batcher); err != nil {
			s.closeKV()
			return nil, fmt.Errorf("scheduler: %w", err)
		}
		if s.graphs != nil {
			// The head's scratch for the largest bucket up front, so that a
			// mixed step wanting more logits rows never replaces it under the
			// graphs.
			r, hid := s.graphs.maxRows, c.HiddenSize
			for _, b := range []struct {
				name string
				n    int
			}{{"head.x", r * hid}, {"head.xn", r * hid}, {"head.logits", r * m.lmHead.Rows()}} {
				if _, err := s.sess.Scratch(b.name, b.n); err != nil {
					s.closeKV()
					return nil, fmt.Errorf("scheduler: %w", err)
				}
			}
		}
		s.stats.KVBlocksTotal = blocks
	}
	go s.loop()
	return s, nil
}

// defaultKVBytes is the KV budget when none is given: what full contexts
// need, at most 4 GiB on the host, or 90% of the free memory (less 1 GiB
// for activations) on a device that reports it.
func defaultKVBytes(be kernels.Backend, full int64) int64 {
	if mi, ok := be.(kernels.MemInfoer); ok {
		if free, _, err := mi.MemInfo(); err == nil {
			return max(min(full, free/10*9-(1<<30)), 1)
		}
	}
	return min(full, 4<<30)
}

// newStepSession returns the session a scheduler runs its steps through:
// scratch for rows tokens and no cache of its own.
func (m *Model) newStepSession(rows int, kv kernels.PagedKV, b kernels.Batcher) (*Session, error) {
	s := &Session{m: m, be: m.be, chunk: rows, scratch: map[string]kernels.Buffer{}, paged: kv, batcher: b}
	var err error
	if s.x, err = s.Scratch("x", rows*m.cfg.HiddenSize); err != nil {
		return nil, err
	}
	return s, nil
}

// Context is the most positions (prompt plus generated) one request may
// reach: max_position_embeddings, or less when the KV budget is smaller.
func (s *Scheduler) Context() int { return s.limit }

// Submit validates r and queues it. Cancelling ctx (or leaving the
// stream's loop early) cancels the request within one step and frees its
// KV blocks.
func (s *Scheduler) Submit(ctx context.Context, r Request) (*Stream, error) {
	if err := s.check(r); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	smp, err := NewSampler(r.Sampling)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	maxNew := r.MaxTokens
	if maxNew == 0 {
		maxNew = s.limit - len(r.Prompt)
	}
	ctx, cancel := context.WithCancel(ctx)
	st := &Stream{notify: make(chan struct{}, 1), ctx: ctx, cancel: cancel, t0: time.Now()}
	st.res.PromptTokens = len(r.Prompt)
	q := &seqState{req: r, ctx: ctx, st: st, smp: smp, nPrompt: len(r.Prompt), maxNew: maxNew,
		tokens: append(make([]int, 0, len(r.Prompt)+min(maxNew, 1024)), r.Prompt...)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		cancel()
		return nil, ErrClosed
	}
	s.inbox = append(s.inbox, q)
	s.stats.Waiting++
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return st, nil
}

// check validates a request; messages name the numbers.
func (s *Scheduler) check(r Request) error {
	c := s.m.cfg
	n := len(r.Prompt)
	switch {
	case n == 0:
		return fmt.Errorf("empty prompt")
	case r.MaxTokens < 0:
		return fmt.Errorf("max_tokens must be >= 0, got %d", r.MaxTokens)
	case r.TopLogprobs < 0 || r.TopLogprobs > maxTopLogprobs:
		return fmt.Errorf("top_logprobs must be in [0, %d], got %d", maxTopLogprobs, r.TopLogprobs)
	case n >= s.limit:
		return fmt.Errorf("the prompt of %d tokens leaves no room in the context of %d tokens", n, s.limit)
	case r.MaxTokens > 0 && n+r.MaxTokens > s.limit:
		return fmt.Errorf("the prompt of %d tokens + max_tokens %d exceed the context of %d tokens", n, r.MaxTokens, s.limit)
	}
	for i, id := range r.Prompt {
		if id < 0 || id >= c.VocabSize {
			return fmt.Errorf("prompt token %d at index %d outside vocab_size %d", id, i, c.VocabSize)
		}
	}
	return nil
}

// Stats returns a snapshot of the scheduler's load.
func (s *Scheduler) Stats() SchedulerStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Close fails the waiting and running requests with ErrClosed and stops
// the loop; it returns once the loop has ended.
func (s *Scheduler) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.quit)
	}
	s.mu.Unlock()
	<-s.done
	if s.graphs != nil {
		s.graphs.close() // before the cache they captured
	}
	return s.closeKV()
}

// closeKV frees a device cache's memory now.
func (s *Scheduler) closeKV() error {
	if c, ok := s.kv.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

func (s *Scheduler) loop() {
	defer close(s.done)
	for {
		s.mu.Lock()
		s.waiting = append(s.waiting, s.inbox...)
		s.inbox = s.inbox[:0]
		s.mu.Unlock()
		select {
		case <-s.quit:
			for _, q := range slices.Concat(s.running, s.waiting) {
				s.finish(q, "", ErrClosed)
			}
			s.mu.Lock()
			for _, q := range s.inbox {
				s.finish(q, "", ErrClosed)
			}
			s.inbox = nil
			s.mu.Unlock()
			s.running, s.waiting = nil, nil
			s.publish()
			return
		default:
		}
		s.reap()
		if len(s.running) == 0 && len(s.waiting) == 0 {
			s.publish()
			select {
			case <-s.wake:
			case <-s.quit:
			}
			continue
		}
		s.step()
		s.publish()
	}
}

// publish copies the loop's counts into the stats snapshot.
func (s *Scheduler) publish() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Running = len(s.running)
	s.stats.Waiting = len(s.waiting) + len(s.inbox)
	s.stats.PrefixHitBlocks, s.stats.PrefixQueryBlocks = s.hits, s.queries
	if s.graphs != nil {
		s.stats.GraphReplays = s.graphs.replays
	}
	if s.pool != nil {
		s.stats.KVBlocksUsed = s.pool.Live()
	}
}

// reap ends the requests whose context is done.
func (s *Scheduler) reap() {
	keep := func(list []*seqState) []*seqState {
		return slices.DeleteFunc(list, func(q *seqState) bool {
			if err := q.ctx.Err(); err != nil {
				s.finish(q, "", err)
				return true
			}
			return false
		})
	}
	s.running = keep(s.running)
	s.waiting = keep(s.waiting)
}

// finish releases q's blocks and ends its stream.
func (s *Scheduler) finish(q *seqState, why FinishReason, err error) {
	s.release(q)
	q.sess = nil
	q.st.end(why, err)
}

// release returns q's blocks to the pool (full ones stay in the prefix
// cache) and forgets what was computed.
func (s *Scheduler) release(q *seqState) {
	if s.pool != nil {
		for _, b := range q.blocks {
			s.pool.release(b)
		}
	}
	q.blocks, q.hashes, q.computed = q.blocks[:0], q.hashes[:0], 0
}

// planned is one sequence's share of a step: take tokens from computed.
type planned struct {
	q    *seqState
	take int
}

// step schedules and runs one batched forward pass.
func (s *Scheduler) step() {
	budget := s.o.TokenBudget
	var plan []planned
	// Running sequences first, oldest first: decodes, then the rest of
	// prompts already started. Short of blocks, the newest is preempted.
	for i := 0; i < len(s.running); i++ {
		q := s.running[i]
		take := min(len(q.tokens)-q.computed, budget)
		if take == 0 {
			continue
		}
		for !s.reserve(q, q.computed+take) {
			victim := s.running[len(s.running)-1]
			s.preempt(victim)
			if victim == q {
				take = 0
				break
			}
		}
		if take > 0 {
			plan = append(plan, planned{q, take})
			budget -= take
		}
	}
	// Then waiting requests, in order, while sequences, tokens and blocks last.
	for len(s.waiting) > 0 && len(s.running) < s.o.MaxSeqs && budget > 0 {
		q := s.waiting[0]
		hits, queries := s.matchPrefix(q)
		take := min(len(q.tokens)-q.computed, budget)
		if !s.reserve(q, q.computed+take) {
			s.release(q)
			break
		}
		s.hits += hits
		s.queries += queries
		s.waiting = s.waiting[1:]
		s.running = append(s.running, q)
		if !q.started {
			q.started = true
			q.st.res.Queued = time.Since(q.st.t0)
			q.st.res.CachedTokens = q.computed
		}
		plan = append(plan, planned{q, take})
		budget -= take
	}
	if len(plan) == 0 {
		return
	}
	var rows []sampled
	var err error
	if s.batcher != nil {
		rows, err = s.forward(plan)
	} else {
		rows, err = s.forwardEach(plan)
	}
	if err != nil {
		for _, p := range plan {
			s.finish(p.q, "", err)
		}
		s.running = slices.DeleteFunc(s.running, func(q *seqState) bool { return q.st.ended() })
		return
	}
	r := 0
	for _, p := range plan {
		q := p.q
		q.computed += p.take
		s.registerFull(q)
		if q.computed < len(q.tokens) {
			continue // more prompt to go
		}
		if why, ok := s.advance(q, rows[r].id, rows[r].logits); ok {
			s.finish(q, why, nil)
		}
		r++
	}
	s.running = slices.DeleteFunc(s.running, func(q *seqState) bool { return q.st.ended() })
}

// reserve makes q's block table cover positions [0, upto); false when the
// pool ran dry (blocks taken so far stay with q).
func (s *Scheduler) reserve(q *seqState, upto int) bool {
	if s.pool == nil {
		if q.sess == nil {
			sess, err := s.m.NewSession(min(s.limit, len(q.tokens)+q.maxNew-q.generated()))
			if err != nil {
				return false
			}
			q.sess = sess
		}
		return true
	}
	for len(q.blocks)*blockTokens < upto {
		b, ok := s.pool.alloc()
		if !ok {
			return false
		}
		q.blocks = append(q.blocks, b)
	}
	return true
}

// generated is how many tokens q has generated so far.
func (q *seqState) generated() int { return len(q.tokens) - q.nPrompt }

// preempt takes q's blocks back and puts it first in the waiting queue; it
// keeps its tokens and is recomputed when it runs again.
func (s *Scheduler) preempt(q *seqState) {
	s.release(q)
	q.sess = nil
	q.st.res.Preemptions++
	s.running = slices.DeleteFunc(s.running, func(r *seqState) bool { return r == q })
	s.waiting = slices.Insert(s.waiting, 0, q)
}

// matchPrefix points q's first blocks at cached blocks holding the same
// prefix; at least the last token is always left to compute (its logits
// are needed). Returns the blocks found and looked up.
func (s *Scheduler) matchPrefix(q *seqState) (hits, queries int64) {
	if s.pool == nil || len(q.blocks) > 0 {
		return 0, 0
	}
	parent := uint64(0)
	queries = int64((len(q.tokens) - 1) / blockTokens)
	for i := 0; i < int(queries); i++ {
		b, h, ok := s.pool.lookup(parent, q.tokens[i*blockTokens:(i+1)*blockTokens])
		if !ok {
			break
		}
		hits++
		q.blocks = append(q.blocks, b)
		q.hashes = append(q.hashes, h)
		parent = h
	}
	q.computed = len(q.blocks) * blockTokens
	return hits, queries
}

// registerFull offers q's newly filled blocks to the prefix cache.
func (s *Scheduler) registerFull(q *seqState) {
	if s.pool == nil {
		return
	}
	for i := len(q.hashes); (i+1)*blockTokens <= q.computed; i++ {
		parent := uint64(0)
		if i > 0 {
			parent = q.hashes[i-1]
		}
		toks := q.tokens[i*blockTokens : (i+1)*blockTokens]
		h := s.pool.hash(parent, toks)
		s.pool.register(q.blocks[i], parent, h, toks)
		q.hashes = append(q.hashes, h)
	}
}

// sampled is a sequence's next token chosen on the device (id >= 0) or
// the logits row to choose it from on the host.
type sampled struct {
	id     int
	logits []float32
}

// onDevice reports whether q's next token can be sampled on the device:
// the backend can, and q needs neither logprobs nor the penalties only
// the host sampler applies.
func (s *Scheduler) onDevice(q *seqState) bool {
	o := q.req.Sampling
	return s.sampler != nil && !q.req.Logprobs && q.req.TopLogprobs == 0 && o.FrequencyPenalty == 0 && o.PresencePenalty == 0
}

// argmaxed reports whether q's next token is the plain argmax picked on
// the device (greedy without a repetition penalty; the sampler draws no
// variate for it).
func (s *Scheduler) argmaxed(q *seqState) bool {
	o := q.req.Sampling
	return s.argmax != nil && s.onDevice(q) && o.Greedy() && (o.RepeatPenalty == 0 || o.RepeatPenalty == 1)
}

// forward runs the plan as one batch and returns the next token (or the
// logits) of each sequence that reached its last token, in plan order.
// Rows sampled on the device send one id each to the host; only rows
// sampled on the host send their logits.
func (s *Scheduler) forward(plan []planned) ([]sampled, error) {
	var ids []int
	bt := &kernels.Batch{}
	var want []int
	var who []*seqState
	for i, p := range plan {
		q := p.q
		for j := range p.take {
			ids = append(ids, q.tokens[q.computed+j])
			bt.Pos = append(bt.Pos, int32(q.computed+j))
			bt.Seq = append(bt.Seq, int32(i))
		}
		bt.Tables = append(bt.Tables, q.blocks)
		if q.computed+p.take == len(q.tokens) {
			want = append(want, len(ids)-1)
			who = append(who, q)
		}
	}
	var lg kernels.Buffer
	var err error
	handled := false
	if s.graphs != nil && len(want) == len(ids) { // decode only: one row per sequence, all wanted
		lg, handled, err = s.graphs.step(s.sess, ids, bt)
	}
	if !handled {
		lg, err = s.sess.stepForward(ids, bt, want)
	}
	if err != nil || len(want) == 0 {
		return nil, err
	}
	v := s.m.cfg.VocabSize
	out := make([]sampled, len(want))
	// Plain greedy rows: one argmax over all rows when there are several
	// (one block per row; a single row is faster through Sample's tiles).
	// With rows to draw from too, every device row goes to one SampleRows
	// instead (one download for the step, not one per sampled row).
	greedy, drawn := 0, 0
	for _, q := range who {
		switch {
		case s.argmaxed(q):
			greedy++
		case s.onDevice(q):
			drawn++
		}
	}
	if s.sampRows != nil && drawn > 0 && greedy+drawn > 1 {
		if err := s.sampleRows(out, who, lg, v); err != nil {
			return nil, err
		}
		return out, nil
	}
	if greedy > 1 {
		s.argIDs = slices.Grow(s.argIDs[:0], len(want))[:len(want)]
		if err := s.argmax.ArgmaxRows(s.argIDs, lg, 0, v); err != nil {
			return nil, fmt.Errorf("greedy picks on the device: %w", err)
		}
	}
	for i, q := range who {
		if greedy > 1 && s.argmaxed(q) {
			out[i].id = int(s.argIDs[i])
			continue
		}
		if s.onDevice(q) {
			p, u := q.smp.DeviceArgs()
			if out[i].id, err = s.sampler.Sample(lg, i*v, v, q.tokens, p, u); err != nil {
				return nil, fmt.Errorf("sampling on the device: %w", err)
			}
			continue
		}
		if out[i], err = s.hostRow(lg, i, len(want), v); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// hostRow downloads row i of the rows×v logits lg for the host sampler.
func (s *Scheduler) hostRow(lg kernels.Buffer, i, rows, v int) (sampled, error) {
	// Host rows only: a batch sampled on the device never sizes this.
	if cap(s.logits) < rows*v {
		s.logits = make([]float32, rows*v)
	}
	row := s.logits[i*v : (i+1)*v : (i+1)*v]
	if err := s.m.be.Download(row, lg, i*v); err != nil {
		return sampled{}, fmt.Errorf("reading logits: %w", err)
	}
	return sampled{id: -1, logits: row}, nil
}

// sampleRows fills out with the ids of who's device rows of lg, picked by
// one SampleRows call, and the logits rows of the others from the host.
func (s *Scheduler) sampleRows(out []sampled, who []*seqState, lg kernels.Buffer, v int) error {
	s.rowArgs = s.rowArgs[:0]
	for i, q := range who {
		if s.onDevice(q) {
			p, u := q.smp.DeviceArgs()
			s.rowArgs = append(s.rowArgs, kernels.SampleRow{Row: i, History: q.tokens, Params: p, U: u})
		}
	}
	s.argIDs = slices.Grow(s.argIDs[:0], len(s.rowArgs))[:len(s.rowArgs)]
	if err := s.sampRows.SampleRows(s.argIDs, lg, 0, v, s.rowArgs); err != nil {
		return fmt.Errorf("sampling on the device: %w", err)
	}
	for k, r := range s.rowArgs {
		out[r.Row].id = int(s.argIDs[k])
	}
	clear(s.rowArgs) // drop the histories: finished sequences' tokens
	for i, q := range who {
		if !s.onDevice(q) {
			var err error
			if out[i], err = s.hostRow(lg, i, len(who), v); err != nil {
				return err
			}
		}
	}
	return nil
}

// forwardEach is forward for backends without batching: each sequence
// runs its share in its own session.
func (s *Scheduler) forwardEach(plan []planned) ([]sampled, error) {
	var rows []sampled
	for _, p := range plan {
		q := p.q
		lg, err := q.sess.Last(q.ctx, q.tokens[q.computed:q.computed+p.take])
		if err != nil {
			return nil, err
		}
		if q.computed+p.take == len(q.tokens) {
			rows = append(rows, sampled{id: -1, logits: slices.Clone(lg)})
		}
	}
	return rows, nil
}

// advance streams q's next token (id, or sampled here from logits when
// id < 0); it reports whether q is done and why.
func (s *Scheduler) advance(q *seqState, id int, logits []float32) (FinishReason, bool) {
	if id < 0 {
		id = q.smp.SampleGenerated(logits, q.tokens, q.nPrompt)
	}
	if slices.Contains(q.req.StopIDs, id) || (!q.req.IgnoreEOS && slices.Contains(s.stops, id)) {
		return FinishStop, true
	}
	t := Token{ID: id}
	if q.req.Logprobs || q.req.TopLogprobs > 0 {
		t.Logprob, t.Top = logprobs(logits, id, q.req.TopLogprobs)
	}
	q.tokens = append(q.tokens, id)
	q.st.push(t)
	switch {
	case q.generated() >= q.maxNew:
		return FinishLength, true
	case len(q.tokens) >= s.limit:
		return FinishContext, true
	}
	return "", false
}

// logprobs returns the log-softmax of logits at id and the k most likely
// ids with theirs (ties by lower id).
func logprobs(logits []float32, id, k int) (float32, []Logprob) {
	mx := math.Inf(-1)
	for _, v := range logits {
		mx = max(mx, float64(v))
	}
	sum := 0.0
	for _, v := range logits {
		sum += math.Exp(float64(v) - mx)
	}
	lse := mx + math.Log(sum)
	lp := func(i int) float32 { return float32(float64(logits[i]) - lse) }
	if k == 0 {
		return lp(id), nil
	}
	top := make([]Logprob, 0, k+1)
	for i, v := range logits {
		if len(top) == k && v <= logits[top[k-1].ID] {
			continue
		}
		j, _ := slices.BinarySearchFunc(top, i, func(a Logprob, i int) int {
			switch {
			case logits[a.ID] > logits[i]:
				return -1
			case logits[a.ID] < logits[i]:
				return 1
			}
			return a.ID - i
		})
		top = slices.Insert(top, j, Logprob{ID: i})
		if len(top) > k {
			top = top[:k]
		}
	}
	for i := range top {
		top[i].Logprob = lp(top[i].ID)
	}
	return lp(id), top
}

// Stream delivers one request's tokens as the scheduler produces them.
type Stream struct {
	mu     sync.Mutex
	toks   []Token
	done   bool
	err    error
	res    Result
	notify chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	t0     time.Time // Submit
}

func (st *Stream) push(t Token) {
	st.mu.Lock()
	if st.res.GeneratedTokens == 0 {
		st.res.FirstToken = time.Since(st.t0)
	}
	st.toks = append(st.toks, t)
	st.res.GeneratedTokens++
	st.mu.Unlock()
	st.signal()
}

func (st *Stream) end(why FinishReason, err error) {
	st.mu.Lock()
	if !st.done {
		st.done, st.err, st.res.Finish = true, err, why
		st.res.Elapsed = time.Since(st.t0)
	}
	st.mu.Unlock()
	st.signal()
}

func (st *Stream) ended() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.done
}

func (st *Stream) signal() {
	select {
	case st.notify <- struct{}{}:
	default:
	}
}

// Tokens yields the generated tokens (Text is empty: decode with the
// tokenizer); an error ends the sequence. Leaving the loop early cancels
// the request.
func (st *Stream) Tokens() iter.Seq2[Token, error] {
	return func(yield func(Token, error) bool) {
		defer st.cancel()
		for {
			st.mu.Lock()
			toks, done, fail := st.toks, st.done, st.err
			st.toks = nil
			st.mu.Unlock()
			for _, t := range toks {
				if err := st.ctx.Err(); err != nil && (!done || fail != nil) {
					// Cancelled: tokens made before the scheduler noticed are dropped.
					yield(Token{ID: -1}, err)
					return
				}
				if !yield(t, nil) {
					return
				}
			}
			if done {
				if fail != nil {
					yield(Token{ID: -1}, fail)
				}
				return
			}
			<-st.notify
		}
	}
}

// Result describes the finished request; valid once Tokens has ended.
func (st *Stream) Result() Result {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.res
}
