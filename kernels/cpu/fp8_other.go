//go:build !amd64 || purego

package cpu

import "github.com/deepseek-go/deepseek-go/kernels/cpu/simd"

// fp8WidenerFor returns the pure-Go widener: no vector path off amd64.
func fp8WidenerFor(*simd.Kernels) fp8Widener { return fp8Generic }
