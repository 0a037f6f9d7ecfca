package engine

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/kernels/cuda"
)

// Without a GPU: "cuda" fails clearly, "auto" runs on the CPU.
func TestDeviceSelectionWithoutGPU(t *testing.T) {
	if cuda.Available() == nil {
		t.Skip("a GPU is present")
	}
	_, err := Load(storiesDir, WithDevice("cuda"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "cuda")
	m, err := Load(storiesDir, WithDevice("auto"))
	require.NoError(t, err)
	defer m.Close()
	assert.Contains(t, m.Info().Backend, "cpu")
	_, err = Load(storiesDir, WithDevice("tpu"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "tpu")
}
