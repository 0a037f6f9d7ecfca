//go:build fp8study

package engine

// Issue #13 study: the fp8 fixture is 4.5–5.1e-2 from its reference on the
// GPU (H100, session 4) and 2.2e-3 on the CPU. Which rounding does that,
// and which prefill numerics would bring it under the 3e-2 that 16-bit
// checkpoints meet? Emulated on the CPU, not part of CI:
//
//	go test ./engine -tags fp8study -run TestFP8Study -v
//
// fp8Study wraps the CPU backend and rounds what the CUDA backend rounds:
// matmuls of more than 8 rows (the cuBLASLt / tensor-core prefill; up to 8
// rows run the exact float32 GEMV) on 16-bit matrices take bf16-rounded
// activations, and on fp8 matrices the variant's rounding of the
// dequantised weight (value × block scale) and of the activation; K and V
// are rounded to f16 before the cache (the GPU's f16 KV cache). Routed
// experts with more than 8 rows get the variant's rounding of their
// weights and of their input (not of the SwiGLU output inside, which the
// grouped GEMM also rounds: an underestimate there).
//
// Result (2026-12-06; worst relative error against the reference, absorbed
// / naive MLA; greedy 16/16 unless said). The emulation reproduces the
// H100: "gpu today" 5.04e-2 / 4.29e-2 (H100: 5.12e-2 / 4.54e-2, greedy 16/16
// there) and on the bf16 fixture 2.55e-2 / 2.32e-2 (H100: 2.57e-2 / 2.32e-2).
//
//	fp8 fixture                        absorbed        naive
//	cpu, exact                         6.3e-6          6.8e-6
//	gpu today: bf16 w, bf16 a, f16 KV  5.04e-2 (15/16) 4.29e-2 (15/16)
//	bf16 w, bf16 a, f32 KV             4.49e-2         5.75e-2 (15/16)
//	exact w, bf16 a, f16 KV            0.818 (15/16)   3.94e-2
//	f16 w, f16 a, f16 KV               4.31e-3         8.27e-3
//	f16 w, bf16 a, f16 KV              0.817 (15/16)   2.70e-2
//	bf16 w, f16 a, f16 KV              3.14e-2 (15/16) 3.05e-2 (15/16)
//
// Every variant with bf16 activations can flip a routing decision of
// this tiny random net (the 0.8 jumps: one token routed to another expert),
// so exact weights alone do not help; f16 for both the dequantised weight
// and the activation keeps the fixture at 4–8e-3, inside the 16-bit bound
// of 3e-2 by 4×. The next step on the GPU: an f16 prefill for fp8 matrices
// (dequantise to f16, f16 activations through cuBLASLt's f16 path), with a
// guard for activations beyond f16's range (the conversion saturates).

import (
	"context"
	"encoding/binary"
	"math"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/engine/layers"
	"github.com/deepseek-go/deepseek-go/kernels"
	"github.com/deepseek-go/deepseek-go/kernels/cpu"
	"github.com/deepseek-go/deepseek-go/quant"
)

type rounding func(float32) float32

func exact(v float32) float32  { return v }
func toBF16(v float32) float32 { return quant.BF16ToF32(quant.F32ToBF16(v)) }
func toF16(v float32) float32  { return quant.F16ToF32(quant.F32ToF16(v)) }
func roundAll(x []float32, r rounding) {
	for i, v := range x {
		x[i] = r(v)
	}
}

type fp8Variant struct {
	name       string
	w, a       rounding // fp8 matrices: dequantised weight, activation
	kvF16, b16 bool     // f16 KV cache; bf16 activations for 16-bit matrices
	minRows    int      // matmuls of more rows than this are rounded
}

type fp8Study struct {
	kernels.Backend
	kernels.MoE
	kernels.DTypeSupporter
	v        fp8Variant
	fp8, b16 map[kernels.Matrix]bool
	fp8Ex    map[kernels.Experts]bool
}

// roundedCopy returns a new buffer holding buf[:n] rounded by r.
func (b *fp8Study) roundedCopy(buf kernels.Buffer, n int, r rounding) kernels.Buffer {
	h := make([]float32, n)
	if err := b.Download(h, buf, 0); err != nil {
		panic(err)
	}
	roundAll(h, r)
	out, err := b.Alloc(n)
	if err != nil {
		panic(err)
	}
	if err := b.Upload(out, 0, h); err != nil {
		panic(err)
	}
	return out
}

// widenRounded dequantises an fp8 part to f32 and applies r.
func widenRounded(p kernels.HostMatrix, r rounding) (kernels.HostMatrix, error) {
	if err := layers.WidenHost(&p); err != nil {
		return p, err
	}
	f := make([]float32, p.Rows*p.Cols)
	for j := range f {
		f[j] = r(math.Float32frombits(binary.LittleEndian.Uint32(p.Data[4*j:])))
	}
	p.Data = layers.FloatsToLE(f)
	return p, nil
}

