package safetensors

import (
	"path/filepath"
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
