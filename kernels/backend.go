// Package kernels defines Backend, the only seam between model code and
// hardware. Model code (package engine) asks a Backend for operations on
// float32 activation buffers and on weight matrices held in their storage
// dtype; it never branches on the device. The CPU backend (kernels/cpu) is the
// reference every other backend is tested against.
//
// Conventions shared by every implementation:
//   - Activations are float32, row-major [n, width], one row per token.
//   - Weight matrices use the Hugging Face Linear layout [out, in] (Rows = out
//     features, Cols = in features); MatMul computes x·Wᵀ with float32
//     accumulation whatever the storage dtype.
//   - Buffers are allocated once per session with room for the largest chunk
//     of tokens; ops take explicit row counts and widths.
//   - A Backend is safe for concurrent use by several sessions, each with its
//     own buffers and KV cache.
package kernels

import "fmt"

// DType is the storage type of a weight matrix.
type DType uint8

// Storage dtypes a Backend can hold weights in.
const (
	F32  DType = iota // IEEE float32
	F16               // IEEE float16
	BF16              // bfloat16
	Int8              // symmetric int8, one float32 scale per row
	FP8               // float8_e4m3fn with float32 block scales (DeepSeek-V3)
)

// Size returns the bytes per element (scales not counted).
func (d DType) Size() int {
	switch d {
	case F32:
		return 4
	case F16, BF16:
		return 2
	case Int8, FP8:
		return 1
	}
	return 0
}

func (d DType) String() string {
	switch d {
	case F32:
		return "f32"
	case F16:
		return "f16"
	case BF16:
		return "bf16"
	case Int8:
		return "int8"
	case FP8:
		return "fp8"
	}
	return fmt.Sprintf("dtype(%d)", uint8(d))
}

// HostMatrix is a weight matrix in host memory: Rows×Cols little-endian
// elements of DType, row-major. Data may alias a read-only mmapped file and
// must not be modified. For Int8, Scales holds one float32 per row
// (value = int8 × scale). For FP8, Scales holds the block scales
// (weight_scale_inv) row-major, ceil((ScaleRow0+Rows)/BlockRows) ×
// ceil(Cols/BlockCols): element (r, c) is e4m3(Data[r*Cols+c]) ×
// Scales[((ScaleRow0+r)/BlockRows)*ceil(Cols/BlockCols) + c/BlockCols].
// ScaleRow0 (0 ≤ ScaleRow0 < BlockRows) places row 0 inside its block, so a
// slice of rows keeps its scales without copying (SliceRows).
type HostMatrix struct {
	Name       string // tensor name, for error messages
	Rows, Cols int
	DType      DType
	Data       []byte
	Scales     []float32

	// FP8 only: the block shape of Scales and row 0's offset in its block.
	BlockRows, BlockCols, ScaleRow0 int
}

// Matrix is a weight matrix held by a backend. A matrix uploaded from several
// parts (fused QKV, fused gate|up) remembers the row count of each part:
// MatMul writes part i of the output to outs[i].
type Matrix interface {
	Rows() int
	Cols() int
	DType() DType
	Parts() []int // rows of each fused part, summing to Rows
	Bytes() int64 // bytes held, scales included
}

// Buffer is a float32 activation buffer on a backend.
type Buffer interface {
	Len() int
}

// KVSpec describes a KV cache: per layer, MaxTokens positions of KVHeads
// heads, keys of KDim and values of VDim floats. With VInK the values are
// the first VDim floats of each key (MLA's absorbed form caches only the
// latent and the rope key) and no separate value storage exists.
type KVSpec struct {
	Layers, MaxTokens, KVHeads, KDim, VDim int
	VInK                                   bool
}

// KVCache is a backend-resident key/value cache.
type KVCache interface {
	Spec() KVSpec
	Bytes() int64
}

// Rope describes a rotary embedding. Rotated dims are [Off, Off+Dim) inside
// each head; InvFreq has Dim/2 entries (scaling such as linear, llama3 or YaRN
// is already folded in); cos and sin are multiplied by Scale (YaRN's mscale;
// 1 otherwise). Interleaved pairs elements (2i, 2i+1) as DeepSeek's MLA does;
// otherwise i pairs with i+Dim/2 (rotate_half).
type Rope struct {
	Off, Dim    int
	InvFreq     []float32
	Scale       float32
	Interleaved bool
}

