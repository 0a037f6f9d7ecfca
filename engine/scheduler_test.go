package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/engine/sample"
	"github.com/deepseek-go/deepseek-go/kernels"
	"github.com/deepseek-go/deepseek-go/kernels/cpu"
)

// aloneRun is a request run by itself on a Session: its tokens and the
// log-softmax of every step's logits.
type aloneRun struct {
	ids []int
	lps [][]float32
}

// runAlone generates like the scheduler (greedy or sampled, stop ids,
// MaxTokens) with a plain Session, keeping each step's logprobs.
func runAlone(t *testing.T, m *Model, r Request) aloneRun {
	t.Helper()
	ctx := context.Background()
	s, err := m.NewSession(len(r.Prompt) + r.MaxTokens)
	require.NoError(t, err)
	smp, err := NewSampler(r.Sampling)
	require.NoError(t, err)
	logits, err := s.Last(ctx, r.Prompt)
	require.NoError(t, err)
	hist := slices.Clone(r.Prompt)
	var out aloneRun
	for len(out.ids) < r.MaxTokens {
		id := smp.SampleGenerated(logits, hist, len(r.Prompt))
		if slices.Contains(r.StopIDs, id) || (!r.IgnoreEOS && slices.Contains(m.cfg.StopIDs(), id)) {
			break
		}
		lp := make([]float32, len(logits))
		for i := range lp {
			lp[i], _ = logprobs(logits, i, 0)
		}
		out.ids = append(out.ids, id)
		out.lps = append(out.lps, lp)
		hist = append(hist, id)
		if len(out.ids) == r.MaxTokens {
			break
		}
		logits, err = s.Step(ctx, id)
		require.NoError(t, err)
	}
	return out
}

// randPrompt returns n ids in [2, vocab) (0 and 1 are BOS/EOS in the fixtures).
func randPrompt(rng *rand.Rand, n, vocab int) []int {
	p := make([]int, n)
	for i := range p {
		p[i] = 2 + rng.IntN(vocab-2)
	}
	return p
}

type streamed struct {
	toks []Token
	res  Result
	err  error
}

// ids are the streamed tokens' ids.
func (s streamed) ids() []int {
	ids := make([]int, len(s.toks))
	for i, tok := range s.toks {
		ids[i] = tok.ID
	}
	return ids
}

// submitAll submits reqs in order (pausing 20 ms before request late, when
// late > 0, so later arrivals join running decodes), drains every stream
// concurrently and returns what each streamed.
func submitAll(t testing.TB, sch *Scheduler, reqs []Request, late int) []streamed {
	t.Helper()
	got := make([]streamed, len(reqs))
	var wg sync.WaitGroup
	for i, r := range reqs {
		if late > 0 && i == late {
			time.Sleep(20 * time.Millisecond)
		}
		st, err := sch.Submit(context.Background(), r)
		require.NoError(t, err)
		wg.Go(func() { got[i] = drain(st) })
	}
	wg.Wait()
	return got
}

func drain(st *Stream) streamed {
	var s streamed
	for tok, err := range st.Tokens() {
		if err != nil {
			s.err = err
			break
		}
		s.toks = append(s.toks, tok)
	}
	s.res = st.Result()
	return s
}

// TestSchedulerMatchesAlone submits requests of mixed prompt lengths with
// staggered arrivals (greedy and seeded sampling in one batch, a token
// budget that splits prompts into chunks beside decode rows) and checks
// every request against the same request run alone: identical tokens and
// the top-20 logprobs within 1e-5.
func TestSchedulerMatchesAlone(t *testing.T) {
	fixtures := schedulerFixtures
	if testing.Short() {
		fixtures = fixtures[:1]
	}
	schedulerMatchesAlone(t, "cpu", fixtures, 1e-5, nil)
}

// schedulerFixtures are the families (and MLA paths) batching is proven on.
var schedulerFixtures = []struct{ dir, mla string }{
	{"llama-mha", ""}, {"llama-gqa-llama3rope", ""}, {"qwen2", ""}, {"qwen2-tied", ""},
	{"deepseek-v2-lite", MLAAbsorbed}, {"deepseek-v2-lite", MLANaive},
	{"deepseek-v3", MLAAbsorbed}, {"deepseek-v3", MLANaive},
}

