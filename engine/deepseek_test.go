package engine

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/engine/safetensors"
	"github.com/deepseek-go/deepseek-go/kernels"
	"github.com/deepseek-go/deepseek-go/kernels/cpu"
)

var deepseekFixtures = []string{"deepseek-v2-lite", "deepseek-v2-lite-fp16", "deepseek-v3", "deepseek-v3-bf16", "deepseek-v3-fp8"}

// TestVerifyDeepseekFixtures runs every DeepSeek fixture through both MLA
// paths against its transformers reference: prefill logits, step logits
// and 16 greedy tokens.
func TestVerifyDeepseekFixtures(t *testing.T) {
	for _, dir := range deepseekFixtures {
		for _, path := range []string{MLAAbsorbed, MLANaive} {
			t.Run(dir+"/"+path, func(t *testing.T) {
				p := filepath.Join("..", "testdata", "models", dir)
				m, err := Load(p, WithThreads(2), WithMLA(path), WithDevice("cpu"))
				require.NoError(t, err)
				defer m.Close()
				assert.Equal(t, path, m.MLAPath())
				r, err := Verify(context.Background(), m, filepath.Join(p, "reference.safetensors"))
				require.NoError(t, err)
				t.Logf("%s %s: worst %.3g at %s, greedy %d/%d", dir, path, r.Worst, r.WorstAt, r.Match, len(r.RefIDs))
				assert.Len(t, r.RefIDs, 16)
				assert.Equal(t, 16, r.Match, "ours %v ref %v", r.OurIDs, r.RefIDs)
				assert.LessOrEqual(t, r.Worst, 1e-4, "worst at %s", r.WorstAt)
			})
		}
	}
}

func fixtureDir(name string) string { return filepath.Join("..", "testdata", "models", name) }

// TestMLACacheArithmetic pins the per-token cache size of both MLA paths on
// the real V2-Lite (config_16B.json) and V3 (config_671B.json) shapes.
// Those are DeepSeek's inference configs, so their keys are mapped here.
func TestMLACacheArithmetic(t *testing.T) {
	tests := []struct {
		file                   string
		absorbed, naive        int64 // floats per token, all layers
		absorbedB, naiveB      int64
		layers, perLayerLatent int
	}{
		// 27 × (512+64) = 15552; 27 × 16 × (128+64+128) = 138240.
		{"config_16B.json", 15552, 138240, 62208, 552960, 27, 576},
		// 61 × (512+64) = 35136; 61 × 128 × 320 = 2498560.
		{"config_671B.json", 35136, 2498560, 140544, 9994240, 61, 576},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("..", "testdata", "configs", tc.file))
			require.NoError(t, err)
			var ref struct {
				Layers int `json:"n_layers"`
				Heads  int `json:"n_heads"`
				KVLora int `json:"kv_lora_rank"`
				Nope   int `json:"qk_nope_head_dim"`
				Rope   int `json:"qk_rope_head_dim"`
				V      int `json:"v_head_dim"`
			}
			require.NoError(t, json.Unmarshal(data, &ref))
			c := &Config{NumLayers: ref.Layers, NumHeads: ref.Heads, KVLoraRank: ref.KVLora,
				QKNopeHeadDim: ref.Nope, QKRopeHeadDim: ref.Rope, VHeadDim: ref.V}
			got := MLACacheSize(c)
			assert.Equal(t, tc.absorbed, got.AbsorbedFloats)
			assert.Equal(t, tc.naive, got.NaiveFloats)
			assert.Equal(t, tc.absorbedB, got.AbsorbedBytes)
			assert.Equal(t, tc.naiveB, got.NaiveBytes)
			assert.Equal(t, int64(tc.layers*tc.perLayerLatent), got.AbsorbedFloats)
			// The KV specs the sessions allocate agree with the arithmetic.
			c.ModelType = "deepseek_v3"
			for _, path := range []string{MLAAbsorbed, MLANaive} {
				c.MLA = path
				sp := deepseekKVSpec(c)
				per := int64(sp.Layers * sp.KVHeads * sp.KDim)
				if !sp.VInK {
					per += int64(sp.Layers * sp.KVHeads * sp.VDim)
				}
				want := got.AbsorbedFloats
				if path == MLANaive {
					want = got.NaiveFloats
				}
				assert.Equal(t, want, per, path)
			}
		})
	}
}

