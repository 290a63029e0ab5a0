package main

import "fmt"

// dwConv emits dwConv3x3AVX2, the row kernel of package kern's
// Depthwise3x3Row (AVX2 + FMA, ymm).
func dwConv() {
	out.WriteString(`// func dwConv3x3AVX2(dst, x0, x1, x2, w, bias *float32, cb, width, xstep, ld int)
//
// One output row of a 3x3 depthwise convolution over NHWC rows whose
// positions are ld floats apart: for ox < width and channel j < cb/4 (cb
// bytes, a multiple of 32),
//
//	dst[ox*ld+j] = bias[j] + sum over ky, kx of
//	               x_ky[ox*xstep + kx*ld + j] * w[(ky*3+kx)*ld + j]
//
// taps added in order (ky, kx) with one FMA each. Outputs go six at a
// time (accumulators Y10-Y15, so six FMA chains overlap), and for each
// six, every block of 8 channels: the block's 9 weights are loaded into
// Y0-Y8 and its bias into Y9 (they stay in L1), while the input stays
// near: the six outputs' 3 x 8 positions.
TEXT ·dwConv3x3AVX2(SB), NOSPLIT, $0-80
`)
	rows := [3]string{"SI", "R8", "R9"}
	p("MOVQ dst+0(FP), DI")
	for i, r := range rows {
		p("MOVQ x%d+%d(FP), %s", i, 8+8*i, r)
	}
	p("MOVQ ld+72(FP), CX")
	p("SHLQ $2, CX // one position (and one tap of w), bytes")
	p("MOVQ width+56(FP), DX")
	p("MOVQ xstep+64(FP), BX")
	p("SHLQ $2, BX // input bytes between outputs")
	p("LEAQ (BX)(BX*2), R10 // three outputs' input, bytes")
	// weights loads the channel block's 9 taps into Y0-Y8, its bias into Y9.
	weights := func() {
		p("MOVQ w+32(FP), AX")
		p("ADDQ R13, AX")
		for t := 0; t < 9; t++ {
			p("VMOVUPS (AX), Y%d", t)
			if t < 8 {
				p("ADDQ CX, AX")
			}
		}
		p("MOVQ bias+40(FP), AX")
		p("VMOVUPS (AX)(R13*1), Y9")
	}

	label("dw_six")
	p("CMPQ DX, $6")
	p("JLT dw_one")
	p("XORQ R13, R13 // channel block, bytes")
	label("dw_six_c")
	weights()
	for u := 0; u < 6; u++ {
		p("VMOVUPS Y9, Y%d", 10+u)
	}
	for ky, r := range rows {
		p("LEAQ (%s)(R13*1), R11", r)
		for kx := 0; kx < 3; kx++ {
			p("LEAQ (R11)(R10*1), R12")
			for u := 0; u < 6; u++ {
				// Output u reads R11 (u < 3) or R12 (three outputs on),
				// plus (u mod 3) outputs' input.
				base := "R11"
				if u >= 3 {
					base = "R12"
				}
				idx := [3]string{"", "(BX*1)", "(BX*2)"}[u%3]
				p("VFMADD231PS (%s)%s, Y%d, Y%d", base, idx, ky*3+kx, 10+u)
			}
			if kx < 2 {
				p("ADDQ CX, R11")
			}
		}
	}
	p("LEAQ (DI)(R13*1), AX")
	for u := 0; u < 6; u++ {
		p("VMOVUPS Y%d, (AX)", 10+u)
		if u < 5 {
			p("ADDQ CX, AX")
		}
	}
	p("ADDQ $32, R13")
	p("CMPQ R13, cb+48(FP)")
	p("JLT dw_six_c")
	p("LEAQ (R10)(R10*1), R12 // six outputs' input")
	for _, r := range rows {
		p("ADDQ R12, %s", r)
	}
	p("LEAQ (CX)(CX*2), R12")
	p("LEAQ (DI)(R12*2), DI // six outputs")
	p("SUBQ $6, DX")
	p("JMP dw_six")

	label("dw_one")
	p("TESTQ DX, DX")
	p("JEQ dw_done")
	p("XORQ R13, R13")
	label("dw_one_c")
	weights()
	p("VMOVUPS Y9, Y10")
	for ky, r := range rows {
		p("LEAQ (%s)(R13*1), R11", r)
		for kx := 0; kx < 3; kx++ {
			p("VFMADD231PS (R11), Y%d, Y10", ky*3+kx)
			if kx < 2 {
				p("ADDQ CX, R11")
			}
		}
	}
	p("VMOVUPS Y10, (DI)(R13*1)")
	p("ADDQ $32, R13")
	p("CMPQ R13, cb+48(FP)")
	p("JLT dw_one_c")
	for _, r := range rows {
		p("ADDQ BX, %s", r)
	}
	p("ADDQ CX, DI")
	p("DECQ DX")
	p("JMP dw_one")
	label("dw_done")
	p("VZEROUPPER")
	p("RET")
	fmt.Fprintln(&out)
}
