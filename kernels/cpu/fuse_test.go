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
