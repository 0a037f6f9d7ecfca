package cpu

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/kernels"
)

// TestMatMulAdd: MatMulAdd equals MatMul followed by Add, bit for bit, with
// and without bias and for one and several rows.
func TestMatMulAdd(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	be := New(1)
	defer be.Close()
	const rows, cols = 33, 48
	h, _ := hostMatrix(t, "w", randVec(r, rows*cols), rows, cols, kernels.BF16)
	w, err := be.UploadMatrix([]kernels.HostMatrix{h}, false)
	require.NoError(t, err)
	for _, n := range []int{1, 5} {
		for _, withBias := range []bool{false, true} {
			x := &Buffer{data: randVec(r, n*cols)}
			out := &Buffer{data: randVec(r, n*rows)}
			var bias kernels.Buffer
			if withBias {
				bias = &Buffer{data: randVec(r, rows)}
			}
			y := &Buffer{data: make([]float32, n*rows)}
			be.MatMul([]kernels.Buffer{y}, x, n, w, bias)
			want := make([]float32, n*rows)
			for i := range want {
				want[i] = out.data[i] + y.data[i]
			}
			be.MatMulAdd(out, &Buffer{data: make([]float32, n*rows)}, x, n, w, bias)
			assert.Equal(t, want, out.data, "n=%d bias=%v", n, withBias)
		}
	}
}

// TestMatMulAddErrors: CheckMatMulAdd names the op and the offending size.
func TestMatMulAddErrors(t *testing.T) {
	be := New(1)
	defer be.Close()
	h, _ := hostMatrix(t, "w", make([]float32, 4*8), 4, 8, kernels.F32)
	w, err := be.UploadMatrix([]kernels.HostMatrix{h}, false)
	require.NoError(t, err)
	fused, err := be.UploadMatrix([]kernels.HostMatrix{h, h}, false)
	require.NoError(t, err)
	buf := func(n int) kernels.Buffer { return &Buffer{data: make([]float32, n)} }
	out, tmp, x := buf(8), buf(8), buf(16)
	for _, c := range []struct {
		name           string
		out, tmp, x, b kernels.Buffer
		w              kernels.Matrix
		want           string
	}{
		{"parts", out, tmp, x, nil, fused, "2 parts"},
		{"short out", buf(7), tmp, x, nil, w, "out of 7"},
		{"short tmp", out, buf(3), x, nil, w, "tmp of 3"},
		{"short x", out, tmp, buf(15), nil, w, "x of 15"},
		{"short bias", out, tmp, x, buf(3), w, "bias of 3"},
		{"alias", out, out, x, nil, w, "alias"},
	} {
		err := kernels.CheckMatMulAdd(c.out, c.tmp, c.x, 2, c.w, c.b)
		require.Error(t, err, c.name)
		assert.Contains(t, err.Error(), "MatMulAdd", c.name)
		assert.Contains(t, err.Error(), c.want, c.name)
	}
	assert.NoError(t, kernels.CheckMatMulAdd(out, tmp, x, 2, w, buf(4)))
}

// TestMLAPackRope: MLAPack with MLAPackShape.RoPE equals ApplyRope on the
// query heads and the rope key followed by MLAPack without it, bit for bit.
func TestMLAPackRope(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	be := New(1)
	defer be.Close()
	s := kernels.MLAPackShape{Heads: 3, Nope: 5, Rope: 6, Lora: 37, Eps: 1e-5}
	kd, qh := s.Lora+s.Rope, s.Nope+s.Rope
	for _, interleaved := range []bool{true, false} {
		rope := kernels.Rope{Dim: s.Rope, InvFreq: []float32{1, 0.1, 0.01}, Scale: 1.1, Interleaved: interleaved}
		const n, pos0 = 4, 300
		q, lat, kr, w := randVec(r, n*s.Heads*qh), randVec(r, n*s.Lora), randVec(r, n*s.Rope), randVec(r, s.Lora)
		k, qabs := &Buffer{data: make([]float32, n*kd)}, &Buffer{data: randVec(r, n*s.Heads*kd)}
		k2, qabs2 := &Buffer{data: make([]float32, n*kd)}, &Buffer{data: append([]float32(nil), qabs.data...)}
		sr := s
		sr.RoPE, sr.Pos0 = &rope, pos0
		be.MLAPack(k, qabs, &Buffer{data: append([]float32(nil), q...)}, &Buffer{data: lat}, &Buffer{data: append([]float32(nil), kr...)}, &Buffer{data: w}, n, sr)
		rq := rope
		rq.Off = s.Nope
		qb, kb := &Buffer{data: q}, &Buffer{data: kr}
		be.ApplyRope(qb, n, s.Heads, qh, pos0, &rq)
		be.ApplyRope(kb, n, 1, s.Rope, pos0, &rope)
		be.MLAPack(k2, qabs2, qb, &Buffer{data: lat}, kb, &Buffer{data: w}, n, s)
		assert.Equal(t, k2.data, k.data, "k interleaved=%v", interleaved)
		assert.Equal(t, qabs2.data, qabs.data, "q_abs interleaved=%v", interleaved)
	}
	sr := s
	sr.RoPE = &kernels.Rope{Dim: 4, InvFreq: []float32{1, 2}, Scale: 1}
	buf := func(n int) kernels.Buffer { return &Buffer{data: make([]float32, n)} }
	err := kernels.CheckMLAPack(buf(kd), buf(s.Heads*kd), buf(s.Heads*qh), buf(s.Lora), buf(s.Rope), buf(s.Lora), 1, sr)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "MLAPack: rope of 4 dims")
}
