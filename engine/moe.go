package engine

// Mixture-of-experts routing for the DeepSeek families, on the host in fp32.
//
// The functions here reproduce transformers' DeepseekV2Moe.route_tokens_to_experts
// and DeepseekV3TopkRouter (and DeepSeek's own MoEGate) on one token's router
// logits; the expert MLPs themselves run on the Backend (deepseek.go).

import (
	"fmt"
	"math"
	"sync/atomic"
)

// Routing methods (config key topk_method).
const (
	TopKGreedy      = "greedy"               // softmax, plain top-k (V1, V2)
	TopKGroupLimit  = "group_limited_greedy" // softmax, top groups by their best expert (V2)
	TopKNoAuxTC     = "noaux_tc"             // sigmoid + correction bias, groups by top-2 sum (V3)
	ScoringSoftmax  = "softmax"
	ScoringSigmoid  = "sigmoid"
	normTopKEpsilon = 1e-20 // DeepSeek's denominator guard when normalising top-k weights
)

// RouterConfig is what routing needs from a DeepSeek config.
type RouterConfig struct {
	Method    string // TopKGreedy, TopKGroupLimit or TopKNoAuxTC
	Scoring   string // ScoringSoftmax or ScoringSigmoid
	Experts   int    // n_routed_experts
	TopK      int    // num_experts_per_tok
	Groups    int    // n_group (1 when ungrouped)
	TopGroups int    // topk_group
	NormTopK  bool   // norm_topk_prob
	// ScaleAfterNorm: multiply by Scale even when the weights were
	// normalised (V3). DeepSeek's V1/V2 MoEGate scales only unnormalised
	// weights.
	ScaleAfterNorm bool
	Scale          float32 // routed_scaling_factor
}

// Validate reports configuration errors (bad shapes that would otherwise
// panic or silently route wrong) with the offending config keys named.
func (c *RouterConfig) Validate() error {
	if c.Experts <= 0 {
		return fmt.Errorf("moe: n_routed_experts = %d, want > 0", c.Experts)
	}
	if c.TopK <= 0 || c.TopK > c.Experts {
		return fmt.Errorf("moe: num_experts_per_tok = %d, want 1..n_routed_experts (%d)", c.TopK, c.Experts)
	}
	switch c.Scoring {
	case ScoringSoftmax, ScoringSigmoid:
	default:
		return fmt.Errorf("moe: scoring_func %q not supported (softmax, sigmoid)", c.Scoring)
	}
	switch c.Method {
	case TopKGreedy:
	case TopKGroupLimit, TopKNoAuxTC:
		if c.Groups <= 0 {
			return fmt.Errorf("moe: topk_method %q needs n_group > 0, got %d", c.Method, c.Groups)
		}
		if c.Experts%c.Groups != 0 {
			return fmt.Errorf("moe: n_group = %d does not divide n_routed_experts = %d", c.Groups, c.Experts)
		}
		if c.TopGroups <= 0 || c.TopGroups > c.Groups {
			return fmt.Errorf("moe: topk_group = %d, want 1..n_group (%d)", c.TopGroups, c.Groups)
		}
		if c.Method == TopKNoAuxTC && c.Experts/c.Groups < 2 {
			return fmt.Errorf("moe: noaux_tc scores a group by its top-2 experts but n_routed_experts/n_group = %d", c.Experts/c.Groups)
		}
	default:
		return fmt.Errorf("moe: topk_method %q not supported (greedy, group_limited_greedy, noaux_tc)", c.Method)
	}
	if c.Method == TopKNoAuxTC && c.Scoring != ScoringSigmoid {
		// transformers' DeepseekV3TopkRouter always uses sigmoid.
		return fmt.Errorf("moe: topk_method noaux_tc needs scoring_func sigmoid, got %q", c.Scoring)
	}
	return nil
}

// Router routes tokens given their router logits. It holds scratch space, so
// one Router must not be used by two goroutines at once (each session has its
// own).
type Router struct {
	cfg    RouterConfig
	bias   []float32 // e_score_correction_bias (noaux_tc), nil otherwise
	scores []float32
	choice []float32
	gscore []float32
	gkeep  []bool
}

// NewRouter validates cfg and returns a Router. bias is the
// e_score_correction_bias for noaux_tc (len Experts) and must be nil
// otherwise.
func NewRouter(cfg RouterConfig, bias []float32) (*Router, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Method == TopKNoAuxTC && len(bias) != cfg.Experts {
		return nil, fmt.Errorf("moe: e_score_correction_bias has %d entries, want n_routed_experts = %d", len(bias), cfg.Experts)
	}
	if cfg.Method != TopKNoAuxTC && bias != nil {
		return nil, fmt.Errorf("moe: e_score_correction_bias given for topk_method %q", cfg.Method)
	}
	g := max(cfg.Groups, 1)
	return &Router{
		cfg:    cfg,
		bias:   bias,
		scores: make([]float32, cfg.Experts),
		choice: make([]float32, cfg.Experts),
		gscore: make([]float32, g),
		gkeep:  make([]bool, g),
	}, nil
}

// Config returns the routing configuration.
func (r *Router) Config() RouterConfig { return r.cfg }

