package routing

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// configs are the routing setups of the DeepSeek families: V2-Lite
// (greedy softmax, unnormalised), V2 (group-limited), V3 (noaux_tc with
// the correction bias, normalised then scaled).
var configs = []struct {
	name string
	cfg  Config
	bias bool
}{
	{"v2-lite", Config{Method: TopKGreedy, Scoring: ScoringSoftmax, Experts: 64, TopK: 6, Groups: 1, TopGroups: 1, Scale: 1}, false},
	{"v2", Config{Method: TopKGroupLimit, Scoring: ScoringSoftmax, Experts: 160, TopK: 6, Groups: 8, TopGroups: 3, Scale: 16}, false},
	{"v3", Config{Method: TopKNoAuxTC, Scoring: ScoringSigmoid, Experts: 256, TopK: 8, Groups: 8, TopGroups: 4, NormTopK: true, ScaleAfterNorm: true, Scale: 2.5}, true},
}

// checkRoute asserts what holds for any logits: k distinct indices inside
// the expert range, then the shared experts with weight 1, and, when every
// logit is finite, finite non-negative weights.
func checkRoute(t *testing.T, c Config, logits []float32, idx []int, w []float32) {
	t.Helper()
	require.Len(t, idx, c.Slots())
	for s := range c.Shared {
		require.Equal(t, c.Experts+s, idx[c.TopK+s], "shared slot %d", s)
		require.Equal(t, float32(1), w[c.TopK+s], "shared slot %d", s)
	}
	seen := map[int]bool{}
	for _, e := range idx[:c.TopK] {
		require.True(t, e >= 0 && e < c.Experts, "index %d of %d experts", e, c.Experts)
		require.False(t, seen[e], "index %d chosen twice: %v", e, idx)
		seen[e] = true
	}
	for _, v := range logits {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return
		}
	}
	for _, v := range w {
		require.False(t, math.IsNaN(float64(v)) || math.IsInf(float64(v), 0), "weights %v", w)
		require.GreaterOrEqual(t, v, float32(0))
	}
}

func newRouter(t testing.TB, c Config, withBias bool, r *rand.Rand) *Router {
	var bias []float32
	if withBias {
		bias = make([]float32, c.Experts)
		for i := range bias {
			bias[i] = float32(r.NormFloat64() * 0.1)
		}
	}
	rt, err := New(c, bias)
	require.NoError(t, err)
	return rt
}

// TestRouteProperties: on random logits, every family's routing picks k
// distinct experts, kept groups only, in descending order of the selection
// score; normalised weights sum to the scale.
func TestRouteProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, tc := range configs {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cfg
			rt := newRouter(t, c, tc.bias, r)
			logits := make([]float32, c.Experts)
			idx, w := make([]int, c.TopK), make([]float32, c.TopK)
			for range 200 {
				for i := range logits {
					logits[i] = float32(r.NormFloat64() * 2)
				}
				rt.Route(logits, idx, w)
				checkRoute(t, c, logits, idx, w)
				// Selection score of each pick (score + bias), descending.
				sel := make([]float32, c.TopK)
				scores := make([]float32, c.Experts)
				if c.Scoring == ScoringSigmoid {
					for i, v := range logits {
						scores[i] = Sigmoid(v)
					}
				} else {
					Softmax(scores, logits)
				}
				for j, e := range idx {
					sel[j] = scores[e]
					if rt.Bias() != nil {
						sel[j] += rt.Bias()[e]
					}
				}
				assert.True(t, slices.IsSortedFunc(sel, func(a, b float32) int {
					switch {
					case a > b:
						return -1
					case a < b:
						return 1
					}
					return 0
				}), "selection scores not descending: %v", sel)
				if c.Groups > 1 {
					groups := map[int]bool{}
					for _, e := range idx {
						groups[e/(c.Experts/c.Groups)] = true
					}
					assert.LessOrEqual(t, len(groups), c.TopGroups, "experts from %d groups, %d kept", len(groups), c.TopGroups)
				}
				if c.Normalise() {
					var sum float32
					for _, v := range w {
						sum += v
					}
					assert.InDelta(t, c.Scale, sum, 1e-5)
				}
			}
		})
	}
}

// TestRouteShared: with shared experts the first TopK slots are exactly
// the routing without them and the shared slots follow with ids Experts+s
// and weight 1.
func TestRouteShared(t *testing.T) {
	r := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	for _, tc := range configs {
		for _, shared := range []int{1, 2, 3} {
			t.Run(fmt.Sprintf("%s/shared=%d", tc.name, shared), func(t *testing.T) {
				plain := newRouter(t, tc.cfg, tc.bias, r)
				c := tc.cfg
				c.Shared = shared
				fused, err := New(c, plain.Bias())
				require.NoError(t, err)
				logits := make([]float32, c.Experts)
				idx0, w0 := make([]int, c.TopK), make([]float32, c.TopK)
				idx, w := make([]int, c.Slots()), make([]float32, c.Slots())
				for range 50 {
					for i := range logits {
						logits[i] = float32(r.NormFloat64() * 2)
					}
					plain.Route(logits, idx0, w0)
					fused.Route(logits, idx, w)
					checkRoute(t, c, logits, idx, w)
					assert.Equal(t, idx0, idx[:c.TopK])
					assert.Equal(t, w0, w[:c.TopK])
				}
			})
		}
	}
	c := configs[0].cfg
	c.Shared = -1
	assert.ErrorContains(t, c.Validate(), "-1 shared experts")
}

// TestTopKTies: equal values go to the lower index.
func TestTopKTies(t *testing.T) {
	idx := make([]int, 3)
	TopK([]float32{1, 3, 3, 2, 3}, idx)
	assert.Equal(t, []int{1, 2, 4}, idx)
}

// FuzzRoute: any logits, NaN and infinities included, give k distinct
// in-range indices for every family's routing, never a panic.
func FuzzRoute(f *testing.F) {
	f.Add([]byte{0, 0, 128, 127, 0, 0, 128, 255}) // +Inf, -Inf
	f.Add([]byte{0, 0, 192, 127})                 // NaN
	f.Add(make([]byte, 64))
	r := rand.New(rand.NewPCG(3, 4))
	// Every family without and with shared experts.
	cfgs := make([]Config, 0, 2*len(configs))
	routers := make([]*Router, 0, 2*len(configs))
	for _, shared := range []int{0, 2} {
		for _, tc := range configs {
			c := tc.cfg
			c.Shared = shared
			cfgs = append(cfgs, c)
			routers = append(routers, newRouter(f, c, tc.bias, r))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for i, c := range cfgs {
			logits := make([]float32, c.Experts)
			for e := range logits {
				if o := 4 * e % max(len(data)&^3, 4); o+4 <= len(data) {
					logits[e] = math.Float32frombits(binary.LittleEndian.Uint32(data[o:]))
				}
			}
			idx, w := make([]int, c.Slots()), make([]float32, c.Slots())
			routers[i].Route(logits, idx, w)
			checkRoute(t, c, logits, idx, w)
		}
	})
}
