//go:build ignore

// asm_gen writes dot_amd64.s: the float matrix kernels for every
// (instruction set, weight dtype) pair. The kernels differ only in register
// width and in how a weight vector is loaded and widened to float32, so they
// are generated rather than written out six times by hand.
//
//	go run asm_gen.go > dot_amd64.s
package main

import (
	"fmt"
	"os"
	"strings"
)

type isa struct {
	name   string // AVX512 or AVX2
	reg    string // Z or Y
	vl     int    // float32 lanes per vector
	tileT  int    // tokens per tile kernel
	xreg   int    // first register holding x vectors in the tile kernel
	wreg   int    // register holding a widened weight vector
	tmp    string // scratch register (index) for reductions
	reduce func(b *strings.Builder, acc [4]int)
}

type dtype struct {
	name  string // F32, BF16, F16
	shift int    // log2 bytes per element
}

var out strings.Builder

// prefetchDist is how far ahead (bytes) the decode kernels prefetch each
// weight row: 2048 beat 512 and none (BenchmarkPrefetch).
const prefetchDist = 2048

func p(format string, args ...any) { fmt.Fprintf(&out, "\t"+format+"\n", args...) }

// loadW widens VL weights at addr into register r.
func loadW(s isa, d dtype, addr string, r int) {
	switch d.name {
	case "F32":
		p("VMOVUPS %s, %s%d", addr, s.reg, r)
	case "BF16":
		// bf16 is the top half of a float32: zero-extend and shift.
		p("VPMOVZXWD %s, %s%d", addr, s.reg, r)
		p("VPSLLD $16, %s%d, %s%d", s.reg, r, s.reg, r)
	case "F16":
		p("VCVTPH2PS %s, %s%d", addr, s.reg, r)
	}
}

// reduceTo4 leaves the horizontal sums of accumulators a..d in X<a> as
// [Σa, Σb, Σc, Σd]. VHADDPS is VEX-only, so a..d must be below 16.
func reduceTo4(s isa, acc [4]int) {
	for _, a := range acc {
		if s.reg == "Z" {
			p("VEXTRACTF64X4 $1, Z%d, Y31", a)
			p("VADDPS Y31, Y%d, Y%d", a, a)
			p("VEXTRACTF32X4 $1, Y%d, X31", a)
			p("VADDPS X31, X%d, X%d", a, a)
		} else {
			p("VEXTRACTF128 $1, Y%d, X15", a)
			p("VADDPS X15, X%d, X%d", a, a)
		}
	}
	p("VHADDPS X%d, X%d, X%d", acc[1], acc[0], acc[0])
	p("VHADDPS X%d, X%d, X%d", acc[3], acc[2], acc[2])
	p("VHADDPS X%d, X%d, X%d", acc[2], acc[0], acc[0])
}

func zero(s isa, regs ...int) {
	for _, r := range regs {
		p("VXORPS %s%d, %s%d, %s%d", s.reg, r, s.reg, r, s.reg, r)
	}
}

func shiftVL(s isa) int {
	if s.vl == 16 {
		return 4
	}
	return 3
}

// dot1: Σ x[i]·w[i] over n elements (n a multiple of VL).
func genDot1(s isa, d dtype) {
	fmt.Fprintf(&out, "\n// func dot1%s%s(x *float32, w unsafe.Pointer, n int) float32\n", d.name, s.name)
	fmt.Fprintf(&out, "TEXT ·dot1%s%s(SB), NOSPLIT, $0-28\n", d.name, s.name)
	p("MOVQ x+0(FP), SI")
	p("MOVQ w+8(FP), DI")
	p("MOVQ n+16(FP), CX")
	zero(s, 0, 1, 2, 3)
	p("SHRQ $%d, CX", shiftVL(s))
	p("JZ done")
	fmt.Fprintf(&out, "loop:\n")
	p("VMOVUPS (SI), %s4", s.reg)
	loadW(s, d, "(DI)", 5)
	p("VFMADD231PS %s5, %s4, %s0", s.reg, s.reg, s.reg)
	p("ADDQ $%d, SI", s.vl*4)
	p("ADDQ $%d, DI", s.vl<<d.shift)
	p("DECQ CX")
	p("JNZ loop")
	fmt.Fprintf(&out, "done:\n")
	reduceTo4(s, [4]int{0, 1, 2, 3})
	p("MOVSS X0, ret+24(FP)")
	p("VZEROUPPER")
	p("RET")
}

