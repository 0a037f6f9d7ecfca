package engine

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"os"

	"github.com/deepseek-go/deepseek-go/kernels"
)

// capturerOf returns the backend's decode-step capture capability
// (DSGO_NO_GRAPH=1 turns graphs off, to compare).
func capturerOf(be kernels.Backend) (kernels.StepCapturer, bool) {
	if os.Getenv("DSGO_NO_GRAPH") != "" {
		return nil, false
	}
	c, ok := be.(kernels.StepCapturer)
	return c, ok
}

// graphState is a session's captured decode step. The first decode step
// runs uncaptured so every scratch buffer exists; the second is captured;
// later steps replay. If capture fails (a family that reads the device
// mid-step) the session stays uncaptured.
type graphState struct {
	warm   bool
	failed bool
	g      kernels.StepGraph
	lg     kernels.Buffer
}

// graphStep runs a one-token decode step through the session's graph when
// the backend supports it; handled is false when the caller should run the
// step itself.
func (s *Session) graphStep(id int, emit func([]float32, int)) (handled bool, err error) {
	lg, handled, err := s.graphIssue(id)
	if !handled || err != nil {
		return handled, err
	}
	out := s.logitsBuf(s.m.cfg.VocabSize)
	if err := s.be.Download(out, lg, 0); err != nil {
		return true, fmt.Errorf("reading logits: %w", err)
	}
	s.pos++
	emit(out, 1)
	return true, nil
}

// graphIssue captures or replays the step for token id at s.pos and
// returns the device buffer that will hold its logits (pos not advanced).
func (s *Session) graphIssue(id int) (lg kernels.Buffer, handled bool, err error) {
	cg, ok := capturerOf(s.m.be)
	if !ok || s.graph.failed || s.be != s.m.be {
		return nil, false, nil
	}
	if s.graph.g == nil {
		if !s.graph.warm {
			s.graph.warm = true
			return nil, false, nil
		}
		var lg kernels.Buffer
		g, err := cg.CaptureDecodeStep(id, s.pos, s.max, func(be kernels.Backend) error {
			saved := s.be
			s.be = be
			defer func() { s.be = saved }()
			var err error
			lg, _, err = s.forwardOps([]int{id}, false, true)
			return err
		})
		if err != nil {
			s.graph.failed = true
			return nil, false, nil
		}
		s.graph.g, s.graph.lg = g, lg
		return lg, true, nil
	}
	if err := s.graph.g.Replay(id, s.pos); err != nil {
		return nil, true, fmt.Errorf("decode step graph: %w", err)
	}
	return s.graph.lg, true, nil
}

// advance feeds id and returns the next token when the backend sampled it
// on the device (next >= 0), else the logits for smp on the host.
func (s *Session) advance(ctx context.Context, id int, smp *Sampler, history []int) (next int, logits []float32, err error) {
	if n, ok, err := s.stepSample(ctx, id, smp, history); ok || err != nil {
		return n, nil, err
	}
	logits, err = s.Step(ctx, id)
	return -1, logits, err
}

// stepSample feeds id and returns the next token, picked on the device by
// smp's settings with repetition penalty over history; ok is false when the
// backend cannot (the caller then uses Step and smp on the host).
func (s *Session) stepSample(ctx context.Context, id int, smp *Sampler, history []int) (next int, ok bool, err error) {
	ds, has := s.m.be.(kernels.DeviceSampler)
	if !has || s.be != s.m.be {
		return 0, false, nil
	}
	if err := ctx.Err(); err != nil {
		return 0, true, err
	}
	if s.m.closed.Load() {
		return 0, true, fmt.Errorf("model is closed")
	}
	if s.pos+1 > s.max {
		return 0, true, fmt.Errorf("context too long: %d tokens in the cache + 1 new exceed the session's %d positions", s.pos, s.max)
	}
	if id < 0 || id >= s.m.cfg.VocabSize {
		return 0, true, fmt.Errorf("token %d outside vocab_size %d", id, s.m.cfg.VocabSize)
	}
	lg, handled, err := s.graphIssue(id)
	if err != nil {
		return 0, true, err
	}
	if !handled {
		if lg, _, err = s.forwardOps([]int{id}, false, true); err != nil {
			return 0, true, err
		}
	}
	p, u := smp.DeviceArgs()
	next, err = ds.Sample(lg, 0, s.m.cfg.VocabSize, history, p, u)
	if err != nil {
		return 0, true, fmt.Errorf("sampling on the device: %w", err)
	}
	s.pos++
	return next, true, nil
}

// maxGraphRows is the largest batched decode step captured as a graph;
// buckets are 1, 2, 4, ... maxGraphRows rows.
const maxGraphRows = 256

