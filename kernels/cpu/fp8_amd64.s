//go:build amd64 && !purego

#include "textflag.h"

// PFDIST is how far ahead (bytes) the decode row prefetches its weights.
#define PFDIST 2048

// e4m3 byte b → float16 bits: sign-extend to 16 bits and shift left 7, which
// puts exponent and mantissa at bits 7..13 and the sign at bits 14 and 15;
// clearing bit 14 leaves sign | (b&0x7f)<<7, the same value × 2^-8 (bias 7
// against 15).

// FP8_ARGS loads the arguments all four functions share, f (DI), w (SI),
// n (CX), scales (R8) and bc (R9), and broadcasts into M (X15's register at
// the function's width) the word mask that clears bit 14.
#define FP8_ARGS(M) \
	MOVQ f+0(FP), DI; \
	MOVQ w+8(FP), SI; \
	MOVQ n+16(FP), CX; \
	MOVQ scales+24(FP), R8; \
	MOVQ bc+32(FP), R9; \
	MOVL $0xBFFFBFFF, AX; \
	VMOVD AX, X15; \
	VPBROADCASTD X15, M

// FP8_TAKE moves the next block's value count, min(bc, values left), to
// DX and takes it off CX.
#define FP8_TAKE \
	MOVQ R9, DX; \
	CMPQ DX, CX; \
	CMOVQGT CX, DX; \
	SUBQ DX, CX

// E4M3 widens the bytes at src to f16 bits in H (mask M of H's width), the
// float32 values (× 2^-8) in F.
#define E4M3(src, H, F, M) \
	VPMOVSXBW src, H; \
	VPSLLW $7, H, H; \
	VPAND M, H, H; \
	VCVTPH2PS H, F

// FP8_256 loads 256.0 (the f16 values were 2^-8 of e4m3's) into X (a
// general register AX in between).
#define FP8_256(X) \
	MOVL $0x43800000, AX; \
	VMOVD AX, X

// FP8_WIDEN is the body of fp8WidenAVX512 / fp8WidenAVX2: V values a step
// (H/F the f16 and float32 registers of that width, M the mask, S/S256 the
// block scale and the 256.0 broadcast at F's width, X256 S256's low part).
#define FP8_WIDEN(blocks, loop, done, V, H, F, M, S, S256, X256) \
	FP8_ARGS(M); \
	FP8_256(X256); \
	VBROADCASTSS X256, S256; \
blocks: \
	TESTQ CX, CX; \
	JZ done; \
	VBROADCASTSS (R8), S; \
	VMULPS S256, S, S; \
	ADDQ $4, R8; \
	FP8_TAKE; \
loop: \
	E4M3((SI), H, F, M); \
	VMULPS S, F, F; \
	VMOVUPS F, (DI); \
	ADDQ $V, SI; \
	ADDQ $(4*V), DI; \
	SUBQ $V, DX; \
	JNZ loop; \
	JMP blocks; \
done: \
	VZEROUPPER; \
	RET

// func fp8WidenAVX512(f *float32, w *byte, n int, scales *float32, bc int)
TEXT ·fp8WidenAVX512(SB), NOSPLIT, $0-40
	FP8_WIDEN(blocks512, loop512, done512, 16, Y1, Z1, Y15, Z13, Z14, X14)

// func fp8WidenAVX2(f *float32, w *byte, n int, scales *float32, bc int)
TEXT ·fp8WidenAVX2(SB), NOSPLIT, $0-40
	FP8_WIDEN(blocks2, loop2, done2, 8, X1, Y1, X15, Y13, Y14, X14)

// FP8_DOT_STEP widens the V bytes at i·V(SI) (H/F of that width) and adds
// their products with the float32s at 4·i·V(DI) into ACC.
#define FP8_DOT_STEP(off, xoff, H, F, M, ACC) \
	E4M3(off(SI), H, F, M); \
	VFMADD231PS xoff(DI), F, ACC

// FP8_DOT is the block loop of fp8DotAVX512 / fp8DotAVX2: each block's
// products in four accumulators (A0..A3, zeroed by ZERO), summed and
// scaled by the block's scale into T (S its broadcast register); 4·V bytes
// a step. V, H*, F*, M as FP8_WIDEN's.
#define FP8_DOT(blocks, loop, done, ZERO, V, H0, H1, H2, H3, F0, F1, F2, F3, M, A0, A1, A2, A3, S, T) \
blocks: \
	TESTQ CX, CX; \
	JZ done; \
	ZERO A0, A0, A0; \
	ZERO A1, A1, A1; \
	ZERO A2, A2, A2; \
	ZERO A3, A3, A3; \
	FP8_TAKE; \
loop: \
	PREFETCHT0 PFDIST(SI); \
	FP8_DOT_STEP(0, 0, H0, F0, M, A0); \
	FP8_DOT_STEP(V, (4*V), H1, F1, M, A1); \
	FP8_DOT_STEP((2*V), (8*V), H2, F2, M, A2); \
	FP8_DOT_STEP((3*V), (12*V), H3, F3, M, A3); \
	ADDQ $(4*V), SI; \
	ADDQ $(16*V), DI; \
	SUBQ $(4*V), DX; \
	JNZ loop; \
	VADDPS A2, A0, A0; \
	VADDPS A3, A1, A1; \
	VADDPS A1, A0, A0; \
	VBROADCASTSS (R8), S; \
	VFMADD231PS S, A0, T; \
	ADDQ $4, R8; \
	JMP blocks; \
done:

// func fp8DotAVX512(f *float32, w *byte, n int, scales *float32, bc int) float32
// Σ f[i]·e4m3(w[i])·scales[i/bc] over n values (n and bc multiples of 64),
// the decode row: each block's products summed in four accumulators, then
// scaled into the total; nothing is stored.
TEXT ·fp8DotAVX512(SB), NOSPLIT, $0-44
	FP8_ARGS(Y15)
	VPXORD Z0, Z0, Z0
	FP8_DOT(dblocks, dloop, ddone, VPXORD, 16, Y3, Y4, Y6, Y7, Z3, Z4, Z6, Z7, Y15, Z1, Z2, Z8, Z9, Z5, Z0)
	VEXTRACTF64X4 $1, Z0, Y1
	VADDPS        Y1, Y0, Y0
	VEXTRACTF128  $1, Y0, X1
	VADDPS        X1, X0, X0
	VMOVHLPS      X0, X1, X1
	VADDPS        X1, X0, X0
	VMOVSHDUP     X0, X1
	VADDSS        X1, X0, X0
	FP8_256(X1)
	VMULSS X1, X0, X0
	VMOVSS X0, ret+40(FP)
	VZEROUPPER
	RET

// func fp8DotAVX2(f *float32, w *byte, n int, scales *float32, bc int) float32
// fp8DotAVX512 for AVX2+FMA+F16C: 32 values per iteration (n and bc
// multiples of 32).
TEXT ·fp8DotAVX2(SB), NOSPLIT, $0-44
	FP8_ARGS(X15)
	VXORPS Y0, Y0, Y0
	FP8_DOT(ablocks, aloop, adone, VXORPS, 8, X3, X4, X6, X7, Y3, Y4, Y6, Y7, X15, Y1, Y2, Y8, Y9, Y5, Y0)
	VEXTRACTF128 $1, Y0, X1
	VADDPS       X1, X0, X0
	VMOVHLPS     X0, X1, X1
	VADDPS       X1, X0, X0
	VMOVSHDUP    X0, X1
	VADDSS       X1, X0, X0
	FP8_256(X1)
	VMULSS X1, X0, X0
	VMOVSS X0, ret+40(FP)
	VZEROUPPER
	RET
