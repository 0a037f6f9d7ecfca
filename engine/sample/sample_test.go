package sample

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSamplerOptionsValidate(t *testing.T) {
	nan := float32(math.NaN())
	tests := []struct {
		name string
		o    Options
		err  string // substring; empty = valid
	}{
		{"zero value is greedy", Options{}, ""},
		{"typical", Options{Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05, RepeatPenalty: 1.1, Seed: 7}, ""},
		{"top-p 1", Options{Temperature: 1, TopP: 1}, ""},
		{"negative temperature", Options{Temperature: -1}, "temperature must be >= 0"},
		{"NaN temperature", Options{Temperature: nan}, "temperature"},
		{"infinite temperature", Options{Temperature: float32(math.Inf(1))}, "temperature"},
		{"negative top-k", Options{TopK: -3}, "top-k must be >= 0 (0 = off), got -3"},
		{"top-p 2", Options{TopP: 2}, "top-p must be in (0, 1] (0 = off), got 2"},
		{"negative top-p", Options{TopP: -0.5}, "top-p must be in (0, 1]"},
		{"NaN top-p", Options{TopP: nan}, "top-p"},
		{"min-p above 1", Options{MinP: 1.5}, "min-p must be in [0, 1], got 1.5"},
		{"negative repeat penalty", Options{RepeatPenalty: -1}, "repeat penalty must be > 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.o.Validate()
			_, nerr := New(tc.o)
			if tc.err == "" {
				require.NoError(t, err)
				require.NoError(t, nerr)
				return
			}
			require.ErrorContains(t, err, tc.err)
			require.ErrorContains(t, nerr, tc.err)
		})
	}
}

func TestSamplerGreedy(t *testing.T) {
	nan := float32(math.NaN())
	tests := []struct {
		name    string
		logits  []float32
		history []int
		penalty float32
		want    int
	}{
		{"argmax", []float32{0.1, 3, -2, 2.9}, nil, 0, 1},
		{"first of ties", []float32{1, 5, 5, 0}, nil, 0, 1},
		{"NaN skipped", []float32{nan, -1, -3}, nil, 0, 1},
		{"all NaN", []float32{nan, nan}, nil, 0, 0},
		{"all -Inf", []float32{float32(math.Inf(-1)), float32(math.Inf(-1))}, nil, 0, 0},
		{"empty", nil, nil, 0, -1},
		// 3/2 = 1.5 < 2.9: the penalised token loses.
		{"penalty divides positive", []float32{0.1, 3, -2, 2.9}, []int{1}, 2, 3},
		// -0.5*2 = -1 < -0.8.
		{"penalty multiplies negative", []float32{-0.5, -0.8, -9}, []int{0}, 2, 1},
		{"repeated id penalised once", []float32{4, 1.5}, []int{0, 0, 0}, 2, 0},
		{"ids outside vocab ignored", []float32{1, 2}, []int{-1, 7, 1}, 4, 0},
		{"penalty 1 is off", []float32{1, 2}, []int{1}, 1, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(Options{RepeatPenalty: tc.penalty})
			require.NoError(t, err)
			orig := append([]float32(nil), tc.logits...)
			assert.Equal(t, tc.want, s.Sample(tc.logits, tc.history))
			for i := range orig { // the caller's logits are left alone
				if !math.IsNaN(float64(orig[i])) {
					assert.Equal(t, orig[i], tc.logits[i])
				}
			}
		})
	}
}

// drawFreq samples n tokens and returns how often each id came up.
func drawFreq(t *testing.T, o Options, logits []float32, history []int, n int) []float64 {
	t.Helper()
	s, err := New(o)
	require.NoError(t, err)
	freq := make([]float64, len(logits))
	for range n {
		id := s.Sample(logits, history)
		require.GreaterOrEqual(t, id, 0)
		require.Less(t, id, len(logits))
		freq[id]++
	}
	for i := range freq {
		freq[i] /= float64(n)
	}
	return freq
}

// refSoftmax of logits/T in float64, with ids outside keep set to zero and the
// rest renormalised.
func refSoftmax(logits []float32, temp float64, keep func(i int) bool) []float64 {
	p := make([]float64, len(logits))
	var sum float64
	for i, l := range logits {
		if keep == nil || keep(i) {
			p[i] = math.Exp(float64(l) / temp)
			sum += p[i]
		}
	}
	for i := range p {
		p[i] /= sum
	}
	return p
}

