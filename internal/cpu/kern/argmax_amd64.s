#include "textflag.h"

// The AVX-512 codebook-search kernels; see argmax_amd64.go for the
// contract and the register tile of each. The AVX2 kernels are generated
// by _asm into argmax_avx2_amd64.s. Common registers: SI the codeword rows
// of the current block (row t at SI + t*BX, BX = width*4 bytes), DX the
// bias of the current block, CX the codewords left, DI the running best.
// GT_OQ (0x1e): greater-than, false on NaN.

DATA argmaxIota<>+0(SB)/4, $0
DATA argmaxIota<>+4(SB)/4, $1
DATA argmaxIota<>+8(SB)/4, $2
DATA argmaxIota<>+12(SB)/4, $3
DATA argmaxIota<>+16(SB)/4, $4
DATA argmaxIota<>+20(SB)/4, $5
DATA argmaxIota<>+24(SB)/4, $6
DATA argmaxIota<>+28(SB)/4, $7
DATA argmaxIota<>+32(SB)/4, $8
DATA argmaxIota<>+36(SB)/4, $9
DATA argmaxIota<>+40(SB)/4, $10
DATA argmaxIota<>+44(SB)/4, $11
DATA argmaxIota<>+48(SB)/4, $12
DATA argmaxIota<>+52(SB)/4, $13
DATA argmaxIota<>+56(SB)/4, $14
DATA argmaxIota<>+60(SB)/4, $15
GLOBL argmaxIota<>(SB), RODATA|NOPTR, $64

DATA argmaxSixteen<>+0(SB)/4, $16
GLOBL argmaxSixteen<>(SB), RODATA|NOPTR, $4

// ------------------------------------------------------------- AVX-512 ---

// func argmax8AVX512(wt, bias *float32, width int, zt *float32, d, j0, groups int, best *float32, idx *int32)
// Z0-Z7: codeword rows 0-7 of the block (16 codewords), Z8: its bias.
// Token i (0-3): chains Z(9+2i) (bias + z0..z3 w) and Z(10+2i) (z4..z7 w),
// best Z(17+i), index Z(21+i), mask K(1+i). Z25: lane codeword index,
// Z26: 16 in every lane. zt is (8, 4): component t of token i at
// zt + 16t + 4i, so TOKEN8's OFF is 4i.
#define TOKEN8(OFF, A, B, BEST, IDX, KM) \
	VMOVAPS Z8, A; \
	VMULPS.BCST      64+OFF(AX), Z4, B; \
	VFMADD231PS.BCST 0+OFF(AX), Z0, A; \
	VFMADD231PS.BCST 80+OFF(AX), Z5, B; \
	VFMADD231PS.BCST 16+OFF(AX), Z1, A; \
	VFMADD231PS.BCST 96+OFF(AX), Z6, B; \
	VFMADD231PS.BCST 32+OFF(AX), Z2, A; \
	VFMADD231PS.BCST 112+OFF(AX), Z7, B; \
	VFMADD231PS.BCST 48+OFF(AX), Z3, A; \
	VADDPS B, A, A; \
	VCMPPS $0x1e, BEST, A, KM; \
	VMAXPS BEST, A, BEST; \
	VPBLENDMD Z25, IDX, KM, IDX

TEXT ·argmax8AVX512(SB), NOSPLIT, $0-72
	MOVQ zt+24(FP), AX
	MOVQ best+56(FP), DI
	MOVQ idx+64(FP), R9

grp8avx512:
	MOVQ wt+0(FP), SI
	MOVQ bias+8(FP), DX
	MOVQ width+16(FP), CX
	LEAQ (CX*4), BX
	LEAQ (BX)(BX*2), R8
	LEAQ (SI)(BX*4), R10
	VMOVUPS 0(DI), Z17
	VMOVUPS 64(DI), Z18
	VMOVUPS 128(DI), Z19
	VMOVUPS 192(DI), Z20
	VMOVDQU32 0(R9), Z21
	VMOVDQU32 64(R9), Z22
	VMOVDQU32 128(R9), Z23
	VMOVDQU32 192(R9), Z24
	MOVQ j0+40(FP), R11
	VMOVD R11, X0
	VPBROADCASTD X0, Z0
	VPADDD argmaxIota<>(SB), Z0, Z25
	VPBROADCASTD argmaxSixteen<>(SB), Z26

loop8avx512:
	VMOVUPS (SI), Z0
	VMOVUPS (SI)(BX*1), Z1
	VMOVUPS (SI)(BX*2), Z2
	VMOVUPS (SI)(R8*1), Z3
	VMOVUPS (R10), Z4
	VMOVUPS (R10)(BX*1), Z5
	VMOVUPS (R10)(BX*2), Z6
	VMOVUPS (R10)(R8*1), Z7
	VMOVUPS (DX), Z8
	TOKEN8(0, Z9, Z10, Z17, Z21, K1)
	TOKEN8(4, Z11, Z12, Z18, Z22, K2)
	TOKEN8(8, Z13, Z14, Z19, Z23, K3)
	TOKEN8(12, Z15, Z16, Z20, Z24, K4)
	VPADDD Z26, Z25, Z25
	ADDQ $64, SI
	ADDQ $64, R10
	ADDQ $64, DX
	SUBQ $16, CX
	JNZ  loop8avx512

	VMOVUPS Z17, 0(DI)
	VMOVUPS Z18, 64(DI)
	VMOVUPS Z19, 128(DI)
	VMOVUPS Z20, 192(DI)
	VMOVDQU32 Z21, 0(R9)
	VMOVDQU32 Z22, 64(R9)
	VMOVDQU32 Z23, 128(R9)
	VMOVDQU32 Z24, 192(R9)
	ADDQ $128, AX
	ADDQ $256, DI
	ADDQ $256, R9
	DECQ groups+48(FP)
	JNZ  grp8avx512
	VZEROUPPER
	RET

