//go:build linux && cgo

package cudabench

import (
	"fmt"
	"math"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/kernels"
	"github.com/deepseek-go/deepseek-go/kernels/cuda"
)

// Rooflines measured on the H100 (DESIGN.md): copy bandwidth and bf16 GEMM.
const (
	peakBW    = 2.94e12 // bytes/s
	peakFLOPs = 738e12  // bf16 FLOP/s
)

// shape of DeepSeek-LLM-7B.
type shape struct {
	layers, hid, heads, kvh, hd, ffn, vocab int
}

var ds7b = shape{layers: 30, hid: 4096, heads: 32, kvh: 32, hd: 128, ffn: 11008, vocab: 102400}

type layer struct {
	qkv, o, gateUp, down *cuda.Matrix
	n1, n2               kernels.Buffer
}

type model struct {
	sh     shape
	emb    *cuda.Matrix
	layers []layer
	norm   kernels.Buffer
	head   *cuda.Matrix
	rope   *kernels.Rope
}

func gpu(b testing.TB, opts ...cuda.Options) *cuda.Backend {
	if err := cuda.Available(); err != nil {
		b.Skipf("no GPU: %v", err)
	}
	o := cuda.Options{KVDType: kernels.F16}
	if len(opts) > 0 {
		o = opts[0]
	}
	be, err := cuda.New(o)
	require.NoError(b, err)
	b.Cleanup(func() { be.Close() })
	return be
}

func newModel(t testing.TB, be *cuda.Backend, sh shape) *model {
	m := &model{sh: sh}
	seed := uint32(1)
	mat := func(rows, cols int, parts ...int) *cuda.Matrix {
		seed++
		w, err := be.RandomMatrix(rows, cols, kernels.BF16, seed, float32(1/math.Sqrt(float64(cols))), parts...)
		require.NoError(t, err)
		return w
	}
	vec := func(n int) kernels.Buffer {
		seed++
		v, err := be.Alloc(n)
		require.NoError(t, err)
		require.NoError(t, be.RandomBuffer(v, seed, 1, 0.1))
		return v
	}
	qd, kd := sh.heads*sh.hd, sh.kvh*sh.hd
	m.emb = mat(sh.vocab, sh.hid)
	for range sh.layers {
		m.layers = append(m.layers, layer{
			qkv: mat(qd+2*kd, sh.hid, qd, kd, kd), o: mat(sh.hid, qd),
			gateUp: mat(2*sh.ffn, sh.hid, sh.ffn, sh.ffn), down: mat(sh.hid, sh.ffn),
			n1: vec(sh.hid), n2: vec(sh.hid),
		})
	}
	m.norm = vec(sh.hid)
	m.head = mat(sh.vocab, sh.hid)
	f := make([]float32, sh.hd/2)
	for i := range f {
		f[i] = float32(math.Pow(10000, -2*float64(i)/float64(sh.hd)))
	}
	m.rope = &kernels.Rope{Dim: sh.hd, InvFreq: f, Scale: 1}
	require.NoError(t, be.Sync())
	return m
}

// weightBytes read per decode token (the embedding is a row gather).
func (m *model) weightBytes() int64 {
	var n int64
	for _, l := range m.layers {
		n += l.qkv.Bytes() + l.o.Bytes() + l.gateUp.Bytes() + l.down.Bytes()
	}
	return n + m.head.Bytes()
}

// flops of a forward over n tokens from position 0 (logits for the last).
func (m *model) flops(n int) float64 {
	var p float64
	l := m.layers[0]
	for _, w := range []*cuda.Matrix{l.qkv, l.o, l.gateUp, l.down} {
		p += float64(w.Rows()) * float64(w.Cols())
	}
	sh := m.sh
	attn := 4 * float64(n) * float64(n) / 2 * float64(sh.hd) * float64(sh.heads) // causal QKᵀ and PV
	return float64(sh.layers)*(2*float64(n)*p+attn) + 2*float64(m.head.Rows())*float64(m.head.Cols())
}

type sess struct {
	kv                                          kernels.KVCache
	x, xn, q, k, v, att, tmp, g, u, act, hx, lg kernels.Buffer
}

