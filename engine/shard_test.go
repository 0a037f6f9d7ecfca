package engine

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/engine/layers"
	"github.com/deepseek-go/deepseek-go/engine/safetensors"
	"github.com/deepseek-go/deepseek-go/kernels"
	"github.com/deepseek-go/deepseek-go/kernels/cpu"
)

// shardRun is what the sharded and unsharded runs are compared on: the
// prefill logits of every prompt position, then greedy decoding's tokens
// and the logits of each step.
type shardRun struct {
	prefill [][]float32
	ids     []int
	steps   [][]float32
}

func runForShards(t *testing.T, m *Model, prompt []int, gen int) shardRun {
	t.Helper()
	ctx := context.Background()
	s, err := m.NewSession(len(prompt) + gen)
	require.NoError(t, err)
	var r shardRun
	r.prefill, err = s.Prefill(ctx, prompt)
	require.NoError(t, err)
	logits := r.prefill[len(r.prefill)-1]
	for range gen {
		id := argmax(logits)
		r.ids = append(r.ids, id)
		r.steps = append(r.steps, slices.Clone(logits))
		if len(r.ids) == gen {
			break
		}
		logits, err = s.Step(ctx, id)
		require.NoError(t, err)
	}
	return r
}

// maxRelDiff is the largest |got−want| over the row, relative to the
// row's largest |want| (logits near zero have no meaningful relative
// error of their own).
func maxRelDiff(got, want []float32) float64 {
	var d, scale float64
	for i := range want {
		d = max(d, math.Abs(float64(got[i])-float64(want[i])))
		scale = max(scale, math.Abs(float64(want[i])))
	}
	return d / scale
}

// TestShardsMatchOne is issue 17's done-when on the CPU fake: every
// fixture family gives the same greedy tokens, and logits within 1e-5
// relative, on 2 and 4 shards as on one.
func TestShardsMatchOne(t *testing.T) {
	const tol = 1e-5
	prompt := []int{1, 17, 200, 45, 300, 12, 99, 7, 411, 3, 256, 88}
	long := randPrompt(rand.New(rand.NewPCG(3, 4)), defaultChunk+22, 512)
	for _, tc := range []struct {
		fixture string
		opts    []Option
	}{
		{"llama-mha", nil},
		{"llama-gqa-llama3rope", nil}, // 2 KV heads: on 4 shards each keeps one, replicated
		{"llama-linear-rope", nil},
		{"qwen2", nil}, // q/k/v biases split with their heads
		{"qwen2-tied", nil},
		{"deepseek-v2-lite", []Option{WithMLA(MLAAbsorbed)}},
		{"deepseek-v2-lite", []Option{WithMLA(MLANaive)}},
		{"deepseek-v3", []Option{WithMLA(MLAAbsorbed)}},
		{"deepseek-v3", []Option{WithMLA(MLANaive)}},
	} {
		base := append([]Option{WithDevice("cpu"), WithThreads(1)}, tc.opts...)
		one, err := Load(fixtureDir(tc.fixture), base...)
		require.NoError(t, err, tc.fixture)
		gen := 12
		if testing.Short() {
			gen = 4
		}
		want := runForShards(t, one, prompt, gen)
		s1, err := one.NewSession(len(long))
		require.NoError(t, err)
		wantLong, err := s1.Last(context.Background(), long)
		require.NoError(t, err)
		wantLong = slices.Clone(wantLong)
		require.NoError(t, one.Close())
		for _, n := range []int{2, 4} {
			name := fmt.Sprintf("%s/%s/%d", tc.fixture, one.MLAPath(), n)
			t.Run(name, func(t *testing.T) {
				m, err := Load(fixtureDir(tc.fixture), append(base, WithShards(n))...)
				require.NoError(t, err)
				defer m.Close()
				require.Equal(t, n, m.Shards())
				assert.Contains(t, m.Info().Backend, fmt.Sprintf("×%d shards", n))
				got := runForShards(t, m, prompt, gen)
				require.Equal(t, want.ids, got.ids, "greedy tokens")
				for i := range want.prefill {
					assert.LessOrEqual(t, maxRelDiff(got.prefill[i], want.prefill[i]), tol, "prefill position %d", i)
				}
				for i := range want.steps {
					assert.LessOrEqual(t, maxRelDiff(got.steps[i], want.steps[i]), tol, "step %d", i)
				}
				// A prompt longer than a chunk: the shards' positions follow
				// the driving session across chunks.
				s, err := m.NewSession(len(long))
				require.NoError(t, err)
				lg, err := s.Last(context.Background(), long)
				require.NoError(t, err)
				assert.LessOrEqual(t, maxRelDiff(lg, wantLong), tol, "last logits of %d tokens", len(long))
				assert.Equal(t, len(long), s.Pos())
			})
		}
	}
}

