package cpu

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/deepseek-go/deepseek-go/kernels"
)

// DeepSeek-V3 routed-expert widths: hidden 7168, moe_intermediate 2048,
// 128×128 fp8 blocks.
const v3Hidden, v3Inter, v3Block = 7168, 2048, 128

// v3Expert builds one expert (gate|up fused, down) in dt (BF16, F32 or
// FP8) with cheap random contents: normal bf16 values near ±0.01..1 (f32:
// the same values widened), every finite e4m3 byte with scales around 1e-3.
func v3Expert(b *testing.B, be *Backend, r *rand.Rand, dt kernels.DType) (gu, down kernels.Matrix) {
	mk := func(name string, rows, cols int) kernels.HostMatrix {
		h := kernels.HostMatrix{Name: name, Rows: rows, Cols: cols, DType: dt, Data: make([]byte, rows*cols*dt.Size())}
		for i := 0; i+8 <= len(h.Data); i += 8 {
			binary.LittleEndian.PutUint64(h.Data[i:], r.Uint64())
		}
		switch dt {
		case kernels.BF16:
			for i := 0; i < len(h.Data); i += 2 {
				u := binary.LittleEndian.Uint16(h.Data[i:])
				binary.LittleEndian.PutUint16(h.Data[i:], u&0x807f|(120+u>>7&7)<<7)
			}
			return h
		case kernels.F32:
			for i := 0; i < len(h.Data); i += 4 {
				u := binary.LittleEndian.Uint16(h.Data[i:])
				binary.LittleEndian.PutUint32(h.Data[i:], uint32(u&0x807f|(120+u>>7&7)<<7)<<16)
			}
			return h
		}
		for i, q := range h.Data {
			if q&0x7f == 0x7f { // no NaN
				h.Data[i] = q &^ 1
			}
		}
		h.BlockRows, h.BlockCols = v3Block, v3Block
		h.Scales = make([]float32, h.ScaleCols()*((rows+v3Block-1)/v3Block))
		for i := range h.Scales {
			h.Scales[i] = 1e-3 * (1 + r.Float32())
		}
		return h
	}
	var err error
	if gu, err = be.UploadMatrix([]kernels.HostMatrix{mk("gate", v3Inter, v3Hidden), mk("up", v3Inter, v3Hidden)}, false); err != nil {
		b.Fatal(err)
	}
	if down, err = be.UploadMatrix([]kernels.HostMatrix{mk("down", v3Hidden, v3Inter)}, false); err != nil {
		b.Fatal(err)
	}
	return gu, down
}

// BenchmarkFP8Expert runs DeepSeek-V3 routed experts (gate|up 2×2048×7168,
// down 7168×2048) in fp8, in bf16 and in f32 (what fp8 checkpoints were
// dequantised to before) on the default kernel path. Every iteration runs
// the same work in each dtype, timed apart, so that load from other
// processes on a shared machine falls on all alike. decode: one token
// through 16 experts (≈ 0.7 GB of fp8, 1.4 GB of bf16: past the 480 MiB
// L3, as a decode step streams its experts); GB/s counts weight bytes.
// prefill: n tokens through one expert; GMAC/s.
func BenchmarkFP8Expert(b *testing.B) {
	const experts = 16
	dts := []kernels.DType{kernels.FP8, kernels.BF16, kernels.F32}
	for _, threads := range []int{1, 2} {
		b.Run(fmt.Sprintf("decode/threads=%d", threads), func(b *testing.B) {
			be := New(threads)
			defer be.Close()
			r := rand.New(rand.NewPCG(7, 1))
			gus, downs := make([][]kernels.Matrix, len(dts)), make([][]kernels.Matrix, len(dts))
			bytes := make([]int64, len(dts))
			for d, dt := range dts {
				for range experts {
					gu, down := v3Expert(b, be, r, dt)
					gus[d], downs[d] = append(gus[d], gu), append(downs[d], down)
					bytes[d] += gu.Bytes() + down.Bytes()
				}
			}
			x, _ := be.Alloc(v3Hidden)
			g, _ := be.Alloc(v3Inter)
			u, _ := be.Alloc(v3Inter)
			y, _ := be.Alloc(v3Hidden)
			spent := make([]time.Duration, len(dts))
			b.ResetTimer()
			for b.Loop() {
				for d := range dts {
					t0 := time.Now()
					for e := range experts {
						be.MatMul([]kernels.Buffer{g, u}, x, 1, gus[d][e], nil)
						be.MatMul([]kernels.Buffer{y}, g, 1, downs[d][e], nil)
					}
					spent[d] += time.Since(t0)
				}
			}
			for d, dt := range dts {
				s := spent[d].Seconds() / float64(b.N)
				b.ReportMetric(float64(bytes[d])/s/1e9, dt.String()+"-GB/s")
				b.ReportMetric(s/experts*1e6, dt.String()+"-µs/expert")
			}
		})
	}
	for _, n := range []int{16, 128} {
		b.Run(fmt.Sprintf("prefill/n=%d/threads=2", n), func(b *testing.B) {
			be := New(2)
			defer be.Close()
			r := rand.New(rand.NewPCG(8, 1))
			gus, downs := make([]kernels.Matrix, len(dts)), make([]kernels.Matrix, len(dts))
			for d, dt := range dts {
				gus[d], downs[d] = v3Expert(b, be, r, dt)
			}
			x, _ := be.Alloc(n * v3Hidden)
			xd := x.(*Buffer).Data()
			for i := range xd {
				xd[i] = r.Float32() - 0.5
			}
			g, _ := be.Alloc(n * v3Inter)
			u, _ := be.Alloc(n * v3Inter)
			y, _ := be.Alloc(n * v3Hidden)
			spent := make([]time.Duration, len(dts))
			b.ResetTimer()
			for b.Loop() {
				for d := range dts {
					t0 := time.Now()
					be.MatMul([]kernels.Buffer{g, u}, x, n, gus[d], nil)
					be.MatMul([]kernels.Buffer{y}, g, n, downs[d], nil)
					spent[d] += time.Since(t0)
				}
			}
			macs := float64(n) * 3 * v3Inter * v3Hidden
			for d, dt := range dts {
				b.ReportMetric(macs*float64(b.N)/spent[d].Seconds()/1e9, dt.String()+"-GMAC/s")
			}
		})
	}
}