// Backend runs model operations on one device. Methods that can fail because
// of the device (allocation, upload) return errors; compute ops are
// asynchronous on accelerators and report failures at the next Download.
type Backend interface {
	// Name is "cpu" or "cuda" (with detail after a colon, e.g. "cuda:H100").
	Name() string
	Close() error

	// UploadMatrix makes a backend matrix from one or more host parts with
	// the same Cols, stacked in order (fused projections). With int8 the
	// backend quantises float parts to symmetric per-row int8.
	UploadMatrix(parts []HostMatrix, int8 bool) (Matrix, error)
	// Alloc returns a zeroed float32 buffer of n elements.
	Alloc(n int) (Buffer, error)
	// Upload copies src into dst[off:off+len(src)].
	Upload(dst Buffer, off int, src []float32) error
	// Download copies src[off:off+len(dst)] into dst, waiting for pending work.
	Download(dst []float32, src Buffer, off int) error
	NewKVCache(spec KVSpec) (KVCache, error)

	// Embed writes rows ids of table (converted to float32) to out[len(ids), Cols].
	Embed(out Buffer, table Matrix, ids []int32)
	// MatMul computes y = x[n, w.Cols]·wᵀ (+ bias[w.Rows] when bias is not
	// nil) and writes fused part i of y to outs[i] as [n, Parts()[i]].
	MatMul(outs []Buffer, x Buffer, n int, w Matrix, bias Buffer)
	// MatMulAdd adds y = x[n, w.Cols]·wᵀ (+ bias[w.Rows] when not nil) to
	// out[n, w.Rows] for a matrix of one part: the residual stream's
	// projections (attention output, MLP down), which would otherwise
	// write y to a temporary and Add it, one launch more. tmp [n, w.Rows]
	// is scratch the backend may use where it cannot add in place (its
	// contents afterwards are unspecified). out, tmp and x must not alias.
	// See CheckMatMulAdd.
	MatMulAdd(out, tmp, x Buffer, n int, w Matrix, bias Buffer)
	// MatMulHeads multiplies each head's slice of x by that head's own
	// matrix: w was uploaded as H parts of equal shape [r, w.Cols] (H =
	// len(w.Parts())), and for t < n, h < H, i < r
	//   y[t*yRow + h*yHead + i] = Σ_c x[t*xRow + h*xHead + c] · W_h[i, c].
	// MLA's absorbed projections (W_UKᵀ on q_nope, W_UV on the attended
	// latent) are such per-head products. Outputs of different heads must
	// not overlap and y must not alias x; other elements of y are left as
	// they are. See CheckHeads.
	MatMulHeads(y Buffer, yRow, yHead int, x Buffer, xRow, xHead, n int, w Matrix)
	// MLAPack assembles MLA's absorbed cache rows and the rope parts of
	// its queries for n rows (MLAPackShape): k[t] = [RMSNorm(lat[t])·weight
	// | kr[t]] and qabs[t, h, Lora:Lora+Rope] = q[t, h, Nope:Nope+Rope] for
	// every head h (q rows are Heads×(Nope+Rope) floats, qabs and k rows
	// Heads×(Lora+Rope) and Lora+Rope). The rest of qabs is left as it is.
	// One pass in place of a norm and three strided copies. See CheckMLAPack.
	MLAPack(k, qabs, q, lat, kr, weight Buffer, n int, s MLAPackShape)
	// RMSNorm: out[i] = x[i] / sqrt(mean(x[i]²) + eps) * weight, rows of dim.
	RMSNorm(out, x, weight Buffer, n, dim int, eps float32)
	// ApplyRope rotates x[n, heads*headDim] in place for positions pos0..pos0+n-1.
	ApplyRope(x Buffer, n, heads, headDim, pos0 int, r *Rope)
	// Attention stores k[n, KVHeads*KDim] and v[n, KVHeads*VDim] (v ignored
	// when VInK) at positions pos0..pos0+n-1 of layer, then computes causal
	// attention of q[n, heads*KDim] over positions 0..pos0+i, softmax(q·k*scale),
	// writing out[n, heads*VDim]. Query head h reads KV head h/(heads/KVHeads).
	Attention(out, q, k, v Buffer, cache KVCache, layer, pos0, n, heads int, scale float32)
	// SwiGLU: out = silu(gate) * up over n elements.
	SwiGLU(out, gate, up Buffer, n int)
	// Add: out = a + b over n elements (out may alias a or b).
	Add(out, a, b Buffer, n int)
	// Axpy: y[yOff:yOff+n] += alpha*x[xOff:xOff+n] (MoE combine, residuals).
	Axpy(y Buffer, yOff int, x Buffer, xOff int, alpha float32, n int)
	// Copy2D copies rows×cols floats from src (row stride srcStride, starting
	// at srcOff) to dst (row stride dstStride, starting at dstOff).
	Copy2D(dst Buffer, dstOff, dstStride int, src Buffer, srcOff, srcStride, rows, cols int)
}