// schedulerMatchesAlone is TestSchedulerMatchesAlone on a device, with
// logprobs compared within tol (relative above 1); check, when not nil,
// sees each fixture's final scheduler stats.
func schedulerMatchesAlone(t *testing.T, device string, fixtures []struct{ dir, mla string }, tol float64, check func(t *testing.T, fixture string, st SchedulerStats)) {
	for _, fx := range fixtures {
		t.Run(fx.dir+"/"+fx.mla, func(t *testing.T) {
			opts := []Option{WithThreads(2), WithDevice(device)}
			if fx.mla != "" {
				opts = append(opts, WithMLA(fx.mla))
			}
			m, err := Load(fixtureDir(fx.dir), opts...)
			require.NoError(t, err)
			defer m.Close()
			rng := rand.New(rand.NewPCG(7, 8))
			vocab := m.cfg.VocabSize
			var reqs []Request
			for i, n := range []int{3, 41, 17, 1, 70, 9} {
				r := Request{Prompt: randPrompt(rng, n, vocab), MaxTokens: 10, TopLogprobs: maxTopLogprobs}
				if i%2 == 1 {
					r.Sampling = SamplerOptions{Temperature: 0.9, TopP: 0.95, Seed: uint64(i)}
				}
				reqs = append(reqs, r)
			}
			sch, err := m.NewScheduler(SchedulerOptions{MaxSeqs: 4, TokenBudget: 24})
			require.NoError(t, err)
			defer sch.Close()
			got := submitAll(t, sch, reqs, 3)
			for i, r := range reqs {
				want := runAlone(t, m, r)
				g := got[i]
				require.NoError(t, g.err, "request %d", i)
				ids := g.ids()
				require.Equal(t, want.ids, ids, "request %d (prompt %d tokens)", i, len(r.Prompt))
				for j, tok := range g.toks {
					require.Len(t, tok.Top, maxTopLogprobs)
					assert.Equal(t, tok.Logprob, valueOf(tok.Top, tok.ID, tok.Logprob))
					for _, lp := range tok.Top {
						w := want.lps[j][lp.ID]
						assert.InDelta(t, w, lp.Logprob, tol*math.Max(1, math.Abs(float64(w))), "request %d token %d id %d", i, j, lp.ID)
					}
				}
				assert.Equal(t, len(r.Prompt), g.res.PromptTokens)
				if len(ids) > 0 {
					assert.Positive(t, g.res.FirstToken)
					assert.GreaterOrEqual(t, g.res.Elapsed, g.res.FirstToken)
					assert.GreaterOrEqual(t, g.res.FirstToken, g.res.Queued)
				}
				assert.Equal(t, len(ids), g.res.GeneratedTokens)
				if len(ids) == r.MaxTokens {
					assert.Equal(t, FinishLength, g.res.Finish)
				} else {
					assert.Equal(t, FinishStop, g.res.Finish)
				}
			}
			st := sch.Stats()
			assert.Zero(t, st.KVBlocksUsed, "finished requests hold no blocks")
			assert.Zero(t, st.Running+st.Waiting)
			if check != nil {
				check(t, fx.dir, st)
			}
		})
	}
}

// valueOf returns the logprob of id in top, or def when absent.
func valueOf(top []Logprob, id int, def float32) float32 {
	for _, lp := range top {
		if lp.ID == id {
			return lp.Logprob
		}
	}
	return def
}

