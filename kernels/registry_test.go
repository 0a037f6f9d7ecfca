package kernels

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDeviceRegistry(t *testing.T) {
	boom := errors.New("no such card")
	RegisterDevice("test-fake", func(int) (Backend, error) { return nil, boom })
	assert.Contains(t, Devices(), "test-fake")
	_, ok, err := OpenDevice("test-fake", 1)
	assert.True(t, ok)
	assert.ErrorIs(t, err, boom)
	_, ok, err = OpenDevice("nope", 1)
	assert.False(t, ok)
	require.NoError(t, err)
	assert.Panics(t, func() { RegisterDevice("test-fake", nil) }, "duplicate")
	assert.Panics(t, func() { RegisterDevice("cpu", nil) }, "reserved")
}