func (b *fp8Study) UploadMatrix(parts []kernels.HostMatrix, int8 bool) (kernels.Matrix, error) {
	switch parts[0].DType {
	case kernels.FP8:
		out := make([]kernels.HostMatrix, len(parts))
		for i, p := range parts {
			var err error
			if out[i], err = widenRounded(p, b.v.w); err != nil {
				return nil, err
			}
		}
		m, err := b.Backend.UploadMatrix(out, false)
		if err == nil {
			b.fp8[m] = true
		}
		return m, err
	case kernels.BF16, kernels.F16:
		m, err := b.Backend.UploadMatrix(parts, int8)
		if err == nil {
			b.b16[m] = true
		}
		return m, err
	}
	return b.Backend.UploadMatrix(parts, int8)
}

func (b *fp8Study) MatMul(outs []kernels.Buffer, x kernels.Buffer, n int, w kernels.Matrix, bias kernels.Buffer) {
	if n > b.v.minRows {
		switch {
		case b.fp8[w]:
			x = b.roundedCopy(x, n*w.Cols(), b.v.a)
		case b.b16[w] && b.v.b16:
			x = b.roundedCopy(x, n*w.Cols(), toBF16)
		}
	}
	b.Backend.MatMul(outs, x, n, w, bias)
}

func (b *fp8Study) Attention(out, q, k, v kernels.Buffer, cache kernels.KVCache, layer, pos0, n, heads int, scale float32) {
	if b.v.kvF16 {
		sp := cache.Spec()
		k = b.roundedCopy(k, n*sp.KVHeads*sp.KDim, toF16)
		if !sp.VInK {
			v = b.roundedCopy(v, n*sp.KVHeads*sp.VDim, toF16)
		}
	}
	b.Backend.Attention(out, q, k, v, cache, layer, pos0, n, heads, scale)
}

func (b *fp8Study) UploadExperts(p kernels.ExpertParts, int8 bool) (kernels.Experts, error) {
	if len(p.Gate) == 0 || p.Gate[0].DType != kernels.FP8 {
		return b.MoE.UploadExperts(p, int8)
	}
	widen := func(ms []kernels.HostMatrix) ([]kernels.HostMatrix, error) {
		out := make([]kernels.HostMatrix, len(ms))
		for i, m := range ms {
			var err error
			if out[i], err = widenRounded(m, b.v.w); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	var err error
	q := kernels.ExpertParts{First: p.First}
	if q.Gate, err = widen(p.Gate); err != nil {
		return nil, err
	}
	if q.Up, err = widen(p.Up); err != nil {
		return nil, err
	}
	if q.Down, err = widen(p.Down); err != nil {
		return nil, err
	}
	ex, err := b.MoE.UploadExperts(q, false)
	if err == nil {
		b.fp8Ex[ex] = true
	}
	return ex, err
}

func (b *fp8Study) MoEExperts(out, x kernels.Buffer, n int, ex kernels.Experts, rt kernels.MoERoutes, accumulate bool) {
	if n > b.v.minRows && b.fp8Ex[ex] {
		x = b.roundedCopy(x, n*ex.Hidden(), b.v.a)
	}
	b.MoE.MoEExperts(out, x, n, ex, rt, accumulate)
}

// TestFP8Study prints the worst relative error against the transformers
// reference of the fp8 and bf16 DeepSeek-V3 fixtures under each emulated
// numerics, both MLA paths.
func TestFP8Study(t *testing.T) {
	variants := []fp8Variant{
		{name: "cpu (exact)", w: exact, a: exact, minRows: math.MaxInt},
		{name: "gpu today: bf16 w, bf16 a, f16 KV", w: toBF16, a: toBF16, kvF16: true, b16: true, minRows: 8},
		{name: "bf16 w, bf16 a, f32 KV", w: toBF16, a: toBF16, b16: true, minRows: 8},
		{name: "exact w, bf16 a, f16 KV", w: exact, a: toBF16, kvF16: true, b16: true, minRows: 8},
		{name: "f16 w, f16 a, f16 KV", w: toF16, a: toF16, kvF16: true, b16: true, minRows: 8},
		{name: "f16 w, bf16 a, f16 KV", w: toF16, a: toBF16, kvF16: true, b16: true, minRows: 8},
		{name: "bf16 w, f16 a, f16 KV", w: toBF16, a: toF16, kvF16: true, b16: true, minRows: 8},
	}
	for _, fixture := range []string{"deepseek-v3-fp8", "deepseek-v3-bf16"} {
		for _, path := range []string{MLAAbsorbed, MLANaive} {
			for _, v := range variants {
				inner := cpu.New(1)
				be := &fp8Study{Backend: inner, MoE: inner, DTypeSupporter: inner, v: v,
					fp8: map[kernels.Matrix]bool{}, b16: map[kernels.Matrix]bool{}, fp8Ex: map[kernels.Experts]bool{}}
				dir := fixtureDir(fixture)
				m, err := Load(dir, WithBackend(be), WithMLA(path))
				require.NoError(t, err)
				r, err := Verify(context.Background(), m, filepath.Join(dir, "reference.safetensors"))
				require.NoError(t, err)
				t.Logf("%-16s %-8s %-36s worst %.3g at %-10s greedy %d/%d", fixture, path, v.name, r.Worst, r.WorstAt, r.Match, len(r.RefIDs))
				m.Close()
			}
		}
	}
}
