package quant

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestQuantizeRow(t *testing.T) {
	for _, tc := range []struct {
		name    string
		src     []float32
		want    []int8
		scale   float32
		wantErr bool
	}{
		{"max maps to 127", []float32{1.27, -0.635, 0, 0.01}, []int8{127, -64, 0, 1}, 0.01, false},
		{"negative max", []float32{-2.54, 1}, []int8{-127, 50}, 0.02, false},
		{"zero row", []float32{0, 0, 0}, []int8{0, 0, 0}, 0, false},
		{"inf", []float32{1, float32(math.Inf(1))}, nil, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := make([]int8, len(tc.src))
			s, sum, err := QuantizeRow(dst, tc.src)
			if tc.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.InDelta(t, tc.scale, s, 1e-7)
			assert.Equal(t, tc.want, dst)
			var want int32
			for _, q := range tc.want {
				want += int32(q)
			}
			assert.Equal(t, want, sum)
		})
	}
	_, _, err := QuantizeRow(make([]int8, 2), make([]float32, 3))
	require.ErrorContains(t, err, "2 outputs for 3 inputs")
}

func TestQuantizeActs(t *testing.T) {
	dst := make([]uint8, 4)
	s := QuantizeActs(dst, []float32{1.27, -1.27, 0.004, -0.006})
	assert.InDelta(t, 0.01, s, 1e-7)
	assert.Equal(t, []uint8{255, 1, 128, 127}, dst)
	assert.Zero(t, QuantizeActs(dst, []float32{0, 0, 0, 0}))
	assert.Equal(t, []uint8{128, 128, 128, 128}, dst)
	assert.True(t, math.IsNaN(float64(QuantizeActs(dst, []float32{1, float32(math.NaN()), 0, 0}))) ||
		math.IsNaN(float64(QuantizeActs(dst, []float32{float32(math.Inf(1)), 0, 0, 0}))))
}

// TestInt8MatMulAllPaths checks every path against exact integer
// arithmetic on random operands of odd sizes (vector tails, row and token
// leftovers) including the extreme bytes 0/255 and -127/127.
func TestInt8MatMulAllPaths(t *testing.T) {
	shapes := []struct{ n, rows, cols, r0 int }{
		{1, 1, 1, 0}, {1, 4, 64, 0}, {1, 7, 37, 0}, {1, 9, 129, 2}, {2, 5, 33, 1},
		{4, 8, 64, 0}, {5, 13, 257, 3}, {9, 17, 200, 0}, {8, 64, 2048, 0},
	}
	require.Equal(t, Int8Generic, Int8Supported()[len(Int8Supported())-1])
	for _, k := range Int8Supported() {
		for _, s := range shapes {
			t.Run(fmt.Sprintf("%s/n%d_r%d_c%d_from%d", k, s.n, s.rows, s.cols, s.r0), func(t *testing.T) {
				r := rand.New(rand.NewPCG(uint64(s.cols), uint64(s.rows)))
				ldx, ldy := s.cols+5, s.rows-s.r0+1
				xq := make([]uint8, (s.n-1)*ldx+s.cols)
				for i := range xq {
					xq[i] = uint8(r.IntN(256))
				}
				xq[0] = 255
				w := make([]int8, s.rows*s.cols)
				ws := make([]float32, s.rows)
				sums := make([]int32, s.rows)
				for i := range w {
					w[i] = int8(r.IntN(255) - 127)
				}
				w[0] = 127
				for row := range ws {
					ws[row] = float32(r.Float64() + 0.5)
					for _, q := range w[row*s.cols : (row+1)*s.cols] {
						sums[row] += int32(q)
					}
				}
				xs := make([]float32, s.n)
				for i := range xs {
					xs[i] = float32(r.Float64() + 0.5)
				}
				y := make([]float32, (s.n-1)*ldy+s.rows-s.r0)
				for i := range y {
					y[i] = float32(math.NaN())
				}
				k.MatMul(y, ldy, xq, ldx, xs, s.n, w, ws, sums, s.cols, s.r0, s.rows)
				for tk := 0; tk < s.n; tk++ {
					for row := s.r0; row < s.rows; row++ {
						var acc int64
						for i := 0; i < s.cols; i++ {
							acc += (int64(xq[tk*ldx+i]) - 128) * int64(w[row*s.cols+i])
						}
						want := float64(acc) * float64(xs[tk]) * float64(ws[row])
						got := float64(y[tk*ldy+row-s.r0])
						require.InDelta(t, want, got, 1e-6*math.Abs(want)+1e-6, "token %d row %d", tk, row)
					}
				}
			})
		}
	}
}