// TestMLACacheAllocated checks Info and the session cache of a loaded
// fixture against the arithmetic: 3 layers × (32+8) floats absorbed, 3 × 4
// heads × (16+8+16) naive.
func TestMLACacheAllocated(t *testing.T) {
	for _, tc := range []struct {
		path  string
		bytes int64
	}{{MLAAbsorbed, 3 * 40 * 4}, {MLANaive, 3 * 4 * 40 * 4}} {
		m, err := Load(fixtureDir("deepseek-v3"), WithThreads(1), WithMLA(tc.path), WithDevice("cpu"))
		require.NoError(t, err)
		mc, ok := m.MLACache()
		require.True(t, ok)
		assert.Equal(t, int64(3*40*4), mc.AbsorbedBytes)
		assert.Equal(t, int64(3*4*40*4), mc.NaiveBytes)
		assert.Equal(t, tc.bytes, m.Info().KVBytesPerTok, tc.path)
		s, err := m.NewSession(100)
		require.NoError(t, err)
		assert.Equal(t, 100*tc.bytes, s.KV().Bytes(), tc.path)
		require.NoError(t, m.Close())
	}
}

// TestMLAAbsorbedMatchesNaive compares the two attention paths over a
// prompt longer than one chunk (200 tokens: chunks of 128 and 72) and
// decode steps after it, and prefill against token-by-token steps.
func TestMLAAbsorbedMatchesNaive(t *testing.T) {
	ctx := context.Background()
	for _, dir := range []string{"deepseek-v2-lite", "deepseek-v3"} {
		t.Run(dir, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			ids := make([]int, 200)
			for i := range ids {
				ids[i] = rng.IntN(512)
			}
			run := func(path string) [][]float32 {
				m, err := Load(fixtureDir(dir), WithThreads(2), WithMLA(path), WithDevice("cpu"))
				require.NoError(t, err)
				defer m.Close()
				s, err := m.NewSession(256)
				require.NoError(t, err)
				out, err := s.Prefill(ctx, ids)
				require.NoError(t, err)
				for _, id := range []int{5, 17, 300, 2, 99} {
					l, err := s.Step(ctx, id)
					require.NoError(t, err)
					out = append(out, slices.Clone(l)) // l is reused by the next Step
				}
				return out
			}
			abs, naive := run(MLAAbsorbed), run(MLANaive)
			require.Len(t, abs, 205)
			var worst float64
			for i := range abs {
				worst = max(worst, RelErr(abs[i], naive[i]))
			}
			t.Logf("%s: absorbed vs naive worst relative error %.3g over 205 positions", dir, worst)
			assert.Less(t, worst, 1e-5)

			// Token-by-token on the absorbed path equals the chunked prefill.
			m, err := Load(fixtureDir(dir), WithThreads(2), WithDevice("cpu"))
			require.NoError(t, err)
			defer m.Close()
			s, err := m.NewSession(256)
			require.NoError(t, err)
			worst = 0
			for i, id := range ids[:140] {
				l, err := s.Step(ctx, id)
				require.NoError(t, err)
				worst = max(worst, RelErr(l, abs[i]))
			}
			assert.Less(t, worst, 1e-5, "steps vs prefill")
		})
	}
}

// TestDeepseekExpertStats checks the per-layer usage counters after a
// verify run: 11 prompt tokens + 15 decode steps through MoE layers 1, 2.
func TestDeepseekExpertStats(t *testing.T) {
	m, err := Load(fixtureDir("deepseek-v3"), WithThreads(2), WithDevice("cpu"))
	require.NoError(t, err)
	defer m.Close()
	require.Nil(t, loadStories(t).ExpertStats(), "dense models have none")
	_, err = Verify(context.Background(), m, filepath.Join(fixtureDir("deepseek-v3"), "reference.safetensors"))
	require.NoError(t, err)
	st := m.ExpertStats()
	require.Len(t, st, 2)
	for i, ls := range st {
		assert.Equal(t, i+1, ls.Layer)
		assert.Equal(t, int64(26), ls.Tokens)
		assert.Equal(t, 8, ls.Experts)
		var sum int64
		for _, c := range ls.Counts {
			sum += c
		}
		assert.Equal(t, int64(26*2), sum, "top-2 per token")
		assert.Positive(t, ls.Active)
		assert.LessOrEqual(t, ls.Active, 8)
		assert.True(t, ls.Entropy > 0 && ls.Entropy <= 1, "entropy %v", ls.Entropy)
		t.Logf("layer %d: counts %v active %d cv %.3f entropy %.3f", ls.Layer, ls.Counts, ls.Active, ls.CV, ls.Entropy)
	}
	m.ResetExpertStats()
	assert.Zero(t, m.ExpertStats()[0].Tokens)
}

