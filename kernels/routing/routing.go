// Package routing is DeepSeek's mixture-of-experts routing on the host in
// float32: the reference that the CPU backend runs and that device
// backends (kernels/cuda's moe_route kernel) reproduce operation for
// operation. It reproduces transformers' DeepseekV2Moe.route_tokens_to_experts
// and DeepseekV3TopkRouter (and DeepSeek's own MoEGate) on one token's router
// logits.
//
// The arithmetic order is part of the contract, so that a device kernel can
// match the selected indices exactly:
//   - softmax: m = max(x) in float32; e_i = exp(float64(x_i − m)) in float64;
//     sum = Σ e_i in float64, in index order; s_i = float32(float64(float32(e_i)) / sum);
//   - sigmoid: s_i = float32(1 / (1 + exp(−float64(x_i)))) in float64;
//   - choice_i = s_i (+ bias_i in float32 for noaux_tc);
//   - group score: the largest choice of the group (group_limited_greedy) or
//     the float32 sum of its two largest (noaux_tc); the TopGroups best
//     groups are kept, ties to the lower group; the others' choices become 0
//     (transformers' masked_fill(…, 0.0));
//   - top-k over choice, descending, ties to the lower index;
//   - w_j = s_{idx_j}; with normalisation sum = w_0 + w_1 + … in float32 in
//     slot order and w_j /= sum + 1e-20 (float32); then the scaling rules of
//     Config;
//   - then Config.Shared always-on slots: experts Experts, Experts+1, … with
//     weight exactly 1 (DeepSeek's shared experts run as extra experts).
package routing

import (
	"fmt"
	"math"
)

// Routing methods (config key topk_method) and scoring functions
// (scoring_func).
const (
	TopKGreedy     = "greedy"               // softmax, plain top-k (V1, V2)
	TopKGroupLimit = "group_limited_greedy" // softmax, top groups by their best expert (V2)
	TopKNoAuxTC    = "noaux_tc"             // sigmoid + correction bias, groups by top-2 sum (V3)
	ScoringSoftmax = "softmax"
	ScoringSigmoid = "sigmoid"
	// NormEpsilon is DeepSeek's denominator guard when normalising top-k
	// weights (applied in float32).
	NormEpsilon = 1e-20
)

// Config is what routing needs from a DeepSeek config.
type Config struct {
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
	// Shared always-on experts follow the top-k in every row's selection:
	// slot TopK+s is expert Experts+s with weight 1 (no normalisation, no
	// scaling). A shared MLP of width Shared·inter is the sum of Shared
	// experts of width inter, so the shared experts run with the routed
	// ones. 0 when they run separately (or there are none).
	Shared int
}

// Slots is the number of selections per row: the top-k, then the shared
// experts.
func (c *Config) Slots() int { return c.TopK + c.Shared }

// Normalise reports whether the top-k weights are divided by their sum
// (DeepSeek's MoEGate skips it for top-1 unless the scale comes after).
func (c *Config) Normalise() bool { return c.NormTopK && (c.TopK > 1 || c.ScaleAfterNorm) }

// Scaled reports whether the weights are multiplied by Scale.
func (c *Config) Scaled() bool { return !c.Normalise() || c.ScaleAfterNorm }