// dot4: out[r] = Σ x[i]·w[r*ldw+i] for r < 4; x is loaded once for 4 rows.
// Each row is software-prefetched pf bytes ahead (pf = 0: none). Decode
// streams 4 rows per core from DRAM; the prefetch measured +10% best-case,
// +30% mean single-thread bandwidth over 1 GiB (BenchmarkPrefetch).
func genDot4(s isa, d dtype, pf int) {
	name := "dot4"
	if pf == 0 {
		name = "dot4nopf"
	}
	fmt.Fprintf(&out, "\n// func %s%s%s(x *float32, w unsafe.Pointer, ldw, n int, out *float32)\n", name, d.name, s.name)
	fmt.Fprintf(&out, "TEXT ·%s%s%s(SB), NOSPLIT, $0-40\n", name, d.name, s.name)
	p("MOVQ x+0(FP), SI")
	p("MOVQ w+8(FP), DI")
	p("MOVQ ldw+16(FP), R10")
	if d.shift > 0 {
		p("SHLQ $%d, R10", d.shift)
	}
	p("LEAQ (R10)(R10*2), R11")
	p("MOVQ n+24(FP), CX")
	p("MOVQ out+32(FP), DX")
	zero(s, 0, 1, 2, 3)
	p("SHRQ $%d, CX", shiftVL(s))
	p("JZ done")
	fmt.Fprintf(&out, "loop:\n")
	p("VMOVUPS (SI), %s4", s.reg)
	for r, addr := range []string{"(DI)", "(DI)(R10*1)", "(DI)(R10*2)", "(DI)(R11*1)"} {
		if pf > 0 {
			p("PREFETCHT0 %d%s", pf, addr)
		}
		loadW(s, d, addr, 5+r)
		p("VFMADD231PS %s%d, %s4, %s%d", s.reg, 5+r, s.reg, s.reg, r)
	}
	p("ADDQ $%d, SI", s.vl*4)
	p("ADDQ $%d, DI", s.vl<<d.shift)
	p("DECQ CX")
	p("JNZ loop")
	fmt.Fprintf(&out, "done:\n")
	reduceTo4(s, [4]int{0, 1, 2, 3})
	p("VMOVUPS X0, (DX)")
	p("VZEROUPPER")
	p("RET")
}

// tile: out[t*ldo+r] = Σ x[t*ldx+i]·w[r*ldw+i] for t < tileT, r < 4: each
// weight vector is widened once and used for tileT tokens.
func genTile(s isa, d dtype) {
	fmt.Fprintf(&out, "\n// func tile%s%s(x *float32, ldx int, w unsafe.Pointer, ldw, n int, out *float32, ldo int)\n", d.name, s.name)
	fmt.Fprintf(&out, "TEXT ·tile%s%s(SB), NOSPLIT, $0-56\n", d.name, s.name)
	p("MOVQ x+0(FP), SI")
	p("MOVQ ldx+8(FP), R8")
	p("SHLQ $2, R8")
	p("LEAQ (R8)(R8*2), R9")
	p("MOVQ w+16(FP), DI")
	p("MOVQ ldw+24(FP), R10")
	if d.shift > 0 {
		p("SHLQ $%d, R10", d.shift)
	}
	p("LEAQ (R10)(R10*2), R11")
	p("MOVQ n+32(FP), CX")
	p("MOVQ out+40(FP), DX")
	p("MOVQ ldo+48(FP), R12")
	p("SHLQ $2, R12")
	p("LEAQ (R12)(R12*2), R13")
	var accs []int
	for i := 0; i < 4*s.tileT; i++ {
		accs = append(accs, i)
	}
	zero(s, accs...)
	p("SHRQ $%d, CX", shiftVL(s))
	p("JZ done")
	fmt.Fprintf(&out, "loop:\n")
	xaddr := []string{"(SI)", "(SI)(R8*1)", "(SI)(R8*2)", "(SI)(R9*1)"}
	for t := 0; t < s.tileT; t++ {
		p("VMOVUPS %s, %s%d", xaddr[t], s.reg, s.xreg+t)
	}
	for r, addr := range []string{"(DI)", "(DI)(R10*1)", "(DI)(R10*2)", "(DI)(R11*1)"} {
		w := s.wreg
		if s.reg == "Z" {
			w += r // spare registers: let loads run ahead of the FMAs
		}
		loadW(s, d, addr, w)
		for t := 0; t < s.tileT; t++ {
			p("VFMADD231PS %s%d, %s%d, %s%d", s.reg, w, s.reg, s.xreg+t, s.reg, t*4+r)
		}
	}
	p("ADDQ $%d, SI", s.vl*4)
	p("ADDQ $%d, DI", s.vl<<d.shift)
	p("DECQ CX")
	p("JNZ loop")
	fmt.Fprintf(&out, "done:\n")
	oaddr := []string{"(DX)", "(DX)(R12*1)", "(DX)(R12*2)", "(DX)(R13*1)"}
	for t := 0; t < s.tileT; t++ {
		reduceTo4(s, [4]int{4 * t, 4*t + 1, 4*t + 2, 4*t + 3})
		p("VMOVUPS X%d, %s", 4*t, oaddr[t])
	}
	p("VZEROUPPER")
	p("RET")
}

// sum: Σ x[i] over n elements (n a multiple of 4·VL), four independent
// accumulators so loads, not add latency, set the pace: the read-bandwidth
// probe.
func genSum(s isa) {
	fmt.Fprintf(&out, "\n// func sum%s(x *float32, n int) float32\n", s.name)
	fmt.Fprintf(&out, "TEXT ·sum%s(SB), NOSPLIT, $0-20\n", s.name)
	p("MOVQ x+0(FP), SI")
	p("MOVQ n+8(FP), CX")
	zero(s, 0, 1, 2, 3)
	p("SHRQ $%d, CX", shiftVL(s)+2)
	p("JZ done")
	fmt.Fprintf(&out, "loop:\n")
	for r := 0; r < 4; r++ {
		p("VADDPS %d(SI), %s%d, %s%d", r*s.vl*4, s.reg, r, s.reg, r)
	}
	p("ADDQ $%d, SI", 4*s.vl*4)
	p("DECQ CX")
	p("JNZ loop")
	fmt.Fprintf(&out, "done:\n")
	p("VADDPS %s1, %s0, %s0", s.reg, s.reg, s.reg)
	p("VADDPS %s3, %s2, %s2", s.reg, s.reg, s.reg)
	p("VADDPS %s2, %s0, %s0", s.reg, s.reg, s.reg)
	zero(s, 1, 2, 3)
	reduceTo4(s, [4]int{0, 1, 2, 3})
	p("MOVSS X0, ret+16(FP)")
	p("VZEROUPPER")
	p("RET")
}

