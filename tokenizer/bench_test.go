package tokenizer

import (
	"path/filepath"
	"strings"
	"testing"
)

// benchCorpus joins the texts of an encode.jsonl vector file (Go source,
// Chinese prose, random Unicode): about 0.3 MB.
func benchCorpus(b *testing.B, name string) string {
	vs := readJSONL(b, filepath.Join(dirVectors, name))
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = v.Text
	}
	return strings.Join(parts, "\n")
}

func benchEncode(b *testing.B, dir, corpus string, cold bool) {
	tok := loadTok(b, dir)
	text := benchCorpus(b, corpus)
	if !cold {
		if _, err := tok.Encode(text, false); err != nil { // warm the cache
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for i := 0; i < b.N; i++ {
		if cold {
			tok.model.resetCache()
		}
		ids, err := tok.Encode(text, false)
		if err != nil {
			b.Fatal(err)
		}
		n = len(ids)
	}
	b.StopTimer()
	sec := b.Elapsed().Seconds() / float64(b.N)
	b.ReportMetric(float64(len(text))/sec/1e6, "MB/s")
	b.ReportMetric(float64(n)/sec, "tokens/s")
}

// BenchmarkEncodeDeepSeekV3 measures encoding throughput with a warm
// per-word merge cache (the steady state of a server).
func BenchmarkEncodeDeepSeekV3(b *testing.B) {
	benchEncode(b, dirDeepSeekV3, "deepseek-v3.encode.jsonl", false)
}

// BenchmarkEncodeDeepSeekV3Cold empties the merge cache before each pass.
func BenchmarkEncodeDeepSeekV3Cold(b *testing.B) {
	benchEncode(b, dirDeepSeekV3, "deepseek-v3.encode.jsonl", true)
}

func BenchmarkEncodeQwen2(b *testing.B) {
	benchEncode(b, dirQwen2, "qwen2.encode.jsonl", false)
}

func BenchmarkEncodeStories260K(b *testing.B) {
	benchEncode(b, dirStories, "stories260K.encode.jsonl", false)
}

func BenchmarkDecodeDeepSeekV3(b *testing.B) {
	tok := loadTok(b, dirDeepSeekV3)
	text := benchCorpus(b, "deepseek-v3.encode.jsonl")
	ids, err := tok.Encode(text, false)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(text)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_ = tok.Decode(ids)
	}
}

func BenchmarkStreamDecodeDeepSeekV3(b *testing.B) {
	tok := loadTok(b, dirDeepSeekV3)
	text := benchCorpus(b, "deepseek-v3.encode.jsonl")[:20000]
	ids, err := tok.Encode(text, false)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d := tok.NewStreamDecoder()
		for _, id := range ids {
			_ = d.Next(id)
		}
		_ = d.Flush()
	}
	b.ReportMetric(float64(len(ids)*b.N)/b.Elapsed().Seconds(), "tokens/s")
}

func BenchmarkLoadDeepSeekV3(b *testing.B) {
	for i := 0; i < b.N; i++ {
		if _, err := Load(dirDeepSeekV3); err != nil {
			b.Fatal(err)
		}
	}
}
