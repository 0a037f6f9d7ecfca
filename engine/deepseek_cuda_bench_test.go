//go:build linux && cgo

package engine

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/engine/safetensors"
	"github.com/deepseek-go/deepseek-go/kernels"
)

// DeepSeek on the GPU through the engine (issue #13): DeepSeek-V2-Lite and a
// 4-layer DeepSeek-V3 slice (1 dense + 3 MoE layers at the real widths)
// with random weights made on the host by RandomSource, run as a user would
// (New, GenerateIDs with the device sampler, graph replay where the step
// allows it). Per model: greedy decode at batch 1 of 256 tokens after a
// 16-token prompt, kernel launches and host syncs per decode step
// (kernels.Counter), each layer's time for one token, prefill of 2048
// tokens, and the roofline share: (active weight bytes per token + latent
// cache bytes read) × tok/s ÷ the copy bandwidth.
//
//	(cd engine && ../build/gpu/engine.test -test.run '^$' -test.bench CUDADeepSeek -test.benchtime 1x -test.timeout 30m -test.v)
const (
	dsPrompt     = 16   // decode benchmark prompt
	dsDecode     = 256  // tokens decoded
	dsSteadyFrom = 8    // decode steps from which launches, syncs and steady tok/s are counted (graph captured by then)
	dsPrefill    = 2048 // prefill benchmark prompt
	dsLayerReps  = 10   // timed runs of each layer
)

func BenchmarkCUDADeepSeek(b *testing.B) {
	for _, c := range []struct {
		name  string
		shape map[string]any
		dt    safetensors.DType
	}{
		{"v2-lite/bf16", deepseekV2LiteShape(), safetensors.BF16},
		// Four layers (1 dense + 3 MoE) of V2-Lite: quick to build, for
		// per-kernel profiles (bench/cuda/run.sh dsprof).
		{"v2-lite-4l/bf16", withLayers(deepseekV2LiteShape(), 4), safetensors.BF16},
		{"v3-slice/bf16", deepseekV3Shape(4, 1, false), safetensors.BF16},
		{"v3-slice/fp8", deepseekV3Shape(4, 1, true), safetensors.F8E4M3},
	} {
		b.Run(c.name, func(b *testing.B) { benchDeepSeekCUDA(b, c.name, parseShape(b, c.name, c.shape), c.dt) })
	}
}

// copyRoofline is the device's copy bandwidth in bytes/s: 2.94 TB/s
// measured on the H100 (kernels/cuda/NOTES.md), ≈ 4.3 TB/s on an H200
// (a device-to-device copy through torch, same lab).
func copyRoofline(device string) float64 {
	if strings.Contains(device, "H200") {
		return 4.3e12
	}
	return 2.94e12
}

func benchDeepSeekCUDA(b *testing.B, name string, cfg *Config, dt safetensors.DType) {
	needCUDA(b)
	be, _, err := kernels.OpenDevice("cuda", 0) // what WithDevice("cuda") opens
	require.NoError(b, err)
	defer be.Close()
	benchDeepSeek(b, name, cfg, dt, be)
}

