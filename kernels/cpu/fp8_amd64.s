//go:build amd64 && !purego

#include "textflag.h"

// PFDIST is how far ahead (bytes) the decode row prefetches its weights.
#define PFDIST 2048

// e4m3 byte b → float16 bits: sign-extend to 16 bits and shift left 7, which
// puts exponent and mantissa at bits 7..13 and the sign at bits 14 and 15;
// clearing bit 14 leaves sign | (b&0x7f)<<7, the same value × 2^-8 (bias 7
// against 15).

// func fp8WidenAVX512(dst *float32, src *byte, n int, scales *float32, bc int)
TEXT ·fp8WidenAVX512(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	MOVQ scales+24(FP), R8
	MOVQ bc+32(FP), R9
	MOVL $0xBFFFBFFF, AX // clears bit 14 of each word (the sign copy)
	VMOVD AX, X15
	VPBROADCASTD X15, Y15
	MOVL $0x43800000, AX // 256.0
	VMOVD AX, X14
	VBROADCASTSS X14, Z14

blocks512:
	TESTQ CX, CX
	JZ    done512
	VBROADCASTSS (R8), Z13
	VMULPS Z14, Z13, Z13
	ADDQ $4, R8
	MOVQ R9, DX
	CMPQ DX, CX
	CMOVQGT CX, DX
	SUBQ DX, CX

loop512:
	VPMOVSXBW (SI), Y1
	VPSLLW    $7, Y1, Y1
	VPAND     Y15, Y1, Y1
	VCVTPH2PS Y1, Z1
	VMULPS    Z13, Z1, Z1
	VMOVUPS   Z1, (DI)
	ADDQ $16, SI
	ADDQ $64, DI
	SUBQ $16, DX
	JNZ  loop512
	JMP  blocks512

done512:
	VZEROUPPER
	RET

// func fp8WidenAVX2(dst *float32, src *byte, n int, scales *float32, bc int)
TEXT ·fp8WidenAVX2(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	MOVQ scales+24(FP), R8
	MOVQ bc+32(FP), R9
	MOVL $0xBFFFBFFF, AX
	VMOVD AX, X15
	VPBROADCASTD X15, X15
	MOVL $0x43800000, AX
	VMOVD AX, X14
	VBROADCASTSS X14, Y14

blocks2:
	TESTQ CX, CX
	JZ    done2
	VBROADCASTSS (R8), Y13
	VMULPS Y14, Y13, Y13
	ADDQ $4, R8
	MOVQ R9, DX
	CMPQ DX, CX
	CMOVQGT CX, DX
	SUBQ DX, CX

loop2:
	VPMOVSXBW (SI), X1
	VPSLLW    $7, X1, X1
	VPAND     X15, X1, X1
	VCVTPH2PS X1, Y1
	VMULPS    Y13, Y1, Y1
	VMOVUPS   Y1, (DI)
	ADDQ $8, SI
	ADDQ $32, DI
	SUBQ $8, DX
	JNZ  loop2
	JMP  blocks2

done2:
	VZEROUPPER
	RET

// func fp8DotAVX512(x *float32, w *byte, n int, scales *float32, bc int) float32
// Σ x[i]·e4m3(w[i])·scales[i/bc] over n values (n and bc multiples of 64),
// the decode row: each block's products summed in two accumulators, then
// scaled into the total; nothing is stored.
TEXT ·fp8DotAVX512(SB), NOSPLIT, $0-44
	MOVQ x+0(FP), DI
	MOVQ w+8(FP), SI
	MOVQ n+16(FP), CX
	MOVQ scales+24(FP), R8
	MOVQ bc+32(FP), R9
	MOVL $0xBFFFBFFF, AX
	VMOVD AX, X15
	VPBROADCASTD X15, Y15
	VPXORD Z0, Z0, Z0

dblocks:
	TESTQ CX, CX
	JZ    ddone
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z8, Z8, Z8
	VPXORD Z9, Z9, Z9
	MOVQ R9, DX
	CMPQ DX, CX
	CMOVQGT CX, DX
	SUBQ DX, CX

dloop:
	PREFETCHT0  PFDIST(SI)
	VPMOVSXBW   (SI), Y3
	VPMOVSXBW   16(SI), Y4
	VPMOVSXBW   32(SI), Y6
	VPMOVSXBW   48(SI), Y7
	VPSLLW      $7, Y3, Y3
	VPSLLW      $7, Y4, Y4
	VPSLLW      $7, Y6, Y6
	VPSLLW      $7, Y7, Y7
	VPAND       Y15, Y3, Y3
	VPAND       Y15, Y4, Y4
	VPAND       Y15, Y6, Y6
	VPAND       Y15, Y7, Y7
	VCVTPH2PS   Y3, Z3
	VCVTPH2PS   Y4, Z4
	VCVTPH2PS   Y6, Z6
	VCVTPH2PS   Y7, Z7
	VFMADD231PS (DI), Z3, Z1
	VFMADD231PS 64(DI), Z4, Z2
	VFMADD231PS 128(DI), Z6, Z8
	VFMADD231PS 192(DI), Z7, Z9
	ADDQ $64, SI
	ADDQ $256, DI
	SUBQ $64, DX
	JNZ  dloop
	VADDPS       Z8, Z1, Z1
	VADDPS       Z9, Z2, Z2
	VADDPS       Z2, Z1, Z1
	VBROADCASTSS (R8), Z5
	VFMADD231PS  Z5, Z1, Z0
	ADDQ $4, R8
	JMP  dblocks

ddone:
	VEXTRACTF64X4 $1, Z0, Y1
	VADDPS        Y1, Y0, Y0
	VEXTRACTF128  $1, Y0, X1
	VADDPS        X1, X0, X0
	VMOVHLPS      X0, X1, X1
	VADDPS        X1, X0, X0
	VMOVSHDUP     X0, X1
	VADDSS        X1, X0, X0
	MOVL $0x43800000, AX // × 256: the f16 values were 2^-8 of e4m3's
	VMOVD AX, X1
	VMULSS X1, X0, X0
	VMOVSS X0, ret+40(FP)
	VZEROUPPER
	RET

// func fp8DotAVX2(x *float32, w *byte, n int, scales *float32, bc int) float32
// fp8DotAVX512 for AVX2+FMA+F16C: 32 values per iteration (n and bc
// multiples of 32).
TEXT ·fp8DotAVX2(SB), NOSPLIT, $0-44
	MOVQ x+0(FP), DI
	MOVQ w+8(FP), SI
	MOVQ n+16(FP), CX
	MOVQ scales+24(FP), R8
	MOVQ bc+32(FP), R9
	MOVL $0xBFFFBFFF, AX
	VMOVD AX, X15
	VPBROADCASTD X15, X15
	VXORPS Y0, Y0, Y0

ablocks:
	TESTQ CX, CX
	JZ    adone
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y8, Y8, Y8
	VXORPS Y9, Y9, Y9
	MOVQ R9, DX
	CMPQ DX, CX
	CMOVQGT CX, DX
	SUBQ DX, CX

aloop:
	PREFETCHT0  PFDIST(SI)
	VPMOVSXBW   (SI), X3
	VPMOVSXBW   8(SI), X4
	VPMOVSXBW   16(SI), X6
	VPMOVSXBW   24(SI), X7
	VPSLLW      $7, X3, X3
	VPSLLW      $7, X4, X4
	VPSLLW      $7, X6, X6
	VPSLLW      $7, X7, X7
	VPAND       X15, X3, X3
	VPAND       X15, X4, X4
	VPAND       X15, X6, X6
	VPAND       X15, X7, X7
	VCVTPH2PS   X3, Y3
	VCVTPH2PS   X4, Y4
	VCVTPH2PS   X6, Y6
	VCVTPH2PS   X7, Y7
	VFMADD231PS (DI), Y3, Y1
	VFMADD231PS 32(DI), Y4, Y2
	VFMADD231PS 64(DI), Y6, Y8
	VFMADD231PS 96(DI), Y7, Y9
	ADDQ $32, SI
	ADDQ $128, DI
	SUBQ $32, DX
	JNZ  aloop
	VADDPS       Y8, Y1, Y1
	VADDPS       Y9, Y2, Y2
	VADDPS       Y2, Y1, Y1
	VBROADCASTSS (R8), Y5
	VFMADD231PS  Y5, Y1, Y0
	ADDQ $4, R8
	JMP  ablocks

adone:
	VEXTRACTF128 $1, Y0, X1
	VADDPS       X1, X0, X0
	VMOVHLPS     X0, X1, X1
	VADDPS       X1, X0, X0
	VMOVSHDUP    X0, X1
	VADDSS       X1, X0, X0
	MOVL $0x43800000, AX
	VMOVD AX, X1
	VMULSS X1, X0, X0
	VMOVSS X0, ret+40(FP)
	VZEROUPPER
	RET