// widen: dst[i] = float32(w[i]) for n elements (n a multiple of VL), so
// prefill can widen a block of 16-bit weight rows once and run the f32
// tile kernel over every token.
func genWiden(s isa, d dtype) {
	fmt.Fprintf(&out, "\n// func widen%s%s(dst *float32, w unsafe.Pointer, n int)\n", d.name, s.name)
	fmt.Fprintf(&out, "TEXT ·widen%s%s(SB), NOSPLIT, $0-24\n", d.name, s.name)
	p("MOVQ dst+0(FP), SI")
	p("MOVQ w+8(FP), DI")
	p("MOVQ n+16(FP), CX")
	p("SHRQ $%d, CX", shiftVL(s))
	p("JZ done")
	fmt.Fprintf(&out, "loop:\n")
	loadW(s, d, "(DI)", 0)
	p("VMOVUPS %s0, (SI)", s.reg)
	p("ADDQ $%d, SI", s.vl*4)
	p("ADDQ $%d, DI", s.vl<<d.shift)
	p("DECQ CX")
	p("JNZ loop")
	fmt.Fprintf(&out, "done:\n")
	p("VZEROUPPER")
	p("RET")
}

// axpy: y[i] += alpha·x[i] for n elements (n a multiple of VL): attention's
// weighted sum of value rows.
func genAxpy(s isa) {
	fmt.Fprintf(&out, "\n// func axpy%s(y *float32, alpha float32, x *float32, n int)\n", s.name)
	fmt.Fprintf(&out, "TEXT ·axpy%s(SB), NOSPLIT, $0-32\n", s.name)
	p("MOVQ y+0(FP), DI")
	p("VBROADCASTSS alpha+8(FP), %s0", s.reg)
	p("MOVQ x+16(FP), SI")
	p("MOVQ n+24(FP), CX")
	p("SHRQ $%d, CX", shiftVL(s))
	p("JZ done")
	fmt.Fprintf(&out, "loop:\n")
	p("VMOVUPS (DI), %s1", s.reg)
	p("VFMADD231PS (SI), %s0, %s1", s.reg, s.reg)
	p("VMOVUPS %s1, (DI)", s.reg)
	p("ADDQ $%d, SI", s.vl*4)
	p("ADDQ $%d, DI", s.vl*4)
	p("DECQ CX")
	p("JNZ loop")
	fmt.Fprintf(&out, "done:\n")
	p("VZEROUPPER")
	p("RET")
}

// expConsts are the float32 constants of the vector exp, in DATA order.
var expConsts = []struct {
	name string
	bits uint32
}{
	{"log2e", 0x3fb8aa3b}, // 1.442695
	{"ln2hi", 0x3f317200}, // 0.693145751953125: k·ln2hi exact for |k| < 2^8
	{"ln2lo", 0x35bfbe8e}, // 1.4286068e-06
	{"c7", 0x39500d01},    // 1/5040
	{"c6", 0x3ab60b61},    // 1/720
	{"c5", 0x3c088889},    // 1/120
	{"c4", 0x3d2aaaab},    // 1/24
	{"c3", 0x3e2aaaab},    // 1/6
	{"c2", 0x3f000000},    // 1/2
	{"one", 0x3f800000},   // 1
	{"lo", 0xc2ae0000},    // -87: e^x stays normal
	{"hi", 0x42b00000},    // 88: e^x stays finite
	{"bias", 127 << 23},   // exponent bias, as int32 bits
}

// genExpData emits the constants, each repeated to 32 bytes so AVX2 code
// can use them as memory operands (AVX-512 broadcasts the first lane).
func genExpData() {
	out.WriteString("\n")
	for i, c := range expConsts {
		for j := 0; j < 8; j++ {
			fmt.Fprintf(&out, "DATA expc<>+%d(SB)/4, $0x%08x\n", i*32+j*4, c.bits)
		}
	}
	fmt.Fprintf(&out, "GLOBL expc<>(SB), RODATA|NOPTR, $%d\n", len(expConsts)*32)
}

func expAddr(name string) string {
	for i, c := range expConsts {
		if c.name == name {
			return fmt.Sprintf("expc<>+%d(SB)", i*32)
		}
	}
	panic(name)
}

// swiglu: out[i] = g·u/(1+e^-g) (silu(g)·u) for n elements (n a multiple of
// VL). e^x: x clamped to [-87, 88], x = k·ln2 + r, degree-7 Taylor
// polynomial for e^r, 2^k from exponent bits (VSCALEFPS on AVX-512).
func genSwiGLU(s isa) {
	fmt.Fprintf(&out, "\n// func swiglu%s(out, gate, up *float32, n int)\n", s.name)
	fmt.Fprintf(&out, "TEXT ·swiglu%s(SB), NOSPLIT, $0-32\n", s.name)
	p("MOVQ out+0(FP), DI")
	p("MOVQ gate+8(FP), SI")
	p("MOVQ up+16(FP), DX")
	p("MOVQ n+24(FP), CX")
	R := s.reg
	// c(name) is a register (AVX-512) or memory operand (AVX2) holding it.
	c := expConstRegs(s)
	p("SHRQ $%d, CX", shiftVL(s))
	p("JZ done")
	fmt.Fprintf(&out, "loop:\n")
	p("VMOVUPS (SI), %s0", R)                // g
	p("VXORPS %s1, %s1, %s1", R, R, R)       //
	p("VSUBPS %s0, %s1, %s1", R, R, R)       // x = -g
	genExpBody(s, c)                         // R3 = e^R1 (R1, R2 clobbered)
	p("VADDPS %s, %s3, %s3", c("one"), R, R) // 1 + e^-g
	p("VMULPS (DX), %s0, %s0", R, R)         // g·u
	p("VDIVPS %s3, %s0, %s0", R, R, R)
	p("VMOVUPS %s0, (DI)", R)
	p("ADDQ $%d, SI", s.vl*4)
	p("ADDQ $%d, DX", s.vl*4)
	p("ADDQ $%d, DI", s.vl*4)
	p("DECQ CX")
	p("JNZ loop")
	fmt.Fprintf(&out, "done:\n")
	p("VZEROUPPER")
	p("RET")
}