func newSess(t testing.TB, be *cuda.Backend, m *model, maxN, maxTokens int) *sess {
	sh := m.sh
	s := &sess{}
	var err error
	s.kv, err = be.NewKVCache(kernels.KVSpec{Layers: sh.layers, MaxTokens: maxTokens, KVHeads: sh.kvh, KDim: sh.hd, VDim: sh.hd})
	require.NoError(t, err)
	for _, p := range []struct {
		b *kernels.Buffer
		n int
	}{{&s.x, sh.hid}, {&s.xn, sh.hid}, {&s.q, sh.heads * sh.hd}, {&s.k, sh.kvh * sh.hd}, {&s.v, sh.kvh * sh.hd},
		{&s.att, sh.heads * sh.hd}, {&s.tmp, sh.hid}, {&s.g, sh.ffn}, {&s.u, sh.ffn}, {&s.act, sh.ffn}} {
		*p.b, err = be.Alloc(maxN * p.n)
		require.NoError(t, err)
	}
	s.hx, err = be.Alloc(sh.hid)
	require.NoError(t, err)
	s.lg, err = be.Alloc(sh.vocab)
	require.NoError(t, err)
	return s
}

// forward issues a llama forward (the engine's op sequence) over ids at
// pos, logits for the last token into s.lg.
func (m *model) forward(be kernels.Backend, s *sess, ids []int32, pos int) {
	sh := m.sh
	n := len(ids)
	be.Embed(s.x, m.emb, ids)
	for li, l := range m.layers {
		be.RMSNorm(s.xn, s.x, l.n1, n, sh.hid, 1e-6)
		be.MatMul([]kernels.Buffer{s.q, s.k, s.v}, s.xn, n, l.qkv, nil)
		be.ApplyRope(s.q, n, sh.heads, sh.hd, pos, m.rope)
		be.ApplyRope(s.k, n, sh.kvh, sh.hd, pos, m.rope)
		be.Attention(s.att, s.q, s.k, s.v, s.kv, li, pos, n, sh.heads, float32(1/math.Sqrt(float64(sh.hd))))
		be.MatMul([]kernels.Buffer{s.tmp}, s.att, n, l.o, nil)
		be.Add(s.x, s.x, s.tmp, n*sh.hid)
		be.RMSNorm(s.xn, s.x, l.n2, n, sh.hid, 1e-6)
		be.MatMul([]kernels.Buffer{s.g, s.u}, s.xn, n, l.gateUp, nil)
		be.SwiGLU(s.act, s.g, s.u, n*sh.ffn)
		be.MatMul([]kernels.Buffer{s.tmp}, s.act, n, l.down, nil)
		be.Add(s.x, s.x, s.tmp, n*sh.hid)
	}
	be.Copy2D(s.hx, 0, sh.hid, s.x, (n-1)*sh.hid, sh.hid, 1, sh.hid)
	be.RMSNorm(s.hx, s.hx, m.norm, 1, sh.hid, 1e-6)
	be.MatMul([]kernels.Buffer{s.lg}, s.hx, 1, m.head, nil)
}

func randIDs(n, vocab int) []int32 {
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32((i*7919 + 13) % vocab)
	}
	return ids
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// BenchmarkDecode7B: batch-1 decode after a 128-token prompt, the step
// captured as a CUDA graph, argmax on the GPU (one id per token to the host).
func BenchmarkDecode7B(b *testing.B) {
	benchDecode(b, cuda.Options{KVDType: kernels.F16})
}

func benchDecode(b *testing.B, opts cuda.Options) {
	be := gpu(b, opts)
	m := newModel(b, be, ds7b)
	const prompt, steps = 128, 256
	const maxTokens = prompt + steps + 64
	s := newSess(b, be, m, prompt, maxTokens)
	for range b.N {
		m.forward(be, s, randIDs(prompt, m.sh.vocab), 0)
		id, err := be.Sample(s.lg, 0, m.sh.vocab, nil, kernels.SampleParams{}, 0)
		require.NoError(b, err)
		pos := prompt
		m.forward(be, s, []int32{int32(id)}, pos) // uncaptured first step
		id, err = be.Sample(s.lg, 0, m.sh.vocab, nil, kernels.SampleParams{}, 0)
		require.NoError(b, err)
		pos++
		g, err := be.CaptureStep(id, pos, maxTokens, func(v kernels.Backend) error {
			m.forward(v, s, []int32{int32(id)}, pos)
			return nil
		})
		require.NoError(b, err)
		id, err = be.Sample(s.lg, 0, m.sh.vocab, nil, kernels.SampleParams{}, 0)
		require.NoError(b, err)
		pos++
		start := time.Now()
		n := 0
		for ; n < steps-2; n++ {
			require.NoError(b, g.Replay(id, pos))
			id, err = be.Sample(s.lg, 0, m.sh.vocab, nil, kernels.SampleParams{}, 0)
			require.NoError(b, err)
			pos++
		}
		el := time.Since(start)
		g.Close()
		tps := float64(n) / el.Seconds()
		bytes := float64(m.weightBytes())
		b.ReportMetric(tps, "tok/s")
		b.ReportMetric(bytes*tps/peakBW*100, "%roofline")
		b.ReportMetric(bytes*tps/1e9, "weight-GB/s")
		b.Logf("decode 7B: %.1f tok/s, %.2f ms/token, %.2f GB weights/token, %.1f%% of %.2f TB/s (roofline %.0f tok/s)",
			tps, 1e3/tps, bytes/1e9, bytes*tps/peakBW*100, peakBW/1e12, peakBW/bytes)
		// The same steps without the graph, for comparison.
		start = time.Now()
		for k := 0; k < 32; k++ {
			m.forward(be, s, []int32{int32(id)}, pos)
			id, err = be.Sample(s.lg, 0, m.sh.vocab, nil, kernels.SampleParams{}, 0)
			require.NoError(b, err)
			pos++
		}
		b.Logf("decode 7B without graph: %.1f tok/s", 32/time.Since(start).Seconds())
	}
}

