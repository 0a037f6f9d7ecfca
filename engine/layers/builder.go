package layers

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/deepseek-go/deepseek-go/engine/safetensors"
	"github.com/deepseek-go/deepseek-go/kernels"
	"github.com/deepseek-go/deepseek-go/quant"
)

// TensorSource supplies tensors by their hub name. *safetensors.Checkpoint
// is one; engine.RandomSource makes synthetic models without files.
type TensorSource interface {
	Tensor(name string) (*safetensors.Tensor, error)
}

// shapedSource is a TensorSource that can make a tensor of the shape the
// loader expects (synthetic models, which have no shapes of their own).
type shapedSource interface {
	TensorShaped(name string, shape []int) (*safetensors.Tensor, error)
}

// hasSource reports tensor presence without loading (optional).
type hasSource interface {
	Has(name string) bool
}

// MatSpec names one part of a (possibly fused) weight matrix and its
// expected [Rows, Cols] shape.
type MatSpec struct {
	Name       string
	Rows, Cols int
}

// Builder loads weights from a TensorSource onto a Backend, checking shapes
// and converting dtypes; the layers' loaders use it.
type Builder struct {
	Backend kernels.Backend
	// Int8 quantises projection matrices (Matrix) to per-row int8.
	Int8 bool
	// FP8Block is the [rows, cols] block of fp8 weights' scales
	// (quantization_config.weight_block_size; NewBuilder sets 128×128).
	FP8Block [2]int
	// FP8 reports an fp8 checkpoint (quantization_config): its matrices
	// come with FP8Block block scales, which count as parameters.
	FP8 bool
	// Rank and Shards place this Builder's model in a tensor-parallel
	// group (engine/shard.go): loaders keep only Rank's slice of each
	// split weight. Shards is 0 or 1 when the model is not sharded.
	Rank, Shards int

	src      TensorSource
	progress func(done, total int64)
	done     int64
	total    int64
	params   int64
	bytes    map[string]int64 // backend bytes by storage dtype
}

// NewBuilder loads from src onto be; progress (optional) is called after
// each tensor with the bytes done and total.
func NewBuilder(be kernels.Backend, src TensorSource, int8 bool, progress func(done, total int64), total int64) *Builder {
	return &Builder{Backend: be, Int8: int8, FP8Block: [2]int{128, 128}, src: src, progress: progress, total: total, bytes: map[string]int64{}}
}

// Params is the number of parameters fetched so far.
func (b *Builder) Params() int64 { return b.params }

// AddParams corrects Params by n (a tensor fetched twice, tied
// embeddings, is counted once).
func (b *Builder) AddParams(n int64) { b.params += n }

// Bytes is the backend bytes of the weights uploaded so far, by storage
// dtype (the Builder's own map).
func (b *Builder) Bytes() map[string]int64 { return b.bytes }

// Has reports whether the source holds the tensor.
func (b *Builder) Has(name string) bool {
	if h, ok := b.src.(hasSource); ok {
		return h.Has(name)
	}
	if _, ok := b.src.(shapedSource); ok {
		return true // synthetic sources have every tensor
	}
	_, err := b.src.Tensor(name)
	return err == nil
}

// Tensor fetches a tensor and checks its shape.
func (b *Builder) Tensor(name string, shape ...int) (*safetensors.Tensor, error) {
	var t *safetensors.Tensor
	var err error
	if s, ok := b.src.(shapedSource); ok {
		t, err = s.TensorShaped(name, shape)
	} else {
		t, err = b.src.Tensor(name)
	}
	if err != nil {
		return nil, fmt.Errorf("loading weights: %w", err)
	}
	if err := t.ExpectShape(shape...); err != nil {
		return nil, fmt.Errorf("loading weights: %w", err)
	}
	b.params += int64(t.NumElements())
	b.done += int64(len(t.Data))
	if b.progress != nil {
		b.progress(b.done, max(b.total, b.done))
	}
	return t, nil
}