// genExpBody emits R3 = e^R1 (R = Z or Y), clobbering R1 and R2; c maps a
// constant's name to its register or memory operand.
func genExpBody(s isa, c func(string) string) {
	R := s.reg
	p("VMAXPS %s, %s1, %s1", c("lo"), R, R) // clamp
	p("VMINPS %s, %s1, %s1", c("hi"), R, R) //
	p("VMULPS %s, %s1, %s2", c("log2e"), R, R)
	if R == "Z" {
		p("VRNDSCALEPS $0, Z2, Z2") // k = round(x·log2e)
	} else {
		p("VROUNDPS $0, Y2, Y2")
	}
	p("VFNMADD231PS %s, %s2, %s1", c("ln2hi"), R, R) // r = x - k·ln2
	p("VFNMADD231PS %s, %s2, %s1", c("ln2lo"), R, R)
	if R == "Z" {
		p("VMOVAPS %s, Z3", c("c7"))
	} else {
		p("VMOVUPS %s, Y3", c("c7"))
	}
	for _, k := range []string{"c6", "c5", "c4", "c3", "c2", "one", "one"} {
		p("VFMADD213PS %s, %s1, %s3", c(k), R, R) // p = p·r + c
	}
	if R == "Z" {
		p("VSCALEFPS Z2, Z3, Z3") // e^x = p·2^k
	} else {
		p("VCVTPS2DQ Y2, Y2")
		p("VPSLLD $23, Y2, Y2")
		p("VPADDD %s, Y2, Y2", c("bias"))
		p("VMULPS Y2, Y3, Y3")
	}
}

// expConstRegs loads the exp constants (AVX-512: into Z16…; AVX2: used from
// memory) and returns the operand of each name.
func expConstRegs(s isa) func(string) string {
	if s.reg != "Z" {
		return expAddr
	}
	regs := map[string]string{}
	for i, k := range expConsts {
		r := fmt.Sprintf("Z%d", 16+i)
		p("VBROADCASTSS %s, %s", expAddr(k.name), r)
		regs[k.name] = r
	}
	return func(name string) string { return regs[name] }
}

// expsub: x[i] = e^(x[i]-m) for n elements (n a multiple of VL), returning
// their sum: the softmax numerators of attention scores.
func genExpSub(s isa) {
	fmt.Fprintf(&out, "\n// func expsub%s(x *float32, m float32, n int) float32\n", s.name)
	fmt.Fprintf(&out, "TEXT ·expsub%s(SB), NOSPLIT, $0-28\n", s.name)
	R := s.reg
	p("MOVQ x+0(FP), SI")
	p("VBROADCASTSS m+8(FP), %s4", R)
	p("MOVQ n+16(FP), CX")
	c := expConstRegs(s)
	p("VXORPS %s5, %s5, %s5", R, R, R) // running sum
	p("SHRQ $%d, CX", shiftVL(s))
	p("JZ done")
	fmt.Fprintf(&out, "loop:\n")
	p("VMOVUPS (SI), %s1", R)
	p("VSUBPS %s4, %s1, %s1", R, R, R)
	genExpBody(s, c)
	p("VMOVUPS %s3, (SI)", R)
	p("VADDPS %s3, %s5, %s5", R, R, R)
	p("ADDQ $%d, SI", s.vl*4)
	p("DECQ CX")
	p("JNZ loop")
	fmt.Fprintf(&out, "done:\n")
	zero(s, 0, 1, 2, 3)
	p("VADDPS %s5, %s0, %s0", R, R, R)
	reduceTo4(s, [4]int{0, 1, 2, 3})
	p("MOVSS X0, ret+24(FP)")
	p("VZEROUPPER")
	p("RET")
}