func benchPrefill(b *testing.B, n int) { benchPrefillOpts(b, n, cuda.Options{KVDType: kernels.F16}) }

func benchPrefillOpts(b *testing.B, n int, opts cuda.Options) {
	be := gpu(b, opts)
	m := newModel(b, be, ds7b)
	s := newSess(b, be, m, n, n)
	ids := randIDs(n, m.sh.vocab)
	for range b.N {
		var ts []float64
		for r := 0; r < 4; r++ {
			ms, err := be.Time(func() { m.forward(be, s, ids, 0) })
			require.NoError(b, err)
			if r > 0 { // the first run plans cuBLASLt and warms up
				ts = append(ts, ms)
			}
		}
		ms := median(ts)
		fl := m.flops(n)
		b.ReportMetric(float64(n)/(ms/1e3), "tok/s")
		b.ReportMetric(fl/(ms/1e3)/1e12, "TFLOP/s")
		b.ReportMetric(fl/(ms/1e3)/peakFLOPs*100, "%roofline")
		b.Logf("prefill 7B n=%d (cuBLASLt %v): %.2f ms, %.0f tok/s, %.1f TFLOP/s = %.1f%% of 738", n, !opts.NoCublasLt, ms, float64(n)/(ms/1e3), fl/(ms/1e3)/1e12, fl/(ms/1e3)/peakFLOPs*100)
	}
}

func BenchmarkPrefill7B_512(b *testing.B)  { benchPrefill(b, 512) }
func BenchmarkPrefill7B_2048(b *testing.B) { benchPrefill(b, 2048) }

// BenchmarkPrefill7BFallback_512: the same without cuBLASLt (our WMMA GEMM).
func BenchmarkPrefill7BFallback_512(b *testing.B) {
	benchPrefillOpts(b, 512, cuda.Options{KVDType: kernels.F16, NoCublasLt: true})
}

// BenchmarkFlashAttention: B=1, H=32, S=4096, D=128, causal, f16 KV cache
// (the time includes storing K and V into the cache): flash2_fwd_128. The
// variants it was picked from are history in kernels/cuda/NOTES.md.
func BenchmarkFlashAttention(b *testing.B) {
	benchFlash(b, "flash2", cuda.Options{KVDType: kernels.F16})
}

func benchFlash(b *testing.B, name string, opts cuda.Options) {
	be := gpu(b, opts)
	const S, H, D = 4096, 32, 128
	spec := kernels.KVSpec{Layers: 1, MaxTokens: S, KVHeads: H, KDim: D, VDim: D}
	kv, err := be.NewKVCache(spec)
	require.NoError(b, err)
	bufs := make([]kernels.Buffer, 4)
	for i := range bufs {
		bufs[i], err = be.Alloc(S * H * D)
		require.NoError(b, err)
		require.NoError(b, be.RandomBuffer(bufs[i], uint32(100+i), 0, 1))
	}
	q, k, v, o := bufs[0], bufs[1], bufs[2], bufs[3]
	scale := float32(1 / math.Sqrt(D))
	for range b.N {
		var ts []float64
		for r := 0; r < 11; r++ {
			ms, err := be.Time(func() { be.Attention(o, q, k, v, kv, 0, 0, S, H, scale) })
			require.NoError(b, err)
			if r > 0 {
				ts = append(ts, ms)
			}
		}
		ms := median(ts)
		ts = ts[:0]
		for r := 0; r < 11; r++ {
			ms, err := be.Time(func() { be.AttentionNoStore(o, q, kv, 0, 0, S, H, scale) })
			require.NoError(b, err)
			if r > 0 {
				ts = append(ts, ms)
			}
		}
		kms := median(ts)
		fl := 4 * float64(S) * float64(S) / 2 * D * H
		b.ReportMetric(fl/(kms/1e3)/1e12, "TFLOP/s")
		b.ReportMetric(kms*1e3, "us")
		b.Logf("flash attention (%s) B=1 H=%d S=%d D=%d causal: kernel %.3f ms, %.1f TFLOP/s (%.1f%% of 738); with the K/V cache write %.3f ms, %.1f TFLOP/s",
			name, H, S, D, kms, fl/(kms/1e3)/1e12, fl/(kms/1e3)/peakFLOPs*100, ms, fl/(ms/1e3)/1e12)
	}
}