// TestDeepseekBadConfigs feeds malformed DeepSeek configs and checkpoints
// and expects errors that name the problem.
func TestDeepseekBadConfigs(t *testing.T) {
	base, err := os.ReadFile(filepath.Join(fixtureDir("deepseek-v3-fp8"), "config.json"))
	require.NoError(t, err)
	tests := []struct {
		name, old, new, want string
	}{
		{"n_group does not divide experts", `"n_group": 4`, `"n_group": 3`, "n_group = 3 does not divide n_routed_experts = 8"},
		{"topk_group > n_group", `"topk_group": 2`, `"topk_group": 5`, "topk_group = 5, want 1..n_group (4)"},
		{"top-k > experts", `"num_experts_per_tok": 2`, `"num_experts_per_tok": 9`, "num_experts_per_tok = 9"},
		{"unknown topk_method", `"topk_method": "noaux_tc"`, `"topk_method": "magic"`, `topk_method "magic" not supported`},
		{"no kv_lora_rank", `"kv_lora_rank": 32`, `"kv_lora_rank": 0`, "kv_lora_rank must be positive"},
		{"odd rope dim", `"qk_rope_head_dim": 8`, `"qk_rope_head_dim": 7`, "qk_rope_head_dim must be even"},
		{"other quantisation", `"quant_method": "fp8"`, `"quant_method": "gptq"`, `quant_method "gptq" not supported`},
		{"non-yarn rope scaling", `"type": "yarn"`, `"type": "linear"`, `rope_scaling.type "linear" not supported for deepseek_v3`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := strings.Replace(string(base), tc.old, tc.new, 1)
			require.NotEqual(t, string(base), data, "edit %q did not apply", tc.old)
			_, err := ParseConfig("config.json", []byte(data))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), "config.json")
		})
	}

	ck, err := safetensors.Open(fixtureDir("deepseek-v3-fp8"))
	require.NoError(t, err)
	defer ck.Close()
	cfg, err := ParseConfig("config.json", base)
	require.NoError(t, err)

	t.Run("missing weight_scale_inv", func(t *testing.T) {
		src := MapSource{}
		for _, n := range ck.Names() {
			tn, err := ck.Tensor(n)
			require.NoError(t, err)
			src[n] = tn
		}
		const gone = "model.layers.1.mlp.experts.3.up_proj.weight_scale_inv"
		require.Contains(t, src, gone)
		delete(src, gone)
		_, err := New(cfg, src, WithDevice("cpu"))
		require.Error(t, err)
		assert.Contains(t, err.Error(), `fp8 weight "model.layers.1.mlp.experts.3.up_proj.weight"`)
		assert.Contains(t, err.Error(), gone)
		assert.Contains(t, err.Error(), "not found")
	})
	t.Run("block size mismatch", func(t *testing.T) {
		c := *cfg
		q := *c.QuantizationConfig
		q.WeightBlockSize = []int{32, 32}
		c.QuantizationConfig = &q
		_, err := New(&c, ck, WithDevice("cpu"))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "weight_block_size [32, 32]")
		assert.Contains(t, err.Error(), "shape [3 4], want [2 2]")
	})
	t.Run("unknown MLA path", func(t *testing.T) {
		_, err := Load(fixtureDir("deepseek-v3"), WithMLA("fast"))
		require.Error(t, err)
		assert.Contains(t, err.Error(), `MLA path "fast"`)
	})
}

// TestFP8DequantMemory checks what fp8 weights cost resident. On the CPU
// (which holds fp8) they stay one byte per value plus their block scales,
// in both MLA paths; only the absorbed path's per-head W_UKᵀ is widened to
// f32 (fp8 blocks do not survive its transpose). A backend without fp8
// (here the CPU backend with the capability hidden)
// still gets every fp8 value dequantised to f32: 3.94× the stored bytes.
func TestFP8DequantMemory(t *testing.T) {
	ck, err := safetensors.Open(fixtureDir("deepseek-v3-fp8"))
	require.NoError(t, err)
	defer ck.Close()
	cfg, err := LoadConfig(fixtureDir("deepseek-v3-fp8"))
	require.NoError(t, err)
	fp8Vals, scaleBytes, otherBytes := fp8CheckpointBytes(t, ck)
	stored := fp8Vals + scaleBytes + otherBytes
	// kv_b_proj of every layer (W_UK and W_UV): heads × (nope+v) × kv_lora.
	kvb := int64(cfg.NumLayers * cfg.NumHeads * (cfg.QKNopeHeadDim + cfg.VHeadDim) * cfg.KVLoraRank)
	total := func(by map[string]int64) (n int64) {
		for _, v := range by {
			n += v
		}
		return n
	}
	for _, path := range []string{MLANaive, MLAAbsorbed} {
		t.Run(path, func(t *testing.T) {
			m, err := Load(fixtureDir("deepseek-v3-fp8"), WithThreads(1), WithDevice("cpu"), WithMLA(path))
			require.NoError(t, err)
			defer m.Close()
			by := m.Info().BytesByDType
			if path == MLANaive {
				// Every fp8 value and every scale, nothing more.
				assert.Equal(t, fp8Vals+scaleBytes, by["fp8"])
			} else {
				// The absorbed halves (all of kv_b) leave fp8 as f32 with
				// kv_b's scales.
				assert.LessOrEqual(t, by["fp8"], fp8Vals-kvb+scaleBytes)
				assert.Greater(t, by["fp8"], fp8Vals-kvb)
				assert.GreaterOrEqual(t, by["f32"], 4*kvb)
			}
			// Resident ≈ stored: bf16 stays bf16, norms widen to f32 (the
			// absorbed path's widened kv_b aside: 0.15% of V3's weights,
			// most of this tiny fixture's).
			widened := int64(0)
			if path == MLAAbsorbed {
				widened = kvb
			}
			ratio := float64(total(by)-4*widened) / float64(stored-widened)
			assert.Less(t, ratio, 1.1)
			t.Logf("%s: fp8 checkpoint %d fp8 values (%d B) + %d B scales + %d B other; resident %v = %.2f× the stored bytes",
				path, fp8Vals, fp8Vals, scaleBytes, otherBytes, by, ratio)
		})
	}
	t.Run("backend without fp8", func(t *testing.T) {
		be := cpu.New(1)
		defer be.Close()
		m, err := Load(fixtureDir("deepseek-v3-fp8"), WithBackend(noFP8{be}))
		require.NoError(t, err)
		defer m.Close()
		by := m.Info().BytesByDType
		assert.Zero(t, by["fp8"])
		assert.GreaterOrEqual(t, by["f32"], 4*fp8Vals)
		t.Logf("dequantised: %v; fp8 weights cost %.2f× their stored size (fp8+scales)", by, float64(4*fp8Vals)/float64(fp8Vals+scaleBytes))
	})
}

