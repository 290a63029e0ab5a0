#include "textflag.h"

// Codebook-search kernels; see argmax_amd64.go for the contract and the
// register tile of each. Common registers: SI the codeword rows of the
// current block (row t at SI + t*BX, BX = width*4 bytes), DX the bias of
// the current block, CX the codewords left, DI the running best.
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

// ---------------------------------------------------------------- AVX2 ---

// func argmax8AVX2(wt, bias *float32, width int, z *float32, ldz, j0, n int, best *float32, idx *int32)
// n tokens, the chunk of token i at z + i*ldz (ldz in bytes); L = 1:
// best[i] and idx[i] are token i's best score so far and its codeword.
// Y0-Y7: z0..z7 broadcast. Y8: the best score in every lane (the
// threshold). Y9-Y12: the scores of blocks 0-3 of the step (codewords
// j+8b .. j+8b+7), each one 8-deep FMA chain from the bias. Y13: their
// maximum, Y14/Y15: scratch. Rows 0-3 from SI, rows 4-7 from R10 = SI + 4
// rows. AX: j. R11: the best codeword. R13: the token's chunk.
//
// A step of 32 codewords costs 32 FMAs (codewords as memory operands),
// three maxes, a compare and a movemask: only when some score beats the
// threshold (strictly; about ln V times per scan on random data) does the
// slow path take the step's maximum as the new threshold and the lowest
// codeword that reaches it (blocks in order, lowest lane first).
TEXT ·argmax8AVX2(SB), NOSPLIT, $0-72
	MOVQ width+16(FP), CX
	MOVQ z+24(FP), R13
	MOVQ best+56(FP), DI
	MOVQ idx+64(FP), R9
	LEAQ (CX*4), BX
	LEAQ (BX)(BX*2), R8

tok8avx2:
	MOVQ wt+0(FP), SI
	MOVQ bias+8(FP), DX
	MOVQ width+16(FP), CX
	LEAQ (SI)(BX*4), R10
	VBROADCASTSS 0(R13), Y0
	VBROADCASTSS 4(R13), Y1
	VBROADCASTSS 8(R13), Y2
	VBROADCASTSS 12(R13), Y3
	VBROADCASTSS 16(R13), Y4
	VBROADCASTSS 20(R13), Y5
	VBROADCASTSS 24(R13), Y6
	VBROADCASTSS 28(R13), Y7
	VBROADCASTSS (DI), Y8
	MOVLQZX (R9), R11
	MOVQ j0+40(FP), AX

loop8avx2:
	VMOVUPS (DX), Y9
	VMOVUPS 32(DX), Y10
	VMOVUPS 64(DX), Y11
	VMOVUPS 96(DX), Y12
	// row 0
	VFMADD231PS (SI), Y0, Y9
	VFMADD231PS 32(SI), Y0, Y10
	VFMADD231PS 64(SI), Y0, Y11
	VFMADD231PS 96(SI), Y0, Y12
	// row 1
	VFMADD231PS (SI)(BX*1), Y1, Y9
	VFMADD231PS 32(SI)(BX*1), Y1, Y10
	VFMADD231PS 64(SI)(BX*1), Y1, Y11
	VFMADD231PS 96(SI)(BX*1), Y1, Y12
	// row 2
	VFMADD231PS (SI)(BX*2), Y2, Y9
	VFMADD231PS 32(SI)(BX*2), Y2, Y10
	VFMADD231PS 64(SI)(BX*2), Y2, Y11
	VFMADD231PS 96(SI)(BX*2), Y2, Y12
	// row 3
	VFMADD231PS (SI)(R8*1), Y3, Y9
	VFMADD231PS 32(SI)(R8*1), Y3, Y10
	VFMADD231PS 64(SI)(R8*1), Y3, Y11
	VFMADD231PS 96(SI)(R8*1), Y3, Y12
	// row 4
	VFMADD231PS (R10), Y4, Y9
	VFMADD231PS 32(R10), Y4, Y10
	VFMADD231PS 64(R10), Y4, Y11
	VFMADD231PS 96(R10), Y4, Y12
	// row 5
	VFMADD231PS (R10)(BX*1), Y5, Y9
	VFMADD231PS 32(R10)(BX*1), Y5, Y10
	VFMADD231PS 64(R10)(BX*1), Y5, Y11
	VFMADD231PS 96(R10)(BX*1), Y5, Y12
	// row 6
	VFMADD231PS (R10)(BX*2), Y6, Y9
	VFMADD231PS 32(R10)(BX*2), Y6, Y10
	VFMADD231PS 64(R10)(BX*2), Y6, Y11
	VFMADD231PS 96(R10)(BX*2), Y6, Y12
	// row 7
	VFMADD231PS (R10)(R8*1), Y7, Y9
	VFMADD231PS 32(R10)(R8*1), Y7, Y10
	VFMADD231PS 64(R10)(R8*1), Y7, Y11
	VFMADD231PS 96(R10)(R8*1), Y7, Y12
	VMAXPS Y10, Y9, Y13
	VMAXPS Y12, Y11, Y14
	VMAXPS Y14, Y13, Y13
	VCMPPS $0x1e, Y8, Y13, Y14
	VMOVMSKPS Y14, R12
	TESTL R12, R12
	JNZ  slow8avx2