func TestSamplerDistribution(t *testing.T) {
	logits := []float32{2.0, 1.0, 0.5, 0.0, -1.0, 1.5, -0.5, 0.2}
	// Sorted by logit: 0 (2.0), 5 (1.5), 1 (1.0), 2 (0.5), 7 (0.2), 3, 6, 4.
	const n = 40000
	t1 := refSoftmax(logits, 1, nil)
	tests := []struct {
		name    string
		o       Options
		history []int
		want    []float64
	}{
		{"T=1 matches softmax", Options{Temperature: 1, Seed: 1}, nil, t1},
		{"T=0.5 sharpens", Options{Temperature: 0.5, Seed: 2}, nil, refSoftmax(logits, 0.5, nil)},
		{"T=2 flattens", Options{Temperature: 2, Seed: 3}, nil, refSoftmax(logits, 2, nil)},
		{"top-k 3", Options{Temperature: 1, TopK: 3, Seed: 4}, nil,
			refSoftmax(logits, 1, func(i int) bool { return i == 0 || i == 5 || i == 1 })},
		{"top-k larger than vocab", Options{Temperature: 1, TopK: 100, Seed: 5}, nil, t1},
		// Cumulative T=1 mass in order 0,5,1: .380, .611, .751 — top-p 0.6
		// needs two tokens, 0.65 three.
		{"top-p 0.6", Options{Temperature: 1, TopP: 0.6, Seed: 6}, nil,
			refSoftmax(logits, 1, func(i int) bool { return i == 0 || i == 5 })},
		{"top-p 0.65", Options{Temperature: 1, TopP: 0.65, Seed: 11}, nil,
			refSoftmax(logits, 1, func(i int) bool { return i == 0 || i == 5 || i == 1 })},
		{"top-p 0.3 keeps the best", Options{Temperature: 1, TopP: 0.3, Seed: 7}, nil,
			refSoftmax(logits, 1, func(i int) bool { return i == 0 })},
		// min-p 0.3: keep p >= 0.3*p0, i.e. logit >= 2+ln(0.3) = 0.796.
		{"min-p 0.3", Options{Temperature: 1, MinP: 0.3, Seed: 8}, nil,
			refSoftmax(logits, 1, func(i int) bool { return logits[i] >= 0.796 })},
		{"top-k then min-p", Options{Temperature: 1, TopK: 5, MinP: 0.5, Seed: 9}, nil,
			refSoftmax(logits, 1, func(i int) bool { return i == 0 || i == 5 })},
		{"repeat penalty", Options{Temperature: 1, RepeatPenalty: 4, Seed: 10}, []int{0, 0, 4},
			refSoftmax([]float32{0.5, 1.0, 0.5, 0.0, -4.0, 1.5, -0.5, 0.2}, 1, nil)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := drawFreq(t, tc.o, logits, tc.history, n)
			for i := range got {
				if tc.want[i] == 0 {
					assert.Zero(t, got[i], "id %d must be filtered out", i)
					continue
				}
				// Five standard deviations of a binomial proportion.
				tol := 5 * math.Sqrt(tc.want[i]*(1-tc.want[i])/n)
				assert.InDelta(t, tc.want[i], got[i], tol, "id %d", i)
			}
		})
	}
}

func TestSamplerSeedReproducible(t *testing.T) {
	logits := make([]float32, 300)
	for i := range logits {
		logits[i] = float32(math.Sin(float64(i) * 0.37))
	}
	seq := func(seed uint64) []int {
		s, err := New(Options{Temperature: 1.2, TopK: 50, TopP: 0.9, Seed: seed})
		require.NoError(t, err)
		out := make([]int, 64)
		for i := range out {
			out[i] = s.Sample(logits, out[:i])
		}
		return out
	}
	a, b, c := seq(42), seq(42), seq(43)
	assert.Equal(t, a, b, "same seed, same tokens")
	assert.NotEqual(t, a, c, "different seeds should differ")
}

func TestSamplerInfiniteLogit(t *testing.T) {
	s, err := New(Options{Temperature: 1})
	require.NoError(t, err)
	assert.Equal(t, 2, s.Sample([]float32{1, 2, float32(math.Inf(1)), 3}, nil))
	// Several: the lowest id, as the device sampler, whatever top-k keeps.
	inf := float32(math.Inf(1))
	s, err = New(Options{Temperature: 1, TopK: 2})
	require.NoError(t, err)
	assert.Equal(t, 1, s.Sample([]float32{1, inf, 2, inf, inf}, nil))
}

func TestSamplerNoAllocs(t *testing.T) {
	logits := make([]float32, 32000)
	for i := range logits {
		logits[i] = float32(math.Cos(float64(i)*0.01)) * 5
	}
	history := []int{1, 2, 3, 400, 5000}
	for _, o := range []Options{
		{},
		{RepeatPenalty: 1.3},
		{Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05, RepeatPenalty: 1.1},
		{Temperature: 1, TopP: 0.5},
	} {
		s, err := New(o)
		require.NoError(t, err)
		s.Sample(logits, history) // warm-up sizes the scratch buffers
		allocs := testing.AllocsPerRun(20, func() { s.Sample(logits, history) })
		assert.Zero(t, allocs, "%+v", o)
	}
}

