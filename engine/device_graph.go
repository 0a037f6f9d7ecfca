package engine

import (
	"fmt"

	"github.com/deepseek-go/deepseek-go/kernels"
)

// stepGraph is a captured decode step (cuda.StepGraph).
type stepGraph interface {
	Replay(id, pos int) error
	Close() error
}

// stepCapturer records one decode step as a device graph that replays at
// later positions; capturerOf (device_cuda.go) finds one for a backend.
type stepCapturer interface {
	captureStep(id, pos, maxPos int, fn func(kernels.Backend) error) (stepGraph, error)
}

// graphState is a session's captured decode step. The first decode step
// runs uncaptured so every scratch buffer exists; the second is captured;
// later steps replay. If capture fails (a family that reads the device
// mid-step, e.g. MoE routing on the host) the session stays uncaptured.
type graphState struct {
	warm   bool
	failed bool
	g      stepGraph
	lg     kernels.Buffer
}

// graphStep runs a one-token decode step through the session's graph when
// the backend supports it; handled is false when the caller should run the
// step itself.
func (s *Session) graphStep(id int, emit func([]float32, int)) (handled bool, err error) {
	cg, ok := capturerOf(s.m.be)
	if !ok || s.graph.failed || s.be != s.m.be {
		return false, nil
	}
	if s.graph.g == nil {
		if !s.graph.warm {
			s.graph.warm = true
			return false, nil
		}
		var lg kernels.Buffer
		g, err := cg.captureStep(id, s.pos, s.max, func(be kernels.Backend) error {
			saved := s.be
			s.be = be
			defer func() { s.be = saved }()
			var err error
			lg, _, err = s.forwardOps([]int{id}, false, true)
			return err
		})
		if err != nil {
			s.graph.failed = true
			return false, nil
		}
		s.graph.g, s.graph.lg = g, lg
	} else if err := s.graph.g.Replay(id, s.pos); err != nil {
		return true, fmt.Errorf("decode step graph: %w", err)
	}
	out := make([]float32, s.m.cfg.VocabSize)
	if err := s.be.Download(out, s.graph.lg, 0); err != nil {
		return true, fmt.Errorf("reading logits: %w", err)
	}
	s.pos++
	emit(out, 1)
	return true, nil
}
