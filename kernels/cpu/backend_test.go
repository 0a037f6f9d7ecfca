package cpu

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/x448/float16"

	"github.com/deepseek-go/deepseek-go/kernels"
)

func randVec(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

// hostMatrix encodes w (rows×cols) in dtype dt and returns it with the
// values actually representable in that dtype.
func hostMatrix(t testing.TB, name string, w []float32, rows, cols int, dt kernels.DType) (kernels.HostMatrix, []float32) {
	t.Helper()
	h := kernels.HostMatrix{Name: name, Rows: rows, Cols: cols, DType: dt, Data: make([]byte, rows*cols*dt.Size())}
	exact := make([]float32, len(w))
	for i, v := range w {
		switch dt {
		case kernels.F32:
			binary.LittleEndian.PutUint32(h.Data[4*i:], math.Float32bits(v))
			exact[i] = v
		case kernels.BF16:
			bits := uint16(math.Float32bits(v) >> 16)
			binary.LittleEndian.PutUint16(h.Data[2*i:], bits)
			exact[i] = bf16ToF32(bits)
		case kernels.F16:
			bits := float16.Fromfloat32(v).Bits()
			binary.LittleEndian.PutUint16(h.Data[2*i:], bits)
			exact[i] = f16ToF32(bits)
		default:
			t.Fatalf("dtype %v", dt)
		}
	}
	return h, exact
}

// upload copies x into a new buffer of be (one float for an empty x).
func upload(t testing.TB, be *Backend, x []float32) kernels.Buffer {
	b, err := be.Alloc(max(1, len(x)))
	require.NoError(t, err)
	require.NoError(t, be.Upload(b, 0, x))
	return b
}

// download is the contents of b.
func download(t testing.TB, be *Backend, b kernels.Buffer) []float32 {
	v := make([]float32, b.Len())
	require.NoError(t, be.Download(v, b, 0))
	return v
}

func relErr(got, want []float32) float64 {
	var d, n float64
	for i := range want {
		e := float64(got[i] - want[i])
		d += e * e
		n += float64(want[i]) * float64(want[i])
	}
	return math.Sqrt(d / n)
}

func TestMatMulFusedParts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		dt    kernels.DType
		int8  bool
		tol   float64
		n     int
		parts []int
	}{
		{"f32", kernels.F32, false, 1e-6, 3, []int{5, 7}},
		{"bf16", kernels.BF16, false, 1e-6, 1, []int{9}},
		{"f16", kernels.F16, false, 1e-6, 4, []int{3, 3, 2}},
		{"f32->int8", kernels.F32, true, 2e-2, 2, []int{16, 8}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, 2))
			be := New(2)
			cols := 37
			var hosts []kernels.HostMatrix
			var exact [][]float32
			rows := 0
			for i, p := range tc.parts {
				h, ex := hostMatrix(t, "w"+string(rune('a'+i)), randVec(r, p*cols), p, cols, tc.dt)
				hosts = append(hosts, h)
				exact = append(exact, ex)
				rows += p
			}
			m, err := be.UploadMatrix(hosts, tc.int8)
			require.NoError(t, err)
			assert.Equal(t, rows, m.Rows())
			assert.Equal(t, tc.parts, m.Parts())
			x := randVec(r, tc.n*cols)
			bias := randVec(r, rows)
			xb, _ := be.Alloc(len(x))
			require.NoError(t, be.Upload(xb, 0, x))
			bb, _ := be.Alloc(rows)
			require.NoError(t, be.Upload(bb, 0, bias))
			var outs []kernels.Buffer
			for _, p := range tc.parts {
				o, _ := be.Alloc(tc.n * p)
				outs = append(outs, o)
			}
			be.MatMul(outs, xb, tc.n, m, bb)
			off := 0
			for pi, p := range tc.parts {
				want := make([]float32, tc.n*p)
				for tk := 0; tk < tc.n; tk++ {
					for rr := 0; rr < p; rr++ {
						var s float64
						for c := 0; c < cols; c++ {
							s += float64(exact[pi][rr*cols+c]) * float64(x[tk*cols+c])
						}
						want[tk*p+rr] = float32(s) + bias[off+rr]
					}
				}
				got := make([]float32, tc.n*p)
				require.NoError(t, be.Download(got, outs[pi], 0))
				assert.Less(t, relErr(got, want), tc.tol, "part %d", pi)
				off += p
			}
		})
	}
}

func TestUploadMatrixErrors(t *testing.T) {
	be := New(1)
	good := kernels.HostMatrix{Name: "a", Rows: 2, Cols: 3, DType: kernels.F32, Data: make([]byte, 24)}
	for _, tc := range []struct {
		name  string
		parts []kernels.HostMatrix
		msg   string
	}{
		{"none", nil, "no parts"},
		{"short", []kernels.HostMatrix{{Name: "w.short", Rows: 2, Cols: 3, DType: kernels.F32, Data: make([]byte, 20)}}, "w.short"},
		{"cols", []kernels.HostMatrix{good, {Name: "w.cols", Rows: 2, Cols: 4, DType: kernels.F32, Data: make([]byte, 32)}}, "w.cols"},
		{"dtype", []kernels.HostMatrix{good, {Name: "w.dt", Rows: 2, Cols: 3, DType: kernels.BF16, Data: make([]byte, 12)}}, "w.dt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := be.UploadMatrix(tc.parts, false)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.msg)
		})
	}
}