// gemvq: out[r] = Σ x[i]·w[r*ldw+i] for r < rows (a multiple of 4), the
// decode kernel. It reads the rows as 4 interleaved sequential streams:
// with Q = rows/4, step i dots rows i, Q+i, 2Q+i and 3Q+i, so each stream
// runs through consecutive rows (long, page-crossing runs the hardware
// prefetchers follow). Four adjacent rows instead are 4 streams of one
// 4 KiB page each for 2048-wide bf16 rows: measured 23 GB/s against 30 GB/s
// for gemvq (2 threads, 1 GiB matrix); one row at a time (one stream per
// core) only 12 GB/s.
func genGemvQ(s isa, d dtype) {
	fmt.Fprintf(&out, "\n// func gemvq%s%s(x *float32, w unsafe.Pointer, ldw, n, rows int, out *float32)\n", d.name, s.name)
	fmt.Fprintf(&out, "TEXT ·gemvq%s%s(SB), NOSPLIT, $0-48\n", d.name, s.name)
	p("MOVQ x+0(FP), R13")
	p("MOVQ w+8(FP), R12")
	p("MOVQ ldw+16(FP), BX")
	if d.shift > 0 {
		p("SHLQ $%d, BX", d.shift) // row bytes
	}
	p("MOVQ rows+32(FP), R9")
	p("SHRQ $2, R9") // Q
	p("JZ end")
	p("MOVQ R9, R10")
	p("IMULQ BX, R10") // stream distance in bytes: Q rows
	p("LEAQ (R10)(R10*2), R11")
	p("MOVQ R9, AX")
	p("SHLQ $2, AX") // Q floats in bytes: output distance
	p("LEAQ (AX)(AX*2), R8")
	p("MOVQ out+40(FP), DX")
	fmt.Fprintf(&out, "block:\n")
	p("MOVQ R13, SI")
	p("MOVQ R12, DI")
	p("MOVQ n+24(FP), CX")
	p("SHRQ $%d, CX", shiftVL(s))
	zero(s, 0, 1, 2, 3)
	p("TESTQ CX, CX")
	p("JZ reduce")
	fmt.Fprintf(&out, "loop:\n")
	p("VMOVUPS (SI), %s4", s.reg)
	for r, addr := range []string{"(DI)", "(DI)(R10*1)", "(DI)(R10*2)", "(DI)(R11*1)"} {
		p("PREFETCHT0 %d%s", prefetchDist, addr)
		loadW(s, d, addr, 5+r)
		p("VFMADD231PS %s%d, %s4, %s%d", s.reg, 5+r, s.reg, s.reg, r)
	}
	p("ADDQ $%d, SI", s.vl*4)
	p("ADDQ $%d, DI", s.vl<<d.shift)
	p("DECQ CX")
	p("JNZ loop")
	fmt.Fprintf(&out, "reduce:\n")
	reduceTo4(s, [4]int{0, 1, 2, 3})
	p("VMOVSS X0, (DX)")
	p("VEXTRACTPS $1, X0, (DX)(AX*1)")
	p("VEXTRACTPS $2, X0, (DX)(AX*2)")
	p("VEXTRACTPS $3, X0, (DX)(R8*1)")
	p("ADDQ $4, DX")
	p("ADDQ BX, R12")
	p("DECQ R9")
	p("JNZ block")
	fmt.Fprintf(&out, "end:\n")
	p("VZEROUPPER")
	p("RET")
}

// wsum: dst[c] = Σ_p a[p]·v[p*ldv+c] for c < d (d a multiple of 4·VL),
// p < n: attention's probability-weighted sum of value rows. Four output
// vectors stay in registers while the rows stream by, instead of one axpy
// (load, FMA, store of dst) per row.
func genWSum(s isa) {
	fmt.Fprintf(&out, "\n// func wsum%s(dst, a, v *float32, ldv, n, d int)\n", s.name)
	fmt.Fprintf(&out, "TEXT ·wsum%s(SB), NOSPLIT, $0-48\n", s.name)
	R := s.reg
	p("MOVQ dst+0(FP), DX")
	p("MOVQ v+16(FP), R12")
	p("MOVQ ldv+24(FP), R10")
	p("SHLQ $2, R10")
	p("MOVQ d+40(FP), R9")
	p("SHRQ $%d, R9", shiftVL(s)+2)
	p("JZ end")
	fmt.Fprintf(&out, "chunk:\n")
	zero(s, 0, 1, 2, 3)
	p("MOVQ a+8(FP), SI")
	p("MOVQ R12, DI")
	p("MOVQ n+32(FP), CX")
	p("TESTQ CX, CX")
	p("JZ store")
	fmt.Fprintf(&out, "loop:\n")
	p("VBROADCASTSS (SI), %s4", R)
	for u := 0; u < 4; u++ {
		p("VFMADD231PS %d(DI), %s4, %s%d", u*s.vl*4, R, R, u)
	}
	p("ADDQ $4, SI")
	p("ADDQ R10, DI")
	p("DECQ CX")
	p("JNZ loop")
	fmt.Fprintf(&out, "store:\n")
	for u := 0; u < 4; u++ {
		p("VMOVUPS %s%d, %d(DX)", R, u, u*s.vl*4)
	}
	p("ADDQ $%d, DX", 4*s.vl*4)
	p("ADDQ $%d, R12", 4*s.vl*4)
	p("DECQ R9")
	p("JNZ chunk")
	fmt.Fprintf(&out, "end:\n")
	p("VZEROUPPER")
	p("RET")
}

// AMX (Advanced Matrix Extensions: 8 tile registers of 16 rows × 64
// bytes, TDPBF16PS multiplies a 16×32 bf16 tile by a 32×16 one into 16×16
// float32, 16K MACs per instruction). The Go assembler knows none of the
// AMX instructions, so amx* emit their VEX encodings as bytes. Operands:
// tile registers 0–7; memory is base+index·1 (SIB) with general registers
// numbered as the hardware does (AX=0 … DI=7, R8=8 … R15=15).