// TestSchedulerPreemption gives the scheduler KV room for barely one
// sequence: requests are preempted and recomputed, and all finish with
// the tokens they get alone.
func TestSchedulerPreemption(t *testing.T) {
	m, err := Load(fixtureDir("llama-gqa-llama3rope"), WithThreads(2), WithDevice("cpu"))
	require.NoError(t, err)
	defer m.Close()
	rng := rand.New(rand.NewPCG(3, 3))
	var reqs []Request
	for _, n := range []int{30, 20, 25, 40} {
		reqs = append(reqs, Request{Prompt: randPrompt(rng, n, m.cfg.VocabSize), MaxTokens: 24, IgnoreEOS: true})
	}
	probe, err := m.NewScheduler(SchedulerOptions{})
	require.NoError(t, err)
	perBlock := probe.kv.Bytes() / int64(probe.kv.Spec().Blocks)
	require.NoError(t, probe.Close())
	// 5 blocks = 80 positions: any one request fits (≤ 64 positions), two rarely do.
	sch, err := m.NewScheduler(SchedulerOptions{MaxSeqs: 4, TokenBudget: 32, KVBytes: 5 * perBlock})
	require.NoError(t, err)
	defer sch.Close()
	require.Equal(t, 5*blockTokens, sch.Context())
	streams := make([]*Stream, len(reqs))
	for i, r := range reqs {
		streams[i], err = sch.Submit(context.Background(), r)
		require.NoError(t, err)
	}
	pre := 0
	for i, st := range streams {
		g := drain(st)
		require.NoError(t, g.err)
		ids := g.ids()
		assert.Equal(t, runAlone(t, m, reqs[i]).ids, ids, "request %d", i)
		assert.Equal(t, FinishLength, g.res.Finish)
		pre += g.res.Preemptions
	}
	assert.Positive(t, pre, "the budget forces preemption")
	// A request that cannot fit at all is refused up front.
	_, err = sch.Submit(context.Background(), Request{Prompt: randPrompt(rng, 70, m.cfg.VocabSize), MaxTokens: 20})
	assert.ErrorIs(t, err, ErrInvalid)
	assert.ErrorContains(t, err, "70 tokens + max_tokens 20 exceed the context of 80")
}

// TestSchedulerPrefixCache: a second request sharing a long prefix reuses
// its blocks (and computes the same tokens).
func TestSchedulerPrefixCache(t *testing.T) {
	m, err := Load(fixtureDir("qwen2"), WithThreads(2), WithDevice("cpu"))
	require.NoError(t, err)
	defer m.Close()
	rng := rand.New(rand.NewPCG(5, 6))
	prefix := randPrompt(rng, 100, m.cfg.VocabSize)
	sch, err := m.NewScheduler(SchedulerOptions{})
	require.NoError(t, err)
	defer sch.Close()
	run := func(p []int) streamed {
		st, err := sch.Submit(context.Background(), Request{Prompt: p, MaxTokens: 5, IgnoreEOS: true})
		require.NoError(t, err)
		g := drain(st)
		require.NoError(t, g.err)
		return g
	}
	a := run(prefix)
	assert.Zero(t, a.res.CachedTokens)
	b := run(append(slices.Clone(prefix), 7, 8, 9))
	assert.Equal(t, 96, b.res.CachedTokens, "6 full blocks of the 100-token prefix")
	st := sch.Stats()
	assert.Equal(t, int64(6), st.PrefixHitBlocks)
	assert.Equal(t, int64(6+6), st.PrefixQueryBlocks)
	ids := b.ids()
	assert.Equal(t, runAlone(t, m, Request{Prompt: append(slices.Clone(prefix), 7, 8, 9), MaxTokens: 5, IgnoreEOS: true}).ids, ids)
}

