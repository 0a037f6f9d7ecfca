package engine

import (
	"math"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/kernels"
	"github.com/deepseek-go/deepseek-go/kernels/cpu"
	"github.com/deepseek-go/deepseek-go/kernels/routing"
)

func moeSigmoid(x float32) float32 { return float32(1 / (1 + math.Exp(-float64(x)))) }

// moeLogit returns the logit whose sigmoid is p.
func moeLogit(p float64) float32 { return float32(math.Log(p / (1 - p))) }

func TestRouterRoute(t *testing.T) {
	v3 := RouterConfig{Method: TopKNoAuxTC, Scoring: ScoringSigmoid, Experts: 8, TopK: 2,
		Groups: 4, TopGroups: 2, NormTopK: true, ScaleAfterNorm: true, Scale: 2.5}
	v2 := RouterConfig{Method: TopKGreedy, Scoring: ScoringSoftmax, Experts: 4, TopK: 2, Scale: 1}

	// softmax of [0, ln2, ln3, ln4] is [1,2,3,4]/10.
	softLogits := []float32{0, float32(math.Log(2)), float32(math.Log(3)), float32(math.Log(4))}

	tests := []struct {
		name    string
		cfg     RouterConfig
		bias    []float32
		logits  []float32
		wantIdx []int
		wantW   []float32
	}{
		{
			name: "v2 greedy softmax, unnormalised", cfg: v2, logits: softLogits,
			wantIdx: []int{3, 2}, wantW: []float32{0.4, 0.3},
		},
		{
			name: "v2 greedy with scaling 16", cfg: func() RouterConfig { c := v2; c.Scale = 16; return c }(),
			logits: softLogits, wantIdx: []int{3, 2}, wantW: []float32{6.4, 4.8},
		},
		{
			name:   "v2 norm_topk_prob normalises and does not scale",
			cfg:    func() RouterConfig { c := v2; c.NormTopK = true; c.Scale = 16; return c }(),
			logits: softLogits, wantIdx: []int{3, 2}, wantW: []float32{4.0 / 7, 3.0 / 7},
		},
		{
			name: "v2 group_limited_greedy keeps only the best group",
			cfg: RouterConfig{Method: TopKGroupLimit, Scoring: ScoringSoftmax, Experts: 6, TopK: 2,
				Groups: 3, TopGroups: 1, Scale: 1},
			// probabilities ∝ [5, 1, 4, 4, 2, 2]/18: group maxima 5, 4, 2 keep
			// group 0 only, so e1 (1/18) beats e2 and e3 (4/18).
			logits:  []float32{float32(math.Log(5)), 0, float32(math.Log(4)), float32(math.Log(4)), float32(math.Log(2)), float32(math.Log(2))},
			wantIdx: []int{0, 1}, wantW: []float32{5.0 / 18, 1.0 / 18},
		},
		{
			// choice = s + bias = [.9 .1 | .6 .58 | .7 .05 | .55 .65]; group
			// top-2 sums 1.0, 1.18, .75, 1.2 keep groups 1 and 3 although
			// group 0 holds the best expert. The bias lifts e7 (.35) over e6
			// (.55) for selection; its weight is still the unbiased .35.
			name: "v3 noaux_tc: groups by top-2 sum, bias for selection only", cfg: v3,
			bias:    []float32{0, 0, 0, 0, 0, 0, 0, 0.3},
			logits:  []float32{moeLogit(.9), moeLogit(.1), moeLogit(.6), moeLogit(.58), moeLogit(.7), moeLogit(.05), moeLogit(.55), moeLogit(.35)},
			wantIdx: []int{7, 2},
			wantW:   []float32{2.5 * .35 / .95, 2.5 * .6 / .95},
		},
		{
			// choice = [.4 -.1 -.5 | .1 .1 .1]: group 0 wins (.3 > .2); the
			// masked group reads 0, which beats the kept e1 (-.1), exactly
			// as transformers' masked_fill(…, 0.0) does.
			name: "v3 noaux_tc: masked experts score 0, above negative kept ones",
			cfg: RouterConfig{Method: TopKNoAuxTC, Scoring: ScoringSigmoid, Experts: 6, TopK: 2,
				Groups: 2, TopGroups: 1, NormTopK: true, ScaleAfterNorm: true, Scale: 1},
			bias:    []float32{0, -.4, -.6, 0, 0, 0},
			logits:  []float32{moeLogit(.4), moeLogit(.3), moeLogit(.1), moeLogit(.1), moeLogit(.1), moeLogit(.1)},
			wantIdx: []int{0, 3},
			wantW:   []float32{.8, .2},
		},
		{
			name:    "v3 without norm_topk_prob scales raw sigmoid",
			cfg:     func() RouterConfig { c := v3; c.NormTopK = false; return c }(),
			bias:    make([]float32, 8),
			logits:  []float32{moeLogit(.9), moeLogit(.1), moeLogit(.6), moeLogit(.58), moeLogit(.7), moeLogit(.05), moeLogit(.55), moeLogit(.35)},
			wantIdx: []int{0, 2},
			wantW:   []float32{2.5 * .9, 2.5 * .6},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewRouter(tc.cfg, tc.bias)
			require.NoError(t, err)
			idx := make([]int, tc.cfg.TopK)
			w := make([]float32, tc.cfg.TopK)
			r.Route(tc.logits, idx, w)
			assert.Equal(t, tc.wantIdx, idx)
			assert.InDeltaSlice(t, tc.wantW, w, 1e-6)
		})
	}
}