// TestFP8Sharded verifies the fp8 fixture split over 2 and 4 CPU shards:
// head slices of q_b_proj and kv_b_proj keep their block scales (on 4
// shards a head's 24 rows of q_b_proj start inside a 16-row block).
func TestFP8Sharded(t *testing.T) {
	p := fixtureDir("deepseek-v3-fp8")
	for _, n := range []int{2, 4} {
		for _, path := range []string{MLAAbsorbed, MLANaive} {
			t.Run(fmt.Sprintf("%d/%s", n, path), func(t *testing.T) {
				m, err := Load(p, WithThreads(1), WithDevice("cpu"), WithShards(n), WithMLA(path))
				require.NoError(t, err)
				defer m.Close()
				assert.Positive(t, m.Info().BytesByDType["fp8"])
				r, err := Verify(context.Background(), m, filepath.Join(p, "reference.safetensors"))
				require.NoError(t, err)
				assert.Equal(t, 16, r.Match, "ours %v ref %v", r.OurIDs, r.RefIDs)
				assert.LessOrEqual(t, r.Worst, 1e-4, "worst at %s", r.WorstAt)
			})
		}
	}
}

// TestFP8KeptMatchesDequantised runs the fp8 fixture with its weights kept
// as fp8 and dequantised (the capability hidden) and expects the same
// logits within 1e-5 relative at every prompt position and over 8 decode
// steps, on both MLA paths and with 1 and 2 threads (prefill tiles,
// decode rows, chunking over workers).
func TestFP8KeptMatchesDequantised(t *testing.T) {
	ctx := context.Background()
	prompt := []int{1, 17, 200, 45, 300, 12, 99, 7, 411, 3, 256, 88, 5, 77, 130, 64, 2}
	run := func(m *Model) [][]float32 {
		return stepsThenChunk(t, ctx, m, prompt, 8, 8) // position by position, then a chunk
	}
	for _, path := range []string{MLAAbsorbed, MLANaive} {
		for _, threads := range []int{1, 2} {
			t.Run(fmt.Sprintf("%s/threads=%d", path, threads), func(t *testing.T) {
				kept, err := Load(fixtureDir("deepseek-v3-fp8"), WithThreads(threads), WithDevice("cpu"), WithMLA(path))
				require.NoError(t, err)
				defer kept.Close()
				require.Positive(t, kept.Info().BytesByDType["fp8"])
				be := cpu.New(threads)
				defer be.Close()
				deq, err := Load(fixtureDir("deepseek-v3-fp8"), WithBackend(noFP8{be}), WithMLA(path))
				require.NoError(t, err)
				defer deq.Close()
				require.Zero(t, deq.Info().BytesByDType["fp8"])
				got, want := run(kept), run(deq)
				for i := range want {
					assert.LessOrEqual(t, maxRelDiff(got[i], want[i]), 1e-5, "logits %d", i)
				}
			})
		}
	}
}

// noFP8 is a backend without the fp8 capability (kernels.Supports false);
// it keeps kernels.MoE, which DeepSeek's MoE layers need.
type noFP8 struct{ moeBackend }

type moeBackend interface {
	kernels.Backend
	kernels.MoE
}

