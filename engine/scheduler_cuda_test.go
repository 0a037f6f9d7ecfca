//go:build linux && cgo

package engine

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/engine/safetensors"
)

// TestSchedulerMatchesAloneCUDA is the batching proof on the GPU: every
// fixture family, batched (paged split-KV attention, decode-only steps
// replayed from per-bucket graphs) against the same request alone on the
// GPU's single-sequence path.
func TestSchedulerMatchesAloneCUDA(t *testing.T) {
	needCUDA(t)
	schedulerMatchesAlone(t, "cuda", schedulerFixtures, 1e-4, func(t *testing.T, fixture string, st SchedulerStats) {
		t.Logf("%s: %d graph replays", fixture, st.GraphReplays)
		if !strings.HasPrefix(fixture, "deepseek") { // MoE routing on the host is not captured
			assert.Positive(t, st.GraphReplays, "decode-only steps replay graphs")
		}
	})
}

// TestSchedulerGraphsCUDA: the scheduler with batched decode graphs
// (padded buckets 1..8, tables growing through widths 1..8 blocks,
// greedy rows picked by one argmax, seeded rows sampled on the device,
// logprob rows on the host) gives the tokens and logprobs of the same
// scheduler without graphs, on every fixture family; families that
// cannot be captured fall back and still match.
func TestSchedulerGraphsCUDA(t *testing.T) {
	needCUDA(t)
	for _, fx := range schedulerFixtures {
		t.Run(fx.dir+"/"+fx.mla, func(t *testing.T) {
			opts := []Option{WithDevice("cuda")}
			if fx.mla != "" {
				opts = append(opts, WithMLA(fx.mla))
			}
			m, err := Load(fixtureDir(fx.dir), opts...)
			require.NoError(t, err)
			defer m.Close()
			t.Setenv("DSGO_NO_GRAPH", "1")
			want, st := runGraphRequests(t, m, false)
			assert.Zero(t, st.GraphReplays)
			t.Setenv("DSGO_NO_GRAPH", "")
			got, st := runGraphRequests(t, m, false)
			requireSameRuns(t, want, got, 1e-4)
			t.Logf("%d graph replays", st.GraphReplays)
			if !strings.HasPrefix(fx.dir, "deepseek") {
				assert.Positive(t, st.GraphReplays)
			}
		})
	}
}

