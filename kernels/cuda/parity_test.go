//go:build linux && cgo

package cuda

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/x448/float16"

	"github.com/deepseek-go/deepseek-go/kernels"
	"github.com/deepseek-go/deepseek-go/kernels/cpu"
)

// Tolerances of the brief: float32 paths 1e-4, 16-bit paths 1e-2 (relative
// L2 error against the CPU reference backend).
const (
	tolF32 = 1e-4
	tol16  = 1e-2
)

// newGPU opens a backend for a test or benchmark, or skips it without a
// GPU.
func newGPU(t testing.TB, opts Options) *Backend {
	t.Helper()
	if err := Available(); err != nil {
		t.Skipf("no GPU: %v", err)
	}
	b, err := New(opts)
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	return b
}

func randVec(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

func hostMatrix(name string, w []float32, rows, cols int, dt kernels.DType) kernels.HostMatrix {
	h := kernels.HostMatrix{Name: name, Rows: rows, Cols: cols, DType: dt, Data: make([]byte, rows*cols*dt.Size())}
	for i, v := range w {
		switch dt {
		case kernels.F32:
			binary.LittleEndian.PutUint32(h.Data[4*i:], math.Float32bits(v))
		case kernels.BF16:
			binary.LittleEndian.PutUint16(h.Data[2*i:], uint16(math.Float32bits(v)>>16))
		case kernels.F16:
			binary.LittleEndian.PutUint16(h.Data[2*i:], float16.Fromfloat32(v).Bits())
		}
	}
	return h
}

func relErr(got, want []float32) float64 {
	var d, n float64
	for i := range want {
		e := float64(got[i]) - float64(want[i])
		if math.IsNaN(float64(got[i])) {
			return math.Inf(1)
		}
		d += e * e
		n += float64(want[i]) * float64(want[i])
	}
	if n == 0 {
		return math.Sqrt(d)
	}
	return math.Sqrt(d / n)
}

// kvTol is the tolerance of attention over caches of dt.
func kvTol(dt kernels.DType) float64 {
	if dt == kernels.F16 {
		return tol16
	}
	return tolF32
}

// int8Reference is what the CPU reference runs for parts the GPU quantises
// to int8 at upload: their int8 values per row, dequantised to f32.
func int8Reference(t *testing.T, hs []kernels.HostMatrix) []kernels.HostMatrix {
	q, err := quantizeParts(hs)
	require.NoError(t, err)
	var deq []kernels.HostMatrix
	for _, p := range q {
		f := make([]float32, p.Rows*p.Cols)
		for i := range f {
			f[i] = float32(int8(p.Data[i])) * p.Scales[i/p.Cols]
		}
		deq = append(deq, hostMatrix(p.Name, f, p.Rows, p.Cols, kernels.F32))
	}
	return deq
}

// miniModel is the weights of the captured-step tests' miniature decode
// step: bf16 embeddings, fused QKV and output projection, and rope.
type miniModel struct {
	t              *testing.T
	emb, qkv, head kernels.Matrix
	rope           *kernels.Rope
	heads, kvh, hd int
}

func newMiniModel(t *testing.T, g *Backend, rnd *rand.Rand, vocab, dim, heads, kvh, hd int) *miniModel {
	up := func(name string, r, c int) kernels.HostMatrix {
		return hostMatrix(name, randVec(rnd, r*c), r, c, kernels.BF16)
	}
	mm := &miniModel{t: t, heads: heads, kvh: kvh, hd: hd}
	var err error
	mm.emb, err = g.UploadMatrix([]kernels.HostMatrix{up("emb", vocab, dim)}, false)
	require.NoError(t, err)
	mm.qkv, err = g.UploadMatrix([]kernels.HostMatrix{up("q", heads*hd, dim), up("k", kvh*hd, dim), up("v", kvh*hd, dim)}, false)
	require.NoError(t, err)
	mm.head, err = g.UploadMatrix([]kernels.HostMatrix{up("o", vocab, heads*hd)}, false)
	require.NoError(t, err)
	freqs := make([]float32, hd/2)
	for i := range freqs {
		freqs[i] = float32(math.Pow(10000, -2*float64(i)/float64(hd)))
	}
	mm.rope = &kernels.Rope{Dim: hd, InvFreq: freqs, Scale: 1}
	return mm
}

// miniActs are the activations of one miniature step.
type miniActs struct{ x, q, k, v, o, lg kernels.Buffer }

// acts allocates a step's activations, n floats each.
func (mm *miniModel) acts(g *Backend, n int) miniActs {
	var a miniActs
	for _, p := range []*kernels.Buffer{&a.x, &a.q, &a.k, &a.v, &a.o, &a.lg} {
		var err error
		*p, err = g.Alloc(n)
		require.NoError(mm.t, err)
	}
	return a
}

// in embeds ids and projects them to q, k and v; it returns the row count.
func (mm *miniModel) in(be kernels.Backend, a miniActs, ids []int32) int {
	n := len(ids)
	be.Embed(a.x, mm.emb, ids)
	be.MatMul([]kernels.Buffer{a.q, a.k, a.v}, a.x, n, mm.qkv, nil)
	return n
}

// out projects the attention output o of n rows to logits lg.
func (mm *miniModel) out(be kernels.Backend, a miniActs, n int) {
	be.MatMul([]kernels.Buffer{a.lg}, a.o, n, mm.head, nil)
}

// pair holds the same buffer on the GPU and on the CPU reference.
type pair struct {
	g, c kernels.Buffer
	n    int
}

type rig struct {
	t   *testing.T
	g   *Backend
	c   *cpu.Backend
	rnd *rand.Rand
}

func newRig(t *testing.T, opts Options) *rig {
	g := newGPU(t, opts)
	c := cpu.New(1)
	t.Cleanup(func() { c.Close() })
	return &rig{t: t, g: g, c: c, rnd: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}
}

// kvPair makes a KV cache of spec on each backend.
func (r *rig) kvPair(spec kernels.KVSpec) (g, c kernels.KVCache) {
	g, err := r.g.NewKVCache(spec)
	require.NoError(r.t, err)
	c, err = r.c.NewKVCache(spec)
	require.NoError(r.t, err)
	return g, c
}

// rand makes a buffer of fresh random values on both backends.
func (r *rig) rand(n int) pair {
	v := randVec(r.rnd, n)
	return r.from(v)
}

func (r *rig) from(v []float32) pair {
	gb, err := r.g.Alloc(len(v))
	require.NoError(r.t, err)
	cb, err := r.c.Alloc(len(v))
	require.NoError(r.t, err)
	require.NoError(r.t, r.g.Upload(gb, 0, v))
	require.NoError(r.t, r.c.Upload(cb, 0, v))
	return pair{gb, cb, len(v)}
}

// poisoned makes an output buffer filled with NaN on the GPU (so unwritten
// elements fail) and zeros on the CPU.
func (r *rig) poisoned(n int) pair {
	nan := make([]float32, n)
	for i := range nan {
		nan[i] = float32(math.NaN())
	}
	p := r.from(make([]float32, n))
	require.NoError(r.t, r.g.Upload(p.g, 0, nan))
	return p
}

func (r *rig) get(p pair, n int) (got, want []float32) {
	got, want = make([]float32, n), make([]float32, n)
	require.NoError(r.t, r.g.Download(got, p.g, 0))
	require.NoError(r.t, r.c.Download(want, p.c, 0))
	return got, want
}

func (r *rig) check(name string, p pair, n int, tol float64) {
	r.t.Helper()
	got, want := r.get(p, n)
	for i, v := range got {
		if math.IsNaN(float64(v)) && !math.IsNaN(float64(want[i])) {
			r.t.Fatalf("%s: element %d not written (NaN)", name, i)
		}
	}
	e := relErr(got, want)
	assert.LessOrEqual(r.t, e, tol, "%s: relative error %.3g", name, e)
	r.t.Logf("%s: rel err %.2e", name, e)
}

func TestMatMulParity(t *testing.T) {
	for _, lt := range []bool{true, false} {
		r := newRig(t, Options{NoCublasLt: !lt})
		if has, _ := r.g.CublasLt(); lt && !has {
			t.Logf("cuBLASLt not found; testing the built-in GEMM only")
			continue
		}
		for _, dt := range []kernels.DType{kernels.F32, kernels.F16, kernels.BF16} {
			for _, shape := range []struct {
				parts []int
				cols  int
				bias  bool
			}{
				{[]int{96}, 64, false},
				{[]int{48, 16, 32}, 128, true}, // fused QKV with bias
				{[]int{172, 172}, 64, false},   // fused gate|up
				{[]int{64}, 172, false},        // odd width: scalar path
				{[]int{1000}, 1024, true},
			} {
				for _, n := range []int{1, 3, 8, 17, 130} {
					name := fmt.Sprintf("lt=%v/%v/%v×%d/bias=%v/n=%d", lt, dt, shape.parts, shape.cols, shape.bias, n)
					rows := 0
					var hs []kernels.HostMatrix
					for i, pr := range shape.parts {
						hs = append(hs, hostMatrix(fmt.Sprintf("w%d", i), randVec(r.rnd, pr*shape.cols), pr, shape.cols, dt))
						rows += pr
					}
					gw, err := r.g.UploadMatrix(hs, false)
					require.NoError(t, err, name)
					cw, err := r.c.UploadMatrix(hs, false)
					require.NoError(t, err, name)
					x := r.rand(n * shape.cols)
					var bias pair
					var gb, cb kernels.Buffer
					if shape.bias {
						bias = r.rand(rows)
						gb, cb = bias.g, bias.c
					}
					var outs []pair
					var gouts, couts []kernels.Buffer
					for _, pr := range shape.parts {
						o := r.poisoned(n * pr)
						outs = append(outs, o)
						gouts = append(gouts, o.g)
						couts = append(couts, o.c)
					}
					r.g.MatMul(gouts, x.g, n, gw, gb)
					r.c.MatMul(couts, x.c, n, cw, cb)
					tol := tolF32
					if dt != kernels.F32 && n > 8 && (lt || shape.cols%8 == 0) {
						tol = tol16 // tensor-core GEMMs (cuBLASLt or ours) on activations rounded to 16 bits
					}
					for i, o := range outs {
						r.check(fmt.Sprintf("%s/part%d", name, i), o, n*shape.parts[i], tol)
					}
				}
			}
		}
	}
}

func TestAttentionParity(t *testing.T) {
	// f16 prefill runs flash_fwd (head dims 16, 32) or flash2_fwd (64, 128).
	for _, o := range []Options{{KVDType: kernels.F32}, {KVDType: kernels.F16}} {
		kvdt := o.KVDType
		r := newRig(t, o)
		tol := kvTol(kvdt)
		for _, c := range []struct {
			heads, kvh, kd int
			steps          []int // tokens per call: prefill then decode
		}{
			{4, 4, 16, []int{11, 1, 1, 3}},
			{8, 4, 8, []int{5, 1, 20, 1}},
			{4, 2, 16, []int{100, 1}},
			{32, 8, 128, []int{300, 1, 1, 17}},
			{16, 16, 64, []int{129, 1}},
			{8, 1, 128, []int{70, 1}},
			{4, 4, 32, []int{600, 1}}, // several split-KV chunks
		} {
			total := 0
			for _, s := range c.steps {
				total += s
			}
			spec := kernels.KVSpec{Layers: 2, MaxTokens: total + 5, KVHeads: c.kvh, KDim: c.kd, VDim: c.kd}
			gc, cc := r.kvPair(spec)
			scale := float32(1 / math.Sqrt(float64(c.kd)))
			pos := 0
			for si, n := range c.steps {
				for layer := 0; layer < 2; layer++ {
					q := r.rand(n * c.heads * c.kd)
					k := r.rand(n * c.kvh * c.kd)
					v := r.rand(n * c.kvh * c.kd)
					out := r.poisoned(n * c.heads * c.kd)
					r.g.Attention(out.g, q.g, k.g, v.g, gc, layer, pos, n, c.heads, scale)
					r.c.Attention(out.c, q.c, k.c, v.c, cc, layer, pos, n, c.heads, scale)
					r.check(fmt.Sprintf("kv=%v h=%d/%d d=%d step%d n=%d pos=%d layer%d", kvdt, c.heads, c.kvh, c.kd, si, n, pos, layer),
						out, n*c.heads*c.kd, tol)
				}
				pos += n
			}
		}
	}
}

func TestAttentionVInK(t *testing.T) {
	r := newRig(t, Options{KVDType: kernels.F32})
	spec := kernels.KVSpec{Layers: 1, MaxTokens: 40, KVHeads: 1, KDim: 24, VDim: 16, VInK: true}
	gc, cc := r.kvPair(spec)
	pos := 0
	for _, n := range []int{9, 1, 1} {
		q := r.rand(n * 8 * 24)
		k := r.rand(n * 24)
		o := r.poisoned(n * 8 * 16)
		r.g.Attention(o.g, q.g, k.g, nil, gc, 0, pos, n, 8, 0.3)
		r.c.Attention(o.c, q.c, k.c, nil, cc, 0, pos, n, 8, 0.3)
		r.check(fmt.Sprintf("vink n=%d", n), o, n*8*16, tolF32)
		pos += n
	}
}

func TestRopeParity(t *testing.T) {
	r := newRig(t, Options{})
	for _, c := range []struct {
		heads, hd, off, dim, pos0, n int
		inter                        bool
		scale                        float32
	}{
		{4, 16, 0, 16, 0, 7, false, 1},
		{8, 128, 0, 128, 1000, 3, false, 1},
		{4, 192, 128, 64, 37, 5, true, 1.3}, // MLA: rope part after the nope part
		{2, 64, 0, 32, 5000, 2, false, 1},   // partial rotary
	} {
		freqs := make([]float32, c.dim/2)
		for i := range freqs {
			freqs[i] = float32(math.Pow(10000, -2*float64(i)/float64(c.dim)))
		}
		rp := &kernels.Rope{Off: c.off, Dim: c.dim, InvFreq: freqs, Scale: c.scale, Interleaved: c.inter}
		x := r.rand(c.n * c.heads * c.hd)
		r.g.ApplyRope(x.g, c.n, c.heads, c.hd, c.pos0, rp)
		r.c.ApplyRope(x.c, c.n, c.heads, c.hd, c.pos0, rp)
		r.check(fmt.Sprintf("rope %+v", c), x, x.n, tolF32)
	}
}

func TestElementwiseParity(t *testing.T) {
	r := newRig(t, Options{})
	for _, n := range []int{1, 1000, 70001} {
		a, b := r.rand(n), r.rand(n)
		o := r.poisoned(n)
		r.g.SwiGLU(o.g, a.g, b.g, n)
		r.c.SwiGLU(o.c, a.c, b.c, n)
		r.check(fmt.Sprintf("swiglu %d", n), o, n, tolF32)
		o2 := r.poisoned(n)
		r.g.Add(o2.g, a.g, b.g, n)
		r.c.Add(o2.c, a.c, b.c, n)
		r.check(fmt.Sprintf("add %d", n), o2, n, tolF32)
		r.g.Add(a.g, a.g, b.g, n) // aliasing
		r.c.Add(a.c, a.c, b.c, n)
		r.check(fmt.Sprintf("add alias %d", n), a, n, tolF32)
	}
	y, x := r.rand(500), r.rand(500)
	r.g.Axpy(y.g, 100, x.g, 7, 0.75, 300)
	r.c.Axpy(y.c, 100, x.c, 7, 0.75, 300)
	r.check("axpy", y, 500, tolF32)
	d, s := r.poisoned(30*40), r.rand(50*60)
	// Fill what Copy2D does not write so the poison check covers only its part.
	r.g.Copy2D(d.g, 0, 40, s.g, 0, 60, 30, 40)
	r.c.Copy2D(d.c, 0, 40, s.c, 0, 60, 30, 40)
	r.g.Copy2D(d.g, 5, 40, s.g, 61, 60, 20, 30)
	r.c.Copy2D(d.c, 5, 40, s.c, 61, 60, 20, 30)
	r.check("copy2d", d, 30*40, tolF32)
	for _, dim := range []int{64, 4096, 5000} {
		n := 3
		x, w := r.rand(n*dim), r.rand(dim)
		o := r.poisoned(n * dim)
		r.g.RMSNorm(o.g, x.g, w.g, n, dim, 1e-6)
		r.c.RMSNorm(o.c, x.c, w.c, n, dim, 1e-6)
		r.check(fmt.Sprintf("rmsnorm %d", dim), o, n*dim, tolF32)
	}
}

func TestEmbedParity(t *testing.T) {
	r := newRig(t, Options{})
	for _, dt := range []kernels.DType{kernels.F32, kernels.F16, kernels.BF16} {
		h := hostMatrix("emb", randVec(r.rnd, 100*48), 100, 48, dt)
		gw, err := r.g.UploadMatrix([]kernels.HostMatrix{h}, false)
		require.NoError(t, err)
		cw, err := r.c.UploadMatrix([]kernels.HostMatrix{h}, false)
		require.NoError(t, err)
		ids := []int32{5, 0, 99, 5, 42}
		o := r.poisoned(len(ids) * 48)
		r.g.Embed(o.g, gw, ids)
		r.c.Embed(o.c, cw, ids)
		r.check(fmt.Sprintf("embed %v", dt), o, len(ids)*48, 0)
	}
	// A bad id is an error at the next Download, not a crash.
	h := hostMatrix("emb", randVec(r.rnd, 10*8), 10, 8, kernels.F32)
	g2 := newGPU(t, Options{})
	gw, err := g2.UploadMatrix([]kernels.HostMatrix{h}, false)
	require.NoError(t, err)
	o, err := g2.Alloc(8)
	require.NoError(t, err)
	g2.Embed(o, gw, []int32{10})
	err = g2.Download(make([]float32, 8), o, 0)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "token id 10")
}