// amxVEX emits a 3-byte-VEX AMX instruction of map 0F38 with W=0, L=0.
// pp: 0 none, 1 66, 2 F3, 3 F2; rex: the R̄X̄B̄ bits of register fields
// above 7; vvvv: the second source register (0 when unused: the field is stored inverted).
func amxVEX(comment string, pp, vvvv, rex int, op byte, modrm []byte) {
	b := []byte{0xC4, byte((^rex&7)<<5 | 0x02), byte((^vvvv&15)<<3 | pp), op}
	b = append(b, modrm...)
	var s []string
	for _, x := range b {
		s = append(s, fmt.Sprintf("$0x%02x", x))
	}
	p("BYTE %s // %s", strings.Join(s, "; BYTE "), comment)
}

// amxSIB encodes a memory operand base + index·1 (+ disp8 when the base is
// BP/R13, whose mod=00 form means "no base") for ModRM reg field reg.
func amxSIB(reg, base, index int) (rex int, modrm []byte) {
	if index&7 == 4 && index < 8 {
		panic("SP cannot be an index")
	}
	rex = (index >> 3 & 1 << 1) | (base >> 3 & 1)
	mod := 0
	if base&7 == 5 {
		mod = 1
	}
	modrm = []byte{byte(mod<<6 | (reg&7)<<3 | 4), byte((index&7)<<3 | base&7)}
	if mod == 1 {
		modrm = append(modrm, 0)
	}
	return rex, modrm
}

var gpName = []string{"AX", "CX", "DX", "BX", "SP", "BP", "SI", "DI", "R8", "R9", "R10", "R11", "R12", "R13", "R14", "R15"}

func ldtilecfg(base int) {
	if base&7 == 4 || base&7 == 5 {
		panic("ldtilecfg base needs SIB/disp")
	}
	amxVEX(fmt.Sprintf("LDTILECFG (%s)", gpName[base]), 0, 0, base>>3&1, 0x49, []byte{byte(base & 7)})
}

func tilerelease() { amxVEX("TILERELEASE", 0, 0, 0, 0x49, []byte{0xC0}) }

func tilezero(t int) {
	amxVEX(fmt.Sprintf("TILEZERO TMM%d", t), 3, 0, 0, 0x49, []byte{byte(0xC0 | t<<3)})
}

func tileloadd(t, base, index int) {
	rex, m := amxSIB(t, base, index)
	amxVEX(fmt.Sprintf("TILELOADD (%s)(%s*1), TMM%d", gpName[base], gpName[index], t), 3, 0, rex, 0x4B, m)
}

func tilestored(t, base, index int) {
	rex, m := amxSIB(t, base, index)
	amxVEX(fmt.Sprintf("TILESTORED TMM%d, (%s)(%s*1)", t, gpName[base], gpName[index]), 2, 0, rex, 0x4B, m)
}

// tdpbf16ps: c += a·b (a: 16 rows × 32 bf16; b: 16 rows of 16 bf16 pairs).
func tdpbf16ps(c, a, b int) {
	amxVEX(fmt.Sprintf("TDPBF16PS TMM%d, TMM%d, TMM%d", b, a, c), 2, b, 0, 0x5C, []byte{byte(0xC0 | c<<3 | a)})
}

// genAMXData emits the tile configuration: palette 1, every tile 16 rows of
// 64 bytes.
func genAMXData() {
	out.WriteString("\n")
	fmt.Fprintf(&out, "DATA amxcfg<>+0(SB)/1, $1\n")
	for t := 0; t < 8; t++ {
		fmt.Fprintf(&out, "DATA amxcfg<>+%d(SB)/2, $64\n", 16+2*t) // bytes per row
	}
	for t := 0; t < 8; t++ {
		fmt.Fprintf(&out, "DATA amxcfg<>+%d(SB)/1, $16\n", 48+t) // rows
	}
	fmt.Fprintf(&out, "GLOBL amxcfg<>(SB), RODATA|NOPTR, $64\n")
	// stride16: dword indexes 0, 16, …, 240 (64 bytes apart at scale 4):
	// one token's column of a 16-token tile, or one row's column of an
	// output tile.
	for j := 0; j < 16; j++ {
		fmt.Fprintf(&out, "DATA stride16<>+%d(SB)/4, $%d\n", 4*j, 16*j)
	}
	fmt.Fprintf(&out, "GLOBL stride16<>(SB), RODATA|NOPTR, $64\n")
}

