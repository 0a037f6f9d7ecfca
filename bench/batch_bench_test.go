package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/deepseek-go/deepseek-go/engine"
)

// batchGen is the tokens each sequence of BenchmarkBatchDecode generates
// after its prompt (the first comes from the prefill step).
const batchGen = 16

// BenchmarkBatchDecode: N sequences decoding together through the
// scheduler (one pass over the weights per step for all N). One op is a
// round of N requests with 16-token prompts and 16 new tokens each;
// decode-tok/s counts the tokens after the first of every sequence over
// the time from the last first token to the last token, and ms/step is
// that time per decode step.
func BenchmarkBatchDecode(b *testing.B) {
	ctx := context.Background()
	s := shapes[0]
	for _, v := range variants {
		if v.name != "bf16" && v.name != "int8" {
			continue
		}
		for _, seqs := range []int{1, 4, 8} {
			b.Run(fmt.Sprintf("%s/%s/seqs=%d", s.name, v.name, seqs), func(b *testing.B) {
				m := model(b, s.name+"/"+v.name, s.config, v.src, v.int8)
				sch, err := m.NewScheduler(engine.SchedulerOptions{MaxSeqs: seqs, KVBytes: 512 << 20})
				if err != nil {
					b.Fatal(err)
				}
				defer sch.Close()
				r := rand.New(rand.NewPCG(3, uint64(seqs)))
				var decode time.Duration
				for b.Loop() {
					streams := make([]*engine.Stream, seqs)
					for i := range streams {
						prompt := make([]int, 16)
						for j := range prompt {
							prompt[j] = r.IntN(m.Config().VocabSize)
						}
						if streams[i], err = sch.Submit(ctx, engine.Request{Prompt: prompt, MaxTokens: batchGen, IgnoreEOS: true}); err != nil {
							b.Fatal(err)
						}
					}
					decode += decodeSpan(b, streams)
				}
				steps := float64(b.N) * (batchGen - 1)
				b.ReportMetric(steps*float64(seqs)/decode.Seconds(), "decode-tok/s")
				b.ReportMetric(decode.Seconds()*1e3/steps, "ms/step")
			})
		}
	}
}

// decodeSpan drains streams submitted together and returns the time from
// the last first token to the last token: every sequence decoding (the
// engine timestamps tokens as they are made, so draining in turn is exact).
func decodeSpan(b *testing.B, streams []*engine.Stream) time.Duration {
	var lastFirst, end time.Duration
	for _, st := range streams {
		for _, err := range st.Tokens() {
			if err != nil {
				b.Fatal(err)
			}
		}
		res := st.Result()
		lastFirst, end = max(lastFirst, res.FirstToken), max(end, res.Elapsed)
	}
	return end - lastFirst
}

// BenchmarkPrefixCache: time to first token of a 1,000-token prompt, then
// of a second request that shares it (8 tokens more): the prefix cache
// serves 62 of its 63 blocks.
func BenchmarkPrefixCache(b *testing.B) {
	s, v := shapes[0], variants[1] // coder-1.3b bf16
	m := model(b, s.name+"/"+v.name, s.config, v.src, v.int8)
	sch, err := m.NewScheduler(engine.SchedulerOptions{MaxSeqs: 2, KVBytes: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer sch.Close()
	r := rand.New(rand.NewPCG(4, 4))
	ttft := func(p []int) time.Duration {
		st, err := sch.Submit(context.Background(), engine.Request{Prompt: p, MaxTokens: 1, IgnoreEOS: true})
		if err != nil {
			b.Fatal(err)
		}
		for _, err := range st.Tokens() {
			if err != nil {
				b.Fatal(err)
			}
		}
		return st.Result().FirstToken
	}
	var first, second time.Duration
	for b.Loop() {
		prefix := make([]int, 1000)
		for i := range prefix {
			prefix[i] = r.IntN(m.Config().VocabSize)
		}
		first += ttft(prefix)
		second += ttft(append(prefix, 1, 2, 3, 4, 5, 6, 7, 8))
	}
	b.ReportMetric(first.Seconds()*1e3/float64(b.N), "ttft-ms")
	b.ReportMetric(second.Seconds()*1e3/float64(b.N), "cached-ttft-ms")
	b.ReportMetric(100*second.Seconds()/first.Seconds(), "%of-first")
}
