// Package sample picks the next token from logits: greedy, or sampled
// with temperature, top-k, top-p, min-p and repetition, frequency and
// presence penalties, reproducibly for a seed. Its rules are the host twin
// of a backend's device sampler (kernels.DeviceSampler): the same options,
// logits and uniform variate pick the same token on either.
package sample

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/deepseek-go/deepseek-go/kernels"
	"github.com/deepseek-go/deepseek-go/kernels/cpu/simd"
)

// Options chooses how the next token is picked from the logits.
// The zero value is greedy decoding (argmax) without a repetition penalty.
//
// Filters are applied in the order transformers uses: repetition penalty on
// the raw logits, then temperature, top-k, top-p and min-p.
type Options struct {
	// Temperature divides the logits before the softmax; 0 means greedy.
	Temperature float32
	// TopK keeps only the K most likely tokens; 0 disables the filter.
	TopK int
	// TopP keeps the smallest set of most likely tokens whose probability
	// adds up to at least TopP (nucleus sampling); 0 or 1 disables it.
	TopP float32
	// MinP drops tokens whose probability is below MinP times that of the
	// most likely token; 0 disables it.
	MinP float32
	// RepeatPenalty > 1 discourages tokens that occur in the history:
	// positive logits are divided by it, negative ones multiplied (as in
	// transformers and llama.cpp); 0 or 1 disables it.
	RepeatPenalty float32
	// Seed makes sampling reproducible: the same seed, options and logits
	// give the same tokens.
	Seed uint64
	// FrequencyPenalty and PresencePenalty (OpenAI's, in [-2, 2]; 0 = off)
	// subtract count·FrequencyPenalty + PresencePenalty from the logit of
	// every id already generated (not the prompt's). Only the scheduler
	// applies them (Sampler.SampleGenerated).
	FrequencyPenalty, PresencePenalty float32
}

// Validate reports the first setting that is out of range.
func (o Options) Validate() error {
	for _, f := range []struct {
		name string
		v    float32
	}{{"frequency penalty", o.FrequencyPenalty}, {"presence penalty", o.PresencePenalty}} {
		if !(f.v >= -2 && f.v <= 2) { // NaN fails too
			return fmt.Errorf("%s must be in [-2, 2] (0 = off), got %g", f.name, f.v)
		}
	}
	return o.params().Validate()
}

// params are the settings a device sampler applies (all but the seed).
func (o Options) params() kernels.SampleParams {
	return kernels.SampleParams{Temperature: o.Temperature, TopK: o.TopK, TopP: o.TopP, MinP: o.MinP, RepeatPenalty: o.RepeatPenalty}
}

// Greedy reports whether the options pick the argmax token.
func (o Options) Greedy() bool { return o.Temperature == 0 }

// pcgStream is the second PCG word; fixed so that only Seed selects the
// sequence.
const pcgStream = 0x9e3779b97f4a7c15

// Sampler picks tokens from logits with its own random source. It is not
// safe for concurrent use: give each generation its own Sampler. Scratch
// buffers are kept between calls so sampling allocates nothing after the
// first token.
type Sampler struct {
	opts   Options
	rng    *rand.Rand
	work   []float32   // penalised copy of the logits
	probs  []float32   // unnormalised probabilities of the candidates
	idx    []int32     // candidate token ids, parallel to probs
	keyBuf []uint64    // sort keys for top-p
	counts map[int]int // generated-id counts (SampleGenerated)
}

// New validates o and returns a Sampler seeded with o.Seed.
func New(o Options) (*Sampler, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	return &Sampler{opts: o, rng: rand.New(rand.NewPCG(o.Seed, pcgStream))}, nil
}

// Options returns the options the sampler was made with.
func (s *Sampler) Options() Options { return s.opts }

// Sample returns the next token id for logits (one entry per vocabulary
// id). history holds the ids the repetition penalty applies to (the caller
// chooses the window, usually prompt and generated tokens); ids outside the
// vocabulary are ignored. logits is not modified. Sample returns -1 only
// when logits is empty.
func (s *Sampler) Sample(logits []float32, history []int) int {
	n := len(logits)
	if n == 0 {
		return -1
	}
	src := s.penalized(logits, history)
	if s.opts.Temperature == 0 {
		return Argmax(src)
	}
	return s.sample(src, s.rng.Float64())
}

