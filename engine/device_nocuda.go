//go:build !linux || !cgo

package engine

import "github.com/deepseek-go/deepseek-go/kernels"

// Builds without cgo have no accelerator: nothing registers, no graphs.
func capturerOf(kernels.Backend) (stepCapturer, bool) { return nil, false }

func checkDeviceMemory(kernels.Backend, int64) error { return nil }