func BenchmarkSampler(b *testing.B) {
	// Logits shaped like a language model's: Gaussian noise over the
	// DeepSeek-V3 vocabulary with a handful of clear favourites; and a flat
	// worst case where the nucleus holds most of the vocabulary.
	const vocab = 129280
	rng := rand.New(rand.NewPCG(1, 2))
	peaked := make([]float32, vocab)
	for i := range peaked {
		peaked[i] = float32(rng.NormFloat64() * 2.5)
	}
	for i := range 8 {
		peaked[rng.IntN(vocab)] = 14 - float32(i)
	}
	flat := make([]float32, vocab)
	for i := range flat {
		flat[i] = float32(math.Sin(float64(i)*0.001)*4 + math.Cos(float64(i)*0.37))
	}
	history := make([]int, 256)
	for i := range history {
		history[i] = i * 97
	}
	for _, bc := range []struct {
		name   string
		logits []float32
		o      Options
	}{
		{"greedy", peaked, Options{}},
		{"T0.8_topk40_topp0.95_rep1.1", peaked, Options{Temperature: 0.8, TopK: 40, TopP: 0.95, RepeatPenalty: 1.1}},
		{"T0.6_topp0.95", peaked, Options{Temperature: 0.6, TopP: 0.95}},
		{"T1_minp0.05", peaked, Options{Temperature: 1, MinP: 0.05}},
		{"T1", peaked, Options{Temperature: 1}},
		{"flat_T0.6_topp0.95", flat, Options{Temperature: 0.6, TopP: 0.95}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := New(bc.o)
			require.NoError(b, err)
			b.ReportAllocs()
			for b.Loop() {
				s.Sample(bc.logits, history)
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/token")
		})
	}
}

// nucleus (heap selection with growing k) must pick exactly what sorting
// every candidate picks.
func TestNucleusMatchesFullSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct {
		name  string
		n     int
		scale float64
	}{
		{"small vocab", 10, 1},
		{"peaked", 5000, 3},
		{"flat", 5000, 0.05},
		{"ties", 3000, 0},
	} {
		for _, tp := range []float64{0.1, 0.5, 0.9, 0.99} {
			probs := make([]float32, tc.n)
			idx := make([]int32, tc.n)
			var sum float64
			for i := range probs {
				probs[i] = float32(math.Exp(-math.Abs(rng.NormFloat64() * tc.scale)))
				if tc.name == "ties" {
					probs[i] = float32(1+i%3) / 4
				}
				idx[i] = int32(i)
				sum += float64(probs[i])
			}
			// Reference: sort all by probability (ties: lower id first).
			type cand struct {
				id int32
				p  float32
			}
			ref := make([]cand, tc.n)
			for i := range ref {
				ref[i] = cand{idx[i], probs[i]}
			}
			slices.SortFunc(ref, func(a, b cand) int {
				if a.p != b.p {
					return cmp.Compare(b.p, a.p)
				}
				return cmp.Compare(a.id, b.id)
			})
			target, acc, want := tp*sum, 0.0, 0
			for want < len(ref) {
				acc += float64(ref[want].p)
				want++
				if acc >= target {
					break
				}
			}
			s := &Sampler{}
			m := s.nucleus(idx, probs, target)
			require.Equal(t, want, m, "%s top-p %g", tc.name, tp)
			for i := range m {
				require.Equal(t, ref[i].id, idx[i], "%s top-p %g rank %d", tc.name, tp, i)
				require.Equal(t, ref[i].p, probs[i])
			}
		}
	}
}

// TestSamplerSurvivorsInIDOrder: whatever the filters, the draw walks the
// survivors in increasing id order (the device sampler's order, so a seed
// picks the same token on both), and each survivor keeps its probability.
func TestSamplerSurvivorsInIDOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(rand.Uint64(), 11))
	logits := make([]float32, 5000)
	for i := range logits {
		logits[i] = float32(r.NormFloat64() * 3)
	}
	for _, o := range []Options{
		{Temperature: 1}, {Temperature: 0.7, TopK: 50}, {Temperature: 1, TopP: 0.8},
		{Temperature: 1.2, TopK: 300, TopP: 0.9, MinP: 0.01},
	} {
		s, err := New(o)
		require.NoError(t, err)
		idx, probs, pick := s.survivors(logits)
		require.Equal(t, -1, pick)
		require.NotEmpty(t, idx)
		assert.True(t, slices.IsSorted(idx), "%+v: survivors not in id order", o)
		lmax := slices.Max(logits)
		for i, id := range idx {
			want := math.Exp(float64(logits[id]-lmax) / float64(o.Temperature))
			assert.InEpsilon(t, want, float64(probs[i]), 1e-5, "%+v id %d", o, id)
		}
		if o.TopK > 0 {
			assert.LessOrEqual(t, len(idx), o.TopK)
		}
	}
}