// TestSampleGreedy: Sample with temperature 0 is the argmax (first index of
// the largest, NaN never chosen) of the penalised logits; engine's
// TestDeviceSampler checks the sampled paths against the host Sampler.
func TestSampleGreedy(t *testing.T) {
	g := newGPU(t, Options{})
	rnd := rand.New(rand.NewPCG(rand.Uint64(), 3))
	for _, n := range []int{1, 7, 1000, 102400} {
		v := randVec(rnd, n+10)
		best := 10 + rnd.IntN(n)
		v[best] = 100
		if n > 2 {
			v[10] = float32(math.NaN())
			if best == 10 {
				v[11] = 100 // a tie after the NaN: the lower index wins
				best = 11
			}
		}
		buf, err := g.Alloc(len(v))
		require.NoError(t, err)
		require.NoError(t, g.Upload(buf, 0, v))
		id, err := g.Sample(buf, 10, n, nil, kernels.SampleParams{}, 0)
		require.NoError(t, err)
		assert.Equal(t, best-10, id, "n=%d", n)
		if n > 2 {
			// A penalty of 1e3 on the winner (and on ids outside the row, which
			// are ignored) hands the win to the runner-up.
			second := -1
			for i := 10; i < n+10; i++ {
				if i != best && v[i] == v[i] && (second < 0 || v[i] > v[second]) {
					second = i
				}
			}
			id, err = g.Sample(buf, 10, n, []int{best - 10, -5, n + 3}, kernels.SampleParams{RepeatPenalty: 1e3}, 0)
			require.NoError(t, err)
			assert.Equal(t, second-10, id, "n=%d with penalty", n)
		}
	}
	// Nothing to choose (all NaN or -Inf): id 0, as the host.
	none, _ := g.Alloc(4)
	require.NoError(t, g.Upload(none, 0, []float32{float32(math.NaN()), float32(math.Inf(-1)), float32(math.NaN()), float32(math.Inf(-1))}))
	for _, temp := range []float32{0, 1} {
		id, err := g.Sample(none, 0, 4, nil, kernels.SampleParams{Temperature: temp}, 0.5)
		require.NoError(t, err)
		assert.Equal(t, 0, id)
	}
	// Ties: lowest index.
	buf, _ := g.Alloc(5)
	require.NoError(t, g.Upload(buf, 0, []float32{1, 3, 2, 3, 3}))
	id, err := g.Sample(buf, 0, 5, nil, kernels.SampleParams{}, 0)
	require.NoError(t, err)
	assert.Equal(t, 1, id)
	_, err = g.Sample(buf, 0, 5, nil, kernels.SampleParams{TopP: 2}, 0)
	assert.ErrorContains(t, err, "top-p")
	_, err = g.Sample(buf, 3, 5, nil, kernels.SampleParams{}, 0)
	assert.ErrorContains(t, err, "buffer of 5")
}