// TestDeepseekConcurrentSessions runs sessions of one MoE model from
// several goroutines (shared routers' scratch pool and usage counters) and
// expects the same logits as a lone session.
func TestDeepseekConcurrentSessions(t *testing.T) {
	ctx := context.Background()
	m, err := Load(fixtureDir("deepseek-v3"), WithThreads(1), WithDevice("cpu"))
	require.NoError(t, err)
	defer m.Close()
	ids := []int{3, 141, 59, 265, 358, 97, 93, 238, 462, 64, 338, 327, 95, 28}
	run := func() ([]float32, error) {
		s, err := m.NewSession(64)
		if err != nil {
			return nil, err
		}
		if _, err := s.Prefill(ctx, ids[:9]); err != nil {
			return nil, err
		}
		var last []float32
		for _, id := range ids[9:] {
			if last, err = s.Step(ctx, id); err != nil {
				return nil, err
			}
		}
		return last, nil
	}
	want, err := run()
	require.NoError(t, err)
	m.ResetExpertStats()
	const workers = 4
	got := make([][]float32, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() { got[i], errs[i] = run() })
	}
	wg.Wait()
	for i := range workers {
		require.NoError(t, errs[i])
		assert.Equal(t, want, got[i], "worker %d", i)
	}
	assert.Equal(t, int64(workers*len(ids)), m.ExpertStats()[0].Tokens)
}

// benchDeepseekConfig is DeepSeek-V2-Lite's attention (hidden 2048, 16
// heads, kv_lora 512, rope 64, nope 128, v 128, YaRN ×40) with 2 layers (one
// dense, one MoE of 8 routed experts top-6 plus 2 shared, V2-Lite's sizes)
// and a small vocabulary, so MLA dominates and the model fits in memory.
const benchDeepseekConfig = `{"model_type":"deepseek_v2","vocab_size":8192,"hidden_size":2048,"intermediate_size":10944,
 "num_hidden_layers":2,"num_attention_heads":16,"num_key_value_heads":16,"max_position_embeddings":8192,
 "kv_lora_rank":512,"q_lora_rank":null,"qk_nope_head_dim":128,"qk_rope_head_dim":64,"v_head_dim":128,
 "moe_intermediate_size":1408,"n_routed_experts":8,"num_experts_per_tok":6,"n_shared_experts":2,"first_k_dense_replace":1,
 "topk_method":"greedy","scoring_func":"softmax","routed_scaling_factor":1.0,"norm_topk_prob":false,
 "rope_scaling":{"type":"yarn","factor":40,"original_max_position_embeddings":4096,"beta_fast":32,"beta_slow":1,"mscale":0.707,"mscale_all_dim":0.707}}`

