//go:build ignore

// int8_gen writes int8_amd64.s: u8×s8→int32 dot-product kernels for
// AVX-512 VNNI (VPDPBUSD, 64 bytes per instruction), AVX-VNNI (the VEX form,
// emitted as raw bytes because the Go assembler only knows the EVEX form)
// and plain AVX2 (widen to int16, VPMADDWD).
//
//	go run int8_gen.go > int8_amd64.s
package main

import (
	"fmt"
	"os"
	"strings"
)

var out strings.Builder

// prefetchDist: the 4-row decode kernels prefetch each weight row this many
// bytes ahead (as kernels/cpu/simd, where it was measured).
const prefetchDist = 2048

func p(format string, args ...any) { fmt.Fprintf(&out, "\t"+format+"\n", args...) }

// vpdpbusdVEX emits VEX.256.66.0F38.W0 50 /r: ymm dst += u8(ymm a)·s8(ymm b),
// registers below 8.
func vpdpbusdVEX(dst, a, b int) {
	vvvv := (^a) & 0xf
	p("BYTE $0xC4; BYTE $0xE2; BYTE $0x%02X; BYTE $0x50; BYTE $0x%02X // VPDPBUSD Y%d, Y%d, Y%d (AVX-VNNI)",
		(vvvv<<3)|(1<<2)|1, 0xC0|dst<<3|b, b, a, dst)
}

// reduce leaves [Σa, Σb, Σc, Σd] (int32) in X<a>; registers below 16.
func reduce(zmm bool, acc [4]int) {
	for _, a := range acc {
		if zmm {
			p("VEXTRACTI64X4 $1, Z%d, Y31", a)
			p("VPADDD Y31, Y%d, Y%d", a, a)
			p("VEXTRACTI32X4 $1, Y%d, X31", a)
			p("VPADDD X31, X%d, X%d", a, a)
		} else {
			p("VEXTRACTI128 $1, Y%d, X15", a)
			p("VPADDD X15, X%d, X%d", a, a)
		}
	}
	p("VPHADDD X%d, X%d, X%d", acc[1], acc[0], acc[0])
	p("VPHADDD X%d, X%d, X%d", acc[3], acc[2], acc[2])
	p("VPHADDD X%d, X%d, X%d", acc[2], acc[0], acc[0])
}

var waddr = []string{"(DI)", "(DI)(R10*1)", "(DI)(R10*2)", "(DI)(R11*1)"}

func header(name, sig string, frame int) {
	fmt.Fprintf(&out, "\n// func %s%s\n", name, sig)
	fmt.Fprintf(&out, "TEXT ·%s(SB), NOSPLIT, $0-%d\n", name, frame)
}

const dot4Sig = "(x *uint8, w *int8, ldw, n int, out *int32)"

func dot4Prologue() {
	p("MOVQ x+0(FP), SI")
	p("MOVQ w+8(FP), DI")
	p("MOVQ ldw+16(FP), R10")
	p("LEAQ (R10)(R10*2), R11")
	p("MOVQ n+24(FP), CX")
	p("MOVQ out+32(FP), DX")
}

func loopEnd(step int) {
	p("ADDQ $%d, SI", step)
	p("ADDQ $%d, DI", step)
	p("DECQ CX")
	p("JNZ loop")
	fmt.Fprintf(&out, "done:\n")
}

func genVNNI512() {
	header("dot4VNNI512", dot4Sig, 40)
	dot4Prologue()
	for r := 0; r < 4; r++ {
		p("VPXORD Z%d, Z%d, Z%d", r, r, r)
	}
	p("SHRQ $6, CX")
	p("JZ done")
	fmt.Fprintf(&out, "loop:\n")
	p("VMOVDQU8 (SI), Z4")
	for r, a := range waddr {
		p("PREFETCHT0 %d%s", prefetchDist, a)
		p("VPDPBUSD %s, Z4, Z%d", a, r)
	}
	loopEnd(64)
	reduce(true, [4]int{0, 1, 2, 3})
	p("VMOVDQU X0, (DX)")
	p("VZEROUPPER")
	p("RET")

	// 4 tokens × 4 rows: each weight vector feeds 4 tokens.
	header("tileVNNI512", "(x *uint8, ldx int, w *int8, ldw, n int, out *int32, ldo int)", 56)
	p("MOVQ x+0(FP), SI")
	p("MOVQ ldx+8(FP), R8")
	p("LEAQ (R8)(R8*2), R9")
	p("MOVQ w+16(FP), DI")
	p("MOVQ ldw+24(FP), R10")
	p("LEAQ (R10)(R10*2), R11")
	p("MOVQ n+32(FP), CX")
	p("MOVQ out+40(FP), DX")
	p("MOVQ ldo+48(FP), R12")
	p("SHLQ $2, R12")
	p("LEAQ (R12)(R12*2), R13")
	for r := 0; r < 16; r++ {
		p("VPXORD Z%d, Z%d, Z%d", r, r, r)
	}
	p("SHRQ $6, CX")
	p("JZ done")
	fmt.Fprintf(&out, "loop:\n")
	for t, a := range []string{"(SI)", "(SI)(R8*1)", "(SI)(R8*2)", "(SI)(R9*1)"} {
		p("VMOVDQU8 %s, Z%d", a, 16+t)
	}
	for r, a := range waddr {
		p("VMOVDQU8 %s, Z%d", a, 20+r)
		for t := 0; t < 4; t++ {
			p("VPDPBUSD Z%d, Z%d, Z%d", 20+r, 16+t, 4*t+r)
		}
	}
	loopEnd(64)
	for t, a := range []string{"(DX)", "(DX)(R12*1)", "(DX)(R12*2)", "(DX)(R13*1)"} {
		reduce(true, [4]int{4 * t, 4*t + 1, 4*t + 2, 4*t + 3})
		p("VMOVDQU X%d, %s", 4*t, a)
	}
	p("VZEROUPPER")
	p("RET")
}