// amxBF16: a 32-row × 32-token block of y = x·wᵀ over kb·32 columns.
// w: 32 bf16 rows ldw bytes apart (tiles A0, A1 = rows 0–15, 16–31);
// x: two 16-token blocks ldx bytes apart, each (cols/2) rows of 16 bf16
// pairs, so one 1 KiB tile per 32 columns (B0, B1); a second copy xlo
// bytes further holds the low halves (x − bf16(x)) and is multiplied too,
// which keeps ≈ 16 bits of each activation. c receives 4
// tiles of 16×16 float32 (A0·B0, A0·B1, A1·B0, A1·B1, rows × tokens); with
// acc ≠ 0 they are loaded from c and accumulated into. (Software prefetch
// of the next block during this one measured slower: the blocks are
// contiguous and the hardware prefetchers follow them.)
func genAMX() {
	const (
		AX, DX, BX, SI, DI, R8, R9, R10 = 0, 2, 3, 6, 7, 8, 9, 10
	)
	fmt.Fprintf(&out, "\n// func amxBF16(w unsafe.Pointer, ldw int, x unsafe.Pointer, ldx, xlo, kb int, c *float32, acc int)\n")
	fmt.Fprintf(&out, "TEXT ·amxBF16(SB), NOSPLIT, $0-64\n")
	p("LEAQ amxcfg<>(SB), AX")
	ldtilecfg(AX)
	p("MOVQ w+0(FP), SI")
	p("MOVQ ldw+8(FP), DX")
	p("MOVQ DX, R8")
	p("SHLQ $4, R8")
	p("ADDQ SI, R8") // A1: 16 rows on
	p("MOVQ x+16(FP), BX")
	p("MOVQ BX, R9")
	p("ADDQ ldx+24(FP), R9") // B1
	p("MOVQ xlo+32(FP), R11")
	p("MOVQ kb+40(FP), CX")
	p("MOVQ c+48(FP), DI")
	p("MOVQ $64, R10")
	p("MOVQ acc+56(FP), AX")
	p("TESTQ AX, AX")
	p("JNZ load")
	for t := 0; t < 4; t++ {
		tilezero(t)
	}
	p("JMP start")
	fmt.Fprintf(&out, "load:\n")
	for t := 0; t < 4; t++ {
		tileloadd(t, DI, R10)
		p("ADDQ $1024, DI")
	}
	p("SUBQ $4096, DI")
	fmt.Fprintf(&out, "start:\n")
	p("TESTQ CX, CX")
	p("JZ store")
	fmt.Fprintf(&out, "loop:\n")
	tileloadd(4, SI, DX)
	tileloadd(6, BX, R10)
	tdpbf16ps(0, 4, 6)
	tileloadd(5, R8, DX)
	tdpbf16ps(2, 5, 6)
	tileloadd(7, R9, R10)
	tdpbf16ps(1, 4, 7)
	tdpbf16ps(3, 5, 7)
	p("LEAQ (BX)(R11*1), AX") // low halves
	tileloadd(6, AX, R10)
	tdpbf16ps(0, 4, 6)
	tdpbf16ps(2, 5, 6)
	p("LEAQ (R9)(R11*1), AX")
	tileloadd(7, AX, R10)
	tdpbf16ps(1, 4, 7)
	tdpbf16ps(3, 5, 7)
	p("ADDQ $64, SI")
	p("ADDQ $64, R8")
	p("ADDQ $1024, BX")
	p("ADDQ $1024, R9")
	p("DECQ CX")
	p("JNZ loop")
	fmt.Fprintf(&out, "store:\n")
	for t := 0; t < 4; t++ {
		tilestored(t, DI, R10)
		p("ADDQ $1024, DI")
	}
	tilerelease()
	p("RET")
}

// text starts the function name with Go signature sig (after "func name")
// and an argument frame of args bytes.
func text(name, sig string, args int) {
	fmt.Fprintf(&out, "\n// func %s%s\nTEXT ·%s(SB), NOSPLIT, $0-%d\n", name, sig, name, args)
}

// loopEnd closes a CX-counted loop labelled loop, whose zero-trip jump
// targets done, and returns.
func loopEnd() {
	p("DECQ CX")
	p("JNZ loop")
	fmt.Fprintf(&out, "done:\n")
	p("VZEROUPPER")
	p("RET")
}

// splitF16: hi[i] + lo[i] = w[i] exactly, both bf16, for n f16 weights
// (n a multiple of 32), so the AMX bf16 tiles can multiply f16 weights
// without error. An f16 has 11 significant bits and bf16 8: hi is the
// float32 of w truncated to its top 16 bits (bf16 needs no rounding then),
// lo = w − hi holds the other ≤ 3 bits. The top halves of both float32
// vectors are gathered into bf16 with one VPERMT2W each.
func genSplitF16() {
	out.WriteString("\n")
	for j := 0; j < 32; j++ {
		fmt.Fprintf(&out, "DATA oddw<>+%d(SB)/2, $%d\n", 2*j, 2*j+1)
	}
	fmt.Fprintf(&out, "GLOBL oddw<>(SB), RODATA|NOPTR, $64\n")
	text("splitF16AVX512", "(hi, lo *uint16, w unsafe.Pointer, n int)", 32)
	p("MOVQ hi+0(FP), DI")
	p("MOVQ lo+8(FP), DX")
	p("MOVQ w+16(FP), SI")
	p("MOVQ n+24(FP), CX")
	p("MOVL $0xffff0000, AX")
	p("VPBROADCASTD AX, Z7")
	p("VMOVDQU16 oddw<>(SB), Z6")
	p("SHRQ $5, CX")
	p("JZ done")
	fmt.Fprintf(&out, "loop:\n")
	p("VCVTPH2PS (SI), Z0")   // w, exact in float32
	p("VCVTPH2PS 32(SI), Z1") //
	p("VPANDD Z7, Z0, Z2")    // hi
	p("VPANDD Z7, Z1, Z3")    //
	p("VSUBPS Z2, Z0, Z4")    // lo = w − hi (exact)
	p("VSUBPS Z3, Z1, Z5")    //
	p("VPERMT2W Z1, Z6, Z0")  // top halves of w = hi's bf16 bits
	p("VPERMT2W Z5, Z6, Z4")  // top halves of lo
	p("VMOVDQU16 Z0, (DI)")
	p("VMOVDQU16 Z4, (DX)")
	p("ADDQ $64, SI")
	p("ADDQ $64, DI")
	p("ADDQ $64, DX")
	loopEnd()
}

