//go:build !linux || !cgo

package cuda

import (
	"errors"

	"github.com/deepseek-go/deepseek-go/kernels"
)

var errUnavailable = errors.New("cuda unavailable: this build has no cgo or is not for linux")

// Options configure New.
type Options struct {
	Device     int
	KVDType    kernels.DType
	NoCublasLt bool
}

// Backend is unavailable in this build.
type Backend struct{ kernels.Backend }

// DeviceInfo describes one CUDA device.
type DeviceInfo struct {
	Ordinal       int
	Name          string
	Major, Minor  int
	SMs           int
	TotalMem      int64
	DriverVersion int
}

// Available reports why CUDA cannot be used.
func Available() error { return errUnavailable }

// Devices reports why CUDA cannot be used.
func Devices() ([]DeviceInfo, error) { return nil, errUnavailable }

// New reports why CUDA cannot be used.
func New(Options) (*Backend, error) { return nil, errUnavailable }

// MemInfo is never reached in this build.
func (b *Backend) MemInfo() (free, total int64, err error) { return 0, 0, errUnavailable }
