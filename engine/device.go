package engine

import (
	"fmt"
	"os"
)

// WithDevice selection glue: model.go's openBackend resolves device names
// through the registry that device_cuda.go fills at init; "auto" tries cuda
// and falls back to the CPU, saying so in one line on stderr.

func noteFallback(device string, err error) {
	fmt.Fprintf(os.Stderr, "deepseek-go: no %s device, using cpu: %v\n", device, err)
}
