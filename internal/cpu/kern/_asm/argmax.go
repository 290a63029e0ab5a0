package main

import "fmt"

// argmax8 emits the AVX2 d=8 codebook-search kernel of package kern (see
// argmax_amd64.go for the contract), argmax8AVX2, and its variant for
// codebooks whose score offsets are all zero, argmax8NoBiasAVX2.
//
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
//
// Without offsets, row 0 starts each chain with VMULPS, which rounds
// z0*w0 exactly as the FMA onto a zero offset does, so the codes are the
// same: 32 loads per 32 FMAs instead of 36 (the kernel is bound by its
// loads; docs/notes/gemmasm.md).
func argmax8(bias bool) {
	name, sfx := "argmax8AVX2", "avx2"
	if !bias {
		name, sfx = "argmax8NoBiasAVX2", "nb"
	}
	lbl := func(s string) string { return s + sfx }
	fmt.Fprintf(&out, "// func %s(wt, bias *float32, width int, z *float32, ldz, j0, n int, best *float32, idx *int32)\n", name)
	if bias {
		out.WriteString("// The codewords' score offsets at bias (width of them).\n")
	} else {
		out.WriteString("// bias is not read: every offset is zero and width needs no padding.\n")
	}
	fmt.Fprintf(&out, "TEXT ·%s(SB), NOSPLIT, $0-72\n", name)
	p("MOVQ width+16(FP), CX")
	p("MOVQ z+24(FP), R13")
	p("MOVQ best+56(FP), DI")
	p("MOVQ idx+64(FP), R9")
	p("LEAQ (CX*4), BX")
	p("LEAQ (BX)(BX*2), R8")
	out.WriteString("\n")
	label(lbl("tok8"))
	p("MOVQ wt+0(FP), SI")
	if bias {
		p("MOVQ bias+8(FP), DX")
	}
	p("MOVQ width+16(FP), CX")
	p("LEAQ (SI)(BX*4), R10")
	for t := 0; t < 8; t++ {
		p("VBROADCASTSS %d(R13), Y%d", 4*t, t)
	}
	p("VBROADCASTSS (DI), Y8")
	p("MOVLQZX (R9), R11")
	p("MOVQ j0+40(FP), AX")
	out.WriteString("\n")
	rows := [8]string{"(SI)", "(SI)(BX*1)", "(SI)(BX*2)", "(SI)(R8*1)", "(R10)", "(R10)(BX*1)", "(R10)(BX*2)", "(R10)(R8*1)"}
	off := func(b int) string {
		if b == 0 {
			return ""
		}
		return fmt.Sprint(32 * b)
	}
	label(lbl("loop8"))
	if bias {
		for b := 0; b < 4; b++ {
			p("VMOVUPS %s(DX), Y%d", off(b), 9+b)
		}
	}
	for t := 0; t < 8; t++ {
		fmt.Fprintf(&out, "\t// row %d\n", t)
		for b := 0; b < 4; b++ {
			if t == 0 && !bias {
				p("VMULPS %s%s, Y0, Y%d", off(b), rows[t], 9+b)
			} else {
				p("VFMADD231PS %s%s, Y%d, Y%d", off(b), rows[t], t, 9+b)
			}
		}
	}
	p("VMAXPS Y10, Y9, Y13")
	p("VMAXPS Y12, Y11, Y14")
	p("VMAXPS Y14, Y13, Y13")
	p("VCMPPS $0x1e, Y8, Y13, Y14")
	p("VMOVMSKPS Y14, R12")
	p("TESTL R12, R12")
	p("JNZ  %s", lbl("slow8"))
	out.WriteString("\n")
	label(lbl("next8"))
	p("ADDQ $128, SI")
	p("ADDQ $128, R10")
	if bias {
		p("ADDQ $128, DX")
	}
	p("ADDQ $32, AX")
	p("SUBQ $32, CX")
	p("JNZ  %s", lbl("loop8"))
	out.WriteString("\n")
	tokenDone(lbl("tok8"))
	out.WriteString("\n")
	slowPath(lbl, "8", [4]int{9, 10, 11, 12}, 13, 14, 15)
}

// tokenDone emits the end of a token's scan: its best score and codeword
// stored, the next token's chunk, and back to tok while tokens are left.
func tokenDone(tok string) {
	p("VMOVSS X8, (DI)")
	p("MOVL R11, (R9)")
	p("ADDQ $4, DI")
	p("ADDQ $4, R9")
	p("ADDQ ldz+32(FP), R13")
	p("DECQ n+48(FP)")
	p("JNZ  %s", tok)
	p("VZEROUPPER")
	p("RET")
}