next8avx2:
	ADDQ $128, SI
	ADDQ $128, R10
	ADDQ $128, DX
	ADDQ $32, AX
	SUBQ $32, CX
	JNZ  loop8avx2

	VMOVSS X8, (DI)
	MOVL R11, (R9)
	ADDQ $4, DI
	ADDQ $4, R9
	ADDQ ldz+32(FP), R13
	DECQ n+48(FP)
	JNZ  tok8avx2
	VZEROUPPER
	RET

slow8avx2:
	// Y8 = the largest of the 32 scores, in every lane.
	VPERM2F128 $0x01, Y13, Y13, Y14
	VMAXPS Y14, Y13, Y14
	VPERMILPS $0x4e, Y14, Y15
	VMAXPS Y15, Y14, Y14
	VPERMILPS $0xb1, Y14, Y15
	VMAXPS Y15, Y14, Y8
	// The lowest codeword scoring it: blocks in order, then the lowest lane.
	VCMPPS $0x00, Y8, Y9, Y14
	VMOVMSKPS Y14, R12
	TESTL R12, R12
	JNZ  found0avx2
	VCMPPS $0x00, Y8, Y10, Y14
	VMOVMSKPS Y14, R12
	TESTL R12, R12
	JNZ  found1avx2
	VCMPPS $0x00, Y8, Y11, Y14
	VMOVMSKPS Y14, R12
	TESTL R12, R12
	JNZ  found2avx2
	VCMPPS $0x00, Y8, Y12, Y14
	VMOVMSKPS Y14, R12
	BSFL R12, R12
	LEAQ 24(AX)(R12*1), R11
	JMP  next8avx2

found0avx2:
	BSFL R12, R12
	LEAQ (AX)(R12*1), R11
	JMP  next8avx2

found1avx2:
	BSFL R12, R12
	LEAQ 8(AX)(R12*1), R11
	JMP  next8avx2

found2avx2:
	BSFL R12, R12
	LEAQ 16(AX)(R12*1), R11
	JMP  next8avx2

// func argmax8NoBiasAVX2(wt, bias *float32, width int, z *float32, ldz, j0, n int, best *float32, idx *int32)
// argmax8AVX2 for a codebook whose score offsets are all zero (cosine
// search) and unpadded (no -Inf offsets to add): the bias is not read and
// row 0 starts each chain with VMULPS, which rounds z0*w0 exactly as the
// FMA onto a zero bias does, so the codes are the same. Four loads fewer
// per 32 FMAs (the kernel is bound by its loads: codewords are FMA memory
// operands).
TEXT ·argmax8NoBiasAVX2(SB), NOSPLIT, $0-72
	MOVQ width+16(FP), CX
	MOVQ z+24(FP), R13
	MOVQ best+56(FP), DI
	MOVQ idx+64(FP), R9
	LEAQ (CX*4), BX
	LEAQ (BX)(BX*2), R8

tok8nb:
	MOVQ wt+0(FP), SI
	MOVQ width+16(FP), CX
	LEAQ (SI)(BX*4), R10
	VBROADCASTSS 0(R13), Y0
	VBROADCASTSS 4(R13), Y1
	VBROADCASTSS 8(R13), Y2
	VBROADCASTSS 12(R13), Y3
	VBROADCASTSS 16(R13), Y4
	VBROADCASTSS 20(R13), Y5
	VBROADCASTSS 24(R13), Y6
	VBROADCASTSS 28(R13), Y7
	VBROADCASTSS (DI), Y8
	MOVLQZX (R9), R11
	MOVQ j0+40(FP), AX

