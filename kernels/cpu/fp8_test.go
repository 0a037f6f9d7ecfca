package cpu

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/kernels"
	"github.com/deepseek-go/deepseek-go/kernels/cpu/simd"
	"github.com/deepseek-go/deepseek-go/quant"
)

// fp8Shape is one fused part of an fp8 test matrix.
type fp8Shape struct {
	rows, br, bc, row0 int
}

// randFP8 makes an fp8 part of random e4m3 bytes (every finite encoding,
// subnormals included; NaN excluded) and positive block scales around the
// sizes real checkpoints have, with the values it stands for (dequantised
// by the quant package, the reference).
func randFP8(r *rand.Rand, name string, s fp8Shape, cols int) (kernels.HostMatrix, []float32) {
	h := kernels.HostMatrix{Name: name, Rows: s.rows, Cols: cols, DType: kernels.FP8,
		Data: make([]byte, s.rows*cols), BlockRows: s.br, BlockCols: s.bc, ScaleRow0: s.row0}
	for i := range h.Data {
		b := byte(r.IntN(256))
		if b&0x7f == 0x7f {
			b &^= 1
		}
		h.Data[i] = b
	}
	sr, sc := (s.row0+s.rows+s.br-1)/s.br, (cols+s.bc-1)/s.bc
	h.Scales = make([]float32, sr*sc)
	for i := range h.Scales {
		h.Scales[i] = float32(math.Exp2(-12 + 6*r.Float64()))
	}
	// The reference: dequantise the whole block grid (rows before row0
	// included) with quant and keep our rows.
	full := make([]byte, (s.row0+s.rows)*cols)
	copy(full[s.row0*cols:], h.Data)
	f, err := quant.DequantFP8Blocks(full, s.row0+s.rows, cols, h.Scales, sr, sc, s.br, s.bc)
	if err != nil {
		panic(err)
	}
	return h, f[s.row0*cols:]
}

func f32Host(name string, f []float32, rows, cols int) kernels.HostMatrix {
	h := kernels.HostMatrix{Name: name, Rows: rows, Cols: cols, DType: kernels.F32, Data: make([]byte, 4*len(f))}
	for i, v := range f {
		binary.LittleEndian.PutUint32(h.Data[4*i:], math.Float32bits(v))
	}
	return h
}

// fp8Backends returns one backend per float kernel path (each picks the fp8
// widener of its instruction set; Generic the pure-Go table).
func fp8Backends(t *testing.T) []*Backend {
	t.Helper()
	var bs []*Backend
	for _, k := range append(simd.Supported()[:len(simd.Supported()):len(simd.Supported())], simd.Generic) {
		if k == simd.Generic && len(bs) > 0 && bs[len(bs)-1].kern == simd.Generic {
			continue
		}
		b := NewWithKernels(3, k, nil)
		t.Cleanup(func() { _ = b.Close() })
		bs = append(bs, b)
	}
	return bs
}

// TestFP8WidenRow checks every widener against quant's dequantisation bit
// for bit: block sizes that are and are not multiples of the vector
// length, column tails, every byte value but NaN.
func TestFP8WidenRow(t *testing.T) {
	wideners := []fp8Widener{fp8Generic}
	for _, b := range fp8Backends(t) {
		wideners = append(wideners, fp8WidenerFor(b.kern))
	}
	for _, w := range wideners {
		for _, tc := range []struct{ cols, bc int }{{300, 128}, {256, 128}, {67, 16}, {40, 5}, {7, 16}, {1000, 64}} {
			t.Run(fmt.Sprintf("%s/cols%d_bc%d", w.name, tc.cols, tc.bc), func(t *testing.T) {
				r := rand.New(rand.NewPCG(uint64(tc.cols), uint64(tc.bc)))
				h, want := randFP8(r, "w", fp8Shape{rows: 1, br: 1, bc: tc.bc}, tc.cols)
				got := make([]float32, tc.cols+3)
				got[tc.cols] = 42 // must not be written
				w.row(got[:tc.cols], h.Data, h.BlockScales(0), tc.bc)
				for i := range tc.cols {
					require.Equal(t, math.Float32bits(want[i]), math.Float32bits(got[i]), "col %d byte %#x", i, h.Data[i])
				}
				assert.Equal(t, float32(42), got[tc.cols])
			})
		}
	}
}

