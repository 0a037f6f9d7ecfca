//go:build linux && cgo

package engine

import (
	"fmt"
	"os"

	"github.com/deepseek-go/deepseek-go/kernels"
	"github.com/deepseek-go/deepseek-go/kernels/cuda"
)

func init() { registerDevice("cuda", openCUDA) }

// openCUDA opens CUDA device 0 (DSGO_CUDA_DEVICE picks another). The KV
// cache follows the weights: f16 for 16-bit models, f32 (exact attention)
// when any weight is f32.
func openCUDA(threads int) (kernels.Backend, error) {
	dev := 0
	if s := os.Getenv("DSGO_CUDA_DEVICE"); s != "" {
		if _, err := fmt.Sscan(s, &dev); err != nil {
			return nil, fmt.Errorf("DSGO_CUDA_DEVICE=%q: %w", s, err)
		}
	}
	return cuda.New(cuda.Options{Device: dev, KVAuto: true})
}

type cudaCapturer struct{ b *cuda.Backend }

func (c cudaCapturer) captureStep(id, pos, maxPos int, fn func(kernels.Backend) error) (stepGraph, error) {
	return c.b.CaptureStep(id, pos, maxPos, fn)
}

func capturerOf(be kernels.Backend) (stepCapturer, bool) {
	if os.Getenv("DSGO_NO_GRAPH") != "" {
		return nil, false
	}
	if b, ok := be.(*cuda.Backend); ok {
		return cudaCapturer{b}, true
	}
	return nil, false
}

// checkDeviceMemory fails before any upload when the device cannot hold
// need bytes of weights (with 1 GiB left for the KV cache and activations).
func checkDeviceMemory(be kernels.Backend, need int64) error {
	b, ok := be.(*cuda.Backend)
	if !ok {
		return nil
	}
	free, total, err := b.MemInfo()
	if err != nil {
		return err
	}
	const reserve = 1 << 30
	if need+reserve > free {
		return fmt.Errorf("not enough GPU memory on %s: the weights need %.2f GiB (+%.2f GiB working room), %.2f GiB free of %.2f GiB",
			b.Name(), float64(need)/(1<<30), float64(reserve)/(1<<30), float64(free)/(1<<30), float64(total)/(1<<30))
	}
	return nil
}