// Floats fetches a tensor of the given shape as a new float32 slice.
func (b *Builder) Floats(name string, shape ...int) ([]float32, error) {
	t, err := b.Tensor(name, shape...)
	if err != nil {
		return nil, err
	}
	f, err := b.toFloat32(t)
	if err != nil {
		return nil, fmt.Errorf("loading weights: %w", err)
	}
	return f, nil
}

// Vector uploads a float32 vector tensor of length n (norm weights, biases).
func (b *Builder) Vector(name string, n int) (kernels.Buffer, error) {
	return b.Vectors(MatSpec{Name: name, Rows: n})
}

// Vectors uploads several 1-D tensors concatenated (the bias of a fused
// projection); each spec's Rows is its length.
func (b *Builder) Vectors(specs ...MatSpec) (kernels.Buffer, error) {
	var all []float32
	for _, s := range specs {
		f, err := b.Floats(s.Name, s.Rows)
		if err != nil {
			return nil, err
		}
		all = append(all, f...)
	}
	return b.UploadFloats(all)
}

// UploadFloats copies host floats to a new backend buffer.
func (b *Builder) UploadFloats(f []float32) (kernels.Buffer, error) {
	buf, err := b.Backend.Alloc(len(f))
	if err != nil {
		return nil, fmt.Errorf("loading weights: %w", err)
	}
	if err := b.Backend.Upload(buf, 0, f); err != nil {
		return nil, fmt.Errorf("loading weights: %w", err)
	}
	b.bytes["f32"] += int64(len(f)) * 4
	return buf, nil
}

// Matrix uploads a weight matrix made of the given parts stacked by rows
// (fused projections), int8-quantised when the Builder's Int8 is set. fp8
// weights stay fp8 on backends that hold them (kernels.Supports).
func (b *Builder) Matrix(specs ...MatSpec) (kernels.Matrix, error) {
	return b.MatrixRows(b.Int8, specs)
}

// MatrixKeep uploads a matrix in its storage dtype even when Int8 is set
// (embedding tables, routers); fp8 is dequantised.
func (b *Builder) MatrixKeep(specs ...MatSpec) (kernels.Matrix, error) {
	return b.upload(false, false, specs, nil)
}

// MatrixRows uploads the parts of specs, int8-quantised when int8 is set,
// each cut to its entry of rows when rows is given (a shard's slice,
// shard.go).
func (b *Builder) MatrixRows(int8 bool, specs []MatSpec, rows ...RowRange) (kernels.Matrix, error) {
	return b.upload(int8, b.keepFP8(int8), specs, rows)
}

// keepFP8 reports whether fp8 weights go to the backend as fp8: when it
// holds them and they are not to be quantised to int8 (fp8 → int8 goes
// through float32 as before).
func (b *Builder) keepFP8(int8 bool) bool {
	return !int8 && kernels.Supports(b.Backend, kernels.FP8)
}

func (b *Builder) upload(int8, keepFP8 bool, specs []MatSpec, rows []RowRange) (kernels.Matrix, error) {
	parts := make([]kernels.HostMatrix, 0, len(specs))
	for i, s := range specs {
		h, err := b.host(s, keepFP8)
		if err != nil {
			return nil, err
		}
		if len(rows) > 0 {
			h = sliceRows(h, rows[i])
		}
		parts = append(parts, h)
	}
	// Fused parts must share a dtype.
	if err := widenMixed(parts); err != nil {
		return nil, err
	}
	m, err := b.Backend.UploadMatrix(parts, int8)
	if err != nil {
		return nil, fmt.Errorf("loading weights %s: %w", specs[0].Name, err)
	}
	b.bytes[m.DType().String()] += m.Bytes()
	return m, nil
}

// Host fetches one weight matrix in a dtype every backend holds (f32, f16,
// bf16 in place; f64 and fp8 converted to f32 — fp8 with its block scales).
func (b *Builder) Host(s MatSpec) (kernels.HostMatrix, error) {
	return b.host(s, false)
}

