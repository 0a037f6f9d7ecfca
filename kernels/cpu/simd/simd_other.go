//go:build !amd64 || purego

package simd

// Supported lists the paths this CPU can run: only Generic off amd64.
func Supported() []*Kernels { return []*Kernels{Generic} }