// benchDeepSeek runs the measurements on be (which it does not close).
func benchDeepSeek(b *testing.B, name string, cfg *Config, dt safetensors.DType, be kernels.Backend) {
	p := countDeepseekParams(cfg)
	projBytes := 2.0
	if dt == safetensors.F8E4M3 {
		projBytes = fp8ProjBytes
		if !kernels.Supports(be, kernels.FP8) {
			// The engine would widen every fp8 projection to f32 on the
			// host: 4 bytes a parameter, which does not fit.
			b.Skipf("%s on %s: the backend does not take fp8 weights (no kernels.FP8), the engine would widen them to f32 (%.1f GB); skipped until the GPU fp8 path lands",
				name, be.Name(), float64(p.TotalProj)*4/1e9)
		}
	}
	// Held bytes: stored weights, allocation rounding (≤ 2 MiB per matrix),
	// the absorbed W_UKᵀ kept in f32 today, and 2 GiB for cache and scratch.
	held := float64(p.TotalProj)*projBytes + 2*float64(p.TotalRouter+p.Embed+p.Head) +
		float64(p.Matrices)*(1<<20) + float64(cfg.NumLayers*cfg.NumHeads*cfg.QKNopeHeadDim*cfg.KVLoraRank)*2
	if mi, ok := be.(kernels.MemInfoer); ok {
		free, total, err := mi.MemInfo()
		require.NoError(b, err)
		if need := held + 2<<30; need > float64(free) {
			b.Skipf("%s needs ≈ %.1f GiB on the device, %.1f GiB free of %.1f GiB on %s", name, need/(1<<30), float64(free)/(1<<30), float64(total)/(1<<30), be.Name())
		}
	}
	t0 := time.Now()
	m, err := New(cfg, RandomSource{DType: dt, Seed: 1}, WithBackend(be))
	require.NoError(b, err, "building %s", name)
	defer m.Close()
	var resident int64
	for _, v := range m.Info().BytesByDType {
		resident += v
	}
	b.Logf("%s: built in %v on %s: %.2f B parameters, resident %v (%.2f GB)", name, time.Since(t0).Round(time.Millisecond),
		be.Name(), float64(m.Info().Params)/1e9, m.Info().BytesByDType, float64(resident)/1e9)
	b.ReportMetric(float64(resident)/1e9, "resident-GB")
	ctx := context.Background()
	counter, counts := be.(kernels.Counter)

	// Decode: 256 greedy tokens after a 16-token prompt, as a user runs it.
	prompt := make([]int, dsPrefill)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range prompt {
		prompt[i] = r.IntN(cfg.VocabSize)
	}
	for range b.N {
		var st Stats
		var l0, s0, l1, s1 int64
		var steady0, steady1 time.Time
		n := 0
		for _, err := range m.GenerateIDs(ctx, prompt[:dsPrompt], GenerateOptions{MaxTokens: dsDecode, Stats: &st}) {
			require.NoError(b, err)
			n++
			if n == dsSteadyFrom || n == dsDecode {
				now := time.Now()
				var l, s int64
				if counts {
					l, s = counter.Counts()
				}
				if n == dsSteadyFrom {
					steady0, l0, s0 = now, l, s
				} else {
					steady1, l1, s1 = now, l, s
				}
			}
		}
		require.Equal(b, dsDecode, n, "tokens generated")
		steps := float64(dsDecode - dsSteadyFrom)
		tps := st.DecodeTokensPerSec()
		steady := steps / steady1.Sub(steady0).Seconds()
		wbytes := p.weightBytesPerToken(projBytes, 2)
		cbytes := latentCacheBytes(cfg, dsPrompt+dsDecode/2)
		bw := copyRoofline(be.Name())
		share := 100 * steady * (wbytes + cbytes) / bw
		b.ReportMetric(tps, "decode-tok/s")
		b.ReportMetric(steady, "steady-tok/s")
		b.ReportMetric(1e3/steady/float64(cfg.NumLayers), "ms/layer")
		b.ReportMetric(share, "%roofline")
		b.ReportMetric((wbytes+cbytes)/1e9, "active-GB/tok")
		launches, syncs := "n/a", "n/a"
		if counts {
			b.ReportMetric(float64(l1-l0)/steps, "launches/step")
			b.ReportMetric(float64(s1-s0)/steps, "syncs/step")
			launches, syncs = fmt.Sprintf("%.1f", float64(l1-l0)/steps), fmt.Sprintf("%.1f", float64(s1-s0)/steps)
		}
		b.Logf("%s decode batch 1: %.1f tok/s over %d tokens (steady %.1f tok/s = %.2f ms/token, %.3f ms per layer), %s launches and %s host syncs per step; reads %.3f GB of weights + %.1f MB of latent cache per token: %.1f%% of %.2f TB/s (roofline %.0f tok/s)",
			name, tps, st.GeneratedTokens, steady, 1e3/steady, 1e3/steady/float64(cfg.NumLayers), launches, syncs,
			wbytes/1e9, cbytes/1e6, share, bw/1e12, bw/(wbytes+cbytes))
	}

	benchDeepSeekLayers(b, name, m, prompt[:dsPrompt])

	// Prefill: 2048 tokens at the backend's default chunk, after a
	// 256-token warm-up (GEMM plans, scratch); V2-Lite also at other
	// chunks (the V3 slice in bf16 leaves no room for their scratch).
	b.ReportMetric(dsPrefill/prefillTime(b, m, prompt).Seconds(), "prefill-tok/s")
	if strings.HasPrefix(name, "v2-lite") {
		def := m.chunk
		for _, c := range []int{128, 512, 2048} {
			m.chunk = c
			prefillTime(b, m, prompt)
		}
		m.chunk = def
	}
}