// BenchmarkCUDABatchDecode7B: the scheduler on a synthetic
// DeepSeek-LLM-7B-shaped model (random bf16 weights): N requests of
// 512-token prompts and 256 new tokens each, all submitted at once, with
// decode steps replayed from batched graphs and (/nograph) without, and a
// continuous-batching run where 128 requests arrive 20 ms apart with at
// most 64 running. Reports aggregate output tok/s over the whole run,
// decode-tok/s and ms/step from the last first token to the end (all N
// decoding). The KV budget must hold every request whole (a run that
// preempts measures something else).
func BenchmarkCUDABatchDecode7B(b *testing.B) {
	m := synthetic7B(b)
	prompt := func(i int) []int {
		p := make([]int, 512)
		for j := range p {
			p[j] = 100 + (i*7919+j*37)%100000
		}
		return p
	}
	// run submits n requests gap apart and returns the wall time of the
	// whole run, the span from the last first token to the last token,
	// the tokens made (the engine timestamps each stream's tokens) and the
	// preemptions.
	run := func(b *testing.B, sch *Scheduler, n int, gap time.Duration) (total, decode time.Duration, toks, pre int) {
		start := time.Now()
		streams := make([]*Stream, n)
		for i := range streams {
			if gap > 0 && i > 0 {
				time.Sleep(gap)
			}
			var err error
			streams[i], err = sch.Submit(context.Background(), Request{Prompt: prompt(i), MaxTokens: 256, IgnoreEOS: true})
			require.NoError(b, err)
		}
		var lastFirst, end time.Time
		for _, st := range streams {
			for _, err := range st.Tokens() {
				require.NoError(b, err)
			}
			res := st.Result()
			toks += res.GeneratedTokens
			pre += res.Preemptions
			t0 := st.t0
			lastFirst, end = later(lastFirst, t0.Add(res.FirstToken)), later(end, t0.Add(res.Elapsed))
		}
		return end.Sub(start), end.Sub(lastFirst), toks, pre
	}
	for _, n := range []int{1, 8, 32, 64, 128} {
		for _, graphs := range []bool{true, false} {
			name := fmt.Sprintf("seqs=%d", n)
			if !graphs {
				name += "/nograph"
			}
			b.Run(name, func(b *testing.B) {
				if !graphs {
					b.Setenv("DSGO_NO_GRAPH", "1")
				}
				sch, err := m.NewScheduler(SchedulerOptions{MaxSeqs: n, TokenBudget: max(512, n)})
				require.NoError(b, err)
				defer sch.Close()
				st := sch.Stats()
				require.GreaterOrEqual(b, st.KVBlocksTotal, n*(512+256)/blockTokens,
					"KV budget of %d blocks cannot hold %d requests of 768 positions (GPU memory taken by something else?)", st.KVBlocksTotal, n)
				for range b.N {
					total, decode, toks, pre := run(b, sch, n, 0)
					require.Zero(b, pre, "preempted: the run does not measure steady decoding")
					st := sch.Stats()
					b.ReportMetric(float64(toks)/total.Seconds(), "output-tok/s")
					b.ReportMetric(float64(n*255)/decode.Seconds(), "decode-tok/s")
					b.ReportMetric(decode.Seconds()*1e3/255, "ms/step")
					b.ReportMetric(float64(st.GraphReplays), "graph-replays")
					b.Logf("7B bf16 batch %d (graphs %v): %d tokens in %v (%.0f output tok/s), decode phase %.0f tok/s, %.2f ms/step; KV %d blocks, %d graph replays",
						n, graphs, toks, total, float64(toks)/total.Seconds(), float64(n*255)/decode.Seconds(), decode.Seconds()*1e3/255, st.KVBlocksTotal, st.GraphReplays)
				}
			})
		}
	}
	b.Run("continuous/128req/64max", func(b *testing.B) {
		sch, err := m.NewScheduler(SchedulerOptions{MaxSeqs: 64})
		require.NoError(b, err)
		defer sch.Close()
		for range b.N {
			total, _, toks, preemptions := run(b, sch, 128, 20*time.Millisecond)
			st := sch.Stats()
			b.ReportMetric(float64(toks)/total.Seconds(), "output-tok/s")
			b.ReportMetric(float64(st.GraphReplays), "graph-replays")
			b.Logf("7B bf16 continuous: 128 requests 20 ms apart, %d tokens in %v: %.0f output tok/s, %d graph replays, %d preemptions",
				toks, total, float64(toks)/total.Seconds(), st.GraphReplays, preemptions)
		}
	})
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// BenchmarkCUDAPrefixCache7B: time to first token of a 1,000-token
// prompt, then of a second request sharing that prefix (8 tokens more);
// and the same at 4,000 tokens. The cached request still computes one
// step (its 8 new tokens and the prefix's partial last block), which
// reads every weight once: ≈ 4.4 ms on an H100 whatever the prefix, so
// the ratio falls as the prefix grows.
func BenchmarkCUDAPrefixCache7B(b *testing.B) {
	m := synthetic7B(b)
	sch, err := m.NewScheduler(SchedulerOptions{MaxSeqs: 8})
	require.NoError(b, err)
	defer sch.Close()
	round := 0 // a fresh prefix per pair, across the runs Go makes of a benchmark
	for _, n := range []int{1000, 4000} {
		b.Run(fmt.Sprintf("prefix=%d", n), func(b *testing.B) {
			prefix := func(i int) []int {
				p := make([]int, n)
				for j := range p {
					p[j] = 100 + (i*104729+j*31+n)%100000
				}
				return p
			}
			// One unmeasured pair first: the first steps of each row count in a
			// process pay one-time costs (GEMM plans, scratch growth) that are not
			// the prefix cache's to report.
			firstTokenTime(b, sch, prefix(999))
			firstTokenTime(b, sch, append(prefix(999), 5, 6, 7, 8, 9, 10, 11, 12))
			for range b.N {
				round++
				first := firstTokenTime(b, sch, prefix(round))
				second := firstTokenTime(b, sch, append(prefix(round), 5, 6, 7, 8, 9, 10, 11, 12))
				b.ReportMetric(first.Seconds()*1e3, "ttft-ms")
				b.ReportMetric(second.Seconds()*1e3, "cached-ttft-ms")
				b.Logf("7B prefix cache: TTFT %v for %d tokens, %v with the prefix cached (%.1f%%)", first, n, second, 100*second.Seconds()/first.Seconds())
			}
		})
	}
}

// firstTokenTime submits prompt (one new token) and returns the time to its token.
func firstTokenTime(b *testing.B, sch *Scheduler, prompt []int) time.Duration {
	st, err := sch.Submit(context.Background(), Request{Prompt: prompt, MaxTokens: 1, IgnoreEOS: true})
	require.NoError(b, err)
	for _, err := range st.Tokens() {
		require.NoError(b, err)
	}
	return st.Result().FirstToken
}

// synthetic7B is the DeepSeek-LLM-7B shape with random bf16 weights on the
// GPU, built once per test binary run.
func synthetic7B(b *testing.B) *Model {
	needCUDA(b)
	if gpu7B != nil {
		return gpu7B
	}
	cfg, err := ParseConfig("synthetic-7b", []byte(`{"model_type":"llama","vocab_size":102400,"hidden_size":4096,
		"intermediate_size":11008,"num_hidden_layers":30,"num_attention_heads":32,"num_key_value_heads":32,
		"max_position_embeddings":4096,"rms_norm_eps":1e-6,"rope_theta":10000,"tie_word_embeddings":false}`))
	require.NoError(b, err)
	t0 := time.Now()
	m, err := New(cfg, RandomSource{DType: safetensors.BF16, Seed: 1}, WithDevice("cuda"))
	require.NoError(b, err)
	b.Logf("built and uploaded in %v on %s", time.Since(t0), m.Info().Backend)
	gpu7B = m
	return m
}

// gpu7B is kept for the process: two 7B models would not fit beside the KV caches.
var gpu7B *Model