func genAVXVNNI() {
	header("dot4AVXVNNI", dot4Sig, 40)
	dot4Prologue()
	for r := 0; r < 4; r++ {
		p("VPXOR Y%d, Y%d, Y%d", r, r, r)
	}
	p("SHRQ $5, CX")
	p("JZ done")
	fmt.Fprintf(&out, "loop:\n")
	p("VMOVDQU (SI), Y4")
	for r, a := range waddr {
		p("PREFETCHT0 %d%s", prefetchDist, a)
		p("VMOVDQU %s, Y5", a)
		vpdpbusdVEX(r, 4, 5)
	}
	loopEnd(32)
	reduce(false, [4]int{0, 1, 2, 3})
	p("VMOVDQU X0, (DX)")
	p("VZEROUPPER")
	p("RET")
}

func genAVX2() {
	header("dot4AVX2", dot4Sig, 40)
	dot4Prologue()
	for r := 0; r < 4; r++ {
		p("VPXOR Y%d, Y%d, Y%d", r, r, r)
	}
	p("SHRQ $4, CX")
	p("JZ done")
	fmt.Fprintf(&out, "loop:\n")
	p("VPMOVZXBW (SI), Y4")
	for r, a := range waddr {
		// |u8·s8| ≤ 255·128, so a pair sum fits int32 (VPMADDWD) but not
		// int16 (VPMADDUBSW would saturate): widen both to int16 first.
		p("PREFETCHT0 %d%s", prefetchDist, a)
		p("VPMOVSXBW %s, Y%d", a, 5+r)
		p("VPMADDWD Y%d, Y4, Y%d", 5+r, 5+r)
		p("VPADDD Y%d, Y%d, Y%d", 5+r, r, r)
	}
	loopEnd(16)
	reduce(false, [4]int{0, 1, 2, 3})
	p("VMOVDQU X0, (DX)")
	p("VZEROUPPER")
	p("RET")
}

// genActs emits the AVX-512 activation quantiser: maxAbsAVX512 returns
// max|x| over n floats (n a multiple of 16); quantActsAVX512 writes
// dst[i] = round(x[i]·inv) + 128 (round to nearest even, as the Go tail).
func genActs() {
	header("maxAbsAVX512", "(x *float32, n int) float32", 20)
	p("MOVQ x+0(FP), SI")
	p("MOVQ n+8(FP), CX")
	p("MOVL $0x7fffffff, AX")
	p("VPBROADCASTD AX, Z4")
	p("VPXORD Z0, Z0, Z0")
	p("VPXORD Z1, Z1, Z1")
	p("SHRQ $4, CX")
	p("JZ done")
	fmt.Fprintf(&out, "loop:\n")
	p("VPANDD (SI), Z4, Z2")
	p("VMAXPS Z2, Z0, Z0")
	p("ADDQ $64, SI")
	p("DECQ CX")
	p("JNZ loop")
	fmt.Fprintf(&out, "done:\n")
	p("VEXTRACTF64X4 $1, Z0, Y1")
	p("VMAXPS Y1, Y0, Y0")
	p("VEXTRACTF32X4 $1, Y0, X1")
	p("VMAXPS X1, X0, X0")
	p("VPERMILPS $0x4E, X0, X1")
	p("VMAXPS X1, X0, X0")
	p("VPERMILPS $0xB1, X0, X1")
	p("VMAXPS X1, X0, X0")
	p("MOVSS X0, ret+16(FP)")
	p("VZEROUPPER")
	p("RET")

	header("quantActsAVX512", "(dst *uint8, x *float32, n int, inv float32)", 28)
	p("MOVQ dst+0(FP), DI")
	p("MOVQ x+8(FP), SI")
	p("MOVQ n+16(FP), CX")
	p("VBROADCASTSS inv+24(FP), Z4")
	p("MOVL $128, AX")
	p("VPBROADCASTD AX, Z5")
	p("SHRQ $4, CX")
	p("JZ done")
	fmt.Fprintf(&out, "loop:\n")
	p("VMULPS (SI), Z4, Z0")
	p("VCVTPS2DQ Z0, Z0") // MXCSR default: round to nearest even
	p("VPADDD Z5, Z0, Z0")
	p("VPMOVDB Z0, (DI)")
	p("ADDQ $64, SI")
	p("ADDQ $16, DI")
	p("DECQ CX")
	p("JNZ loop")
	fmt.Fprintf(&out, "done:\n")
	p("VZEROUPPER")
	p("RET")
}

