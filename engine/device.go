package engine

import (
	"fmt"
	"os"

	"github.com/deepseek-go/deepseek-go/kernels"
	// Registers "cuda" with kernels.RegisterDevice in cgo builds on Linux
	// (no SDK needed: libcuda is opened at run time); a stub otherwise.
	_ "github.com/deepseek-go/deepseek-go/kernels/cuda"
)

// WithDevice selection glue: model.go's openBackend resolves device names
// through the kernels registry; "auto" falls back to the CPU, saying so in
// one line on stderr.

func noteFallback(err error) {
	fmt.Fprintf(os.Stderr, "deepseek-go: running on cpu (%v)\n", err)
}

// checkDeviceMemory fails before any upload when the device cannot hold
// need bytes of weights (with 1 GiB left for the KV cache and activations).
func checkDeviceMemory(be kernels.Backend, need int64) error {
	mi, ok := be.(kernels.MemInfoer)
	if !ok {
		return nil
	}
	free, total, err := mi.MemInfo()
	if err != nil {
		return err
	}
	const reserve = 1 << 30
	if need+reserve > free {
		return fmt.Errorf("not enough GPU memory on %s: the weights need %.2f GiB (+%.2f GiB working room), %.2f GiB free of %.2f GiB",
			be.Name(), float64(need)/(1<<30), float64(reserve)/(1<<30), float64(free)/(1<<30), float64(total)/(1<<30))
	}
	return nil
}