loop8nb:
	// row 0
	VMULPS (SI), Y0, Y9
	VMULPS 32(SI), Y0, Y10
	VMULPS 64(SI), Y0, Y11
	VMULPS 96(SI), Y0, Y12
	// row 1
	VFMADD231PS (SI)(BX*1), Y1, Y9
	VFMADD231PS 32(SI)(BX*1), Y1, Y10
	VFMADD231PS 64(SI)(BX*1), Y1, Y11
	VFMADD231PS 96(SI)(BX*1), Y1, Y12
	// row 2
	VFMADD231PS (SI)(BX*2), Y2, Y9
	VFMADD231PS 32(SI)(BX*2), Y2, Y10
	VFMADD231PS 64(SI)(BX*2), Y2, Y11
	VFMADD231PS 96(SI)(BX*2), Y2, Y12
	// row 3
	VFMADD231PS (SI)(R8*1), Y3, Y9
	VFMADD231PS 32(SI)(R8*1), Y3, Y10
	VFMADD231PS 64(SI)(R8*1), Y3, Y11
	VFMADD231PS 96(SI)(R8*1), Y3, Y12
	// row 4
	VFMADD231PS (R10), Y4, Y9
	VFMADD231PS 32(R10), Y4, Y10
	VFMADD231PS 64(R10), Y4, Y11
	VFMADD231PS 96(R10), Y4, Y12
	// row 5
	VFMADD231PS (R10)(BX*1), Y5, Y9
	VFMADD231PS 32(R10)(BX*1), Y5, Y10
	VFMADD231PS 64(R10)(BX*1), Y5, Y11
	VFMADD231PS 96(R10)(BX*1), Y5, Y12
	// row 6
	VFMADD231PS (R10)(BX*2), Y6, Y9
	VFMADD231PS 32(R10)(BX*2), Y6, Y10
	VFMADD231PS 64(R10)(BX*2), Y6, Y11
	VFMADD231PS 96(R10)(BX*2), Y6, Y12
	// row 7
	VFMADD231PS (R10)(R8*1), Y7, Y9
	VFMADD231PS 32(R10)(R8*1), Y7, Y10
	VFMADD231PS 64(R10)(R8*1), Y7, Y11
	VFMADD231PS 96(R10)(R8*1), Y7, Y12
	VMAXPS Y10, Y9, Y13
	VMAXPS Y12, Y11, Y14
	VMAXPS Y14, Y13, Y13
	VCMPPS $0x1e, Y8, Y13, Y14
	VMOVMSKPS Y14, R12
	TESTL R12, R12
	JNZ  slow8nb

next8nb:
	ADDQ $128, SI
	ADDQ $128, R10
	ADDQ $32, AX
	SUBQ $32, CX
	JNZ  loop8nb

	VMOVSS X8, (DI)
	MOVL R11, (R9)
	ADDQ $4, DI
	ADDQ $4, R9
	ADDQ ldz+32(FP), R13
	DECQ n+48(FP)
	JNZ  tok8nb
	VZEROUPPER
	RET

slow8nb:
	// Y8 = the largest of the 32 scores, in every lane.
	VPERM2F128 $0x01, Y13, Y13, Y14
	VMAXPS Y14, Y13, Y14
	VPERMILPS $0x4e, Y14, Y15
	VMAXPS Y15, Y14, Y14
	VPERMILPS $0xb1, Y14, Y15
	VMAXPS Y15, Y14, Y8
	// The lowest codeword scoring it: blocks in order, then the lowest lane.
	VCMPPS $0x00, Y8, Y9, Y14
	VMOVMSKPS Y14, R12
	TESTL R12, R12
	JNZ  found0nb
	VCMPPS $0x00, Y8, Y10, Y14
	VMOVMSKPS Y14, R12
	TESTL R12, R12
	JNZ  found1nb
	VCMPPS $0x00, Y8, Y11, Y14
	VMOVMSKPS Y14, R12
	TESTL R12, R12
	JNZ  found2nb
	VCMPPS $0x00, Y8, Y12, Y14
	VMOVMSKPS Y14, R12
	BSFL R12, R12
	LEAQ 24(AX)(R12*1), R11
	JMP  next8nb

found0nb:
	BSFL R12, R12
	LEAQ (AX)(R12*1), R11
	JMP  next8nb

found1nb:
	BSFL R12, R12
	LEAQ 8(AX)(R12*1), R11
	JMP  next8nb

found2nb:
	BSFL R12, R12
	LEAQ 16(AX)(R12*1), R11
	JMP  next8nb

// func argmaxNAVX2(wt, bias *float32, width int, z *float32, ldz, j0, n int, best *float32, idx *int32, d int)
// Any d; n tokens, the chunk of token i at z + i*ldz (ldz in bytes); L = 1
// as in argmax8AVX2. Per step of 32 codewords (blocks 0-3, 8 each), two
// chains per block: Y0-Y3 take the bias and the even components, Y4-Y7 the
// odd ones; each component is broadcast once (Y13, Y14) and FMAed with the
// four blocks of its codeword row. Y8: the threshold. Y9: the step's
// maximum, Y10/Y11: scratch. R8: the component pointer, R10: the row
// pointer, R12: components left (then slow-path scratch).
TEXT ·argmaxNAVX2(SB), NOSPLIT, $0-80
	MOVQ width+16(FP), CX
	MOVQ z+24(FP), R13
	MOVQ best+56(FP), DI
	MOVQ idx+64(FP), R9
	LEAQ (CX*4), BX

