package main

// pack6 emits pack6AVX2, the AVX2 body of package kern's pack6: six rows
// of A interleaved into a 6-row micro-panel, d[6k+i] = s_i[k], for k < n
// (n a multiple of 8).
//
// Per 8 values of k: the six rows' 8 values in Y0-Y5; in each 128-bit lane
// (k0-k3 low, k4-k7 high) a 4x4 transpose of rows 0-3 (VUNPCKLPS/HPS, then
// VSHUFPS) and the pairs of rows 4-5 (VUNPCKLPS/HPS) make the lane's 24
// outputs as six groups of four, g0..g5 (g0 = T0, g1 = r4r5 k0 + r0r1 k1,
// g2 = r2r3 k1 + r4r5 k1, g3 = T2, g4, g5 the same for k2/k3); VPERM2F128
// pairs the low lanes (outputs 0-23) and the high lanes (24-47) into six
// stores. Only shuffles and moves: the values are copied, not computed.
func pack6() {
	out.WriteString(`// func pack6AVX2(d, s0, s1, s2, s3, s4, s5 *float32, n int)
TEXT ·pack6AVX2(SB), NOSPLIT, $0-64
`)
	src := [6]string{"R8", "R9", "R10", "R11", "R12", "R13"}
	p("MOVQ d+0(FP), DI")
	for i, r := range src {
		p("MOVQ s%d+%d(FP), %s", i, 8+8*i, r)
	}
	p("MOVQ n+56(FP), CX")
	p("SHRQ $3, CX")
	p("JZ   pack6done")
	label("pack6loop")
	for i, r := range src {
		p("VMOVUPS (%s), Y%d", r, i)
	}
	// shufps(a, b, imm) = [a[x], a[y], b[z], b[w]] per lane: VSHUFPS $imm, b, a, dst.
	p("VUNPCKLPS Y1, Y0, Y6  // r0k0 r1k0 r0k1 r1k1")
	p("VUNPCKHPS Y1, Y0, Y7  // r0k2 r1k2 r0k3 r1k3")
	p("VUNPCKLPS Y3, Y2, Y8  // r2k0 r3k0 r2k1 r3k1")
	p("VUNPCKHPS Y3, Y2, Y9  // r2k2 r3k2 r2k3 r3k3")
	p("VUNPCKLPS Y5, Y4, Y10 // r4k0 r5k0 r4k1 r5k1")
	p("VUNPCKHPS Y5, Y4, Y11 // r4k2 r5k2 r4k3 r5k3")
	p("VSHUFPS $0x44, Y8, Y6, Y12 // g0 = r0..r3 k0")
	p("VSHUFPS $0xee, Y8, Y6, Y13 // r0..r3 k1")
	p("VSHUFPS $0x44, Y9, Y7, Y14 // g3 = r0..r3 k2")
	p("VSHUFPS $0xee, Y9, Y7, Y15 // r0..r3 k3")
	p("VSHUFPS $0x44, Y13, Y10, Y0 // g1 = r4 r5 k0, r0 r1 k1")
	p("VSHUFPS $0xee, Y10, Y13, Y1 // g2 = r2 r3 k1, r4 r5 k1")
	p("VSHUFPS $0x44, Y15, Y11, Y2 // g4 = r4 r5 k2, r0 r1 k3")
	p("VSHUFPS $0xee, Y11, Y15, Y3 // g5 = r2 r3 k3, r4 r5 k3")
	g := [6]int{12, 0, 1, 14, 2, 3}
	for s := 0; s < 6; s++ {
		lo, hi := g[2*(s%3)], g[2*(s%3)+1]
		imm := "0x20"
		if s >= 3 {
			imm = "0x31"
		}
		p("VPERM2F128 $%s, Y%d, Y%d, Y%d", imm, hi, lo, 4+s%2)
		p("VMOVUPS Y%d, %d(DI)", 4+s%2, 32*s)
	}
	for _, r := range src {
		p("ADDQ $32, %s", r)
	}
	p("ADDQ $192, DI")
	p("DECQ CX")
	p("JNZ  pack6loop")
	label("pack6done")
	p("VZEROUPPER")
	p("RET")
	out.WriteString("\n")
}