// packActs: the AMX activation layout for one token: x[0:n] (n a multiple
// of 32) as bf16 pairs, hi = bf16(x) (round to nearest even) and lo =
// bf16(x − hi) (truncated), pair j written to hi[16·j] and lo[16·j] (the
// token's column of a 16-token tile). The pairs are gathered with VPERMT2W
// and scattered 64 bytes apart.
func genPackActs() {
	text("packActsAVX512", "(hi, lo *uint32, x *float32, n int)", 32)
	p("MOVQ hi+0(FP), DI")
	p("MOVQ lo+8(FP), DX")
	p("MOVQ x+16(FP), SI")
	p("MOVQ n+24(FP), CX")
	p("MOVL $0x7fff, AX")
	p("VPBROADCASTD AX, Z4")
	p("MOVL $1, AX")
	p("VPBROADCASTD AX, Z5")
	p("MOVL $0xffff0000, AX")
	p("VPBROADCASTD AX, Z7")
	p("VMOVDQU16 oddw<>(SB), Z6")
	p("VMOVDQU32 stride16<>(SB), Z8")
	p("SHRQ $5, CX")
	p("JZ done")
	fmt.Fprintf(&out, "loop:\n")
	p("VMOVUPS (SI), Z0")
	p("VMOVUPS 64(SI), Z1")
	for _, r := range [][2]int{{0, 2}, {1, 3}} { // hi as float32: round at bit 16
		p("VPSRLD $16, Z%d, Z%d", r[0], r[1])
		p("VPANDD Z5, Z%d, Z%d", r[1], r[1])
		p("VPADDD Z4, Z%d, Z%d", r[1], r[1])
		p("VPADDD Z%d, Z%d, Z%d", r[0], r[1], r[1])
		p("VPANDD Z7, Z%d, Z%d", r[1], r[1])
		p("VSUBPS Z%d, Z%d, Z%d", r[1], r[0], r[0]) // lo = x − hi (exact)
	}
	p("VPERMT2W Z3, Z6, Z2") // 32 hi bf16 = 16 pairs
	p("VPERMT2W Z1, Z6, Z0") // 32 lo bf16
	p("KXNORW K1, K1, K1")
	p("VPSCATTERDD Z2, K1, (DI)(Z8*4)")
	p("KXNORW K2, K2, K2")
	p("VPSCATTERDD Z0, K2, (DX)(Z8*4)")
	p("ADDQ $128, SI")
	p("ADDQ $1024, DI")
	p("ADDQ $1024, DX")
	loopEnd()
}

// amxStore writes amxBF16's 4 output tiles (rows × tokens) into y (tokens ×
// rows, ldy floats apart): tile t covers rows 16·(t/2)… and tokens
// 16·(t%2)…, of which n0 and n1 (0–16) exist. Each token's 16 rows are
// gathered from the tile (L1) and stored as one 64-byte row of y; a
// scatter per tile row instead wrote 16 lines 4·ldy bytes apart per
// instruction and measured slower.
func genAMXStore() {
	text("amxStore", "(y *float32, ldy int, c *float32, n0, n1 int)", 40)
	p("MOVQ y+0(FP), DI")
	p("MOVQ ldy+8(FP), DX")
	p("SHLQ $2, DX") // bytes per token row of y
	p("MOVQ c+16(FP), SI")
	p("VMOVDQU32 stride16<>(SB), Z9")
	for t := 0; t < 4; t++ {
		nn := "n0+24(FP)"
		if t%2 == 1 {
			nn = "n1+32(FP)"
		}
		p("MOVQ %s, CX", nn)
		p("TESTQ CX, CX")
		p("JZ skip%d", t)
		p("MOVQ DI, AX")
		if t%2 == 1 {
			p("MOVQ DX, BX")
			p("SHLQ $4, BX")
			p("ADDQ BX, AX") // 16 tokens on
		}
		if t/2 == 1 {
			p("ADDQ $64, AX") // 16 rows on
		}
		p("LEAQ %d(SI), BX", t*1024)
		fmt.Fprintf(&out, "tile%d:\n", t)
		p("KXNORW K1, K1, K1")
		p("VGATHERDPS (BX)(Z9*4), K1, Z0")
		p("VMOVUPS Z0, (AX)")
		p("ADDQ $4, BX")
		p("ADDQ DX, AX")
		p("DECQ CX")
		p("JNZ tile%d", t)
		fmt.Fprintf(&out, "skip%d:\n", t)
	}
	p("VZEROUPPER")
	p("RET")
}

func main() {
	out.WriteString("// Code generated by asm_gen.go; DO NOT EDIT.\n\n//go:build amd64 && !purego\n\n#include \"textflag.h\"\n")
	genExpData()
	genAMXData()
	isas := []isa{
		{name: "AVX512", reg: "Z", vl: 16, tileT: 4, xreg: 16, wreg: 20},
		{name: "AVX2", reg: "Y", vl: 8, tileT: 3, xreg: 12, wreg: 15},
	}
	dts := []dtype{{"F32", 2}, {"BF16", 1}, {"F16", 1}}
	for _, s := range isas {
		for _, d := range dts {
			genDot1(s, d)
			genDot4(s, d, prefetchDist)
			if s.name == "AVX512" && d.name == "BF16" {
				genDot4(s, d, 0) // the baseline of BenchmarkPrefetch
			}
			genTile(s, d)
			genGemvQ(s, d)
			if d.name != "F32" {
				genWiden(s, d)
			}
		}
		genSum(s)
		genAxpy(s)
		genSwiGLU(s)
		genExpSub(s)
		genWSum(s)
	}
	genAMX()
	genSplitF16()
	genPackActs()
	genAMXStore()
	os.Stdout.WriteString(out.String())
}
