package engine

// Mixture-of-experts routing for the DeepSeek families. The routing rules
// live in kernels/routing (one implementation, shared with the CPU
// backend and reproduced by the device kernels); the MoE layer runs on the
// backend's kernels.MoE capability (engine/layers/moe.go), and the usage
// counters below read the backend's per-layer selection counters.

import (
	"fmt"
	"math"

	"github.com/deepseek-go/deepseek-go/kernels"
	"github.com/deepseek-go/deepseek-go/kernels/routing"
)

// Routing methods (config key topk_method) and scoring functions.
const (
	TopKGreedy     = routing.TopKGreedy     // softmax, plain top-k (V1, V2)
	TopKGroupLimit = routing.TopKGroupLimit // softmax, top groups by their best expert (V2)
	TopKNoAuxTC    = routing.TopKNoAuxTC    // sigmoid + correction bias, groups by top-2 sum (V3)
	ScoringSoftmax = routing.ScoringSoftmax
	ScoringSigmoid = routing.ScoringSigmoid
)

// RouterConfig is what routing needs from a DeepSeek config
// (kernels/routing.Config).
type RouterConfig = routing.Config

// Router routes tokens on the host (kernels/routing.Router); one Router
// must not be used by two goroutines at once.
type Router = routing.Router

// NewRouter validates cfg and returns a host Router. bias is the
// e_score_correction_bias for noaux_tc (len Experts) and must be nil
// otherwise.
func NewRouter(cfg RouterConfig, bias []float32) (*Router, error) { return routing.New(cfg, bias) }

// ExpertStats reads how often each routed expert of each MoE layer was
// chosen from the backend's per-layer selection counters
// (kernels.MoERouter), which every session of the model adds to on the
// device. It is safe for concurrent use.
type ExpertStats struct {
	layers  []int // model layer index of each MoE layer
	routers []kernels.MoERouter
}

// add registers MoE layer l's router (in layer order).
func (s *ExpertStats) add(l int, r kernels.MoERouter) {
	s.layers = append(s.layers, l)
	s.routers = append(s.routers, r)
}

// Reset zeroes every counter.
func (s *ExpertStats) Reset() error {
	for i, r := range s.routers {
		if err := r.ResetCounts(); err != nil {
			return fmt.Errorf("moe layer %d: resetting expert counters: %w", s.layers[i], err)
		}
	}
	return nil
}

// Snapshot downloads the counters and returns per-layer summaries.
func (s *ExpertStats) Snapshot() ([]LayerExpertStats, error) {
	out := make([]LayerExpertStats, len(s.layers))
	for i, l := range s.layers {
		tokens, counts, err := s.routers[i].Counts()
		if err != nil {
			return nil, fmt.Errorf("moe layer %d: reading expert counters: %w", l, err)
		}
		out[i] = moeSummarise(l, tokens, counts)
	}
	return out, nil
}

// LayerExpertStats summarises one MoE layer's routing since the last reset.
type LayerExpertStats struct {
	Layer   int     // model layer index
	Tokens  int64   // tokens routed through this layer
	Counts  []int64 // selections per routed expert
	Active  int     // experts chosen at least once
	Experts int     // routed experts in the layer
	// CV is the coefficient of variation (stddev/mean) of Counts: 0 when
	// perfectly even.
	CV float64
	// Entropy is the Shannon entropy of the selection distribution divided
	// by ln(Experts): 1 when perfectly even, 0 when one expert takes all.
	Entropy float64
}

func moeSummarise(layer int, tokens int64, counts []int64) LayerExpertStats {
	st := LayerExpertStats{Layer: layer, Tokens: tokens, Counts: counts, Experts: len(counts)}
	var total float64
	for _, c := range counts {
		if c > 0 {
			st.Active++
		}
		total += float64(c)
	}
	if total == 0 || len(counts) == 0 {
		return st
	}
	mean := total / float64(len(counts))
	var varsum, h float64
	for _, c := range counts {
		d := float64(c) - mean
		varsum += d * d
		if c > 0 {
			p := float64(c) / total
			h -= p * math.Log(p)
		}
	}
	st.CV = math.Sqrt(varsum/float64(len(counts))) / mean
	if len(counts) > 1 {
		st.Entropy = h / math.Log(float64(len(counts)))
	} else {
		st.Entropy = 1
	}
	return st
}