// CheckParts validates the parts of an UploadMatrix call against the
// HostMatrix contract (same Cols and DType, positive shape, data and scale
// lengths) and returns the rows of each part. Errors name the part.
func CheckParts(parts []HostMatrix) ([]int, error) {
	if len(parts) == 0 {
		return nil, fmt.Errorf("UploadMatrix: no parts")
	}
	first := parts[0]
	if first.DType.Size() == 0 {
		return nil, fmt.Errorf("UploadMatrix %s: unsupported dtype %v", first.Name, first.DType)
	}
	rows := make([]int, len(parts))
	for i, p := range parts {
		switch {
		case p.Cols != first.Cols:
			return nil, fmt.Errorf("UploadMatrix %s: %d cols, first part %s has %d", p.Name, p.Cols, first.Name, first.Cols)
		case p.DType != first.DType:
			return nil, fmt.Errorf("UploadMatrix %s: dtype %v differs from %v of %s", p.Name, p.DType, first.DType, first.Name)
		case p.Rows <= 0 || p.Cols <= 0:
			return nil, fmt.Errorf("UploadMatrix %s: bad shape %dx%d", p.Name, p.Rows, p.Cols)
		case len(p.Data) != p.Rows*p.Cols*p.DType.Size():
			return nil, fmt.Errorf("UploadMatrix %s: %d bytes, want %d for %dx%d %v", p.Name, len(p.Data), p.Rows*p.Cols*p.DType.Size(), p.Rows, p.Cols, p.DType)
		case p.DType == Int8 && len(p.Scales) != p.Rows:
			return nil, fmt.Errorf("UploadMatrix %s: %d scales for %d rows", p.Name, len(p.Scales), p.Rows)
		case p.DType == FP8:
			if err := p.checkFP8Scales(); err != nil {
				return nil, fmt.Errorf("UploadMatrix %s: %w", p.Name, err)
			}
		}
		rows[i] = p.Rows
	}
	return rows, nil
}

// MLAPackShape is the geometry of an MLAPack call: query heads, the
// query's nope and rope widths, the latent width (kv_lora_rank) and the
// latent norm's epsilon.
type MLAPackShape struct {
	Heads, Nope, Rope, Lora int
	Eps                     float32
	// RoPE, when not nil, also rotates the packed rope parts (the key's
	// and every head's query's) for positions Pos0, Pos0+1, … with
	// ApplyRope's arithmetic (RoPE.Off is ignored: the parts sit at Lora;
	// RoPE.Dim must equal Rope): the absorbed path's two rope launches
	// folded into this one, for a single sequence.
	RoPE *Rope
	Pos0 int
}