// SampleGenerated is Sample where history[nPrompt:] are the ids generated
// so far, which the frequency and presence penalties apply to (the
// repetition penalty covers the whole history).
func (s *Sampler) SampleGenerated(logits []float32, history []int, nPrompt int) int {
	fp, pp := s.opts.FrequencyPenalty, s.opts.PresencePenalty
	if (fp == 0 && pp == 0) || nPrompt >= len(history) || len(logits) == 0 {
		return s.Sample(logits, history)
	}
	src := s.penalized(logits, history)
	if len(s.work) == 0 || &src[0] != &s.work[0] { // penalized returned logits itself
		s.work = samplerGrow(s.work, len(logits))
		copy(s.work, logits)
		src = s.work
	}
	if s.counts == nil {
		s.counts = map[int]int{}
	}
	clear(s.counts)
	for _, id := range history[nPrompt:] {
		if id >= 0 && id < len(src) {
			s.counts[id]++
		}
	}
	for id, c := range s.counts {
		src[id] -= float32(c)*fp + pp
	}
	if s.opts.Temperature == 0 {
		return Argmax(src)
	}
	return s.sample(src, s.rng.Float64())
}

// Pick applies p's rules to logits with the repetition penalty over
// history and the uniform variate u (ignored when greedy): what a
// kernels.DeviceSampler must return for the same arguments.
func Pick(logits []float32, history []int, p kernels.SampleParams, u float64) int {
	s := &Sampler{opts: Options{Temperature: p.Temperature, TopK: p.TopK, TopP: p.TopP, MinP: p.MinP, RepeatPenalty: p.RepeatPenalty}}
	src := s.penalized(logits, history)
	if s.opts.Greedy() {
		return Argmax(src)
	}
	return s.sample(src, u)
}

// Candidates lists the ids s could return for logits and history: the
// survivors of every filter, or the one forced pick (tests of device
// samplers check their picks against it).
func (s *Sampler) Candidates(logits []float32, history []int) map[int]bool {
	src := s.penalized(logits, history)
	ok := map[int]bool{}
	if s.opts.Greedy() {
		ok[Argmax(src)] = true
		return ok
	}
	idx, _, pick := s.survivors(src)
	if pick >= 0 {
		ok[pick] = true
	}
	for _, id := range idx {
		ok[int(id)] = true
	}
	return ok
}

// DeviceArgs returns the settings and the uniform variate for a backend
// that samples on the device. It draws from the same generator as Sample
// (one variate per sampled token, none when greedy), so a seed gives the
// same tokens on either path for the same logits.
func (s *Sampler) DeviceArgs() (kernels.SampleParams, float64) {
	if s.opts.Greedy() {
		return s.opts.params(), 0
	}
	return s.opts.params(), s.rng.Float64()
}

// penalized returns logits with the repetition penalty applied to the ids in
// history (a reused copy), or logits itself when the penalty is off.
func (s *Sampler) penalized(logits []float32, history []int) []float32 {
	p := s.opts.RepeatPenalty
	if p == 0 || p == 1 || len(history) == 0 {
		return logits
	}
	n := len(logits)
	s.work = samplerGrow(s.work, n)
	copy(s.work, logits)
	for _, id := range history {
		if id < 0 || id >= n {
			continue
		}
		// Read from the original logits so a repeated id is penalised
		// once, as transformers' gather/scatter does.
		if l := logits[id]; l > 0 {
			s.work[id] = l / p
		} else {
			s.work[id] = l * p
		}
	}
	return s.work
}

// Argmax returns the first index of the largest value, skipping NaN
// (index 0 when every value is NaN).
func Argmax(x []float32) int {
	// Every value -Inf or NaN: nothing beats the start, and index 0 is the
	// first of equals.
	best, bi := float32(math.Inf(-1)), 0
	for i, v := range x {
		if v > best {
			best, bi = v, i
		}
	}
	return bi
}

