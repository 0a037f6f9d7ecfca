package cpu

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/kernels"
)

// BenchmarkDecodeMatMul streams the projections of 12 coder-1.3b layers
// (≈ 1.2 GB in bf16, past the 480 MiB L3) through MatMul for one token, as
// a decode step does; GB/s counts weight bytes.
func BenchmarkDecodeMatMul(b *testing.B) {
	const hid, ffn, layers = 2048, 5504, 12
	r := rand.New(rand.NewPCG(1, 1))
	for _, tc := range []struct {
		name string
		dt   kernels.DType
		int8 bool
	}{{"bf16", kernels.BF16, false}, {"int8", kernels.BF16, true}, {"f32", kernels.F32, false}} {
		for _, threads := range []int{1, 2} {
			b.Run(fmt.Sprintf("%s/threads=%d", tc.name, threads), func(b *testing.B) {
				be := New(threads)
				defer be.Close()
				mk := func(rows, cols int) kernels.Matrix {
					// Normal (not denormal: those hit microcode assists) values.
					h, _ := hostMatrix(b, "w", randVec(r, rows*cols), rows, cols, tc.dt)
					m, err := be.UploadMatrix([]kernels.HostMatrix{h}, tc.int8)
					if err != nil {
						b.Fatal(err)
					}
					return m
				}
				type layer struct{ qkv, o, gu, down kernels.Matrix }
				var ls []layer
				var bytes int64
				for range layers {
					l := layer{mk(3*hid, hid), mk(hid, hid), mk(2*ffn, hid), mk(hid, ffn)}
					bytes += l.qkv.Bytes() + l.o.Bytes() + l.gu.Bytes() + l.down.Bytes()
					ls = append(ls, l)
				}
				x, _ := be.Alloc(ffn)
				y, _ := be.Alloc(2 * ffn)
				outs := []kernels.Buffer{y}
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					for _, l := range ls {
						be.MatMul(outs, x, 1, l.qkv, nil)
						be.MatMul(outs, x, 1, l.o, nil)
						be.MatMul(outs, x, 1, l.gu, nil)
						be.MatMul(outs, x, 1, l.down, nil)
					}
				}
				b.ReportMetric(float64(bytes)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
			})
		}
	}
}

// BenchmarkPrefillMatMul multiplies 64 tokens through one coder-1.3b
// layer's projections; reports GMAC/s (multiply-adds per second).
func BenchmarkPrefillMatMul(b *testing.B) {
	const hid, ffn, n = 2048, 5504, 64
	r := rand.New(rand.NewPCG(1, 1))
	for _, tc := range []struct {
		name string
		dt   kernels.DType
		int8 bool
	}{{"bf16", kernels.BF16, false}, {"int8", kernels.BF16, true}, {"f32", kernels.F32, false}, {"f16", kernels.F16, false}} {
		for _, threads := range []int{1, 2} {
			b.Run(fmt.Sprintf("%s/threads=%d", tc.name, threads), func(b *testing.B) {
				be := New(threads)
				defer be.Close()
				var ms []kernels.Matrix
				var macs int64
				for _, s := range [][2]int{{3 * hid, hid}, {hid, hid}, {2 * ffn, hid}, {hid, ffn}} {
					h, _ := hostMatrix(b, "w", randVec(r, s[0]*s[1]), s[0], s[1], tc.dt)
					m, err := be.UploadMatrix([]kernels.HostMatrix{h}, tc.int8)
					if err != nil {
						b.Fatal(err)
					}
					ms = append(ms, m)
					macs += int64(s[0]*s[1]) * n
				}
				x, _ := be.Alloc(n * ffn)
				require.NoError(b, be.Upload(x, 0, randVec(r, n*ffn)))
				y, _ := be.Alloc(n * 2 * ffn)
				outs := []kernels.Buffer{y}
				for b.Loop() {
					for _, m := range ms {
						be.MatMul(outs, x, n, m, nil)
					}
				}
				b.ReportMetric(float64(macs)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GMAC/s")
			})
		}
	}
}

// BenchmarkAttentionDecode: one token attending over ctx cached positions
// (coder-1.3b layer: 16 heads of 128); GB/s counts K and V bytes read.
func BenchmarkAttentionDecode(b *testing.B) {
	const heads, d = 16, 128
	for _, ctx := range []int{128, 1024, 4096} {
		b.Run(fmt.Sprintf("ctx=%d", ctx), func(b *testing.B) {
			be := New(0)
			defer be.Close()
			r := rand.New(rand.NewPCG(1, 2))
			spec := kernels.KVSpec{Layers: 1, MaxTokens: ctx + 1, KVHeads: heads, KDim: d, VDim: d}
			c, err := be.NewKVCache(spec)
			require.NoError(b, err)
			kv := c.(*KVCache)
			copy(kv.k[0], randVec(r, len(kv.k[0])))
			copy(kv.v[0], randVec(r, len(kv.v[0])))
			q, _ := be.Alloc(heads * d)
			require.NoError(b, be.Upload(q, 0, randVec(r, heads*d)))
			k, _ := be.Alloc(heads * d)
			o, _ := be.Alloc(heads * d)
			b.ReportAllocs()
			for b.Loop() {
				be.Attention(o, q, k, k, c, 0, ctx, 1, heads, 0.088)
			}
			b.ReportMetric(float64(2*ctx*heads*d*4)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
		})
	}
}

// BenchmarkDecodeRowLength: one token through a 1 GiB bf16 matrix of
// 2048, 5504 or 16384 columns on the default threads: the row length
// decides how the decode kernel's streams look to the prefetchers.
func BenchmarkDecodeRowLength(b *testing.B) {
	for _, cols := range []int{2048, 5504, 16384} {
		rows := (1 << 29) / cols
		be := New(0)
		data := make([]byte, rows*cols*2)
		for i := 1; i < len(data); i += 2 {
			data[i] = 0x3f // bf16 in [0.5, 1): normal numbers
		}
		m, err := be.UploadMatrix([]kernels.HostMatrix{{Name: "w", Rows: rows, Cols: cols, DType: kernels.BF16, Data: data}}, false)
		require.NoError(b, err)
		x, _ := be.Alloc(cols)
		y, _ := be.Alloc(rows)
		b.Run(fmt.Sprintf("cols=%d", cols), func(b *testing.B) {
			for b.Loop() {
				be.MatMul([]kernels.Buffer{y}, x, 1, m, nil)
			}
			b.ReportMetric(float64(rows*cols*2)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
		})
		be.Close()
	}
}
