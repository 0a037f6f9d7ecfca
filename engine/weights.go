package engine

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"runtime"
	"strings"
	"sync"

	"github.com/deepseek-go/deepseek-go/engine/layers"
	"github.com/deepseek-go/deepseek-go/engine/safetensors"
	"github.com/deepseek-go/deepseek-go/quant"
)

// TensorSource supplies tensors by their hub name. *safetensors.Checkpoint
// is one; RandomSource makes synthetic models without files.
type TensorSource = layers.TensorSource

// MatSpec names one part of a (possibly fused) weight matrix and its
// expected [Rows, Cols] shape.
type MatSpec = layers.MatSpec

// Builder loads weights from a TensorSource onto a Backend, checking shapes
// and converting dtypes (the embedded layers.Builder); families use it in
// their Build function, with the model's Config.
type Builder struct {
	*layers.Builder
	Config *Config
}

func newBuilder(cfg *Config, b *layers.Builder) *Builder {
	// fp8 scales come in blocks of quantization_config.weight_block_size
	// (NewBuilder's 128×128 by default).
	if q := cfg.QuantizationConfig; q != nil {
		b.FP8 = true
		if len(q.WeightBlockSize) == 2 {
			b.FP8Block = [2]int{q.WeightBlockSize[0], q.WeightBlockSize[1]}
		}
	}
	return &Builder{Builder: b, Config: cfg}
}

// MapSource is an in-memory TensorSource (tests, hand-built models).
type MapSource map[string]*safetensors.Tensor

// Tensor implements TensorSource.
func (m MapSource) Tensor(name string) (*safetensors.Tensor, error) {
	t, ok := m[name]
	if !ok {
		return nil, fmt.Errorf("memory: tensor %q: %w", name, safetensors.ErrNotFound)
	}
	cp := *t
	return &cp, nil
}

// Has reports whether the map holds the tensor.
func (m MapSource) Has(name string) bool { _, ok := m[name]; return ok }

// RandomSource makes deterministic random tensors of whatever shape the
// loader asks for, so a full-size model can be built in memory without
// files (benchmarks). Norm weights are near 1, biases small, matrices
// uniform with variance 1/(3·cols) so activations stay bounded. With DType
// F8E4M3 the projections are fp8 as DeepSeek-V3 stores them (e4m3 codes of
// a uniform value, <name>_scale_inv of 128×128 blocks varied ±25%) and the
// rest (embeddings, lm_head, routers, vectors) bf16.
type RandomSource struct {
	DType safetensors.DType // F32, F16, BF16 or F8E4M3
	Seed  uint64
}

// Tensor implements TensorSource; without a shape it cannot make anything.
func (r RandomSource) Tensor(name string) (*safetensors.Tensor, error) {
	return nil, fmt.Errorf("random source: tensor %q needs a shape", name)
}

// TensorShaped makes the tensor name of the given shape (the layers
// Builder asks for it so).
func (r RandomSource) TensorShaped(name string, shape []int) (*safetensors.Tensor, error) {
	dt := r.DType
	if dt == "" {
		dt = safetensors.F32
	}
	n := 1
	for _, d := range shape {
		n *= d
	}
	h := fnv.New64a()
	h.Write([]byte(name))
	key := h.Sum64() ^ r.Seed*0x9e3779b97f4a7c15
	center, amp := float32(0), float32(1)
	switch {
	case strings.Contains(name, "norm"):
		center, amp = 1, 0.1
	case strings.HasSuffix(name, ".bias") || strings.HasSuffix(name, "_bias"):
		amp = 0.02
	case len(shape) == 2:
		amp = float32(1 / math.Sqrt(float64(shape[1])))
	}
	if dt == safetensors.F8E4M3 {
		switch {
		case strings.HasSuffix(name, "_scale_inv") && len(shape) == 2:
			// amp/448 maps e4m3's range onto the weight's amplitude
			// (cols ≈ 128 per block column).
			dt = safetensors.F32
			center = float32(1/math.Sqrt(float64(128*shape[1]))) / 448
			amp = 0.25 * center
		case len(shape) != 2 || strings.Contains(name, "embed_tokens") || strings.HasPrefix(name, "lm_head") || strings.HasSuffix(name, ".mlp.gate.weight"):
			dt = safetensors.BF16
		default:
			center, amp = 0, 448
		}
	}
	size := dt.Size()
	if dt != safetensors.F32 && dt != safetensors.BF16 && dt != safetensors.F16 && dt != safetensors.F8E4M3 {
		return nil, fmt.Errorf("random source: dtype %s not supported", dt)
	}
	data := make([]byte, n*size)
	// Counter-based (splitmix64 of the index), so chunks fill in parallel
	// and the result does not depend on the split: full-size models
	// (billions of values) build in seconds.
	fill := func(lo, hi int) {
		for i := lo; i < hi; i++ {
			z := key + uint64(i)*0x9e3779b97f4a7c15
			z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
			z = (z ^ z>>27) * 0x94d049bb133111eb
			z ^= z >> 31
			u := float32(z>>40) * (1.0 / (1 << 24)) // [0, 1)
			v := center + amp*(2*u-1)
			switch dt {
			case safetensors.F32:
				binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
			case safetensors.BF16:
				binary.LittleEndian.PutUint16(data[2*i:], quant.F32ToBF16(v))
			case safetensors.F8E4M3:
				data[i] = quant.F32ToFP8E4M3(v)
			default:
				binary.LittleEndian.PutUint16(data[2*i:], quant.F32ToF16(v))
			}
		}
	}
	workers := min(runtime.GOMAXPROCS(0), max(1, n/(1<<16)))
	var wg sync.WaitGroup
	per := (n + workers - 1) / workers
	for lo := 0; lo < n; lo += per {
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			fill(lo, hi)
		}(lo, min(lo+per, n))
	}
	wg.Wait()
	return &safetensors.Tensor{Name: name, DType: dt, Shape: shape, Data: data, File: "random"}, nil
}
