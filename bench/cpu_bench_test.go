// Package bench holds throughput benchmarks run with
//
//	go test ./bench -bench . -run '^$'
//
// The CPU suite builds synthetic full-size models in memory (random weights
// from engine.RandomSource, no files) and reports prefill-tok/s,
// decode-tok/s and weight-GB/s (weight bytes streamed per second while
// decoding) per storage dtype, plus BenchmarkMemBandwidth, the read
// roofline those numbers are judged by. See README.md for results.
package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/deepseek-go/deepseek-go/engine"
	"github.com/deepseek-go/deepseek-go/engine/safetensors"
	"github.com/deepseek-go/deepseek-go/kernels/cpu/simd"
)

// shapes are hub config.json files of the benchmarked architectures.
var shapes = []struct {
	name, config string
	// only names the one variant measured ("": all of them).
	only string
	// fit, when set, returns the config to build and a Go memory limit for
	// building it, or skips when the machine cannot hold the model.
	fit func(b *testing.B, config string) (string, int64)
}{
	{"coder-1.3b", `{"model_type": "llama", "hidden_size": 2048, "intermediate_size": 5504,
		"num_hidden_layers": 24, "num_attention_heads": 16, "num_key_value_heads": 16,
		"vocab_size": 32256, "max_position_embeddings": 16384, "rms_norm_eps": 1e-6,
		"rope_theta": 100000, "rope_scaling": {"type": "linear", "factor": 4.0},
		"bos_token_id": 32013, "eos_token_id": 32014, "tie_word_embeddings": false}`, "", nil},
	{"v2-lite", v2LiteConfig, "int8", fitV2Lite}, // deepseek_cpu_bench_test.go
}

// variants are the weight formats measured: source dtype and int8 flag.
var variants = []struct {
	name string
	src  safetensors.DType
	int8 bool
}{
	{"f32", safetensors.F32, false},
	{"bf16", safetensors.BF16, false},
	{"f16", safetensors.F16, false},
	{"int8", safetensors.BF16, true},
}

const (
	promptLen   = 64 // prompt tokens for prefill (llama.cpp's pp64)
	prefillReps = 7  // prefills per benchmark run (median and best reported)
)

// current holds the one model kept between the runs of a benchmark (a
// 1.3B f32 model is 5.4 GB: never two at once).
var current struct {
	key string
	m   *engine.Model
}

func model(b *testing.B, key, config string, src safetensors.DType, int8 bool) *engine.Model {
	if current.key == key {
		return current.m
	}
	if current.m != nil {
		current.m.Close()
		current.m, current.key = nil, ""
		runtime.GC()
		debug.FreeOSMemory()
	}
	cfg, err := engine.ParseConfig(key, []byte(config))
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	m, err := engine.New(cfg, engine.RandomSource{DType: src, Seed: 1}, engine.WithDevice("cpu"), engine.WithInt8(int8))
	if err != nil {
		b.Fatalf("building %s: %v", key, err)
	}
	runtime.GC()
	debug.FreeOSMemory()
	b.Logf("%s: built in %v, %s", key, time.Since(start).Round(time.Millisecond), m.Info().Backend)
	current.key, current.m = key, m
	return m
}

// streamedBytes is what a decode step reads: every weight except the
// embedding table (kept in the source dtype), of which it reads one row;
// of a MoE model only the experts a token picks.
func streamedBytes(m *engine.Model, src safetensors.DType) int64 {
	if c := m.Config(); c.NRoutedExperts > 0 {
		return moeStreamedBytes(c, src, m.Info().Int8)
	}
	var n int64
	for _, v := range m.Info().BytesByDType {
		n += v
	}
	if c := m.Config(); !c.TieWordEmbeddings {
		n -= int64(c.VocabSize) * int64(c.HiddenSize) * int64(src.Size())
	}
	return n
}