// BenchmarkDeepseekDecode measures one decode step after a prompt of ctx
// tokens on both MLA paths (bf16 weights, CPU backend). The 4096-token
// prefills make a full run take about 11 minutes on the 2-core dev box;
// narrow it with -bench 'DeepseekDecode/absorbed/ctx=16'.
func BenchmarkDeepseekDecode(b *testing.B) {
	cfg, err := ParseConfig("bench", []byte(benchDeepseekConfig))
	require.NoError(b, err)
	ctx := context.Background()
	for _, path := range []string{MLAAbsorbed, MLANaive} {
		m, err := New(cfg, RandomSource{DType: safetensors.BF16, Seed: 7}, WithMLA(path), WithDevice("cpu"))
		require.NoError(b, err)
		for _, n := range []int{16, 1024, 4096} {
			b.Run(fmt.Sprintf("%s/ctx=%d", path, n), func(b *testing.B) {
				s, err := m.NewSession(n + 64)
				require.NoError(b, err)
				prompt := benchPrompt(n, cfg.VocabSize)
				steps := 0
				b.ResetTimer()
				for b.Loop() {
					if steps%64 == 0 { // refill the context outside the timing
						b.StopTimer()
						s.Reset()
						_, err := s.Last(ctx, prompt)
						require.NoError(b, err)
						b.StartTimer()
					}
					_, err := s.Step(ctx, steps%cfg.VocabSize)
					require.NoError(b, err)
					steps++
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tok/s")
				b.ReportMetric(float64(s.KV().Bytes())/float64(n+64), "KVbytes/tok")
			})
		}
		require.NoError(b, m.Close())
	}
}

// v1FromLlama builds a deepseek (V1 MoE) checkpoint from the llama-mha
// fixture whose output equals the llama model: every MLP of layers ≥
// firstDense is split along its intermediate units into a shared expert
// (the first half) and 4 identical routed experts (the second half). With
// norm_topk_prob the routed weights sum to 1, so shared + routed = the
// original MLP whatever the (random) router picks. There is no public
// transformers reference for V1 (trust_remote_code only); this checks the
// wiring — llama attention, dense first layer, gate, gather/scatter-add,
// shared experts — while the routing math is pinned by the V2 fixtures.
func v1FromLlama(t *testing.T, normTopK bool) (*Config, MapSource) {
	t.Helper()
	dir := fixtureDir("llama-mha")
	ck, err := safetensors.Open(dir)
	require.NoError(t, err)
	t.Cleanup(func() { ck.Close() })
	raw, err := os.ReadFile(filepath.Join(dir, "config.json"))
	require.NoError(t, err)
	var js map[string]any
	require.NoError(t, json.Unmarshal(raw, &js))
	const experts, half = 4, 64 // llama-mha: hidden 64, intermediate 128
	js["model_type"] = "deepseek"
	js["n_routed_experts"] = experts
	js["num_experts_per_tok"] = 2
	js["n_shared_experts"] = 1
	js["moe_intermediate_size"] = half
	js["first_k_dense_replace"] = 1
	js["norm_topk_prob"] = normTopK
	js["scoring_func"] = "softmax"
	raw, err = json.Marshal(js)
	require.NoError(t, err)
	cfg, err := ParseConfig("v1.json", raw)
	require.NoError(t, err)

	src := MapSource{}
	for _, n := range ck.Names() {
		tn, err := ck.Tensor(n)
		require.NoError(t, err)
		src[n] = tn
	}
	mk := func(name string, rows, cols int, f []float32) {
		src[name] = &safetensors.Tensor{Name: name, DType: safetensors.F32, Shape: []int{rows, cols}, Data: leFloats(f), File: "v1"}
	}
	get := func(name string) []float32 {
		tn, err := ck.Tensor(name)
		require.NoError(t, err)
		f, err := tn.Float32()
		require.NoError(t, err)
		delete(src, name)
		return f
	}
	rng := rand.New(rand.NewPCG(3, 4))
	const hid, inter = 64, 128
	for l := 1; l < cfg.NumLayers; l++ {
		p := LayerPrefix(l) + "mlp."
		g, u, d := get(p+"gate_proj.weight"), get(p+"up_proj.weight"), get(p+"down_proj.weight")
		cols := func(from int) []float32 { // down_proj columns [from, from+half)
			out := make([]float32, 0, hid*half)
			for r := range hid {
				out = append(out, d[r*inter+from:r*inter+from+half]...)
			}
			return out
		}
		mk(p+"shared_experts.gate_proj.weight", half, hid, g[:half*hid])
		mk(p+"shared_experts.up_proj.weight", half, hid, u[:half*hid])
		mk(p+"shared_experts.down_proj.weight", hid, half, cols(0))
		for e := range experts {
			q := fmt.Sprintf("%sexperts.%d.", p, e)
			mk(q+"gate_proj.weight", half, hid, g[half*hid:])
			mk(q+"up_proj.weight", half, hid, u[half*hid:])
			mk(q+"down_proj.weight", hid, half, cols(half))
		}
		gate := make([]float32, experts*hid)
		for i := range gate {
			gate[i] = float32(rng.NormFloat64())
		}
		mk(p+"gate.weight", experts, hid, gate)
	}
	return cfg, src
}

func TestDeepseekV1ByConstruction(t *testing.T) {
	ref := filepath.Join(fixtureDir("llama-mha"), "reference.safetensors")
	for _, norm := range []bool{true, false} {
		t.Run(fmt.Sprintf("norm_topk_prob=%v", norm), func(t *testing.T) {
			cfg, src := v1FromLlama(t, norm)
			m, err := New(cfg, src, WithThreads(2), WithDevice("cpu"))
			require.NoError(t, err)
			defer m.Close()
			r, err := Verify(context.Background(), m, ref)
			require.NoError(t, err)
			t.Logf("worst %.3g at %s, greedy %d/%d", r.Worst, r.WorstAt, r.Match, len(r.RefIDs))
			st := m.ExpertStats()
			require.Len(t, st, 1)
			assert.Equal(t, int64(26), st[0].Tokens)
			if norm {
				assert.True(t, r.Passed(1e-4), "worst %.3g at %s", r.Worst, r.WorstAt)
			} else {
				// Control: unnormalised softmax weights sum to < 1, so the
				// routed half is scaled down and the logits move.
				assert.Greater(t, r.Worst, 1e-3)
			}
		})
	}
}

// leFloats encodes float32s as little-endian bytes.
func leFloats(f []float32) []byte {
	out := make([]byte, 4*len(f))
	for i, v := range f {
		binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
	}
	return out
}

// TestDeepseekRopeScale pins the YaRN softmax scale and rope of the real
// DeepSeek-V2-Lite config (rope_scaling yarn ×40, original 4096, mscale =
// mscale_all_dim = 0.707): scale = 192^-½ · (0.1·0.707·ln40 + 1)², cos/sin
// factor 1; the correction range is [floor 10.47, ceil 22.51] = [10, 23]:
// dims up to 10 keep the base frequency, from 23 on they are divided by 40,
// those between blend.
func TestDeepseekRopeScale(t *testing.T) {
	cfg, err := ParseConfig("v2-lite.json", []byte(`{"model_type":"deepseek_v2","vocab_size":102400,"hidden_size":2048,
	 "intermediate_size":10944,"num_hidden_layers":27,"num_attention_heads":16,"max_position_embeddings":163840,
	 "kv_lora_rank":512,"q_lora_rank":null,"qk_nope_head_dim":128,"qk_rope_head_dim":64,"v_head_dim":128,
	 "moe_intermediate_size":1408,"n_routed_experts":64,"num_experts_per_tok":6,"n_shared_experts":2,
	 "first_k_dense_replace":1,"topk_method":"greedy","rope_theta":10000,
	 "rope_scaling":{"type":"yarn","factor":40,"original_max_position_embeddings":4096,"beta_fast":32,"beta_slow":1,"mscale":0.707,"mscale_all_dim":0.707}}`))
	require.NoError(t, err)
	rope, scale, err := deepseekRope(cfg)
	require.NoError(t, err)
	m := 0.1*0.707*math.Log(40) + 1
	assert.InDelta(t, m*m/math.Sqrt(192), float64(scale), 1e-7)
	assert.InDelta(t, 0.114721, float64(scale), 1e-6)
	assert.Equal(t, float32(1), rope.Scale)
	assert.True(t, rope.Interleaved)
	require.Len(t, rope.InvFreq, 32)
	for i, f := range rope.InvFreq {
		base := math.Pow(10000, -float64(2*i)/64)
		switch {
		case i <= 10:
			assert.InDelta(t, base, float64(f), 1e-7*base, "dim %d", i)
		case i >= 23:
			assert.InDelta(t, base/40, float64(f), 1e-7*base, "dim %d", i)
		default:
			assert.True(t, float64(f) < base && float64(f) > base/40, "dim %d blends", i)
		}
	}

	// Without rope_scaling the scale is plain 1/sqrt(qk_head_dim).
	cfg.RopeScaling = nil
	_, scale, err = deepseekRope(cfg)
	require.NoError(t, err)
	assert.InDelta(t, 1/math.Sqrt(192), float64(scale), 1e-7)
}

// BenchmarkDeepseekPrefill measures prompt processing of 512 tokens on
// both MLA paths (the bench model of BenchmarkDeepseekDecode).
func BenchmarkDeepseekPrefill(b *testing.B) {
	cfg, err := ParseConfig("bench", []byte(benchDeepseekConfig))
	require.NoError(b, err)
	ctx := context.Background()
	const n = 512
	prompt := benchPrompt(n, cfg.VocabSize)
	for _, path := range []string{MLAAbsorbed, MLANaive} {
		m, err := New(cfg, RandomSource{DType: safetensors.BF16, Seed: 7}, WithMLA(path), WithDevice("cpu"))
		require.NoError(b, err)
		b.Run(path, func(b *testing.B) {
			s, err := m.NewSession(n)
			require.NoError(b, err)
			benchPrefills(b, ctx, s, prompt)
		})
		require.NoError(b, m.Close())
	}
}

// TestDeepseekSharedExpertsFused: unsharded, every fixture's shared
// experts run as Routing.Shared extra experts after the routed ones (no
// separate MLP) and the experts hold exactly the routed and shared
// weights (each stored parameter counted once); sharded, they stay a
// DenseMLP with no shared slots.
func TestDeepseekSharedExpertsFused(t *testing.T) {
	moes := func(m *Model) (out []*MoE) {
		for _, b := range m.blocks {
			if blk, ok := b.(*deepseekBlock); ok && blk.moe != nil {
				out = append(out, blk.moe)
			}
		}
		return out
	}
	for _, dir := range deepseekFixtures {
		t.Run(dir, func(t *testing.T) {
			m, err := Load(fixtureDir(dir), WithThreads(1), WithDevice("cpu"))
			require.NoError(t, err)
			defer m.Close()
			c := m.Config()
			require.Positive(t, c.NSharedExperts)
			layers := moes(m)
			require.NotEmpty(t, layers)
			for _, l := range layers {
				assert.Nil(t, l.Shared, "shared experts fused")
				assert.Equal(t, c.NSharedExperts, l.Routing.Shared)
				assert.Equal(t, c.NRoutedExperts+c.NSharedExperts, l.Experts.Count())
				if dt := l.Experts.DType(); dt != kernels.FP8 {
					assert.Equal(t, int64(c.NRoutedExperts+c.NSharedExperts)*3*int64(c.HiddenSize*c.MoEIntermediateSize*dt.Size()), l.Experts.Bytes())
				}
			}
			sm, err := Load(fixtureDir(dir), WithThreads(1), WithDevice("cpu"), WithShards(2))
			require.NoError(t, err)
			defer sm.Close()
			for _, shard := range sm.shards {
				for _, l := range moes(shard) {
					assert.NotNil(t, l.Shared, "sharded: a separate shared MLP")
					assert.Zero(t, l.Routing.Shared)
				}
			}
			ck, err := safetensors.Open(fixtureDir(dir))
			require.NoError(t, err)
			defer ck.Close()
			var stored int64
			for _, n := range ck.Names() {
				tn, err := ck.Tensor(n)
				require.NoError(t, err)
				stored += int64(tn.NumElements())
			}
			assert.Equal(t, stored, m.Info().Params, "every stored parameter counted once")
			assert.Equal(t, stored, sm.Info().Params, "sharded: every stored parameter counted once")
		})
	}
}

// TestIsMoELayer pins which layers get routed experts.
func TestIsMoELayer(t *testing.T) {
	tests := []struct {
		experts, firstDense, freq, layers int
		want                              []int
	}{
		{8, 1, 1, 4, []int{1, 2, 3}}, // V2/V3: dense first layer(s)
		{8, 3, 1, 5, []int{3, 4}},    // V3: first_k_dense_replace 3
		{8, 1, 2, 6, []int{2, 4}},    // moe_layer_freq 2: every other layer from 1 on
		{0, 0, 1, 3, nil},            // no routed experts: all dense
		{8, 9, 1, 3, nil},            // first_k_dense_replace beyond the model
	}
	for _, tc := range tests {
		c := &Config{NRoutedExperts: tc.experts, FirstKDenseReplace: tc.firstDense, MoELayerFreq: tc.freq}
		var got []int
		for l := range tc.layers {
			if isMoELayer(c, l) {
				got = append(got, l)
			}
		}
		assert.Equal(t, tc.want, got, "%+v", tc)
	}
}

// TestDeepseekGroupLimitedAllGroups runs the V2-Lite fixture with
// group_limited_greedy keeping every group, which must route exactly like
// its greedy reference (the config path of V2's grouped routing).
func TestDeepseekGroupLimitedAllGroups(t *testing.T) {
	dir := fixtureDir("deepseek-v2-lite")
	raw, err := os.ReadFile(filepath.Join(dir, "config.json"))
	require.NoError(t, err)
	var js map[string]any
	require.NoError(t, json.Unmarshal(raw, &js))
	js["topk_method"], js["n_group"], js["topk_group"] = "group_limited_greedy", 4, 4
	raw, err = json.Marshal(js)
	require.NoError(t, err)
	cfg, err := ParseConfig("config.json", raw)
	require.NoError(t, err)
	ck, err := safetensors.Open(dir)
	require.NoError(t, err)
	defer ck.Close()
	m, err := New(cfg, ck, WithThreads(2), WithDevice("cpu"))
	require.NoError(t, err)
	defer m.Close()
	r, err := Verify(context.Background(), m, filepath.Join(dir, "reference.safetensors"))
	require.NoError(t, err)
	assert.True(t, r.Passed(1e-4), "worst %.3g at %s, greedy %d/%d", r.Worst, r.WorstAt, r.Match, len(r.RefIDs))

	// Keeping 1 of 4 groups must change the routing, and so the logits.
	cfg.TopKGroup = 1
	m1, err := New(cfg, ck, WithThreads(2), WithDevice("cpu"))
	require.NoError(t, err)
	defer m1.Close()
	r, err = Verify(context.Background(), m1, filepath.Join(dir, "reference.safetensors"))
	require.NoError(t, err)
	assert.Greater(t, r.Worst, 1e-3)
}

// BenchmarkDeepseekV2LiteSlice decodes with DeepSeek-V2-Lite's real shapes
// (64 routed experts top-6 + 2 shared, vocab 102400, int8 weights) but only
// 2 or 4 of its 27 layers (1 dense + 1 or 3 MoE), so it fits next to other
// work: the difference between the two is the time of 2 MoE layers, which
// extrapolates to the full model. Up to about 3 GB of memory.
func BenchmarkDeepseekV2LiteSlice(b *testing.B) {
	for _, layers := range []int{2, 4} {
		b.Run(fmt.Sprintf("layers=%d", layers), func(b *testing.B) {
			cfg := v2LiteSliceConfig(b, layers, 102400)
			m, err := New(cfg, RandomSource{DType: safetensors.BF16, Seed: 7}, WithInt8(true), WithDevice("cpu"))
			require.NoError(b, err)
			defer m.Close()
			ctx := context.Background()
			s, err := m.NewSession(1024)
			require.NoError(b, err)
			_, err = s.Last(ctx, []int{1, 2, 3, 4, 5, 6, 7, 8})
			require.NoError(b, err)
			benchSteps(b, ctx, s, cfg.VocabSize)
			var by int64
			for _, v := range m.Info().BytesByDType {
				by += v
			}
			b.ReportMetric(float64(by)/1e9, "GB")
		})
	}
}