// TestAttentionIncremental checks that prefill of n tokens and n single-token
// steps agree with a naive float64 causal attention, with GQA.
func TestAttentionIncremental(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	be := New(2)
	const n, heads, kvh, d = 6, 4, 2, 8
	spec := kernels.KVSpec{Layers: 2, MaxTokens: 16, KVHeads: kvh, KDim: d, VDim: d}
	q, k, v := randVec(r, n*heads*d), randVec(r, n*kvh*d), randVec(r, n*kvh*d)
	scale := float32(1 / math.Sqrt(d))
	want := make([]float32, n*heads*d)
	for tk := 0; tk < n; tk++ {
		for h := 0; h < heads; h++ {
			g := h / (heads / kvh)
			sc := make([]float64, tk+1)
			var mx = math.Inf(-1)
			for j := 0; j <= tk; j++ {
				var s float64
				for i := 0; i < d; i++ {
					s += float64(q[(tk*heads+h)*d+i]) * float64(k[(j*kvh+g)*d+i])
				}
				sc[j] = s * float64(scale)
				mx = math.Max(mx, sc[j])
			}
			var sum float64
			for j := range sc {
				sc[j] = math.Exp(sc[j] - mx)
				sum += sc[j]
			}
			for i := 0; i < d; i++ {
				var o float64
				for j := range sc {
					o += sc[j] / sum * float64(v[(j*kvh+g)*d+i])
				}
				want[(tk*heads+h)*d+i] = float32(o)
			}
		}
	}
	up := func(x []float32) kernels.Buffer { return upload(t, be, x) }
	// Prefill all at once.
	cache, err := be.NewKVCache(spec)
	require.NoError(t, err)
	out, _ := be.Alloc(n * heads * d)
	be.Attention(out, up(q), up(k), up(v), cache, 1, 0, n, heads, scale)
	got := make([]float32, n*heads*d)
	require.NoError(t, be.Download(got, out, 0))
	assert.Less(t, relErr(got, want), 1e-6)
	// Token by token.
	cache2, _ := be.NewKVCache(spec)
	for tk := 0; tk < n; tk++ {
		o1, _ := be.Alloc(heads * d)
		be.Attention(o1, up(q[tk*heads*d:(tk+1)*heads*d]), up(k[tk*kvh*d:(tk+1)*kvh*d]), up(v[tk*kvh*d:(tk+1)*kvh*d]), cache2, 0, tk, 1, heads, scale)
		require.NoError(t, be.Download(got[tk*heads*d:(tk+1)*heads*d], o1, 0))
	}
	assert.Less(t, relErr(got, want), 1e-6)
}

func TestRopeRotateHalfAndInterleaved(t *testing.T) {
	be := New(1)
	inv := []float32{1, 0.1}
	for _, inter := range []bool{false, true} {
		x := []float32{1, 2, 3, 4, 9, 9} // head dim 6, rope on dims [1,5)
		b, _ := be.Alloc(6)
		require.NoError(t, be.Upload(b, 0, x))
		be.ApplyRope(b, 1, 1, 6, 2, &kernels.Rope{Off: 1, Dim: 4, InvFreq: inv, Scale: 1, Interleaved: inter})
		got := make([]float32, 6)
		require.NoError(t, be.Download(got, b, 0))
		rot := func(a, c, th float64) (float64, float64) {
			return a*math.Cos(th) - c*math.Sin(th), c*math.Cos(th) + a*math.Sin(th)
		}
		want := []float64{1, 0, 0, 0, 0, 9}
		if inter {
			want[1], want[2] = rot(2, 3, 2*1)
			want[3], want[4] = rot(4, 9, 2*0.1)
		} else {
			want[1], want[3] = rot(2, 4, 2*1)
			want[2], want[4] = rot(3, 9, 2*0.1)
		}
		for i := range want {
			assert.InDelta(t, want[i], got[i], 1e-5, "interleaved=%v i=%d", inter, i)
		}
	}
}

func TestElementwise(t *testing.T) {
	be := New(1)
	up := func(x []float32) kernels.Buffer { return upload(t, be, x) }
	get := func(b kernels.Buffer) []float32 { return download(t, be, b) }
	x := up([]float32{1, -2, 3, 4})
	w := up([]float32{1, 2, 0.5, 1})
	o, _ := be.Alloc(4)
	be.RMSNorm(o, x, w, 2, 2, 0)
	r1, r2 := math.Sqrt(2.5), math.Sqrt(12.5)
	assert.InDeltaSlice(t, []float64{1 / r1, -4 / r1, 3 / r2, 8 / r2}, toF64(get(o)), 1e-6)
	be.SwiGLU(o, x, w, 4)
	silu := func(v float64) float64 { return v / (1 + math.Exp(-v)) }
	assert.InDeltaSlice(t, []float64{silu(1), 2 * silu(-2), 0.5 * silu(3), silu(4)}, toF64(get(o)), 1e-6)
	be.Add(o, x, w, 4)
	assert.Equal(t, []float32{2, 0, 3.5, 5}, get(o))
	be.Axpy(o, 1, x, 0, 2, 2)
	assert.Equal(t, []float32{2, 2, -0.5, 5}, get(o))
	be.Copy2D(o, 0, 2, x, 1, 2, 2, 1)
	assert.Equal(t, []float32{-2, 2, 4, 5}, get(o))
}

func toF64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}
