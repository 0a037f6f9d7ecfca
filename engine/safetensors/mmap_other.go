//go:build !unix

package safetensors

import (
	"errors"
	"os"
)

// mapFile is unavailable on this platform; callers read the file instead.
func mapFile(*os.File, int) ([]byte, func() error, error) {
	return nil, nil, errors.New("mmap not supported on this platform")
}
