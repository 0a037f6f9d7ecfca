package safetensors

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// BenchmarkOpen measures opening and validating checkpoints (mmap, header
// parse, span checks); tensor bytes are not touched.
func BenchmarkOpen(b *testing.B) {
	for _, dir := range []string{"stories260K", "models/llama-mha-bf16-sharded", "models/deepseek-v3-fp8"} {
		b.Run(filepath.Base(dir), func(b *testing.B) {
			path := filepath.Join(testdata, dir)
			n := 0
			for b.Loop() {
				c, err := Open(path)
				if err != nil {
					b.Fatal(err)
				}
				n = c.Len()
				if err := c.Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n), "tensors")
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/float64(n), "µs/tensor")
		})
	}
}

// BenchmarkParseHeader parses a synthetic header shaped like a large MoE
// checkpoint's (DeepSeek-V3 has about 91k tensors, most of them experts).
func BenchmarkParseHeader(b *testing.B) {
	const n = 20000
	var sb strings.Builder
	sb.WriteString(`{"__metadata__":{"format":"pt"}`)
	off := 0
	for i := range n {
		size := 7168 * 2048
		fmt.Fprintf(&sb, `,"model.layers.%d.mlp.experts.%d.gate_proj.weight":{"dtype":"F8_E4M3","shape":[2048,7168],"data_offsets":[%d,%d]}`,
			i/256, i%256, off, off+size)
		off += size
	}
	sb.WriteString("}")
	js := []byte(sb.String())
	b.SetBytes(int64(len(js)))
	for b.Loop() {
		if _, err := parseHeader(js, off); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/tensor")
}