// genGemvQ emits the single-token kernel over a row range: rows read as 4
// interleaved sequential streams (rows i, Q+i, 2Q+i, 3Q+i with Q = rows/4,
// as kernels/cpu/simd's gemvq, where it measured 23 → 30 GB/s), raw int32
// sums stored to out[r]. vl is the bytes per step; body emits one step
// accumulating into registers 0..3 from (DI) + the 4 stream offsets.
func genGemvQ(name string, vl, shift int, zmm bool, body func(addrs []string)) {
	header(name, "(x *uint8, w *int8, ldw, n, rows int, out *int32)", 48)
	R := "Y"
	if zmm {
		R = "Z"
	}
	p("MOVQ x+0(FP), R13")
	p("MOVQ w+8(FP), R12")
	p("MOVQ ldw+16(FP), BX")
	p("MOVQ rows+32(FP), R9")
	p("SHRQ $2, R9")
	p("JZ end")
	p("MOVQ R9, R10")
	p("IMULQ BX, R10")
	p("LEAQ (R10)(R10*2), R11")
	p("MOVQ R9, AX")
	p("SHLQ $2, AX")
	p("LEAQ (AX)(AX*2), R8")
	p("MOVQ out+40(FP), DX")
	fmt.Fprintf(&out, "block:\n")
	p("MOVQ R13, SI")
	p("MOVQ R12, DI")
	p("MOVQ n+24(FP), CX")
	p("SHRQ $%d, CX", shift)
	for r := 0; r < 4; r++ {
		p("VPXOR%s %s%d, %s%d, %s%d", map[bool]string{true: "D", false: ""}[zmm], R, r, R, r, R, r)
	}
	p("TESTQ CX, CX")
	p("JZ reduce")
	fmt.Fprintf(&out, "loop:\n")
	body([]string{"(DI)", "(DI)(R10*1)", "(DI)(R10*2)", "(DI)(R11*1)"})
	p("ADDQ $%d, SI", vl)
	p("ADDQ $%d, DI", vl)
	p("DECQ CX")
	p("JNZ loop")
	fmt.Fprintf(&out, "reduce:\n")
	reduce(zmm, [4]int{0, 1, 2, 3})
	p("VMOVD X0, (DX)")
	p("VPEXTRD $1, X0, (DX)(AX*1)")
	p("VPEXTRD $2, X0, (DX)(AX*2)")
	p("VPEXTRD $3, X0, (DX)(R8*1)")
	p("ADDQ $4, DX")
	p("ADDQ BX, R12")
	p("DECQ R9")
	p("JNZ block")
	fmt.Fprintf(&out, "end:\n")
	p("VZEROUPPER")
	p("RET")
}

func genGemvQs() {
	genGemvQ("gemvqVNNI512", 64, 6, true, func(addrs []string) {
		p("VMOVDQU8 (SI), Z4")
		for r, a := range addrs {
			p("PREFETCHT0 %d%s", prefetchDist, a)
			p("VPDPBUSD %s, Z4, Z%d", a, r)
		}
	})
	genGemvQ("gemvqAVXVNNI", 32, 5, false, func(addrs []string) {
		p("VMOVDQU (SI), Y4")
		for r, a := range addrs {
			p("PREFETCHT0 %d%s", prefetchDist, a)
			p("VMOVDQU %s, Y5", a)
			vpdpbusdVEX(r, 4, 5)
		}
	})
	genGemvQ("gemvqAVX2", 16, 4, false, func(addrs []string) {
		p("VPMOVZXBW (SI), Y4")
		for r, a := range addrs {
			p("PREFETCHT0 %d%s", prefetchDist, a)
			p("VPMOVSXBW %s, Y%d", a, 5+r)
			p("VPMADDWD Y%d, Y4, Y%d", 5+r, 5+r)
			p("VPADDD Y%d, Y%d, Y%d", 5+r, r, r)
		}
	})
}

func main() {
	out.WriteString("// Code generated by int8_gen.go; DO NOT EDIT.\n\n//go:build amd64 && !purego\n\n#include \"textflag.h\"\n")
	genVNNI512()
	genAVXVNNI()
	genAVX2()
	genActs()
	genGemvQs()
	os.Stdout.WriteString(out.String())
}