// TestInt8MatMulAccuracy: quantising both operands keeps a random product
// within 2% (relative RMS) of float64.
func TestInt8MatMulAccuracy(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	n, rows, cols := 3, 32, 300
	x := make([]float32, n*cols)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	wf := make([]float32, rows*cols)
	for i := range wf {
		wf[i] = float32(r.NormFloat64())
	}
	w := make([]int8, rows*cols)
	ws := make([]float32, rows)
	sums := make([]int32, rows)
	for row := 0; row < rows; row++ {
		var err error
		ws[row], sums[row], err = QuantizeRow(w[row*cols:(row+1)*cols], wf[row*cols:(row+1)*cols])
		require.NoError(t, err)
	}
	xq := make([]uint8, n*cols)
	xs := make([]float32, n)
	for tk := 0; tk < n; tk++ {
		xs[tk] = QuantizeActs(xq[tk*cols:], x[tk*cols:(tk+1)*cols])
	}
	y := make([]float32, n*rows)
	Int8Best.MatMul(y, rows, xq, cols, xs, n, w, ws, sums, cols, 0, rows)
	var d, m float64
	for tk := 0; tk < n; tk++ {
		for row := 0; row < rows; row++ {
			var want float64
			for i := 0; i < cols; i++ {
				want += float64(x[tk*cols+i]) * float64(wf[row*cols+i])
			}
			e := float64(y[tk*rows+row]) - want
			d += e * e
			m += want * want
		}
	}
	assert.Less(t, math.Sqrt(d/m), 0.02)
}

func TestInt8MatMulBadShapePanics(t *testing.T) {
	assert.Panics(t, func() {
		Int8Best.MatMul(make([]float32, 1), 1, make([]uint8, 4), 4, []float32{1}, 1, make([]int8, 4), []float32{1}, []int32{0}, 8, 0, 1)
	})
}

// TestQuantizeActsPaths: every path's quantiser gives the generic bytes and
// scale exactly, on odd lengths (vector tails) and special rows.
func TestQuantizeActsPaths(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 8))
	for _, k := range Int8Supported() {
		for _, n := range []int{1, 15, 64, 65, 200, 2048, 5504} {
			for _, kind := range []string{"normal", "zero", "halves", "nan"} {
				src := make([]float32, n)
				for i := range src {
					switch kind {
					case "normal":
						src[i] = float32(r.NormFloat64())
					case "halves": // exact .5 products: rounding must agree
						src[i] = float32(r.IntN(254)-127) + 0.5
					}
				}
				if kind == "halves" {
					src[0] = 127 // max: inv = 1, so the others land exactly on halves
				}
				if kind == "nan" {
					src[n/2] = float32(math.NaN())
				}
				want, got := make([]uint8, n), make([]uint8, n)
				ws := QuantizeActs(want, src)
				gs := k.QuantizeActs(got, src)
				if math.IsNaN(float64(ws)) {
					assert.True(t, math.IsNaN(float64(gs)), "%s n=%d %s", k, n, kind)
				} else {
					assert.Equal(t, ws, gs, "%s n=%d %s scale", k, n, kind)
				}
				assert.Equal(t, want, got, "%s n=%d %s bytes", k, n, kind)
			}
		}
	}
}

func BenchmarkQuantizeActs(b *testing.B) {
	src := make([]float32, 5504)
	for i := range src {
		src[i] = float32(i%97) - 48
	}
	dst := make([]uint8, len(src))
	for _, k := range Int8Supported() {
		b.Run(k.Name, func(b *testing.B) {
			for b.Loop() {
				k.QuantizeActs(dst, src)
			}
		})
	}
}

func BenchmarkQuantizeRow(b *testing.B) {
	src := make([]float32, 2048)
	for i := range src {
		src[i] = float32(i%97) - 48
	}
	dst := make([]int8, len(src))
	for b.Loop() {
		if _, _, err := QuantizeRow(dst, src); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(src))*float64(b.N)/b.Elapsed().Seconds()/1e9, "Gelem/s")
}