// TestFP8MatMulParity multiplies fused, biased fp8 matrices of odd shapes
// (partial blocks at the right and bottom edges, a part starting inside a
// block) on every kernel path and compares with the float32 product of
// the dequantised weights on the same path, and with a float64 reference.
func TestFP8MatMulParity(t *testing.T) {
	for _, tc := range []struct {
		n, cols int
		parts   []fp8Shape
	}{
		{1, 300, []fp8Shape{{130, 128, 128, 0}}},
		{3, 300, []fp8Shape{{130, 128, 128, 0}}},
		{17, 300, []fp8Shape{{130, 128, 128, 0}}},
		{1, 67, []fp8Shape{{33, 16, 16, 0}, {40, 16, 16, 5}, {7, 16, 16, 0}}},
		{3, 67, []fp8Shape{{33, 16, 16, 0}, {40, 16, 16, 5}, {7, 16, 16, 0}}},
		{17, 257, []fp8Shape{{70, 128, 128, 0}, {9, 128, 128, 0}}},
		{1, 1100, []fp8Shape{{200, 128, 128, 0}, {203, 128, 128, 0}}}, // gate|up, chunked over threads
		{17, 1100, []fp8Shape{{200, 128, 128, 0}, {203, 128, 128, 0}}},
		{3, 40, []fp8Shape{{11, 3, 5, 2}}}, // blocks no vector length divides
	} {
		for _, be := range fp8Backends(t) {
			t.Run(fmt.Sprintf("%s/n%d_cols%d_parts%d", be.kern.Name, tc.n, tc.cols, len(tc.parts)), func(t *testing.T) {
				r := rand.New(rand.NewPCG(uint64(tc.n), uint64(tc.cols)))
				var hosts, f32s []kernels.HostMatrix
				var wants [][]float32
				rows := 0
				for i, s := range tc.parts {
					h, f := randFP8(r, fmt.Sprint("w", i), s, tc.cols)
					hosts = append(hosts, h)
					f32s = append(f32s, f32Host(h.Name, f, s.rows, tc.cols))
					wants = append(wants, f)
					rows += s.rows
				}
				x, bias := randVec(r, tc.n*tc.cols), randVec(r, rows)
				got := runMatMul(t, be, hosts, x, bias, tc.n)
				ref := runMatMul(t, be, f32s, x, bias, tc.n)
				off := 0
				for p, s := range tc.parts {
					for tok := range tc.n {
						for i := range s.rows {
							var exact, mag float64
							for c := range tc.cols {
								v := float64(x[tok*tc.cols+c]) * float64(wants[p][i*tc.cols+c])
								exact += v
								mag += math.Abs(v)
							}
							exact += float64(bias[off+i])
							g := got[p][tok*s.rows+i]
							require.InDelta(t, ref[p][tok*s.rows+i], g, 1e-6*mag+1e-6, "part %d token %d row %d", p, tok, i)
							require.InDelta(t, exact, g, 1e-5*mag+1e-6, "part %d token %d row %d", p, tok, i)
						}
					}
					off += s.rows
				}
			})
		}
	}
}

