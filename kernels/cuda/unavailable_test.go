package cuda

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Without a driver or device, New must fail with a clear reason (never
// panic, never exit), so callers can fall back to the CPU.
func TestNewWithoutGPU(t *testing.T) {
	if Available() == nil {
		t.Skip("a CUDA device is present")
	}
	b, err := New(Options{})
	require.Error(t, err)
	assert.Nil(t, b)
	assert.Contains(t, err.Error(), "cuda unavailable")
}