// Route picks TopK experts for one token from its router logits (len
// Experts), writing expert indices to idx and combine weights to w (both
// len TopK). Indices come out in descending order of selection score, ties
// broken by the lower index.
func (r *Router) Route(logits []float32, idx []int, w []float32) {
	c := &r.cfg
	n := c.Experts
	s := r.scores
	if c.Scoring == ScoringSigmoid {
		for i, v := range logits[:n] {
			s[i] = float32(1 / (1 + math.Exp(-float64(v))))
		}
	} else {
		moeSoftmax(s, logits[:n])
	}

	// choice is what selection looks at; weights always come from s.
	choice := r.choice
	copy(choice, s)
	if r.bias != nil {
		for i := range choice {
			choice[i] += r.bias[i]
		}
	}

	if c.Method != TopKGreedy {
		per := n / c.Groups
		for g := range c.Groups {
			grp := choice[g*per : (g+1)*per]
			if c.Method == TopKNoAuxTC {
				a, b := moeTop2(grp)
				r.gscore[g] = a + b
			} else {
				r.gscore[g] = moeMax(grp)
			}
			r.gkeep[g] = false
		}
		for range c.TopGroups {
			best := -1
			for g := range c.Groups {
				if !r.gkeep[g] && (best < 0 || r.gscore[g] > r.gscore[best]) {
					best = g
				}
			}
			r.gkeep[best] = true
		}
		// masked_fill(~mask, 0.0) exactly as transformers: with a negative
		// correction bias a masked expert (0) can outrank a kept one.
		for g := range c.Groups {
			if !r.gkeep[g] {
				clear(choice[g*per : (g+1)*per])
			}
		}
	}

	moeTopK(choice, idx[:c.TopK])
	var sum float32
	for j, e := range idx[:c.TopK] {
		w[j] = s[e]
		sum += w[j]
	}
	norm := c.NormTopK && (c.TopK > 1 || c.ScaleAfterNorm)
	if norm {
		for j := range w[:c.TopK] {
			w[j] /= sum + normTopKEpsilon
		}
	}
	if !norm || c.ScaleAfterNorm {
		for j := range w[:c.TopK] {
			w[j] *= c.Scale
		}
	}
}

// moeSoftmax writes moeSoftmax(x) to out in float32 with a float64 sum.
func moeSoftmax(out, x []float32) {
	m := float32(math.Inf(-1))
	for _, v := range x {
		m = max(m, v)
	}
	var sum float64
	for i, v := range x {
		e := math.Exp(float64(v - m))
		out[i] = float32(e)
		sum += e
	}
	for i := range out[:len(x)] {
		out[i] = float32(float64(out[i]) / sum)
	}
}

func moeMax(x []float32) float32 {
	m := x[0]
	for _, v := range x[1:] {
		m = max(m, v)
	}
	return m
}

// moeTop2 returns the two largest values of x (len ≥ 2).
func moeTop2(x []float32) (a, b float32) {
	a, b = float32(math.Inf(-1)), float32(math.Inf(-1))
	for _, v := range x {
		if v > a {
			a, b = v, a
		} else if v > b {
			b = v
		}
	}
	return a, b
}

// moeTopK writes the indices of the len(idx) largest values of x to idx, in
// descending order, ties to the lower index. Selection by repeated scan: k is
// small (≤ 8 for every DeepSeek model) and experts ≤ 256.
func moeTopK(x []float32, idx []int) {
	for j := range idx {
		best := -1
		for i, v := range x {
			if best >= 0 && v <= x[best] {
				continue
			}
			taken := false
			for _, p := range idx[:j] {
				if p == i {
					taken = true
					break
				}
			}
			if !taken {
				best = i
			}
		}
		idx[j] = best
	}
}

// ExpertStats counts how often each routed expert of each MoE layer was
// chosen. It is safe for concurrent use (sessions of one Model share it).
type ExpertStats struct {
	layers []int // model layer index of each MoE layer
	counts [][]atomic.Int64
	tokens []atomic.Int64
}

// NewExpertStats makes counters for the given model layers with experts each.
func NewExpertStats(layers []int, experts int) *ExpertStats {
	s := &ExpertStats{layers: append([]int(nil), layers...), tokens: make([]atomic.Int64, len(layers))}
	s.counts = make([][]atomic.Int64, len(layers))
	for i := range s.counts {
		s.counts[i] = make([]atomic.Int64, experts)
	}
	return s
}

// add records one token's routing in MoE layer slot i.
func (s *ExpertStats) add(i int, idx []int) {
	s.tokens[i].Add(1)
	for _, e := range idx {
		s.counts[i][e].Add(1)
	}
}

// Reset zeroes every counter.
func (s *ExpertStats) Reset() {
	for i := range s.counts {
		s.tokens[i].Store(0)
		for e := range s.counts[i] {
			s.counts[i][e].Store(0)
		}
	}
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

// Snapshot returns per-layer summaries.
func (s *ExpertStats) Snapshot() []LayerExpertStats {
	out := make([]LayerExpertStats, len(s.layers))
	for i, l := range s.layers {
		counts := make([]int64, len(s.counts[i]))
		for e := range counts {
			counts[e] = s.counts[i][e].Load()
		}
		out[i] = moeSummarise(l, s.tokens[i].Load(), counts)
	}
	return out
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