// TestShardsBadSplits: configurations that cannot be split, and options
// that cannot be combined with WithShards, fail at load with the reason.
func TestShardsBadSplits(t *testing.T) {
	gqa := func(heads, kvHeads, vocab int) *Config {
		cfg, err := ParseConfig("synthetic", fmt.Appendf(nil, `{"model_type":"llama","vocab_size":%d,"hidden_size":48,"intermediate_size":64,
			"num_hidden_layers":1,"num_attention_heads":%d,"num_key_value_heads":%d,"max_position_embeddings":32}`, vocab, heads, kvHeads))
		require.NoError(t, err)
		return cfg
	}
	for _, tc := range []struct {
		name string
		cfg  *Config
		opts []Option
		want string
	}{
		{"heads not divisible", gqa(4, 4, 64), []Option{WithShards(3)}, "num_attention_heads 4 is not divisible by 3 shards"},
		{"kv heads neither divide nor are divided", gqa(12, 4, 64), []Option{WithShards(3)}, "num_key_value_heads 4 neither divides nor is a multiple of 3 shards"},
		{"vocabulary smaller than shards", gqa(4, 4, 2), []Option{WithShards(4)}, "vocab_size 2 is smaller than the shard count"},
		{"negative", gqa(4, 4, 64), []Option{WithShards(-2)}, "WithShards(-2)"},
		{"a device without collectives", gqa(4, 4, 64), []Option{WithShards(2), WithDevice("cuda")}, "NCCL"},
		{"one backend", gqa(4, 4, 64), []Option{WithShards(2), WithBackend(cpu.New(1))}, "one backend cannot hold 2 shards"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := append([]Option{WithThreads(1)}, tc.opts...)
			m, err := New(tc.cfg, RandomSource{Seed: 1}, opts...)
			if m != nil {
				m.Close()
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	// The fixtures' 4 heads do not split over 3 shards either.
	_, err := Load(fixtureDir("deepseek-v3"), WithShards(3), WithThreads(1))
	require.ErrorContains(t, err, "num_attention_heads 4 is not divisible by 3 shards")
}

// failBlock stands for a layer that fails on one shard.
type failBlock struct{}

func (failBlock) Forward(layers.Context, kernels.Buffer, int, int) error {
	return fmt.Errorf("injected failure")
}

// TestShardFailureReleasesGroup: a shard failing mid-forward must not
// leave the others blocked at the next all-reduce; the step reports the
// shard's error, the session stays where it was, and the group works for
// the next step.
func TestShardFailureReleasesGroup(t *testing.T) {
	ctx := context.Background()
	one, m := loadShardedPair(t, "deepseek-v3", "", 2)
	prompt := []int{1, 40, 41, 42}
	ref, err := one.NewSession(8)
	require.NoError(t, err)
	_, err = ref.Last(ctx, prompt)
	require.NoError(t, err)
	want, err := ref.Step(ctx, 7)
	require.NoError(t, err)

	s, err := m.NewSession(8)
	require.NoError(t, err)
	_, err = s.Last(ctx, prompt)
	require.NoError(t, err)
	// Layer 1 fails on rank 1 only: rank 0 has passed layer 0's
	// all-reduces and waits at layer 1's.
	saved := m.shards[1].blocks[1]
	m.shards[1].blocks[1] = failBlock{}
	done := make(chan error, 1)
	go func() { _, err := s.Step(ctx, 7); done <- err }()
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the healthy shard stayed blocked at the collective")
	}
	require.ErrorContains(t, err, "shard 1: layer 1: injected failure")
	assert.Equal(t, len(prompt), s.Pos(), "a failed step does not advance")
	m.shards[1].blocks[1] = saved
	got, err := s.Step(ctx, 7)
	require.NoError(t, err)
	assert.LessOrEqual(t, maxRelDiff(got, want), 1e-5)
}

// TestShardedConcurrentSessions: sessions of one sharded model share its
// collective group; run at once they still match their runs alone.
func TestShardedConcurrentSessions(t *testing.T) {
	m, err := Load(fixtureDir("qwen2"), WithThreads(1), WithDevice("cpu"), WithShards(2))
	require.NoError(t, err)
	defer m.Close()
	prompts := [][]int{{1, 5, 9, 300}, {1, 77, 2, 3, 4, 5}, {1, 400}, {1, 8, 8, 8, 8, 8, 8, 8}}
	want := make([]shardRun, len(prompts))
	for i, p := range prompts {
		want[i] = runForShards(t, m, p, 6)
	}
	got := make([]shardRun, len(prompts))
	var wg sync.WaitGroup
	for i, p := range prompts {
		wg.Go(func() { got[i] = runForShards(t, m, p, 6) })
	}
	wg.Wait()
	for i := range prompts {
		assert.Equal(t, want[i].ids, got[i].ids, "prompt %d", i)
		assert.Equal(t, want[i].steps, got[i].steps, "prompt %d: same bits as alone", i)
	}
}

// TestShardedScheduler: the scheduler batches a sharded model (a paged
// cache part per shard) and gives the unsharded model's tokens and
// logprobs, with prompts split into chunks beside decode rows.
func TestShardedScheduler(t *testing.T) {
	for _, fx := range schedulerFixtures {
		for _, n := range []int{2, 4} {
			t.Run(fmt.Sprintf("%s/%s/%d", fx.dir, fx.mla, n), func(t *testing.T) {
				one, m := loadShardedPair(t, fx.dir, fx.mla, n)
				shardedSchedulerMatches(t, one, m)
			})
		}
	}
}

// loadShardedPair loads a fixture on the CPU (one thread; mla, if not
// empty, picks the MLA path) unsharded and in n shards; both close when
// the test ends.
func loadShardedPair(t *testing.T, dir, mla string, n int) (one, sharded *Model) {
	t.Helper()
	opts := []Option{WithThreads(1), WithDevice("cpu")}
	if mla != "" {
		opts = append(opts, WithMLA(mla))
	}
	one, err := Load(fixtureDir(dir), opts...)
	require.NoError(t, err)
	t.Cleanup(func() { one.Close() })
	sharded, err = Load(fixtureDir(dir), append(opts, WithShards(n))...)
	require.NoError(t, err)
	t.Cleanup(func() { sharded.Close() })
	return one, sharded
}

func shardedSchedulerMatches(t *testing.T, one, m *Model) {
	sch, err := m.NewScheduler(SchedulerOptions{MaxSeqs: 3, TokenBudget: 16})
	require.NoError(t, err)
	defer sch.Close()
	rng := rand.New(rand.NewPCG(5, 6))
	var reqs []Request
	for _, n := range []int{5, 30, 2} {
		reqs = append(reqs, Request{Prompt: randPrompt(rng, n, 512), MaxTokens: 8, IgnoreEOS: true, TopLogprobs: 5})
	}
	got := submitAll(t, sch, reqs, 0)
	for i, r := range reqs {
		require.NoError(t, got[i].err)
		ids := make([]int, len(got[i].toks))
		for j, tok := range got[i].toks {
			ids[j] = tok.ID
		}
		alone := runAlone(t, one, r)
		require.Equal(t, alone.ids, ids, "request %d", i)
		for j, tok := range got[i].toks {
			require.Len(t, tok.Top, 5)
			for _, lp := range tok.Top {
				w := alone.lps[j][lp.ID]
				assert.InDelta(t, w, lp.Logprob, 1e-5*math.Max(1, math.Abs(float64(w))), "request %d token %d id %d", i, j, lp.ID)
			}
		}
	}
	st := sch.Stats()
	assert.Positive(t, st.KVBlocksTotal, "the batched path, over a paged cache")
	assert.Zero(t, st.KVBlocksUsed, "finished requests hold no blocks")
}

// TestShardedInfoAndStats: a sharded model reports the unsharded model's
// parameters and KV bytes per token where nothing is replicated, and its
// expert statistics count each routed token once.
func TestShardedInfoAndStats(t *testing.T) {
	ctx := context.Background()
	for _, fx := range []struct {
		dir, mla string
		kvSame   bool // the cache splits by heads (else MLA's latent is replicated)
	}{{"qwen2", "", true}, {"deepseek-v3", MLANaive, true}, {"deepseek-v3", MLAAbsorbed, false}} {
		t.Run(fx.dir+"/"+fx.mla, func(t *testing.T) {
			one, m := loadShardedPair(t, fx.dir, fx.mla, 2)
			a, b := one.Info(), m.Info()
			assert.Equal(t, a.Params, b.Params)
			assert.True(t, strings.HasPrefix(b.Backend, "cpu"), b.Backend)
			if fx.kvSame {
				assert.Equal(t, a.KVBytesPerTok, b.KVBytesPerTok)
			} else {
				assert.Equal(t, 2*a.KVBytesPerTok, b.KVBytesPerTok, "the latent cache is on both shards")
			}
			var sa, sb int64
			for k, v := range a.BytesByDType {
				sa += v
				sb += b.BytesByDType[k]
			}
			assert.GreaterOrEqual(t, sb, sa, "shards hold every weight, some replicated")
			for _, mm := range []*Model{one, m} {
				s, err := mm.NewSession(16)
				require.NoError(t, err)
				_, err = s.Prefill(ctx, []int{1, 2, 3, 4, 5})
				require.NoError(t, err)
			}
			assert.Equal(t, one.ExpertStats(), m.ExpertStats())
		})
	}
}

// TestShardsByConstruction covers what the fixtures lack: DeepSeek V1
// (llama attention with MoE, built from llama-mha and checked against its
// reference) and llama with attention_bias and mlp_bias, whose row-split
// o_proj and down_proj biases must be added once, not once per shard.
func TestShardsByConstruction(t *testing.T) {
	ctx := context.Background()
	biased, err := ParseConfig("synthetic", []byte(`{"model_type":"llama","vocab_size":96,"hidden_size":64,"intermediate_size":96,
		"num_hidden_layers":2,"num_attention_heads":8,"num_key_value_heads":4,"max_position_embeddings":64,
		"attention_bias":true,"mlp_bias":true}`))
	require.NoError(t, err)
	v1cfg, v1src := v1FromLlama(t, true)
	for _, tc := range []struct {
		name string
		cfg  *Config
		src  TensorSource
		ref  string // reference logits to verify against, if any
	}{
		{"deepseek-v1", v1cfg, v1src, filepath.Join(fixtureDir("llama-mha"), "reference.safetensors")},
		{"llama-biased", biased, RandomSource{Seed: 9}, ""},
	} {
		one, err := New(tc.cfg, tc.src, WithThreads(1), WithDevice("cpu"))
		require.NoError(t, err)
		prompt := []int{1, 5, 60, 7, 33, 2, 80, 41}
		want := runForShards(t, one, prompt, 6)
		require.NoError(t, one.Close())
		for _, n := range []int{2, 4} {
			t.Run(fmt.Sprintf("%s/%d", tc.name, n), func(t *testing.T) {
				m, err := New(tc.cfg, tc.src, WithThreads(1), WithDevice("cpu"), WithShards(n))
				require.NoError(t, err)
				defer m.Close()
				got := runForShards(t, m, prompt, 6)
				require.Equal(t, want.ids, got.ids)
				for i := range want.prefill {
					assert.LessOrEqual(t, maxRelDiff(got.prefill[i], want.prefill[i]), 1e-5, "prefill position %d", i)
				}
				for i := range want.steps {
					assert.LessOrEqual(t, maxRelDiff(got.steps[i], want.steps[i]), 1e-5, "step %d", i)
				}
				if tc.ref != "" {
					r, err := Verify(ctx, m, tc.ref)
					require.NoError(t, err)
					assert.True(t, r.Passed(1e-4), "worst %.3g at %s", r.Worst, r.WorstAt)
				}
			})
		}
	}
}

// BenchmarkShardedDecode times one decode step of a synthetic llama
// (hidden 512, 8 layers, bf16) on 1, 2 and 4 CPU shards sharing
// GOMAXPROCS threads: what the split and the rendezvous cost when the
// shards share one host's cores (no speedup is expected from that).
func BenchmarkShardedDecode(b *testing.B) {
	cfg, err := ParseConfig("synthetic", []byte(`{"model_type":"llama","vocab_size":8192,"hidden_size":512,"intermediate_size":1408,
		"num_hidden_layers":8,"num_attention_heads":8,"num_key_value_heads":4,"max_position_embeddings":512}`))
	require.NoError(b, err)
	ctx := context.Background()
	for _, n := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("shards=%d", n), func(b *testing.B) {
			m, err := New(cfg, RandomSource{DType: safetensors.BF16, Seed: 1}, WithDevice("cpu"), WithShards(n))
			require.NoError(b, err)
			defer m.Close()
			s, err := m.NewSession(0)
			require.NoError(b, err)
			_, err = s.Last(ctx, []int{1, 2, 3, 4})
			require.NoError(b, err)
			b.ResetTimer()
			for i := range b.N {
				if s.Pos() == s.MaxTokens() {
					s.Reset()
				}
				if _, err := s.Step(ctx, 5+i%100); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tok/s")
		})
	}
}

// TestShardedTruncate: the driving session's position is the shards'
// (a chat turn keeps a prefix and overwrites the rest).
func TestShardedTruncate(t *testing.T) {
	ctx := context.Background()
	run := func(m *Model) []float32 {
		s, err := m.NewSession(32)
		require.NoError(t, err)
		_, err = s.Prefill(ctx, []int{1, 9, 8, 7, 6, 5, 4, 3})
		require.NoError(t, err)
		require.NoError(t, s.Truncate(4))
		lg, err := s.Last(ctx, []int{100, 200, 300})
		require.NoError(t, err)
		require.Equal(t, 7, s.Pos())
		return slices.Clone(lg)
	}
	one, m := loadShardedPair(t, "deepseek-v2-lite", "", 2)
	assert.LessOrEqual(t, maxRelDiff(run(m), run(one)), 1e-5)
}
