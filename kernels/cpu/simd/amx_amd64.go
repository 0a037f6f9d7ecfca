//go:build amd64 && !purego

package simd

import (
	"unsafe"

	"github.com/klauspost/cpuid/v2"

	"github.com/deepseek-go/deepseek-go/kernels"
)

// AMX is AVX512 plus AMX tiles for 16-bit products of amxMin or more
// tokens (prefill and batched decode); nil when the CPU or the OS does not
// provide AMX-BF16. A TDPBF16PS does 16×16×32 multiply-adds where an
// AVX-512 FMA does 16, so even with activations split in two bf16 halves
// and f16 weights in two more, the tiles leave the AVX-512 ones far behind.
var AMX = newAMX()

func newAMX() *Kernels {
	if !cpuid.CPU.Supports(cpuid.AVX512F, cpuid.AVX512VL, cpuid.AMXTILE, cpuid.AMXBF16) || !requestAMX() {
		return nil
	}
	k := *AVX512
	k.Name = "avx512-amx"
	k.amx16 = amx16
	k.amxPack = packActsAVX512
	return &k
}

// amx16 computes rows r..r+32 for every token of a, one pair of 16-token
// blocks at a time: the 4 output tiles accumulate over all columns, then
// amxStore transposes them into y (tiles are rows × tokens); columns past
// a.kmain are added in Go. bf16 tiles load straight from w; f16 rows are
// first split into exact bf16 halves in s (hi·x + lo·x).
func amx16(dt kernels.DType, y []float32, ldy int, a *Acts, w []uint16, r int, s *Scratch) {
	var c [1024]float32
	cols, kmain, n := a.cols, a.kmain, a.n
	tbBytes := kmain * 32 // bytes per 16-token block: kmain/2 pairs × 16 × 4
	loOff := a.ntb * tbBytes
	base := unsafe.Pointer(&a.packed[0])
	wp, ldw := unsafe.Pointer(&w[r*cols]), cols*2
	var wlo unsafe.Pointer
	if dt == kernels.F16 {
		ld := kmain + 32 // not a multiple of 4 KiB: see PadStride
		if s == nil {
			s = new(Scratch)
		}
		if cap(s.u16) < 2*amxRows*ld {
			s.u16 = make([]uint16, 2*amxRows*ld)
		}
		hi, lo := s.u16[:amxRows*ld], s.u16[amxRows*ld:2*amxRows*ld]
		for m := 0; m < amxRows; m++ {
			splitF16AVX512(&hi[m*ld], &lo[m*ld], unsafe.Pointer(&w[(r+m)*cols]), kmain)
		}
		wp, wlo, ldw = unsafe.Pointer(&hi[0]), unsafe.Pointer(&lo[0]), ld*2
	}
	for tb := 0; tb < a.ntb; tb += 2 {
		xp := unsafe.Add(base, tb*tbBytes)
		amxBF16(wp, ldw, xp, tbBytes, loOff, kmain/32, &c[0], 0)
		if wlo != nil {
			amxBF16(wlo, ldw, xp, tbBytes, loOff, kmain/32, &c[0], 1)
		}
		amxStore(&y[tb*16*ldy], ldy, &c[0], min(max(n-tb*16, 0), 16), min(max(n-tb*16-16, 0), 16))
	}
	if kmain < cols {
		tail := Generic.dot1[dt]
		for t := 0; t < n; t++ {
			for m := 0; m < amxRows; m++ {
				y[t*ldy+m] += tail(&a.x[t*a.ldx+kmain], unsafe.Pointer(&w[(r+m)*cols+kmain]), cols-kmain)
			}
		}
	}
}