// CheckMLAPack validates an MLAPack call (n > 0) against its buffers.
func CheckMLAPack(k, qabs, q, lat, kr, weight Buffer, n int, s MLAPackShape) error {
	if s.Heads <= 0 || s.Nope < 0 || s.Rope <= 0 || s.Lora <= 0 {
		return fmt.Errorf("MLAPack: bad shape %+v", s)
	}
	kd := s.Lora + s.Rope
	for _, c := range []struct {
		name string
		b    Buffer
		want int
	}{{"k", k, n * kd}, {"q_abs", qabs, n * s.Heads * kd}, {"q", q, n * s.Heads * (s.Nope + s.Rope)},
		{"latent", lat, n * s.Lora}, {"rope key", kr, n * s.Rope}, {"norm weight", weight, s.Lora}} {
		if c.b == nil || c.b.Len() < c.want {
			l := 0
			if c.b != nil {
				l = c.b.Len()
			}
			return fmt.Errorf("MLAPack: %s of %d floats, want %d for %d rows of %+v", c.name, l, c.want, n, s)
		}
	}
	if k == qabs || k == q || k == lat || k == kr || qabs == q {
		return fmt.Errorf("MLAPack: outputs alias inputs")
	}
	if r := s.RoPE; r != nil && (r.Dim != s.Rope || len(r.InvFreq) < r.Dim/2 || s.Pos0 < 0) {
		return fmt.Errorf("MLAPack: rope of %d dims (%d frequencies) at position %d for rope parts of %d", r.Dim, len(r.InvFreq), s.Pos0, s.Rope)
	}
	return nil
}

// CheckHeads validates a MatMulHeads call (n > 0) against its buffers and
// returns the heads H and the rows r of each head's matrix. Errors name the
// op and the offending size.
func CheckHeads(y Buffer, yRow, yHead int, x Buffer, xRow, xHead, n int, w Matrix) (heads, rows int, err error) {
	if y == x {
		return 0, 0, fmt.Errorf("MatMulHeads: output aliases the input")
	}
	yLen, xLen := y.Len(), x.Len()
	parts := w.Parts()
	if len(parts) == 0 {
		return 0, 0, fmt.Errorf("MatMulHeads: matrix without parts")
	}
	heads, rows = len(parts), parts[0]
	for h, r := range parts {
		if r != rows {
			return 0, 0, fmt.Errorf("MatMulHeads: head %d has %d rows, head 0 has %d (parts must be equal)", h, r, rows)
		}
	}
	cols := w.Cols()
	switch {
	case yHead < 0 || xHead < 0 || (heads > 1 && yHead < rows):
		return 0, 0, fmt.Errorf("MatMulHeads: head strides y %d, x %d for %d rows per head", yHead, xHead, rows)
	case yRow < (heads-1)*yHead+rows || xRow < cols:
		return 0, 0, fmt.Errorf("MatMulHeads: row strides y %d, x %d for %d heads of %d×%d", yRow, xRow, heads, rows, cols)
	case (n-1)*yRow+(heads-1)*yHead+rows > yLen:
		return 0, 0, fmt.Errorf("MatMulHeads: output of %d floats for %d rows at stride %d", yLen, n, yRow)
	case (n-1)*xRow+(heads-1)*xHead+cols > xLen:
		return 0, 0, fmt.Errorf("MatMulHeads: input of %d floats for %d rows at stride %d", xLen, n, xRow)
	}
	return heads, rows, nil
}

// CheckMatMulAdd validates a MatMulAdd call (n > 0) against its buffers.
// Errors name the op and the offending size.
func CheckMatMulAdd(out, tmp, x Buffer, n int, w Matrix, bias Buffer) error {
	if p := w.Parts(); len(p) != 1 {
		return fmt.Errorf("MatMulAdd: matrix of %d parts, want 1", len(p))
	}
	rows, cols := w.Rows(), w.Cols()
	for _, c := range []struct {
		name string
		b    Buffer
		want int
	}{{"out", out, n * rows}, {"tmp", tmp, n * rows}, {"x", x, n * cols}} {
		if c.b == nil || c.b.Len() < c.want {
			l := 0
			if c.b != nil {
				l = c.b.Len()
			}
			return fmt.Errorf("MatMulAdd: %s of %d floats, want %d for %d rows of %d×%d", c.name, l, c.want, n, rows, cols)
		}
	}
	if bias != nil && bias.Len() < rows {
		return fmt.Errorf("MatMulAdd: bias of %d floats for %d rows", bias.Len(), rows)
	}
	if out == x || out == tmp || tmp == x {
		return fmt.Errorf("MatMulAdd: out, tmp and x alias")
	}
	return nil
}