// HostStored is Host keeping fp8 as fp8 with its block scales (in place,
// no copy) when the backend holds fp8 and Int8 is not set; callers that
// reshape the matrix beyond kernels.HostMatrix.SliceRows widen it first
// (WidenHost).
func (b *Builder) HostStored(s MatSpec) (kernels.HostMatrix, error) {
	return b.host(s, b.keepFP8(b.Int8))
}

func (b *Builder) host(s MatSpec, keepFP8 bool) (kernels.HostMatrix, error) {
	t, err := b.Tensor(s.Name, s.Rows, s.Cols)
	if err != nil {
		return kernels.HostMatrix{}, err
	}
	h := kernels.HostMatrix{Name: s.Name, Rows: s.Rows, Cols: s.Cols, Data: t.Data}
	switch t.DType {
	case safetensors.F32:
		h.DType = kernels.F32
	case safetensors.F16:
		h.DType = kernels.F16
	case safetensors.BF16:
		h.DType = kernels.BF16
	case safetensors.F8E4M3:
		scale, br, bc, err := b.fp8Scales(t)
		if err != nil {
			return h, err
		}
		h.DType, h.Scales, h.BlockRows, h.BlockCols = kernels.FP8, scale, br, bc
		if !keepFP8 {
			if err := WidenHost(&h); err != nil {
				return h, err
			}
		}
	default:
		f, err := b.toFloat32(t)
		if err != nil {
			return h, fmt.Errorf("loading weights: %w", err)
		}
		h.DType, h.Data = kernels.F32, FloatsToLE(f)
	}
	return h, nil
}

// fp8Scales fetches the block scales of an fp8 tensor (<name>_scale_inv,
// blocks of quantization_config.weight_block_size, 128×128 by default).
func (b *Builder) fp8Scales(t *safetensors.Tensor) (scale []float32, br, bc int, err error) {
	br, bc = b.FP8Block[0], b.FP8Block[1]
	if len(t.Shape) != 2 || br <= 0 || bc <= 0 {
		return nil, 0, 0, fmt.Errorf("loading weights: %s: fp8 tensor %q: shape %v in %d×%d blocks: want a matrix in positive blocks", t.File, t.Name, t.Shape, br, bc)
	}
	rows, cols := t.Shape[0], t.Shape[1]
	sr, sc := (rows+br-1)/br, (cols+bc-1)/bc
	scale, err = b.Floats(t.Name+"_scale_inv", sr, sc)
	if err != nil {
		// Name the fp8 weight and the block size: a missing scale or a
		// weight_block_size that does not match the checkpoint shows here.
		return nil, 0, 0, fmt.Errorf("fp8 weight %q (%d×%d) needs %q of %d×%d block scales for quantization_config.weight_block_size [%d, %d]: %w",
			t.Name, rows, cols, t.Name+"_scale_inv", sr, sc, br, bc, err)
	}
	return scale, br, bc, nil
}

// dequantFP8 applies the tensor's block scales. The result is f32 so that
// it matches references computed on the dequantised values.
func (b *Builder) dequantFP8(t *safetensors.Tensor) ([]float32, error) {
	scale, br, bc, err := b.fp8Scales(t)
	if err != nil {
		return nil, err
	}
	rows, cols := t.Shape[0], t.Shape[1]
	f, err := quant.DequantFP8Blocks(t.Data, rows, cols, scale, (rows+br-1)/br, (cols+bc-1)/bc, br, bc)
	if err != nil {
		return nil, fmt.Errorf("loading weights: %s: tensor %q: %w", t.File, t.Name, err)
	}
	return f, nil
}

func (b *Builder) toFloat32(t *safetensors.Tensor) ([]float32, error) {
	if t.DType == safetensors.F8E4M3 && b.Has(t.Name+"_scale_inv") {
		return b.dequantFP8(t)
	}
	return t.Float32()
}