// func argmaxNAVX512(wt, bias *float32, width int, zt *float32, d, j0, groups int, best *float32, idx *int32)
// Z0-Z7: accumulators of tokens 0-7, Z8-Z15: best, Z16-Z23: index,
// Z24: lane codeword index, Z25: 16 in every lane, Z26: codeword row t.
// zt is (d, 8): component t of token i at zt + 32t + 4i. R11: d.
#define CMP16(ACC, BEST, IDX, KM) \
	VCMPPS $0x1e, BEST, ACC, KM; \
	VMAXPS BEST, ACC, BEST; \
	VPBLENDMD Z24, IDX, KM, IDX

TEXT ·argmaxNAVX512(SB), NOSPLIT, $0-72
	MOVQ zt+24(FP), AX
	MOVQ d+32(FP), R11
	MOVQ best+56(FP), DI
	MOVQ idx+64(FP), R10

grpNavx512:
	MOVQ wt+0(FP), SI
	MOVQ bias+8(FP), DX
	MOVQ width+16(FP), CX
	LEAQ (CX*4), BX
	VMOVUPS 0(DI), Z8
	VMOVUPS 64(DI), Z9
	VMOVUPS 128(DI), Z10
	VMOVUPS 192(DI), Z11
	VMOVUPS 256(DI), Z12
	VMOVUPS 320(DI), Z13
	VMOVUPS 384(DI), Z14
	VMOVUPS 448(DI), Z15
	VMOVDQU32 0(R10), Z16
	VMOVDQU32 64(R10), Z17
	VMOVDQU32 128(R10), Z18
	VMOVDQU32 192(R10), Z19
	VMOVDQU32 256(R10), Z20
	VMOVDQU32 320(R10), Z21
	VMOVDQU32 384(R10), Z22
	VMOVDQU32 448(R10), Z23
	MOVQ j0+40(FP), R9
	VMOVD R9, X0
	VPBROADCASTD X0, Z0
	VPADDD argmaxIota<>(SB), Z0, Z24
	VPBROADCASTD argmaxSixteen<>(SB), Z25

blockNavx512:
	VMOVUPS (DX), Z0
	VMOVAPS Z0, Z1
	VMOVAPS Z0, Z2
	VMOVAPS Z0, Z3
	VMOVAPS Z0, Z4
	VMOVAPS Z0, Z5
	VMOVAPS Z0, Z6
	VMOVAPS Z0, Z7
	MOVQ SI, R9
	MOVQ AX, R12
	MOVQ R11, R13

tNavx512:
	VMOVUPS (R9), Z26
	VFMADD231PS.BCST 0(R12), Z26, Z0
	VFMADD231PS.BCST 4(R12), Z26, Z1
	VFMADD231PS.BCST 8(R12), Z26, Z2
	VFMADD231PS.BCST 12(R12), Z26, Z3
	VFMADD231PS.BCST 16(R12), Z26, Z4
	VFMADD231PS.BCST 20(R12), Z26, Z5
	VFMADD231PS.BCST 24(R12), Z26, Z6
	VFMADD231PS.BCST 28(R12), Z26, Z7
	ADDQ BX, R9
	ADDQ $32, R12
	DECQ R13
	JNZ  tNavx512

	CMP16(Z0, Z8, Z16, K1)
	CMP16(Z1, Z9, Z17, K2)
	CMP16(Z2, Z10, Z18, K3)
	CMP16(Z3, Z11, Z19, K4)
	CMP16(Z4, Z12, Z20, K5)
	CMP16(Z5, Z13, Z21, K6)
	CMP16(Z6, Z14, Z22, K7)
	CMP16(Z7, Z15, Z23, K1)
	VPADDD Z25, Z24, Z24

	ADDQ $64, SI
	ADDQ $64, DX
	SUBQ $16, CX
	JNZ  blockNavx512

	VMOVUPS Z8, 0(DI)
	VMOVUPS Z9, 64(DI)
	VMOVUPS Z10, 128(DI)
	VMOVUPS Z11, 192(DI)
	VMOVUPS Z12, 256(DI)
	VMOVUPS Z13, 320(DI)
	VMOVUPS Z14, 384(DI)
	VMOVUPS Z15, 448(DI)
	VMOVDQU32 Z16, 0(R10)
	VMOVDQU32 Z17, 64(R10)
	VMOVDQU32 Z18, 128(R10)
	VMOVDQU32 Z19, 192(R10)
	VMOVDQU32 Z20, 256(R10)
	VMOVDQU32 Z21, 320(R10)
	VMOVDQU32 Z22, 384(R10)
	VMOVDQU32 Z23, 448(R10)
	ADDQ $512, DI
	ADDQ $512, R10
	MOVQ R11, R9
	SHLQ $5, R9
	ADDQ R9, AX
	DECQ groups+48(FP)
	JNZ  grpNavx512
	VZEROUPPER
	RET