// prefillTime times a prompt's prefill on a new session of m after a
// 256-token warm-up.
func prefillTime(b *testing.B, m *Model, prompt []int) time.Duration {
	ctx := context.Background()
	s, err := m.NewSession(len(prompt))
	require.NoError(b, err)
	_, err = s.Last(ctx, prompt[:256])
	require.NoError(b, err)
	s.Reset()
	t0 := time.Now()
	_, err = s.Last(ctx, prompt)
	require.NoError(b, err)
	pre := time.Since(t0)
	b.Logf("prefill %d tokens in chunks of %d: %v, %.0f tok/s", len(prompt), s.Chunk(), pre.Round(time.Millisecond), float64(len(prompt))/pre.Seconds())
	return pre
}

// benchDeepSeekLayers times each layer's Forward for one token at position
// 16 (host wall time to the device's completion, uncaptured: each layer is
// issued and waited for on its own, so its launch gaps count), on a random
// hidden state restored before every run.
func benchDeepSeekLayers(b *testing.B, name string, m *Model, prompt []int) {
	ctx := context.Background()
	be := m.be
	hid := m.cfg.HiddenSize
	s, err := m.NewSession(len(prompt) + 1)
	require.NoError(b, err)
	_, err = s.Last(ctx, prompt)
	require.NoError(b, err)
	x, err := be.Alloc(hid)
	require.NoError(b, err)
	r := rand.New(rand.NewPCG(5, 6))
	x0 := make([]float32, hid)
	for i := range x0 {
		x0[i] = float32(r.NormFloat64())
	}
	one := make([]float32, 1)
	ms := make([]float64, len(m.blocks))
	var dense, moe []float64
	for l, blk := range m.blocks {
		var runs []float64
		for rep := range dsLayerReps + 1 {
			require.NoError(b, be.Upload(x, 0, x0))
			require.NoError(b, be.Download(one, x, 0))
			t0 := time.Now()
			require.NoError(b, blk.Forward(s, x, 1, s.Pos()), "layer %d", l)
			require.NoError(b, be.Download(one, x, 0))
			if rep > 0 { // the first run allocates scratch
				runs = append(runs, time.Since(t0).Seconds()*1e3)
			}
		}
		slices.Sort(runs)
		ms[l] = runs[len(runs)/2]
		if isMoELayer(m.cfg, l) {
			moe = append(moe, ms[l])
		} else {
			dense = append(dense, ms[l])
		}
	}
	mean := func(v []float64) float64 {
		var s float64
		for _, x := range v {
			s += x
		}
		return s / float64(max(len(v), 1))
	}
	if len(dense) > 0 {
		b.ReportMetric(mean(dense), "dense-ms/layer")
	}
	if len(moe) > 0 {
		b.ReportMetric(mean(moe), "moe-ms/layer")
	}
	parts := make([]string, len(ms))
	for l, v := range ms {
		parts[l] = fmt.Sprintf("%.3f", v)
	}
	b.Logf("%s per layer, one token, uncaptured (median of %d, ms): dense %.3f, MoE %.3f; each: [%s]",
		name, dsLayerReps, mean(dense), mean(moe), strings.Join(parts, " "))
}