// widenMixed widens every matrix of hs to f32 unless they all share one
// dtype: the parts of one upload (a fused matrix, a layer's experts) must.
func widenMixed(hs ...[]kernels.HostMatrix) error {
	var first *kernels.HostMatrix
	mixed := false
	for _, ps := range hs {
		for i := range ps {
			if first == nil {
				first = &ps[i]
			}
			mixed = mixed || ps[i].DType != first.DType
		}
	}
	if !mixed {
		return nil
	}
	for _, ps := range hs {
		for i := range ps {
			if err := WidenHost(&ps[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

// WidenHost converts a host matrix to f32 in a new slice.
func WidenHost(h *kernels.HostMatrix) error {
	if h.DType == kernels.F32 {
		return nil
	}
	f := make([]float32, h.Rows*h.Cols)
	var err error
	switch h.DType {
	case kernels.BF16:
		err = quant.DecodeBF16(f, h.Data)
	case kernels.F16:
		err = quant.DecodeF16(f, h.Data)
	case kernels.FP8:
		err = dequantHostFP8(f, h)
	default:
		err = fmt.Errorf("cannot widen %v", h.DType)
	}
	if err != nil {
		return fmt.Errorf("loading weights %s: %w", h.Name, err)
	}
	h.DType, h.Data = kernels.F32, FloatsToLE(f)
	h.Scales, h.BlockRows, h.BlockCols, h.ScaleRow0 = nil, 0, 0, 0
	return nil
}

// dequantHostFP8 writes the values of an fp8 host matrix (which may start
// inside a block row: a slice) to f.
func dequantHostFP8(f []float32, h *kernels.HostMatrix) error {
	if _, err := kernels.CheckParts([]kernels.HostMatrix{*h}); err != nil {
		return err
	}
	for r := range h.Rows {
		sc := h.BlockScales(r)
		row, dst := h.Data[r*h.Cols:(r+1)*h.Cols], f[r*h.Cols:(r+1)*h.Cols]
		for c, q := range row {
			dst[c] = quant.FP8E4M3ToF32(q) * sc[c/h.BlockCols]
		}
	}
	return nil
}

// FloatsToLE encodes f as little-endian float32 bytes (a HostMatrix's
// F32 data).
func FloatsToLE(f []float32) []byte {
	out := make([]byte, 4*len(f))
	for i, v := range f {
		binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
	}
	return out
}

// uploadParts uploads host matrices the Builder already fetched (and
// counted), quantised like b.Matrix, and records the backend bytes.
func uploadParts(b *Builder, parts []kernels.HostMatrix) (kernels.Matrix, error) {
	m, err := b.Backend.UploadMatrix(parts, b.Int8)
	if err != nil {
		return nil, fmt.Errorf("loading weights %s: %w", parts[0].Name, err)
	}
	b.bytes[m.DType().String()] += m.Bytes()
	return m, nil
}

// rowSlice returns rows [r0, r1) of a host matrix without copying (fp8
// keeps the block scales of those rows).
func rowSlice(hm kernels.HostMatrix, r0, r1 int, name string) kernels.HostMatrix {
	return hm.SliceRows(r0, r1, name)
}

// transposeHost returns the transpose of a float host matrix in a new slice
// (the absorbed query needs W_UKᵀ in the [out, in] layout MatMul takes).
func transposeHost(hm kernels.HostMatrix, name string) kernels.HostMatrix {
	es := hm.DType.Size()
	out := make([]byte, len(hm.Data))
	for r := range hm.Rows {
		for c := range hm.Cols {
			copy(out[(c*hm.Rows+r)*es:(c*hm.Rows+r+1)*es], hm.Data[(r*hm.Cols+c)*es:(r*hm.Cols+c+1)*es])
		}
	}
	return kernels.HostMatrix{Name: name, Rows: hm.Cols, Cols: hm.Rows, DType: hm.DType, Data: out}
}