// batchGraphs are a scheduler's decode steps captured as device graphs,
// one per bucket of rows. A decode-only step (every row the one token of a
// sequence whose logits are wanted) of n rows runs as the step of the
// smallest bucket that holds it: padding rows carry token 0 at position 0
// of a table that holds only the scheduler's padding block, which no
// sequence owns, so they write nowhere that is read back and their logits
// are ignored. Tables are padded to a power-of-two width that only grows
// (attention runs over whole tables; blocks past a row's position are
// skipped). A bucket's first step runs uncaptured (so every scratch buffer
// exists at its size), its second is captured and later ones replay after
// one upload of the inputs. A graph is captured again when the step's
// tables outgrow its width, when the step session replaced a scratch
// buffer, or when the backend replaced one (kernels.ErrStaleGraph). If a
// capture fails (a family that reads the device mid-step, e.g. MoE
// routing on the host), the scheduler stops trying.
type batchGraphs struct {
	c        kernels.BatchStepCapturer
	maxRows  int // the largest bucket
	maxWidth int // table width bound: blocks of the longest context
	failed   bool
	gen      int // the step session's scratchGen the graphs belong to
	buckets  []batchBucket
	replays  int64
	// The padded step, reused.
	ids      []int
	ids32    []int32
	bt       kernels.Batch
	want     []int
	padTable []int32 // a padding row's block table: the padding block
}

// batchBucket is one bucket's graph and the logits buffer it writes.
type batchBucket struct {
	warm  bool
	g     kernels.BatchStepGraph
	width int
	lg    kernels.Buffer
}

// batchCapturerOf returns the backend's batched-step capture capability
// (DSGO_NO_GRAPH=1 turns graphs off, to compare).
func batchCapturerOf(be kernels.Backend) (kernels.BatchStepCapturer, bool) {
	if os.Getenv("DSGO_NO_GRAPH") != "" {
		return nil, false
	}
	c, ok := be.(kernels.BatchStepCapturer)
	return c, ok
}

// newBatchGraphs returns graphs for steps of up to maxSeqs rows whose
// tables hold at most contextBlocks blocks; padding rows write padBlock.
func newBatchGraphs(c kernels.BatchStepCapturer, maxSeqs, contextBlocks int, padBlock int32) *batchGraphs {
	rows := 1
	for rows < min(maxSeqs, maxGraphRows) {
		rows *= 2
	}
	g := &batchGraphs{c: c, maxRows: rows, maxWidth: contextBlocks,
		buckets: make([]batchBucket, bits.Len(uint(rows))), padTable: []int32{padBlock}}
	for i := range rows {
		g.want = append(g.want, i)
	}
	return g
}

// close frees every graph.
func (g *batchGraphs) close() {
	for i := range g.buckets {
		if b := &g.buckets[i]; b.g != nil {
			b.g.Close()
			b.g, b.lg = nil, nil
		}
	}
}

// step runs the decode-only step ids, bt on the session through its
// bucket's graph and returns the logits buffer, whose rows 0..len(ids)-1
// are the step's rows; handled is false when the caller should run the
// step itself.
func (g *batchGraphs) step(s *Session, ids []int, bt *kernels.Batch) (lg kernels.Buffer, handled bool, err error) {
	n := len(ids)
	if g.failed || n == 0 || n > g.maxRows {
		return nil, false, nil
	}
	if s.scratchGen != g.gen {
		g.close()
		g.gen = s.scratchGen
	}
	k := bits.Len(uint(n - 1))
	rows := 1 << k
	width := 1
	for _, t := range bt.Tables {
		for width < len(t) {
			width *= 2
		}
	}
	width = min(width, max(g.maxWidth, 1))
	g.pad(ids, bt, rows)
	b := &g.buckets[k]
	if b.g != nil && b.width >= width {
		err := b.g.Replay(g.ids32, &g.bt)
		if err == nil {
			g.replays++
			return b.lg, true, nil
		}
		if !errors.Is(err, kernels.ErrStaleGraph) {
			return nil, true, fmt.Errorf("batched decode step graph: %w", err)
		}
	}
	if b.g != nil {
		width = max(width, b.width) // widths only grow: no capture back and forth
		b.g.Close()
		b.g, b.lg = nil, nil
	}
	if !b.warm {
		lg, err := s.stepForward(g.ids, &g.bt, g.want[:rows])
		b.warm = err == nil
		return lg, true, err
	}
	gr, err := g.c.CaptureBatchStep(g.ids32, &g.bt, width, func(be kernels.Backend, bat kernels.Batcher) error {
		saved, savedB := s.be, s.batcher
		s.be, s.batcher = be, bat
		defer func() { s.be, s.batcher = saved, savedB }()
		var err error
		lg, err = s.stepForward(g.ids, &g.bt, g.want[:rows])
		return err
	})
	if err != nil {
		g.failed = true
		g.close()
		return nil, false, nil
	}
	b.g, b.width, b.lg = gr, width, lg
	return lg, true, nil
}

// pad fills g's step with ids and bt's rows, then padding rows up to rows.
// Row i is sequence slot i (decode-only: one row per sequence).
func (g *batchGraphs) pad(ids []int, bt *kernels.Batch, rows int) {
	n := len(ids)
	g.ids = append(append(g.ids[:0], ids...), make([]int, rows-n)...)
	g.ids32 = g.ids32[:0]
	for _, id := range g.ids {
		g.ids32 = append(g.ids32, int32(id))
	}
	g.bt.Pos = append(append(g.bt.Pos[:0], bt.Pos...), make([]int32, rows-n)...)
	g.bt.Seq = g.bt.Seq[:0]
	g.bt.Tables = g.bt.Tables[:0]
	for i := range rows {
		g.bt.Seq = append(g.bt.Seq, int32(i))
		if i < n {
			g.bt.Tables = append(g.bt.Tables, bt.Tables[bt.Seq[i]])
		} else {
			g.bt.Tables = append(g.bt.Tables, g.padTable)
		}
	}
}