// sample draws with the uniform variate u in [0, 1): an inverse-CDF walk
// over the surviving candidates in id order (the device sampler's order).
func (s *Sampler) sample(logits []float32, u float64) int {
	idx, probs, pick := s.survivors(logits)
	if pick >= 0 {
		return pick
	}
	// Sum the survivors exactly as the draw below walks them, so the
	// draw always lands on a candidate.
	sum := 0.0
	for _, p := range probs {
		sum += float64(p)
	}
	u *= sum
	for i, p := range probs {
		u -= float64(p)
		if u < 0 {
			return int(idx[i])
		}
	}
	// Rounding left u at or just above zero: take the last candidate.
	return int(idx[len(idx)-1])
}

// survivors applies top-k, temperature, top-p and min-p to the (penalised)
// logits and returns the remaining ids in increasing order with their
// unnormalised probabilities, or pick >= 0 when no draw is needed (no
// candidate: 0; an infinite logit: the lowest such id).
func (s *Sampler) survivors(logits []float32) (idx []int32, probs []float32, pick int) {
	n := len(logits)
	s.idx = samplerGrow(s.idx, n)
	s.probs = samplerGrow(s.probs, n)
	idx = s.idx[:0]
	negInf := float32(math.Inf(-1))
	for i, v := range logits {
		if v > negInf { // false for NaN and -Inf: neither can be sampled
			idx = append(idx, int32(i))
		}
	}
	if len(idx) == 0 {
		return nil, nil, 0
	}
	if k := s.opts.TopK; k > 0 && k < len(idx) {
		idx = samplerTopK(idx, logits, k)
	}
	lmax := float32(math.Inf(-1))
	for _, id := range idx {
		// Not the max builtin: its NaN and signed-zero rules make it several
		// times slower, and NaN is already filtered out.
		if v := logits[id]; v > lmax {
			lmax = v
		}
	}
	if math.IsInf(float64(lmax), 1) {
		// An infinite logit takes all the probability mass; the lowest id
		// among several (top-k keeps them all).
		for i, v := range logits {
			if math.IsInf(float64(v), 1) {
				return nil, nil, i
			}
		}
	}
	invT := 1 / s.opts.Temperature
	probs = s.probs[:len(idx)]
	for i, id := range idx {
		probs[i] = (logits[id] - lmax) * invT
	}
	// Vectorised e^x (2e-6 relative error; values below e^-87 become
	// ~1e-38 rather than 0, a probability no draw can tell apart).
	sum := float64(simd.Best.ExpSub(probs, 0))
	reordered := s.opts.TopK > 0 && s.opts.TopK < n
	if tp := s.opts.TopP; tp > 0 && tp < 1 {
		// Tokens with probability below (1-tp)/m together hold less than
		// 1-tp of the mass, so the nucleus never needs them: dropping them
		// first keeps this exact and cheap for large vocabularies.
		cut := float32((1 - float64(tp)) / float64(len(idx)) * sum)
		idx, probs = samplerKeep(idx, probs, cut)
		m := s.nucleus(idx, probs, float64(tp)*sum)
		idx, probs = idx[:m], probs[:m]
		reordered = true
	}
	if mp := s.opts.MinP; mp > 0 {
		var pmax float32
		for _, p := range probs {
			if p > pmax {
				pmax = p
			}
		}
		idx, probs = samplerKeep(idx, probs, mp*pmax)
	}
	if reordered {
		s.byID(idx, probs)
	}
	return idx, probs, -1
}

// byID sorts the candidates by id (top-k and top-p leave them in heap and
// probability order), so the draw walks them in the same order as the
// device sampler.
func (s *Sampler) byID(idx []int32, probs []float32) {
	keys := s.keys(len(idx))
	for i, id := range idx {
		keys[i] = uint64(id)<<32 | uint64(math.Float32bits(probs[i]))
	}
	slices.Sort(keys)
	for i, k := range keys {
		idx[i], probs[i] = int32(k>>32), math.Float32frombits(uint32(k))
	}
}

