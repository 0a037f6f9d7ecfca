package engine

import (
	"fmt"
	"os"
)

// WithDevice selection glue: model.go's openBackend resolves device names
// through the registry that device_cuda.go fills at init; "auto" tries cuda
// and falls back to the CPU, saying so in one line on stderr.

func noteFallback(err error) {
	fmt.Fprintf(os.Stderr, "deepseek-go: running on cpu (%v)\n", err)
}