// TestCapturedStep runs a miniature decode step (embed, fused QKV, rope,
// attention, output projection, argmax) captured as a graph and replayed at
// later positions, against the same ops issued directly.
func TestCapturedStep(t *testing.T) {
	for _, kvdt := range []kernels.DType{kernels.F32, kernels.F16} {
		g := newGPU(t, Options{KVDType: kvdt})
		rnd := rand.New(rand.NewPCG(rand.Uint64(), 5))
		const vocab, dim, heads, kvh, hd = 50, 64, 4, 2, 16
		mm := newMiniModel(t, g, rnd, vocab, dim, heads, kvh, hd)
		spec := kernels.KVSpec{Layers: 1, MaxTokens: 600, KVHeads: kvh, KDim: hd, VDim: hd}
		type state struct {
			cache kernels.KVCache
			miniActs
		}
		mk := func() *state {
			s := &state{miniActs: mm.acts(g, vocab*64)}
			var err error
			s.cache, err = g.NewKVCache(spec)
			require.NoError(t, err)
			return s
		}
		step := func(be kernels.Backend, s *state, ids []int32, pos int) {
			n := mm.in(be, s.miniActs, ids)
			be.ApplyRope(s.q, n, heads, hd, pos, mm.rope)
			be.ApplyRope(s.k, n, kvh, hd, pos, mm.rope)
			be.Attention(s.o, s.q, s.k, s.v, s.cache, 0, pos, n, heads, 0.25)
			mm.out(be, s.miniActs, n)
		}
		direct, graphed := mk(), mk()
		prompt := []int32{3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 3, 2, 38, 46, 26, 43, 38, 32, 27}
		step(g, direct, prompt, 0)
		step(g, graphed, prompt, 0)
		id := int32(11)
		var sg *StepGraph
		for pos := len(prompt); pos < len(prompt)+300; pos++ {
			step(g, direct, []int32{id}, pos)
			if sg == nil {
				var err error
				sg, err = g.CaptureStep(int(id), pos, spec.MaxTokens, func(be kernels.Backend) error {
					step(be, graphed, []int32{id}, pos)
					return nil
				})
				require.NoError(t, err)
				defer sg.Close()
			} else {
				require.NoError(t, sg.Replay(int(id), pos))
			}
			want, got := make([]float32, vocab), make([]float32, vocab)
			require.NoError(t, g.Download(want, direct.lg, 0))
			require.NoError(t, g.Download(got, graphed.lg, 0))
			e := relErr(got, want)
			require.LessOrEqual(t, e, 1e-5, "kv %v pos %d", kvdt, pos)
			a, err := g.Sample(graphed.lg, 0, vocab, nil, kernels.SampleParams{}, 0)
			require.NoError(t, err)
			id = int32(a)
		}
	}
}

