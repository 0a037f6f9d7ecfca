//go:build amd64 && !purego

#include "textflag.h"

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
	VPMOVZXBW (SI), Y1
	VPSLLW    $8, Y1, Y1
	VPSRAW    $1, Y1, Y1
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
	VPMOVZXBW (SI), X1
	VPSLLW    $8, X1, X1
	VPSRAW    $1, X1, X1
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