// samplerKeep compacts the candidates to those with probability >= cut,
// preserving order.
func samplerKeep(idx []int32, probs []float32, cut float32) ([]int32, []float32) {
	m := 0
	for i, p := range probs {
		if p >= cut {
			idx[m], probs[m] = idx[i], p
			m++
		}
	}
	return idx[:m], probs[:m]
}

// nucleus moves the smallest set of most likely candidates whose
// probabilities add up to target to the front of idx and probs, most likely
// first (ties: lowest id), and returns its size. Candidates are packed into
// uint64 keys (non-negative floats' bits order like their values; the
// inverted id in the low word ranks lower ids first among ties). Instead of
// sorting them all it selects the top k with a heap for k = 64, 256, ...
// until they hold the target mass, then sorts only those: the nucleus of a
// real model's distribution is usually a few dozen tokens.
func (s *Sampler) nucleus(idx []int32, probs []float32, target float64) int {
	n := len(idx)
	keys := s.keys(n)
	for i, p := range probs {
		keys[i] = uint64(math.Float32bits(p))<<32 | uint64(^uint32(idx[i]))
	}
	for k := min(64, n); ; k = min(4*k, n) {
		if k < n {
			selectTopKeys(keys, k)
		}
		top := keys[:k]
		var mass float64
		for _, key := range top {
			mass += float64(math.Float32frombits(uint32(key >> 32)))
		}
		if mass < target && k < n {
			continue
		}
		slices.Sort(top) // ascending: walk it from the end
		m, acc := k, 0.0
		for i := range top {
			key := top[k-1-i]
			p := math.Float32frombits(uint32(key >> 32))
			idx[i], probs[i] = int32(^uint32(key)), p
			acc += float64(p)
			if acc >= target {
				m = i + 1
				break
			}
		}
		return m
	}
}

// selectTopKeys reorders keys so that keys[:k] hold its k largest values
// (in heap order), with a min-heap over the front; every key stays in the
// slice.
func selectTopKeys(keys []uint64, k int) {
	h := keys[:k]
	down := func(i int) {
		for {
			c := 2*i + 1
			if c >= k {
				return
			}
			if c+1 < k && h[c+1] < h[c] {
				c++
			}
			if h[i] <= h[c] {
				return
			}
			h[i], h[c] = h[c], h[i]
			i = c
		}
	}
	for i := k/2 - 1; i >= 0; i-- {
		down(i)
	}
	for j := k; j < len(keys); j++ {
		if keys[j] > h[0] {
			h[0], keys[j] = keys[j], h[0]
			down(0)
		}
	}
}

func (s *Sampler) keys(n int) []uint64 {
	if cap(s.keyBuf) < n {
		s.keyBuf = make([]uint64, n)
	}
	return s.keyBuf[:n]
}

// samplerTopK moves the k candidates with the largest logits (ties: lowest id) to
// the front of idx using a size-k min-heap, O(n log k) without allocation.
func samplerTopK(idx []int32, logits []float32, k int) []int32 {
	less := func(a, b int32) bool { // a ranks below b
		la, lb := logits[a], logits[b]
		return la < lb || (la == lb && a > b)
	}
	h := idx[:k]
	down := func(i int) {
		for {
			c := 2*i + 1
			if c >= k {
				return
			}
			if c+1 < k && less(h[c+1], h[c]) {
				c++
			}
			if !less(h[c], h[i]) {
				return
			}
			h[i], h[c] = h[c], h[i]
			i = c
		}
	}
	for i := k/2 - 1; i >= 0; i-- {
		down(i)
	}
	// The heap's minimum is kept in locals so the common case (a token that
	// does not make the top k) is one inline comparison.
	minID := h[0]
	minL := logits[minID]
	for _, id := range idx[k:] {
		if l := logits[id]; l > minL || (l == minL && id < minID) {
			h[0] = id
			down(0)
			minID = h[0]
			minL = logits[minID]
		}
	}
	return h
}

// samplerGrow returns b resized to n, reallocating only when it is too small.
func samplerGrow[T any](b []T, n int) []T {
	if cap(b) < n {
		return make([]T, n)
	}
	return b[:n]
}