// runMatMul uploads parts, multiplies n rows of x and returns each part's
// output.
func runMatMul(t *testing.T, be *Backend, parts []kernels.HostMatrix, x, bias []float32, n int) [][]float32 {
	t.Helper()
	m, err := be.UploadMatrix(parts, false)
	require.NoError(t, err)
	xb, _ := be.Alloc(len(x))
	require.NoError(t, be.Upload(xb, 0, x))
	bb, _ := be.Alloc(len(bias))
	require.NoError(t, be.Upload(bb, 0, bias))
	var outs []kernels.Buffer
	for _, p := range m.Parts() {
		o, _ := be.Alloc(n * p)
		outs = append(outs, o)
	}
	be.MatMul(outs, xb, n, m, bb)
	res := make([][]float32, len(outs))
	for i, o := range outs {
		res[i] = append([]float32(nil), o.(*Buffer).Data()...)
	}
	return res
}

// TestFP8Upload checks what an fp8 matrix holds (one byte per value in
// place, plus scales) and that --int8 from fp8 quantises the dequantised
// values exactly as it quantises the same values given as float32.
func TestFP8Upload(t *testing.T) {
	be := New(2)
	defer be.Close()
	r := rand.New(rand.NewPCG(1, 2))
	h, f := randFP8(r, "w", fp8Shape{rows: 40, br: 16, bc: 16}, 50)
	assert.True(t, be.SupportsDType(kernels.FP8))
	assert.True(t, kernels.Supports(be, kernels.FP8))

	m, err := be.UploadMatrix([]kernels.HostMatrix{h}, false)
	require.NoError(t, err)
	assert.Equal(t, kernels.FP8, m.DType())
	assert.Equal(t, int64(40*50+3*4*4), m.Bytes())
	assert.Same(t, &h.Data[0], &m.(*FP8Matrix).scale[0].data[0], "the bytes are used in place")
	h2, _ := randFP8(r, "w2", fp8Shape{rows: 7, br: 16, bc: 16, row0: 3}, 50)
	fused, err := be.UploadMatrix([]kernels.HostMatrix{h, h2}, false)
	require.NoError(t, err)
	assert.Equal(t, []int{40, 7}, fused.Parts())
	assert.Equal(t, int64(47*50+(12+4)*4), fused.Bytes())
	assert.Same(t, &h.Data[0], &fused.(*FP8Matrix).scale[0].data[0], "fused parts are used in place")
	assert.Same(t, &h2.Data[0], &fused.(*FP8Matrix).scale[1].data[0], "fused parts are used in place")

	q8, err := be.UploadMatrix([]kernels.HostMatrix{h}, true)
	require.NoError(t, err)
	want, err := be.UploadMatrix([]kernels.HostMatrix{f32Host("w", f, 40, 50)}, true)
	require.NoError(t, err)
	assert.Equal(t, kernels.Int8, q8.DType())
	assert.Equal(t, want.(*Matrix).i8, q8.(*Matrix).i8)
	assert.Equal(t, want.(*Matrix).scales, q8.(*Matrix).scales)

	bad := h
	bad.Scales = bad.Scales[1:]
	_, err = be.UploadMatrix([]kernels.HostMatrix{bad}, false)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "UploadMatrix w: 11 fp8 block scales, want 3×4")
}

// TestFP8Embed reads rows of a fused fp8 table (second part starting inside
// a block) as their dequantised values.
func TestFP8Embed(t *testing.T) {
	be := New(1)
	defer be.Close()
	r := rand.New(rand.NewPCG(3, 4))
	h0, f0 := randFP8(r, "a", fp8Shape{rows: 5, br: 4, bc: 8}, 20)
	h1, f1 := randFP8(r, "b", fp8Shape{rows: 6, br: 4, bc: 8, row0: 3}, 20)
	m, err := be.UploadMatrix([]kernels.HostMatrix{h0, h1}, false)
	require.NoError(t, err)
	out, _ := be.Alloc(3 * 20)
	be.Embed(out, m, []int32{4, 0, 9})
	got := out.(*Buffer).Data()
	assert.Equal(t, f0[4*20:5*20], got[:20])
	assert.Equal(t, f0[:20], got[20:40])
	assert.Equal(t, f1[4*20:5*20], got[40:60])
}