// slowPath emits the step's slow path of a d-any or d=8 AVX2 search
// kernel (label slow<k>): the largest of the step's 32 scores (blocks in
// Y<sc[0..3]>, their lane maximum in Y<mx>) becomes the threshold Y8 and
// the lowest codeword scoring it (blocks in order, then the lowest lane)
// R11; then back to next<k>. Y<t1>, Y<t2> and R12 are scratch.
func slowPath(lbl func(string) string, k string, sc [4]int, mx, t1, t2 int) {
	label(lbl("slow" + k))
	p("// Y8 = the largest of the 32 scores, in every lane.")
	p("VPERM2F128 $0x01, Y%d, Y%d, Y%d", mx, mx, t1)
	p("VMAXPS Y%d, Y%d, Y%d", t1, mx, t1)
	p("VPERMILPS $0x4e, Y%d, Y%d", t1, t2)
	p("VMAXPS Y%d, Y%d, Y%d", t2, t1, t1)
	p("VPERMILPS $0xb1, Y%d, Y%d", t1, t2)
	p("VMAXPS Y%d, Y%d, Y8", t2, t1)
	p("// The lowest codeword scoring it: blocks in order, then the lowest lane.")
	for b := 0; b < 3; b++ {
		p("VCMPPS $0x00, Y8, Y%d, Y%d", sc[b], t1)
		p("VMOVMSKPS Y%d, R12", t1)
		p("TESTL R12, R12")
		p("JNZ  %s", lbl(fmt.Sprintf("found%d", b)))
	}
	p("VCMPPS $0x00, Y8, Y%d, Y%d", sc[3], t1)
	p("VMOVMSKPS Y%d, R12", t1)
	p("BSFL R12, R12")
	p("LEAQ 24(AX)(R12*1), R11")
	p("JMP  %s", lbl("next"+k))
	for b := 0; b < 3; b++ {
		out.WriteString("\n")
		label(lbl(fmt.Sprintf("found%d", b)))
		p("BSFL R12, R12")
		if b == 0 {
			p("LEAQ (AX)(R12*1), R11")
		} else {
			p("LEAQ %d(AX)(R12*1), R11", 8*b)
		}
		p("JMP  %s", lbl("next"+k))
	}
	out.WriteString("\n")
}

// argmaxN emits argmaxNAVX2, the AVX2 search for any d:
//
// n tokens, the chunk of token i at z + i*ldz (ldz in bytes); L = 1 as in
// argmax8AVX2. Per step of 32 codewords (blocks 0-3, 8 each), two chains
// per block: Y0-Y3 take the bias and the even components, Y4-Y7 the odd
// ones; each component is broadcast once (Y13, Y14) and FMAed with the
// four blocks of its codeword row. Y8: the threshold. Y9: the step's
// maximum, Y10/Y11: scratch. R8: the component pointer, R10: the row
// pointer, R12: components left (then slow-path scratch).
func argmaxN() {
	lbl := func(s string) string { return s + "Navx2" }
	out.WriteString("// func argmaxNAVX2(wt, bias *float32, width int, z *float32, ldz, j0, n int, best *float32, idx *int32, d int)\n")
	out.WriteString("TEXT ·argmaxNAVX2(SB), NOSPLIT, $0-80\n")
	p("MOVQ width+16(FP), CX")
	p("MOVQ z+24(FP), R13")
	p("MOVQ best+56(FP), DI")
	p("MOVQ idx+64(FP), R9")
	p("LEAQ (CX*4), BX")
	out.WriteString("\n")
	label(lbl("tok"))
	p("MOVQ wt+0(FP), SI")
	p("MOVQ bias+8(FP), DX")
	p("MOVQ width+16(FP), CX")
	p("VBROADCASTSS (DI), Y8")
	p("MOVLQZX (R9), R11")
	p("MOVQ j0+40(FP), AX")
	out.WriteString("\n")
	label(lbl("loop"))
	for b := 0; b < 4; b++ {
		if b == 0 {
			p("VMOVUPS (DX), Y0")
		} else {
			p("VMOVUPS %d(DX), Y%d", 32*b, b)
		}
	}
	for b := 4; b < 8; b++ {
		p("VXORPS Y%d, Y%d, Y%d", b, b, b)
	}
	p("MOVQ SI, R10")
	p("MOVQ R13, R8")
	p("MOVQ d+72(FP), R12")
	p("CMPQ R12, $2")
	p("JLT  %s", lbl("last"))
	out.WriteString("\n")
	off := func(b int) string {
		if b == 0 {
			return ""
		}
		return fmt.Sprint(32 * b)
	}
	label(lbl("pair"))
	p("VBROADCASTSS (R8), Y13")
	p("VBROADCASTSS 4(R8), Y14")
	for b := 0; b < 4; b++ {
		p("VFMADD231PS %s(R10), Y13, Y%d", off(b), b)
	}
	for b := 0; b < 4; b++ {
		p("VFMADD231PS %s(R10)(BX*1), Y14, Y%d", off(b), 4+b)
	}
	p("ADDQ $8, R8")
	p("LEAQ (R10)(BX*2), R10")
	p("SUBQ $2, R12")
	p("CMPQ R12, $2")
	p("JGE  %s", lbl("pair"))
	out.WriteString("\n")
	label(lbl("last"))
	p("TESTQ R12, R12")
	p("JZ   %s", lbl("sum"))
	p("VBROADCASTSS (R8), Y13")
	for b := 0; b < 4; b++ {
		p("VFMADD231PS %s(R10), Y13, Y%d", off(b), b)
	}
	out.WriteString("\n")
	label(lbl("sum"))
	for b := 0; b < 4; b++ {
		p("VADDPS Y%d, Y%d, Y%d", 4+b, b, b)
	}
	p("VMAXPS Y1, Y0, Y9")
	p("VMAXPS Y3, Y2, Y10")
	p("VMAXPS Y10, Y9, Y9")
	p("VCMPPS $0x1e, Y8, Y9, Y10")
	p("VMOVMSKPS Y10, R12")
	p("TESTL R12, R12")
	p("JNZ  %s", lbl("slow"))
	out.WriteString("\n")
	label(lbl("next"))
	p("ADDQ $128, SI")
	p("ADDQ $128, DX")
	p("ADDQ $32, AX")
	p("SUBQ $32, CX")
	p("JNZ  %s", lbl("loop"))
	out.WriteString("\n")
	tokenDone(lbl("tok"))
	out.WriteString("\n")
	slowPath(lbl, "", [4]int{0, 1, 2, 3}, 9, 10, 11)
}