// TestSchedulerCancel: a cancelled request ends with its context's error
// within a step and frees its blocks; others are unaffected.
func TestSchedulerCancel(t *testing.T) {
	m := loadStories(t)
	sch, err := m.NewScheduler(SchedulerOptions{MaxSeqs: 2})
	require.NoError(t, err)
	defer sch.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	long, err := sch.Submit(ctx, Request{Prompt: []int{1}, IgnoreEOS: true})
	require.NoError(t, err)
	other, err := sch.Submit(context.Background(), Request{Prompt: []int{1}, MaxTokens: 20})
	require.NoError(t, err)
	n := 0
	var gotErr error
	for _, err := range long.Tokens() {
		if err != nil {
			gotErr = err
			break
		}
		if n++; n == 5 {
			cancel()
		}
	}
	assert.ErrorIs(t, gotErr, context.Canceled)
	assert.Less(t, n, 10, "stopped within a step or two of the cancel")
	g := drain(other)
	require.NoError(t, g.err)
	assert.Positive(t, g.res.GeneratedTokens)
	require.Eventually(t, func() bool { s := sch.Stats(); return s.KVBlocksUsed == 0 && s.Running == 0 }, 5*time.Second, 10*time.Millisecond)

	// Breaking out of the loop cancels too.
	st, err := sch.Submit(context.Background(), Request{Prompt: []int{1}, IgnoreEOS: true})
	require.NoError(t, err)
	for range st.Tokens() {
		break
	}
	require.Eventually(t, func() bool { return sch.Stats().KVBlocksUsed == 0 }, 5*time.Second, 10*time.Millisecond)
}

func TestSchedulerRejectsBadRequests(t *testing.T) {
	m := loadStories(t)
	sch, err := m.NewScheduler(SchedulerOptions{})
	require.NoError(t, err)
	ctxLen := sch.Context()
	for _, tc := range []struct {
		name string
		r    Request
		msg  string
	}{
		{"empty", Request{}, "empty prompt"},
		{"negative max", Request{Prompt: []int{1}, MaxTokens: -1}, "max_tokens must be >= 0"},
		{"too long", Request{Prompt: []int{1}, MaxTokens: ctxLen}, "exceed the context"},
		{"prompt fills context", Request{Prompt: make([]int, ctxLen)}, "leaves no room"},
		{"bad id", Request{Prompt: []int{1, 1 << 20}}, "outside vocab_size"},
		{"top logprobs", Request{Prompt: []int{1}, TopLogprobs: 21}, "top_logprobs"},
		{"temperature", Request{Prompt: []int{1}, Sampling: SamplerOptions{Temperature: -1}}, "temperature"},
		{"frequency", Request{Prompt: []int{1}, Sampling: SamplerOptions{FrequencyPenalty: 3}}, "frequency penalty"},
	} {
		_, err := sch.Submit(context.Background(), tc.r)
		assert.ErrorIs(t, err, ErrInvalid, tc.name)
		assert.ErrorContains(t, err, tc.msg, tc.name)
	}
	st, err := sch.Submit(context.Background(), Request{Prompt: []int{1}, IgnoreEOS: true})
	require.NoError(t, err)
	require.NoError(t, sch.Close())
	g := drain(st)
	assert.ErrorIs(t, g.err, ErrClosed)
	_, err = sch.Submit(context.Background(), Request{Prompt: []int{1}})
	assert.ErrorIs(t, err, ErrClosed)
}

// TestFrequencyPenalty: a strong frequency penalty keeps greedy decoding
// from repeating the ids it generated.
func TestFrequencyPenalty(t *testing.T) {
	smp, err := NewSampler(SamplerOptions{FrequencyPenalty: 2})
	require.NoError(t, err)
	logits := []float32{0, 3, 2.5, 1.5}
	hist := []int{1, 1} // prompt: not penalised
	assert.Equal(t, 1, smp.SampleGenerated(logits, hist, 2))
	hist = append(hist, 1) // generated once: 3 - 2 < 2.5
	assert.Equal(t, 2, smp.SampleGenerated(logits, hist, 2))
	pres, err := NewSampler(SamplerOptions{PresencePenalty: -2})
	require.NoError(t, err)
	assert.Equal(t, 3, pres.SampleGenerated(logits, []int{3}, 0), "a negative presence penalty favours seen ids")
	assert.Equal(t, []float32{0, 3, 2.5, 1.5}, logits, "logits untouched")
}

// hostDeviceSampler is the CPU backend with a kernels.DeviceSampler and
// kernels.RowSampler that apply the host sampler's rules to the rows (as
// the CUDA sampler does), counting rows and calls, so the scheduler's
// device-sampling paths run in CI.
type hostDeviceSampler struct {
	*cpu.Backend
	calls    int // rows sampled, by either method
	rowCalls int // SampleRows calls
	maxRows  int // the most rows of one SampleRows call
}

