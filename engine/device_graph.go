package engine

import (
	"context"
	"fmt"
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