// BenchmarkCPU: per shape and weight format, b.N decode steps after a
// 64-token prefill. ns/op is one decode step.
func BenchmarkCPU(b *testing.B) {
	ctx := context.Background()
	for _, s := range shapes {
		for _, v := range variants {
			if s.only != "" && v.name != s.only {
				continue
			}
			b.Run(s.name+"/"+v.name, func(b *testing.B) {
				config := s.config
				// The memory check is for building: a later run of the same
				// sub-benchmark reuses the model it would count against.
				if s.fit != nil && current.key != s.name+"/"+v.name {
					var limit int64
					config, limit = s.fit(b, config)
					defer debug.SetMemoryLimit(debug.SetMemoryLimit(limit))
				}
				m := model(b, s.name+"/"+v.name, config, v.src, v.int8)
				vocab := m.Config().VocabSize
				sess, err := m.NewSession(promptLen + b.N + 1)
				if err != nil {
					b.Fatal(err)
				}
				r := rand.New(rand.NewPCG(2, uint64(b.N)))
				prompt := make([]int, promptLen)
				for i := range prompt {
					prompt[i] = r.IntN(vocab)
				}
				// Several prefills of the same prompt (the cache reset in
				// between): one alone moved by ±20% on the shared machine.
				// The median is prefill-tok/s, the fastest prefill-best-tok/s.
				var prefills []time.Duration
				for rep := range prefillReps {
					if rep > 0 {
						sess.Reset()
					}
					t0 := time.Now()
					if _, err := sess.Last(ctx, prompt); err != nil {
						b.Fatal(err)
					}
					prefills = append(prefills, time.Since(t0))
				}
				slices.Sort(prefills)
				// The roofline right before and after decoding: on a shared
				// machine it moves with the neighbours' load.
				roof := readBandwidth(runtime.GOMAXPROCS(0))
				b.ReportAllocs()
				cpu0 := cpuSeconds()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if _, err := sess.Step(ctx, r.IntN(vocab)); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				sec := b.Elapsed().Seconds()
				if c := cpuSeconds() - cpu0; c > 0 {
					// Cores actually used while decoding (the machine is shared).
					b.ReportMetric(c/sec, "cores")
				}
				b.ReportMetric(float64(promptLen)/prefills[len(prefills)/2].Seconds(), "prefill-tok/s")
				b.ReportMetric(float64(promptLen)/prefills[0].Seconds(), "prefill-best-tok/s")
				b.ReportMetric(float64(b.N)/sec, "decode-tok/s")
				gbs := float64(streamedBytes(m, v.src)) * float64(b.N) / sec / 1e9
				roof = (roof + readBandwidth(runtime.GOMAXPROCS(0))) / 2
				b.ReportMetric(gbs, "weight-GB/s")
				b.ReportMetric(100*gbs/roof, "%roofline")
			})
		}
	}
	if current.m != nil {
		current.m.Close()
		current.m, current.key = nil, ""
	}
}

// probeBuf is the read-bandwidth probe's array: 1 GiB, twice the 480 MiB
// L3 this machine reports, so reads come from DRAM.
var probeBuf []float32

// readBandwidth sums probeBuf once with threads goroutines (disjoint
// slices, fastest SIMD path) and returns GB/s.
func readBandwidth(threads int) float64 {
	if probeBuf == nil {
		probeBuf = make([]float32, 256<<20)
		for i := range probeBuf {
			probeBuf[i] = 1
		}
	}
	per := len(probeBuf) / threads
	t0 := time.Now()
	var wg sync.WaitGroup
	for t := range threads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			simd.Best.Sum(probeBuf[t*per : (t+1)*per])
		}()
	}
	wg.Wait()
	return float64(per*threads*4) / time.Since(t0).Seconds() / 1e9
}

// BenchmarkMemBandwidth is the read roofline: GOMAXPROCS goroutines sum
// disjoint slices of a 1 GiB array with the fastest SIMD path.
func BenchmarkMemBandwidth(b *testing.B) {
	readBandwidth(1) // allocate and fault in outside the timing
	for _, threads := range []int{1, runtime.GOMAXPROCS(0)} {
		b.Run(fmt.Sprintf("threads=%d", threads), func(b *testing.B) {
			cpu0 := cpuSeconds()
			var best float64
			for b.Loop() {
				best = max(best, readBandwidth(threads))
			}
			b.ReportMetric(float64(len(probeBuf)*4)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
			b.ReportMetric(best, "best-GB/s")
			b.ReportMetric((cpuSeconds()-cpu0)/b.Elapsed().Seconds(), "cores")
		})
	}
}