// Validate reports configuration errors (bad shapes that would otherwise
// panic or silently route wrong) with the offending config keys named.
func (c *Config) Validate() error {
	if c.Experts <= 0 {
		return fmt.Errorf("moe: n_routed_experts = %d, want > 0", c.Experts)
	}
	if c.TopK <= 0 || c.TopK > c.Experts {
		return fmt.Errorf("moe: num_experts_per_tok = %d, want 1..n_routed_experts (%d)", c.TopK, c.Experts)
	}
	if c.Shared < 0 {
		return fmt.Errorf("moe: %d shared experts routed, want >= 0", c.Shared)
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

// CheckBias validates the e_score_correction_bias against cfg: len
// Experts for noaux_tc, nil otherwise.
func (c *Config) CheckBias(bias []float32) error {
	if c.Method == TopKNoAuxTC && len(bias) != c.Experts {
		return fmt.Errorf("moe: e_score_correction_bias has %d entries, want n_routed_experts = %d", len(bias), c.Experts)
	}
	if c.Method != TopKNoAuxTC && bias != nil {
		return fmt.Errorf("moe: e_score_correction_bias given for topk_method %q", c.Method)
	}
	return nil
}

// Scratch is the working space of Route; its zero value is ready and it
// grows to the largest config routed with it (then routing allocates
// nothing). A Scratch must not be used by two goroutines at once.
type Scratch struct {
	scores, choice, gscore []float32
	gkeep                  []bool
}

func (s *Scratch) size(experts, groups int) {
	if len(s.scores) < experts {
		s.scores, s.choice = make([]float32, experts), make([]float32, experts)
	}
	if len(s.gscore) < groups {
		s.gscore, s.gkeep = make([]float32, groups), make([]bool, groups)
	}
}

// Route picks c.TopK experts for one token from its router logits (len
// Experts), writing expert indices to idx and combine weights to w (both
// len Slots: the shared experts follow with weight 1). The top-k come out
// in descending order of selection score, ties broken by the lower index.
// bias is the e_score_correction_bias
// (noaux_tc) or nil; c and bias must have passed Validate and CheckBias.
func Route(c *Config, bias []float32, sc *Scratch, logits []float32, idx []int, w []float32) {
	n := c.Experts
	sc.size(n, max(c.Groups, 1))
	s := sc.scores[:n]
	if c.Scoring == ScoringSigmoid {
		for i, v := range logits[:n] {
			s[i] = Sigmoid(v)
		}
	} else {
		Softmax(s, logits[:n])
	}

	// choice is what selection looks at; weights always come from s.
	choice := sc.choice[:n]
	copy(choice, s)
	if bias != nil {
		for i := range choice {
			choice[i] += bias[i]
		}
	}

	if c.Method != TopKGreedy {
		per := n / c.Groups
		gscore, gkeep := sc.gscore[:c.Groups], sc.gkeep[:c.Groups]
		for g := range c.Groups {
			grp := choice[g*per : (g+1)*per]
			if c.Method == TopKNoAuxTC {
				a, b := top2(grp)
				gscore[g] = a + b
			} else {
				gscore[g] = maxOf(grp)
			}
			gkeep[g] = false
		}
		for range c.TopGroups {
			best := -1
			for g := range c.Groups {
				if !gkeep[g] && (best < 0 || gscore[g] > gscore[best]) {
					best = g
				}
			}
			gkeep[best] = true
		}
		// masked_fill(~mask, 0.0) exactly as transformers: with a negative
		// correction bias a masked expert (0) can outrank a kept one.
		for g := range c.Groups {
			if !gkeep[g] {
				clear(choice[g*per : (g+1)*per])
			}
		}
	}

	TopK(choice, idx[:c.TopK])
	var sum float32
	for j, e := range idx[:c.TopK] {
		w[j] = s[e]
		sum += w[j]
	}
	if c.Normalise() {
		for j := range w[:c.TopK] {
			w[j] /= sum + NormEpsilon
		}
	}
	if c.Scaled() {
		for j := range w[:c.TopK] {
			w[j] *= c.Scale
		}
	}
	for s := range c.Shared {
		idx[c.TopK+s], w[c.TopK+s] = n+s, 1
	}
}

// Router is a config and bias with its own Scratch: Route for one
// goroutine at a time.
type Router struct {
	cfg  Config
	bias []float32 // e_score_correction_bias (noaux_tc), nil otherwise
	sc   Scratch
}

// New validates cfg and bias (Config.CheckBias) and returns a Router.
func New(cfg Config, bias []float32) (*Router, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.CheckBias(bias); err != nil {
		return nil, err
	}
	return &Router{cfg: cfg, bias: bias}, nil
}

// Config returns the routing configuration.
func (r *Router) Config() Config { return r.cfg }

// Bias returns the e_score_correction_bias (nil unless noaux_tc).
func (r *Router) Bias() []float32 { return r.bias }

// Route routes one token (the package function Route with the Router's
// config, bias and scratch).
func (r *Router) Route(logits []float32, idx []int, w []float32) {
	Route(&r.cfg, r.bias, &r.sc, logits, idx, w)
}

// Sigmoid is the router's sigmoid, computed in float64.
func Sigmoid(v float32) float32 { return float32(1 / (1 + math.Exp(-float64(v)))) }

// Softmax writes softmax(x) to out in float32 with a float64 sum (see the
// package comment for the exact order).
func Softmax(out, x []float32) {
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

func maxOf(x []float32) float32 {
	m := x[0]
	for _, v := range x[1:] {
		m = max(m, v)
	}
	return m
}

// top2 returns the two largest values of x (len ≥ 2).
func top2(x []float32) (a, b float32) {
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

// TopK writes the indices of the len(idx) largest values of x to idx, in
// descending order, ties to the lower index. Selection by repeated scan: k is
// small (≤ 8 for every DeepSeek model) and experts ≤ 256.
func TopK(x []float32, idx []int) {
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
