//go:build linux && cgo

package cuda

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/kernels"
)

// TestMatMulAddParity: MatMulAdd (gemv_add up to 8 rows on 16-byte weight
// rows, else MatMul into tmp and add) against the CPU's MatMul + Add, on a
// random out that the product is added to, for every weight dtype.
func TestMatMulAddParity(t *testing.T) {
	r := newRig(t, Options{})
	type mats struct{ g, c kernels.Matrix }
	upload := func(dt kernels.DType, rows, cols int) mats {
		switch dt {
		case kernels.Int8: // the CPU multiplies the dequantised int8 values
			h := hostMatrix("w", randVec(r.rnd, rows*cols), rows, cols, kernels.F32)
			q, err := quantizeParts([]kernels.HostMatrix{h})
			require.NoError(t, err)
			f := make([]float32, rows*cols)
			for i := range f {
				f[i] = float32(int8(q[0].Data[i])) * q[0].Scales[i/cols]
			}
			g, err := r.g.UploadMatrix([]kernels.HostMatrix{h}, true)
			require.NoError(t, err)
			c, err := r.c.UploadMatrix([]kernels.HostMatrix{hostMatrix("w", f, rows, cols, kernels.F32)}, false)
			require.NoError(t, err)
			return mats{g, c}
		case kernels.FP8:
			h := randFP8(r.rnd, "w", rows, cols, 128, 128, 0)
			if cols%16 != 0 {
				h = randFP8(r.rnd, "w", rows, cols, 3, 5, 1) // scalar blocks: the fallback
			}
			g, err := r.g.UploadMatrix([]kernels.HostMatrix{h}, false)
			require.NoError(t, err)
			c, err := r.c.UploadMatrix([]kernels.HostMatrix{h}, false)
			require.NoError(t, err)
			return mats{g, c}
		}
		h := hostMatrix("w", randVec(r.rnd, rows*cols), rows, cols, dt)
		g, err := r.g.UploadMatrix([]kernels.HostMatrix{h}, false)
		require.NoError(t, err)
		c, err := r.c.UploadMatrix([]kernels.HostMatrix{h}, false)
		require.NoError(t, err)
		return mats{g, c}
	}
	for _, dt := range []kernels.DType{kernels.F32, kernels.F16, kernels.BF16, kernels.Int8, kernels.FP8} {
		for _, sh := range []struct {
			rows, cols int
			bias       bool
		}{
			{96, 64, false},
			{2048, 2048, true}, // V2-Lite's o_proj and down (16 × 128 → 2048)
			{7, 256, true},     // fewer rows than a block's warps
			{64, 172, false},   // odd width: the fallback
		} {
			w := upload(dt, sh.rows, sh.cols)
			for _, n := range []int{1, 3, 8, 17} {
				name := fmt.Sprintf("%v/%d×%d/bias=%v/n=%d", dt, sh.rows, sh.cols, sh.bias, n)
				x := r.rand(n * sh.cols)
				out := r.rand(n * sh.rows) // the residual the product is added to
				tmp := r.poisoned(n * sh.rows)
				var gb, cb kernels.Buffer
				if sh.bias {
					b := r.rand(sh.rows)
					gb, cb = b.g, b.c
				}
				r.g.MatMulAdd(out.g, tmp.g, x.g, n, w.g, gb)
				r.c.MatMulAdd(out.c, tmp.c, x.c, n, w.c, cb)
				tol := tolF32
				if n > 8 && dt != kernels.F32 && dt != kernels.Int8 {
					tol = tol16 // cuBLASLt or the tensor-core GEMMs on 16-bit activations
				}
				r.check(name, out, n*sh.rows, tol)
			}
		}
	}
}

// TestMatMulAddErrors: bad calls are errors naming the op, not crashes.
func TestMatMulAddErrors(t *testing.T) {
	r := newRig(t, Options{})
	h := hostMatrix("w", randVec(r.rnd, 32*64), 32, 64, kernels.F32)
	w, err := r.g.UploadMatrix([]kernels.HostMatrix{h, h}, false)
	require.NoError(t, err)
	x, out := r.rand(64), r.rand(64)
	r.g.MatMulAdd(out.g, out.g, x.g, 1, w, nil)
	require.ErrorContains(t, r.g.Err(), "MatMulAdd")
}
