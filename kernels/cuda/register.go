//go:build linux && cgo

package cuda

import (
	"fmt"
	"os"

	"github.com/deepseek-go/deepseek-go/kernels"
)

// Importing this package makes "cuda" a device of kernels.OpenDevice.
func init() { kernels.RegisterDevice("cuda", openDefault) }

// openDefault opens CUDA device 0 (DSGO_CUDA_DEVICE picks another). The KV
// cache follows the weights: f16 for 16-bit models, f32 (exact attention)
// when any weight is f32.
func openDefault(int) (kernels.Backend, error) {
	dev := 0
	if s := os.Getenv("DSGO_CUDA_DEVICE"); s != "" {
		if _, err := fmt.Sscan(s, &dev); err != nil {
			return nil, fmt.Errorf("DSGO_CUDA_DEVICE=%q: %w", s, err)
		}
	}
	return New(Options{Device: dev, KVAuto: true})
}

var (
	_ kernels.StepCapturer  = (*Backend)(nil)
	_ kernels.MemInfoer     = (*Backend)(nil)
	_ kernels.DeviceSampler = (*Backend)(nil)
)

// CaptureDecodeStep implements kernels.StepCapturer (CaptureStep without
// extra objects to keep alive).
func (b *Backend) CaptureDecodeStep(id, pos, maxPos int, fn func(kernels.Backend) error) (kernels.StepGraph, error) {
	g, err := b.CaptureStep(id, pos, maxPos, fn)
	if err != nil {
		return nil, err
	}
	return g, nil
}

var _ kernels.ChunkPreferrer = (*Backend)(nil)

// PreferredChunk implements kernels.ChunkPreferrer: 512 rows, the
// scheduler's default token budget. At 128 a 2,048-token DeepSeek prompt
// read each layer's experts 16 times; 512 rows keep the prefill GEMMs
// compute-bound while the activations stay small beside the weights
// (V3's widest scratch, the experts' [rows·slots, hidden] f32 output, is
// 132 MB).
func (b *Backend) PreferredChunk() int { return 512 }