var _ kernels.RowSampler = (*hostDeviceSampler)(nil)

func (h *hostDeviceSampler) SampleRows(dst []int32, x kernels.Buffer, off, n int, rows []kernels.SampleRow) error {
	if len(dst) != len(rows) {
		return fmt.Errorf("%d ids for %d rows", len(dst), len(rows))
	}
	h.rowCalls++
	h.maxRows = max(h.maxRows, len(rows))
	for i, r := range rows {
		id, err := h.Sample(x, off+r.Row*n, n, r.History, r.Params, r.U)
		if err != nil {
			return err
		}
		dst[i] = int32(id)
	}
	return nil
}

func (h *hostDeviceSampler) Sample(x kernels.Buffer, off, n int, history []int, p kernels.SampleParams, u float64) (int, error) {
	h.calls++
	row := make([]float32, n)
	if err := h.Download(row, x, off); err != nil {
		return 0, err
	}
	return sample.Pick(row, history, p, u), nil
}

// TestSchedulerDeviceSampling: rows sampled by the backend (greedy and
// seeded, with a repetition penalty), row by row or all of a step in one
// SampleRows, give the tokens of the host path; rows asking for logprobs
// stay on the host.
func TestSchedulerDeviceSampling(t *testing.T) {
	ref, err := Load(fixtureDir("qwen2"), WithDevice("cpu"), WithThreads(2))
	require.NoError(t, err)
	defer ref.Close()
	for _, batched := range []bool{false, true} {
		t.Run(fmt.Sprintf("batched=%v", batched), func(t *testing.T) {
			be := &hostDeviceSampler{Backend: cpu.New(2)}
			m, err := Load(fixtureDir("qwen2"), WithBackend(be))
			require.NoError(t, err)
			defer m.Close()
			sch, err := m.NewScheduler(SchedulerOptions{MaxSeqs: 3})
			require.NoError(t, err)
			defer sch.Close()
			if !batched {
				sch.sampRows = nil // before the first Submit: the loop reads it after
			}
			rng := rand.New(rand.NewPCG(9, 9))
			reqs := []Request{
				{Prompt: randPrompt(rng, 12, 512), MaxTokens: 8},
				{Prompt: randPrompt(rng, 5, 512), MaxTokens: 8, Sampling: SamplerOptions{Temperature: 1, TopK: 50, RepeatPenalty: 1.3, Seed: 4}},
				{Prompt: randPrompt(rng, 30, 512), MaxTokens: 8, Logprobs: true},
			}
			streams := make([]*Stream, len(reqs))
			for i, r := range reqs {
				streams[i], err = sch.Submit(context.Background(), r)
				require.NoError(t, err)
			}
			for i, st := range streams {
				g := drain(st)
				require.NoError(t, g.err)
				ids := g.ids()
				assert.Equal(t, runAlone(t, ref, reqs[i]).ids, ids, "request %d", i)
			}
			assert.Positive(t, be.calls, "the device sampler was used")
			assert.LessOrEqual(t, be.calls, 16, "only the two requests without logprobs sample on the device")
			if batched {
				assert.Equal(t, 2, be.maxRows, "the two device rows of a step share one SampleRows")
			} else {
				assert.Zero(t, be.rowCalls)
			}
		})
	}
}

// replayBackend is hostDeviceSampler with the batched-step capabilities of
// a device: ArgmaxRows on the host, and CaptureBatchStep whose "graph"
// runs the captured step function again on Replay (it reads the padded
// inputs the engine passes), so the scheduler's graph bookkeeping
// (buckets, padding rows writing their own block, warm-up, capture,
// replay, table width, staleness, capture failure) runs in CI.
type replayBackend struct {
	hostDeviceSampler
	fail       bool // CaptureBatchStep fails (a family that cannot be captured)
	staleEvery int  // every n-th replay reports kernels.ErrStaleGraph
	captures   int
	replays    int
	stale      int
	argCalls   int
	argMaxRows int
}