tokNavx2:
	MOVQ wt+0(FP), SI
	MOVQ bias+8(FP), DX
	MOVQ width+16(FP), CX
	VBROADCASTSS (DI), Y8
	MOVLQZX (R9), R11
	MOVQ j0+40(FP), AX

loopNavx2:
	VMOVUPS (DX), Y0
	VMOVUPS 32(DX), Y1
	VMOVUPS 64(DX), Y2
	VMOVUPS 96(DX), Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	MOVQ SI, R10
	MOVQ R13, R8
	MOVQ d+72(FP), R12
	CMPQ R12, $2
	JLT  lastNavx2

pairNavx2:
	VBROADCASTSS (R8), Y13
	VBROADCASTSS 4(R8), Y14
	VFMADD231PS (R10), Y13, Y0
	VFMADD231PS 32(R10), Y13, Y1
	VFMADD231PS 64(R10), Y13, Y2
	VFMADD231PS 96(R10), Y13, Y3
	VFMADD231PS (R10)(BX*1), Y14, Y4
	VFMADD231PS 32(R10)(BX*1), Y14, Y5
	VFMADD231PS 64(R10)(BX*1), Y14, Y6
	VFMADD231PS 96(R10)(BX*1), Y14, Y7
	ADDQ $8, R8
	LEAQ (R10)(BX*2), R10
	SUBQ $2, R12
	CMPQ R12, $2
	JGE  pairNavx2

lastNavx2:
	TESTQ R12, R12
	JZ   sumNavx2
	VBROADCASTSS (R8), Y13
	VFMADD231PS (R10), Y13, Y0
	VFMADD231PS 32(R10), Y13, Y1
	VFMADD231PS 64(R10), Y13, Y2
	VFMADD231PS 96(R10), Y13, Y3

sumNavx2:
	VADDPS Y4, Y0, Y0
	VADDPS Y5, Y1, Y1
	VADDPS Y6, Y2, Y2
	VADDPS Y7, Y3, Y3
	VMAXPS Y1, Y0, Y9
	VMAXPS Y3, Y2, Y10
	VMAXPS Y10, Y9, Y9
	VCMPPS $0x1e, Y8, Y9, Y10
	VMOVMSKPS Y10, R12
	TESTL R12, R12
	JNZ  slowNavx2

nextNavx2:
	ADDQ $128, SI
	ADDQ $128, DX
	ADDQ $32, AX
	SUBQ $32, CX
	JNZ  loopNavx2

	VMOVSS X8, (DI)
	MOVL R11, (R9)
	ADDQ $4, DI
	ADDQ $4, R9
	ADDQ ldz+32(FP), R13
	DECQ n+48(FP)
	JNZ  tokNavx2
	VZEROUPPER
	RET

slowNavx2:
	// Y8 = the largest of the 32 scores, in every lane.
	VPERM2F128 $0x01, Y9, Y9, Y10
	VMAXPS Y10, Y9, Y10
	VPERMILPS $0x4e, Y10, Y11
	VMAXPS Y11, Y10, Y10
	VPERMILPS $0xb1, Y10, Y11
	VMAXPS Y11, Y10, Y8
	// The lowest codeword scoring it: blocks in order, then the lowest lane.
	VCMPPS $0x00, Y8, Y0, Y10
	VMOVMSKPS Y10, R12
	TESTL R12, R12
	JNZ  found0Navx2
	VCMPPS $0x00, Y8, Y1, Y10
	VMOVMSKPS Y10, R12
	TESTL R12, R12
	JNZ  found1Navx2
	VCMPPS $0x00, Y8, Y2, Y10
	VMOVMSKPS Y10, R12
	TESTL R12, R12
	JNZ  found2Navx2
	VCMPPS $0x00, Y8, Y3, Y10
	VMOVMSKPS Y10, R12
	BSFL R12, R12
	LEAQ 24(AX)(R12*1), R11
	JMP  nextNavx2

found0Navx2:
	BSFL R12, R12
	LEAQ (AX)(R12*1), R11
	JMP  nextNavx2

found1Navx2:
	BSFL R12, R12
	LEAQ 8(AX)(R12*1), R11
	JMP  nextNavx2

found2Navx2:
	BSFL R12, R12
	LEAQ 16(AX)(R12*1), R11
	JMP  nextNavx2

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