// BenchmarkDecodeAttention: one query token over a 4096-position f16 cache
// (H=32, D=128): store K/V, split-KV attention, combine.
func BenchmarkDecodeAttention(b *testing.B) {
	be := gpu(b)
	const S, H, D = 4096, 32, 128
	spec := kernels.KVSpec{Layers: 1, MaxTokens: S, KVHeads: H, KDim: D, VDim: D}
	kv, err := be.NewKVCache(spec)
	require.NoError(b, err)
	bufs := make([]kernels.Buffer, 4)
	for i := range bufs {
		bufs[i], err = be.Alloc(S * H * D)
		require.NoError(b, err)
		require.NoError(b, be.RandomBuffer(bufs[i], uint32(200+i), 0, 1))
	}
	q, k, v, o := bufs[0], bufs[1], bufs[2], bufs[3]
	scale := float32(1 / math.Sqrt(D))
	be.Attention(o, q, k, v, kv, 0, 0, S-1, H, scale) // fill the cache
	for range b.N {
		const reps = 200
		var ts []float64
		for r := 0; r < 5; r++ {
			ms, err := be.Time(func() {
				for i := 0; i < reps; i++ {
					be.Attention(o, q, k, v, kv, 0, S-1, 1, H, scale)
				}
			})
			require.NoError(b, err)
			ts = append(ts, ms/reps)
		}
		ms := median(ts)
		ts = ts[:0]
		for r := 0; r < 5; r++ {
			ms, err := be.Time(func() {
				for i := 0; i < reps; i++ {
					be.AttentionNoStore(o, q, kv, 0, S-1, 1, H, scale)
				}
			})
			require.NoError(b, err)
			ts = append(ts, ms/reps)
		}
		kms := median(ts)
		bytes := float64(2 * S * H * D * 2)
		b.ReportMetric(kms*1e3, "us")
		b.ReportMetric(bytes/(kms/1e3)/peakBW*100, "%roofline")
		b.Logf("decode attention kv=%d H=%d D=%d: kernels %.1f us, %.0f GB/s (%.1f%% of 2.94 TB/s); with the K/V store %.1f us",
			S, H, D, kms*1e3, bytes/(kms/1e3)/1e9, bytes/(kms/1e3)/peakBW*100, ms*1e3)
	}
}

// BenchmarkGEMV: the decode projections of the 7B shape, one token.
func BenchmarkGEMV(b *testing.B) {
	be := gpu(b)
	for _, c := range []struct{ rows, cols int }{{3 * 4096, 4096}, {4096, 4096}, {2 * 11008, 4096}, {4096, 11008}, {102400, 4096}} {
		benchGEMV(b, be, c.rows, c.cols)
	}
}

func benchGEMV(b *testing.B, be *cuda.Backend, rows, cols int) {
	c := struct{ rows, cols int }{rows, cols}
	{
		b.Run(fmt.Sprintf("%dx%d", c.rows, c.cols), func(b *testing.B) {
			w, err := be.RandomMatrix(c.rows, c.cols, kernels.BF16, 9, 0.02)
			require.NoError(b, err)
			x, err := be.Alloc(c.cols)
			require.NoError(b, err)
			require.NoError(b, be.RandomBuffer(x, 3, 0, 1))
			y, err := be.Alloc(c.rows)
			require.NoError(b, err)
			for range b.N {
				const reps = 50
				var ts []float64
				for r := 0; r < 5; r++ {
					ms, err := be.Time(func() {
						for i := 0; i < reps; i++ {
							be.MatMul([]kernels.Buffer{y}, x, 1, w, nil)
						}
					})
					require.NoError(b, err)
					ts = append(ts, ms/reps)
				}
				ms := median(ts)
				bw := float64(w.Bytes()) / (ms / 1e3)
				b.ReportMetric(bw/1e9, "GB/s")
				b.ReportMetric(bw/peakBW*100, "%roofline")
				b.Logf("gemv %dx%d bf16: %.1f us, %.0f GB/s (%.1f%%)", c.rows, c.cols, ms*1e3, bw/1e9, bw/peakBW*100)
			}
		})
	}
}