var (
	_ kernels.BatchStepCapturer = (*replayBackend)(nil)
	_ kernels.RowArgmaxer       = (*replayBackend)(nil)
)

func (b *replayBackend) ArgmaxRows(dst []int32, x kernels.Buffer, off, n int) error {
	b.argCalls++
	b.argMaxRows = max(b.argMaxRows, len(dst))
	row := make([]float32, n)
	for i := range dst {
		if err := b.Download(row, x, off+i*n); err != nil {
			return err
		}
		dst[i] = int32(sample.Argmax(row))
	}
	return nil
}

// checkStep is what a device checks of a captured or replayed step.
func checkStep(ids []int32, bt *kernels.Batch, rows, width int) error {
	if len(ids) != rows || bt.Rows() != rows || len(bt.Tables) > rows {
		return fmt.Errorf("%d ids, %d rows, %d tables for a step of %d rows", len(ids), bt.Rows(), len(bt.Tables), rows)
	}
	for i, t := range bt.Tables {
		if len(t) > width {
			return fmt.Errorf("table %d of %d blocks wider than %d", i, len(t), width)
		}
	}
	return nil
}

func (b *replayBackend) CaptureBatchStep(ids []int32, bt *kernels.Batch, width int, fn func(kernels.Backend, kernels.Batcher) error) (kernels.BatchStepGraph, error) {
	if b.fail {
		return nil, errors.New("replayBackend: capture refused")
	}
	if err := checkStep(ids, bt, len(ids), width); err != nil {
		return nil, err
	}
	if err := fn(b, b); err != nil {
		return nil, err
	}
	b.captures++
	return &replayGraph{b: b, fn: fn, rows: len(ids), width: width}, nil
}

type replayGraph struct {
	b           *replayBackend
	fn          func(kernels.Backend, kernels.Batcher) error
	rows, width int
	closed      bool
}

func (g *replayGraph) Replay(ids []int32, bt *kernels.Batch) error {
	if g.closed {
		return errors.New("replay of a closed graph")
	}
	if err := checkStep(ids, bt, g.rows, g.width); err != nil {
		return err
	}
	if g.b.staleEvery > 0 && (g.b.replays+g.b.stale+1)%g.b.staleEvery == 0 {
		g.b.stale++
		return fmt.Errorf("replayBackend: %w", kernels.ErrStaleGraph)
	}
	g.b.replays++
	return g.fn(g.b, g.b)
}

func (g *replayGraph) Close() error { g.closed = true; return nil }

// graphRequests are staggered requests for the graph tests: greedy rows
// (one argmax for the batch), seeded sampled rows, a greedy row with a
// repetition penalty and logprob rows (host), prompts from 1 to 70 tokens
// so that tables grow through several widths.
func graphRequests(vocab int) []Request {
	rng := rand.New(rand.NewPCG(11, 12))
	var reqs []Request
	for i, n := range []int{3, 15, 17, 33, 1, 40, 70, 9, 20, 5} {
		r := Request{Prompt: randPrompt(rng, n, vocab), MaxTokens: 24, IgnoreEOS: true}
		switch i % 4 {
		case 1:
			r.Sampling = SamplerOptions{Temperature: 0.8, TopP: 0.9, Seed: uint64(i)}
		case 2:
			r.TopLogprobs = 5
		case 3:
			if i == 3 {
				r.Sampling = SamplerOptions{RepeatPenalty: 1.3}
			}
		}
		reqs = append(reqs, r)
	}
	return reqs
}

// runGraphRequests runs graphRequests on a new scheduler of m (graphs on
// unless DSGO_NO_GRAPH is set), the second half submitted while the
// first decodes; perRow samples device rows one by one (no SampleRows).
func runGraphRequests(t *testing.T, m *Model, perRow bool) ([]streamed, SchedulerStats) {
	t.Helper()
	reqs := graphRequests(m.cfg.VocabSize)
	sch, err := m.NewScheduler(SchedulerOptions{MaxSeqs: 8, TokenBudget: 32})
	require.NoError(t, err)
	defer sch.Close()
	if perRow {
		sch.sampRows = nil // before the first Submit: the loop reads it after
	}
	got := submitAll(t, sch, reqs, 5)
	// A stream ends before its step releases the blocks: wait for that.
	require.Eventually(t, func() bool { return sch.Stats().KVBlocksUsed == 0 }, 5*time.Second, 5*time.Millisecond)
	return got, sch.Stats()
}

