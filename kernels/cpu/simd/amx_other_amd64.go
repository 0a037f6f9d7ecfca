//go:build !linux && !purego

package simd

// requestAMX: tile state permission is only requested on Linux.
func requestAMX() bool { return false }