func TestRouterGreedyMatchesSort(t *testing.T) {
	cfg := RouterConfig{Method: TopKGreedy, Scoring: ScoringSoftmax, Experts: 64, TopK: 6, Scale: 1}
	r, err := NewRouter(cfg, nil)
	require.NoError(t, err)
	logits := make([]float32, 64)
	idx := make([]int, 6)
	w := make([]float32, 6)
	for trial := range 20 {
		for i := range logits {
			logits[i] = float32(math.Sin(float64(i*7919+trial*104729))) * 4
		}
		r.Route(logits, idx, w)
		probs := make([]float32, 64)
		routing.Softmax(probs, logits)
		var sum float64
		for _, p := range probs {
			sum += float64(p)
		}
		require.InDelta(t, 1, sum, 1e-5)
		// every chosen prob ≥ every unchosen prob, weights descending.
		chosen := map[int]bool{}
		for j, e := range idx {
			chosen[e] = true
			assert.Equal(t, probs[e], w[j])
			if j > 0 {
				assert.GreaterOrEqual(t, w[j-1], w[j])
			}
		}
		require.Len(t, chosen, 6)
		for e, p := range probs {
			if !chosen[e] {
				assert.LessOrEqual(t, p, w[5], "expert %d", e)
			}
		}
	}
}

func TestRouterConfigErrors(t *testing.T) {
	v3 := RouterConfig{Method: TopKNoAuxTC, Scoring: ScoringSigmoid, Experts: 8, TopK: 2,
		Groups: 4, TopGroups: 2, NormTopK: true, ScaleAfterNorm: true, Scale: 2.5}
	tests := []struct {
		name string
		mod  func(c *RouterConfig)
		bias []float32
		want string
	}{
		{"n_group does not divide experts", func(c *RouterConfig) { c.Groups = 3 }, make([]float32, 8), "n_group = 3 does not divide n_routed_experts = 8"},
		{"topk_group > n_group", func(c *RouterConfig) { c.TopGroups = 5 }, make([]float32, 8), "topk_group = 5, want 1..n_group (4)"},
		{"missing n_group", func(c *RouterConfig) { c.Groups = 0 }, make([]float32, 8), "needs n_group > 0"},
		{"top-2 needs two experts per group", func(c *RouterConfig) { c.Groups = 8; c.TopGroups = 2 }, make([]float32, 8), "top-2"},
		{"top_k > experts", func(c *RouterConfig) { c.TopK = 9 }, make([]float32, 8), "num_experts_per_tok = 9"},
		{"unknown method", func(c *RouterConfig) { c.Method = "magic" }, nil, `topk_method "magic"`},
		{"unknown scoring", func(c *RouterConfig) { c.Scoring = "relu" }, make([]float32, 8), `scoring_func "relu"`},
		{"noaux_tc with softmax", func(c *RouterConfig) { c.Scoring = ScoringSoftmax }, make([]float32, 8), "needs scoring_func sigmoid"},
		{"bias length", func(c *RouterConfig) {}, make([]float32, 7), "e_score_correction_bias has 7 entries"},
		{"bias missing", func(c *RouterConfig) {}, nil, "e_score_correction_bias has 0 entries"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := v3
			tc.mod(&c)
			_, err := NewRouter(c, tc.bias)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestExpertStats: the usage summaries read the backend routers'
// counters, which sessions add to concurrently.
func TestExpertStats(t *testing.T) {
	be := cpu.New(1)
	defer be.Close()
	cfg := RouterConfig{Method: TopKGreedy, Scoring: ScoringSoftmax, Experts: 4, TopK: 2, Groups: 1, TopGroups: 1, Scale: 1}
	r1, err := be.NewMoERouter(cfg, nil)
	require.NoError(t, err)
	r2, err := be.NewMoERouter(cfg, nil)
	require.NoError(t, err)
	logits := func(f ...float32) kernels.Buffer {
		b, err := be.Alloc(len(f))
		require.NoError(t, err)
		require.NoError(t, be.Upload(b, 0, f))
		return b
	}
	l01, l23 := logits(3, 2, 0, -1), logits(-1, 0, 2, 3) // top-2: {0,1} and {3,2}
	s := &ExpertStats{}
	s.add(1, r1)
	s.add(2, r2)
	var wg sync.WaitGroup
	for range 4 {
		rt, err := be.NewMoERoutes(kernels.MoERoutesSpec{Rows: 1, TopK: 2, Experts: 4, Hidden: 1, Inter: 1})
		require.NoError(t, err)
		wg.Go(func() {
			for range 25 {
				be.Route(rt, r1, l01, 1) // layer 1: experts 0,1 only
				be.Route(rt, r2, l01, 1)
				be.Route(rt, r2, l23, 1)
			}
		})
	}
	wg.Wait()
	got, err := s.Snapshot()
	require.NoError(t, err)
	require.Len(t, got, 2)

	assert.Equal(t, 1, got[0].Layer)
	assert.Equal(t, int64(100), got[0].Tokens)
	assert.Equal(t, []int64{100, 100, 0, 0}, got[0].Counts)
	assert.Equal(t, 2, got[0].Active)
	assert.InDelta(t, 1.0, got[0].CV, 1e-12)      // counts 2m,2m,0,0: std = mean
	assert.InDelta(t, 0.5, got[0].Entropy, 1e-12) // ln2 / ln4

	assert.Equal(t, 2, got[1].Layer)
	assert.Equal(t, int64(200), got[1].Tokens)
	assert.Equal(t, 4, got[1].Active)
	assert.InDelta(t, 0.0, got[1].CV, 1e-12)
	assert.InDelta(t, 1.0, got[1].Entropy, 1e-12)

	require.NoError(t, s.Reset())
	got, err = s.Snapshot()
	require.NoError(t, err)
	assert.Equal(t, int64(0), got[1].Tokens)
	assert.Equal(t, 0, got[1].Active)
	assert.Zero(t, got[1].Entropy)
}
