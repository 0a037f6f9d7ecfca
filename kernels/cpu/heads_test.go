package cpu

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/kernels"
)

// TestMatMulHeads runs MatMulHeads on every kernel path, for every dtype,
// odd shapes and token counts, with gaps between the heads' slices of x
// and y, against MatMul of each head's own matrix on the gathered slices.
// Elements of y outside the heads' outputs must keep their value.
func TestMatMulHeads(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	shapes := []struct{ heads, rows, cols int }{
		{1, 5, 7}, {3, 17, 33}, {4, 64, 48}, {16, 40, 128}, {2, 130, 96},
	}
	for name, be := range backendPaths(t) {
		for _, dt := range []kernels.DType{kernels.F32, kernels.F16, kernels.BF16, kernels.Int8, kernels.FP8} {
			for _, sh := range shapes {
				var parts []kernels.HostMatrix
				for h := range sh.heads {
					var hm kernels.HostMatrix
					switch dt {
					case kernels.FP8:
						hm, _ = randFP8(r, fmt.Sprintf("w%d", h), fp8Shape{rows: sh.rows, br: 4, bc: 16, row0: h % 4}, sh.cols)
					case kernels.Int8:
						hm, _ = hostMatrix(t, fmt.Sprintf("w%d", h), randVec(r, sh.rows*sh.cols), sh.rows, sh.cols, kernels.F32)
					default:
						hm, _ = hostMatrix(t, fmt.Sprintf("w%d", h), randVec(r, sh.rows*sh.cols), sh.rows, sh.cols, dt)
					}
					parts = append(parts, hm)
				}
				toInt8 := dt == kernels.Int8
				w, err := be.UploadMatrix(parts, toInt8)
				require.NoError(t, err)
				per := make([]kernels.Matrix, sh.heads)
				for h := range per {
					per[h], err = be.UploadMatrix(parts[h:h+1], toInt8)
					require.NoError(t, err)
				}
				for _, n := range []int{1, 3, 9} {
					label := fmt.Sprintf("%s/%v/%d×%d×%d/n=%d", name, dt, sh.heads, sh.rows, sh.cols, n)
					xHead, yHead := sh.cols+3, sh.rows+2
					xRow, yRow := sh.heads*xHead+5, sh.heads*yHead+1
					xv := randVec(r, n*xRow)
					x := &Buffer{data: xv}
					y := &Buffer{data: make([]float32, n*yRow)}
					for i := range y.data {
						y.data[i] = 7
					}
					be.MatMulHeads(y, yRow, yHead, x, xRow, xHead, n, w)
					want := make([]float32, n*yRow)
					for i := range want {
						want[i] = 7
					}
					for h := range sh.heads {
						xs := &Buffer{data: make([]float32, n*sh.cols)}
						for t := range n {
							copy(xs.data[t*sh.cols:(t+1)*sh.cols], xv[t*xRow+h*xHead:])
						}
						ys := &Buffer{data: make([]float32, n*sh.rows)}
						be.MatMul([]kernels.Buffer{ys}, xs, n, per[h], nil)
						for t := range n {
							copy(want[t*yRow+h*yHead:], ys.data[t*sh.rows:(t+1)*sh.rows])
						}
					}
					assert.LessOrEqual(t, relErr(y.data, want), 1e-5, label)
					for i, v := range want {
						if v == 7 && y.data[i] != 7 {
							t.Fatalf("%s: element %d outside the heads' outputs written", label, i)
						}
					}
				}
			}
		}
	}
}