func TestUnsupportedIsAnError(t *testing.T) {
	g := newGPU(t, Options{})
	_, err := g.UploadMatrix([]kernels.HostMatrix{{Name: "w", Rows: 2, Cols: 2, DType: kernels.BF16, Data: make([]byte, 3)}}, false)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "w")
	_, err = g.UploadMatrix([]kernels.HostMatrix{{Name: "q", Rows: 2, Cols: 2, DType: kernels.Int8, Data: make([]byte, 4)}}, false)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "scales")
}

// TestInt8Parity: weights quantised per row to int8 at upload (as the
// engine's WithInt8 asks) against the CPU running the dequantised values in
// f32 (activations stay f32 on the GPU, so the bound is the f32 one).
func TestInt8Parity(t *testing.T) {
	r := newRig(t, Options{})
	for _, dt := range []kernels.DType{kernels.F32, kernels.BF16} {
		for _, sh := range []struct {
			parts []int
			cols  int
		}{{[]int{64, 32, 32}, 128}, {[]int{100}, 172}, {[]int{300}, 1024}} {
			var hs []kernels.HostMatrix
			for i, pr := range sh.parts {
				hs = append(hs, hostMatrix(fmt.Sprintf("w%d", i), randVec(r.rnd, pr*sh.cols), pr, sh.cols, dt))
			}
			deq := int8Reference(t, hs)
			gw, err := r.g.UploadMatrix(hs, true)
			require.NoError(t, err)
			require.Equal(t, kernels.Int8, gw.DType())
			cw, err := r.c.UploadMatrix(deq, false)
			require.NoError(t, err)
			for _, n := range []int{1, 3, 17} {
				x := r.rand(n * sh.cols)
				var outs []pair
				var gouts, couts []kernels.Buffer
				for _, pr := range sh.parts {
					o := r.poisoned(n * pr)
					outs = append(outs, o)
					gouts, couts = append(gouts, o.g), append(couts, o.c)
				}
				r.g.MatMul(gouts, x.g, n, gw, nil)
				r.c.MatMul(couts, x.c, n, cw, nil)
				for i, o := range outs {
					r.check(fmt.Sprintf("int8 from %v %v×%d n=%d part%d", dt, sh.parts, sh.cols, n, i), o, n*sh.parts[i], tolF32)
				}
			}
			if len(sh.parts) == 1 {
				ids := []int32{0, 5, int32(sh.parts[0] - 1)}
				o := r.poisoned(len(ids) * sh.cols)
				r.g.Embed(o.g, gw, ids)
				r.c.Embed(o.c, cw, ids)
				r.check(fmt.Sprintf("int8 embed %v×%d", sh.parts, sh.cols), o, len(ids)*sh.cols, tolF32)
			}
		}
	}
}

// TestUseAfterClose: ops on a closed backend are errors, not crashes.
func TestUseAfterClose(t *testing.T) {
	g := newGPU(t, Options{})
	buf, err := g.Alloc(16)
	require.NoError(t, err)
	require.NoError(t, g.Close())
	g.Add(buf, buf, buf, 16)
	require.ErrorIs(t, g.Upload(buf, 0, make([]float32, 4)), errClosed)
	require.ErrorIs(t, g.Download(make([]float32, 4), buf, 0), errClosed)
	_, err = g.Alloc(4)
	require.ErrorIs(t, err, errClosed)
	_, _, err = g.MemInfo()
	require.ErrorIs(t, err, errClosed)
}