// requireSameRuns checks two runs of graphRequests: the same tokens, and
// logprobs within tol (relative above 1).
func requireSameRuns(t *testing.T, want, got []streamed, tol float64) {
	t.Helper()
	for i := range want {
		require.NoError(t, want[i].err, "request %d", i)
		require.NoError(t, got[i].err, "request %d", i)
		require.Equal(t, want[i].ids(), got[i].ids(), "request %d", i)
		for j, tok := range got[i].toks {
			w := want[i].toks[j]
			require.Len(t, tok.Top, len(w.Top))
			assert.InDelta(t, w.Logprob, tok.Logprob, tol*math.Max(1, math.Abs(float64(w.Logprob))), "request %d token %d", i, j)
			for k, lp := range tok.Top {
				wl := float64(w.Top[k].Logprob)
				assert.InDelta(t, wl, lp.Logprob, tol*math.Max(1, math.Abs(wl)), "request %d token %d top %d", i, j, k)
				if w.Top[k].ID != lp.ID { // only a near tie (or the list's end) may swap
					tie := k == len(w.Top)-1
					for _, o := range []int{k - 1, k + 1} {
						if o >= 0 && o < len(w.Top) && math.Abs(float64(w.Top[o].Logprob)-wl) <= 2*tol*math.Max(1, math.Abs(wl)) {
							tie = true
						}
					}
					assert.True(t, tie, "request %d token %d top %d: id %d, want %d", i, j, k, lp.ID, w.Top[k].ID)
				}
			}
		}
	}
}

// TestSchedulerGraphBuckets: decode-only steps padded to their bucket and
// run through (replayed) graphs give the tokens and logprobs of the same
// scheduler without graphs, so padding rows never touch a sequence's KV;
// greedy rows are picked by one argmax per step (rows sampled one by one)
// or all device rows by one SampleRows, with the same tokens; a stale
// graph is captured again, and a backend that cannot capture falls back.
func TestSchedulerGraphBuckets(t *testing.T) {
	fixtures := []string{"llama-gqa-llama3rope", "qwen2-tied"}
	if testing.Short() {
		fixtures = fixtures[:1]
	}
	for _, fx := range fixtures {
		t.Run(fx, func(t *testing.T) {
			be := &replayBackend{hostDeviceSampler: hostDeviceSampler{Backend: cpu.New(2)}}
			m, err := Load(fixtureDir(fx), WithBackend(be))
			require.NoError(t, err)
			defer m.Close()
			t.Setenv("DSGO_NO_GRAPH", "1")
			want, st := runGraphRequests(t, m, true)
			assert.Zero(t, st.GraphReplays)
			assert.Zero(t, be.captures+be.replays)
			assert.Greater(t, be.argMaxRows, 1, "greedy rows of a step share one argmax")
			assert.Zero(t, be.rowCalls)
			t.Setenv("DSGO_NO_GRAPH", "")

			be.staleEvery = 7
			got, st := runGraphRequests(t, m, false)
			requireSameRuns(t, want, got, 1e-5)
			assert.Positive(t, be.captures)
			assert.Positive(t, be.stale)
			assert.Greater(t, be.replays, be.captures, "most decode steps replay")
			assert.Equal(t, int64(be.replays), st.GraphReplays)
			assert.Greater(t, be.maxRows, 1, "the device rows of a step share one SampleRows")

			be.fail, be.replays, be.captures = true, 0, 0
			got, st = runGraphRequests(t, m, false)
			requireSameRuns(t, want, got, 1e-5)
			assert.Zero(t, be.replays+be.captures)
			assert.Zero(t, st.GraphReplays)
		})
	}
}