// TestMatMulHeadsErrors: bad shapes panic with CheckHeads' message, which
// names the op and the size.
func TestMatMulHeadsErrors(t *testing.T) {
	be := New(1)
	defer be.Close()
	r := rand.New(rand.NewPCG(1, 2))
	a, _ := hostMatrix(t, "a", randVec(r, 4*8), 4, 8, kernels.F32)
	b, _ := hostMatrix(t, "b", randVec(r, 3*8), 3, 8, kernels.F32)
	uneven, err := be.UploadMatrix([]kernels.HostMatrix{a, b}, false)
	require.NoError(t, err)
	even, err := be.UploadMatrix([]kernels.HostMatrix{a, a}, false)
	require.NoError(t, err)
	x, _ := be.Alloc(64)
	y, _ := be.Alloc(64)
	assert.PanicsWithValue(t, "cpu: MatMulHeads: head 1 has 3 rows, head 0 has 4 (parts must be equal)", func() {
		be.MatMulHeads(y, 8, 4, x, 16, 8, 1, uneven)
	})
	assert.PanicsWithValue(t, "cpu: MatMulHeads: output aliases the input", func() {
		be.MatMulHeads(x, 8, 4, x, 16, 8, 1, even)
	})
	assert.Panics(t, func() { be.MatMulHeads(y, 8, 2, x, 16, 8, 1, even) }, "overlapping heads")
	assert.Panics(t, func() { be.MatMulHeads(y, 8, 4, x, 16, 8, 5, even) }, "input too short")
	be.MatMulHeads(y, 8, 4, x, 16, 8, 0, even) // nothing to do
}

// TestMatMulHeadsAllocs: a warm decode-size MatMulHeads allocates nothing.
func TestMatMulHeadsAllocs(t *testing.T) {
	be := allocsBackend(t)
	r := rand.New(rand.NewPCG(3, 4))
	for _, int8 := range []bool{false, true} {
		var parts []kernels.HostMatrix
		for range 8 {
			h, _ := hostMatrix(t, "w", randVec(r, 64*32), 64, 32, kernels.BF16)
			parts = append(parts, h)
		}
		w, err := be.UploadMatrix(parts, int8)
		require.NoError(t, err)
		x, _ := be.Alloc(8 * 48)
		y, _ := be.Alloc(8 * 80)
		allocs := testing.AllocsPerRun(50, func() { be.MatMulHeads(y, 8*80, 80, x, 8*48, 48, 1, w) })
		assert.Zero(t, allocs, "int8=%v", int8)
	}
}

// TestMLAPack: MLAPack equals the norm and the three strided copies it
// replaces (RMSNorm, Copy2D), on odd shapes and several rows, and leaves
// the latent parts of q_abs alone.
func TestMLAPack(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	be := New(1)
	defer be.Close()
	up := func(v []float32) kernels.Buffer { return upload(t, be, v) }
	read := func(b kernels.Buffer) []float32 { return download(t, be, b) }
	for _, s := range []kernels.MLAPackShape{
		{Heads: 16, Nope: 128, Rope: 64, Lora: 512, Eps: 1e-6},
		{Heads: 3, Nope: 5, Rope: 6, Lora: 37, Eps: 1e-5},
		{Heads: 1, Nope: 0, Rope: 2, Lora: 3, Eps: 1e-6},
	} {
		for _, n := range []int{1, 4} {
			kd, qh := s.Lora+s.Rope, s.Nope+s.Rope
			q, lat, kr, w := up(randVec(r, n*s.Heads*qh)), up(randVec(r, n*s.Lora)), up(randVec(r, n*s.Rope)), up(randVec(r, s.Lora))
			qa0 := randVec(r, n*s.Heads*kd)
			k, qabs := up(make([]float32, n*kd)), up(qa0)
			be.MLAPack(k, qabs, q, lat, kr, w, n, s)

			wantK, wantQ := up(make([]float32, n*kd)), up(qa0)
			normed := up(make([]float32, n*s.Lora))
			be.RMSNorm(normed, lat, w, n, s.Lora, s.Eps)
			be.Copy2D(wantK, 0, kd, normed, 0, s.Lora, n, s.Lora)
			be.Copy2D(wantK, s.Lora, kd, kr, 0, s.Rope, n, s.Rope)
			be.Copy2D(wantQ, s.Lora, kd, q, s.Nope, qh, n*s.Heads, s.Rope)
			assert.Equal(t, read(wantK), read(k), "k %+v n=%d", s, n)
			assert.Equal(t, read(wantQ), read(qabs), "q_abs %+v n=%d", s, n)
		}
	}
	short, _ := be.Alloc(3)
	err := kernels.CheckMLAPack(short, short, short, short, short, short, 1, kernels.MLAPackShape{Heads: 1, Rope: 2, Lora: 2})
	require.ErrorContains(t, err, "MLAPack")
	require.Panics(t, func() {
		be.MLAPack(short, short, short, short, short, short, 1, kernels.MLAPackShape{Heads: 1, Rope: 2, Lora: 2})
	})
}
