package main

import (
	"fmt"
	"log"
	"math"
)

// Row kernels of LayerNorm and the erf GELU (AVX2 + FMA, ymm; n a
// multiple of 8 everywhere, the tails are Go's): package kern's vec.go
// says what each computes.

// rowConsts are the constants of the row kernels, each replicated over 8
// lanes in rowconst<>.
var rowConsts = []struct {
	name string
	v    float32
}{
	{"rsqrt2", 0.70710678118654752},
	{"half", 0.5},
	{"m4", -4},
	{"p4", 4},
	// erf(z) = z P(z^2) / Q(z^2) on [-4, 4] (the float erf of Eigen and XLA).
	{"a0", -2.72614225801306e-10},
	{"a1", 2.77068142495902e-08},
	{"a2", -2.10102402082508e-06},
	{"a3", -5.69250639462346e-05},
	{"a4", -7.34990630326855e-04},
	{"a5", -2.95459980854025e-03},
	{"a6", -1.60960333262415e-02},
	{"b0", -1.45660718464996e-05},
	{"b1", -2.13374055278905e-04},
	{"b2", -1.68282697438203e-03},
	{"b3", -7.37332916720468e-03},
	{"b4", -1.42647390514189e-02},
}

func rc(name string) string {
	for i, k := range rowConsts {
		if k.name == name {
			return fmt.Sprintf("rowconst<>+%d(SB)", i*32)
		}
	}
	log.Fatalf("no row constant %s", name)
	return ""
}

// hsumY reduces Y's 8 lanes into lane 0 of X (the same register number),
// with tmp (an X register) as scratch.
func hsumY(y int, tmp int) {
	p("VEXTRACTF128 $1, Y%d, X%d", y, tmp)
	p("VADDPS X%d, X%d, X%d", tmp, y, y)
	p("VPERMILPS $0x4e, X%d, X%d", y, tmp)
	p("VADDPS X%d, X%d, X%d", tmp, y, y)
	p("VPERMILPS $0xb1, X%d, X%d", y, tmp)
	p("VADDPS X%d, X%d, X%d", tmp, y, y)
}

func rowOps() {
	for i, k := range rowConsts {
		for l := 0; l < 8; l++ {
			fmt.Fprintf(&out, "DATA rowconst<>+%d(SB)/4, $0x%08x\n", i*32+l*4, math.Float32bits(k.v))
		}
	}
	fmt.Fprintf(&out, "GLOBL rowconst<>(SB), RODATA|NOPTR, $%d\n\n", len(rowConsts)*32)

	// Four accumulators of 8 lanes, 32 floats a step, then 8 at a time;
	// summed as ((a0 + a1) + (a2 + a3)), then the lanes pairwise.
	out.WriteString(`// func sumAVX2(x *float32, n int) float32
// The sum of x[0:n] in float32 (32 lanes, then pairwise); n a multiple of 8.
TEXT ·sumAVX2(SB), NOSPLIT, $0-20
`)
	p("MOVQ x+0(FP), AX")
	p("MOVQ n+8(FP), CX")
	for i := 0; i < 4; i++ {
		p("VXORPS Y%d, Y%d, Y%d", i, i, i)
	}
	p("CMPQ CX, $32")
	p("JLT sum_tail")
	label("sum_loop32")
	for i := 0; i < 4; i++ {
		p("VADDPS %d(AX), Y%d, Y%d", 32*i, i, i)
	}
	p("ADDQ $128, AX")
	p("SUBQ $32, CX")
	p("CMPQ CX, $32")
	p("JGE sum_loop32")
	label("sum_tail")
	p("TESTQ CX, CX")
	p("JEQ sum_done")
	label("sum_loop8")
	p("VADDPS (AX), Y0, Y0")
	p("ADDQ $32, AX")
	p("SUBQ $8, CX")
	p("JNZ sum_loop8")
	label("sum_done")
	p("VADDPS Y1, Y0, Y0")
	p("VADDPS Y3, Y2, Y2")
	p("VADDPS Y2, Y0, Y0")
	hsumY(0, 5)
	p("VZEROUPPER")
	p("MOVSS X0, ret+16(FP)")
	p("RET")
	out.WriteString("\n")

	// d = x - m: sum d in Y0, Y1 and sum d*d in Y2, Y3 (16 floats a step).
	out.WriteString(`// func devAVX2(x *float32, n int, m float32) (s, q float32)
// s = sum(x[i] - m), q = sum((x[i] - m)^2) over x[0:n] in float32 (16
// lanes each, then pairwise); n a multiple of 8.
TEXT ·devAVX2(SB), NOSPLIT, $0-32
`)
	p("MOVQ x+0(FP), AX")
	p("MOVQ n+8(FP), CX")
	p("VBROADCASTSS m+16(FP), Y8")
	for i := 0; i < 4; i++ {
		p("VXORPS Y%d, Y%d, Y%d", i, i, i)
	}
	p("CMPQ CX, $16")
	p("JLT dev_tail")
	label("dev_loop16")
	for i := 0; i < 2; i++ {
		p("VMOVUPS %d(AX), Y%d", 32*i, 4+i)
		p("VSUBPS Y8, Y%d, Y%d", 4+i, 4+i)
		p("VADDPS Y%d, Y%d, Y%d", 4+i, i, i)
		p("VFMADD231PS Y%d, Y%d, Y%d", 4+i, 4+i, 2+i)
	}
	p("ADDQ $64, AX")
	p("SUBQ $16, CX")
	p("CMPQ CX, $16")
	p("JGE dev_loop16")
	label("dev_tail")
	p("TESTQ CX, CX")
	p("JEQ dev_done")
	p("VMOVUPS (AX), Y4")
	p("VSUBPS Y8, Y4, Y4")
	p("VADDPS Y4, Y0, Y0")
	p("VFMADD231PS Y4, Y4, Y2")
	label("dev_done")
	p("VADDPS Y1, Y0, Y0")
	p("VADDPS Y3, Y2, Y2")
	hsumY(0, 5)
	hsumY(2, 6)
	p("VZEROUPPER")
	p("MOVSS X0, s+24(FP)")
	p("MOVSS X2, q+28(FP)")
	p("RET")
	out.WriteString("\n")

	out.WriteString(`// func normAVX2(dst, x, w, bias *float32, n int, m, c, rstd float32)
// dst[i] = (((x[i] - m) - c) * rstd) * w[i] + bias[i] (the last step
// fused); n a multiple of 8; dst may be x.
TEXT ·normAVX2(SB), NOSPLIT, $0-52
`)
	p("MOVQ dst+0(FP), DI")
	p("MOVQ x+8(FP), SI")
	p("MOVQ w+16(FP), R8")
	p("MOVQ bias+24(FP), R9")
	p("MOVQ n+32(FP), CX")
	p("VBROADCASTSS m+40(FP), Y6")
	p("VBROADCASTSS c+44(FP), Y5")
	p("VBROADCASTSS rstd+48(FP), Y7")
	p("SHRQ $3, CX")
	p("JEQ norm_done")
	label("norm_loop")
	p("VMOVUPS (SI), Y0")
	p("VSUBPS Y6, Y0, Y0")
	p("VSUBPS Y5, Y0, Y0")
	p("VMULPS Y7, Y0, Y0")
	p("VMOVUPS (R8), Y1")
	p("VFMADD213PS (R9), Y1, Y0")
	p("VMOVUPS Y0, (DI)")
	p("ADDQ $32, SI")
	p("ADDQ $32, DI")
	p("ADDQ $32, R8")
	p("ADDQ $32, R9")
	p("DECQ CX")
	p("JNZ norm_loop")
	label("norm_done")
	p("VZEROUPPER")
	p("RET")
	out.WriteString("\n")

	// Two independent vectors a step so one's divide overlaps the other's
	// polynomials.
	out.WriteString(`// func geluErfAVX2(x *float32, n int)
// x[i] = h + h erf(x[i]/sqrt2), h = x[i]/2, erf(z) = z P(z^2) / Q(z^2)
// with z clamped to [-4, 4]; n a multiple of 8.
TEXT ·geluErfAVX2(SB), NOSPLIT, $0-16
`)
	p("MOVQ x+0(FP), AX")
	p("MOVQ n+8(FP), CX")
	p("SHRQ $3, CX")
	p("JEQ gelu_done")
	gelu := func(u int) { // x in Y(6u) .. temporaries Y(6u+1 .. 6u+5)
		x, z, z2, pp, q := 6*u, 6*u+1, 6*u+2, 6*u+3, 6*u+4
		p("VMULPS %s, Y%d, Y%d", rc("rsqrt2"), x, z)
		p("VMAXPS %s, Y%d, Y%d", rc("m4"), z, z)
		p("VMINPS %s, Y%d, Y%d", rc("p4"), z, z)
		p("VMULPS Y%d, Y%d, Y%d", z, z, z2)
		p("VMOVUPS %s, Y%d", rc("a0"), pp)
		for _, k := range []string{"a1", "a2", "a3", "a4", "a5", "a6"} {
			p("VFMADD213PS %s, Y%d, Y%d", rc(k), z2, pp)
		}
		p("VMULPS Y%d, Y%d, Y%d", z, pp, pp)
		p("VMOVUPS %s, Y%d", rc("b0"), q)
		for _, k := range []string{"b1", "b2", "b3", "b4"} {
			p("VFMADD213PS %s, Y%d, Y%d", rc(k), z2, q)
		}
		p("VDIVPS Y%d, Y%d, Y%d", q, pp, pp)
		p("VMULPS %s, Y%d, Y%d", rc("half"), x, x)
		p("VFMADD213PS Y%d, Y%d, Y%d", x, x, pp)
	}
	p("CMPQ CX, $2")
	p("JLT gelu_one")
	label("gelu_loop2")
	p("VMOVUPS (AX), Y0")
	p("VMOVUPS 32(AX), Y6")
	gelu(0)
	gelu(1)
	p("VMOVUPS Y3, (AX)")
	p("VMOVUPS Y9, 32(AX)")
	p("ADDQ $64, AX")
	p("SUBQ $2, CX")
	p("CMPQ CX, $2")
	p("JGE gelu_loop2")
	label("gelu_one")
	p("TESTQ CX, CX")
	p("JEQ gelu_done")
	p("VMOVUPS (AX), Y0")
	gelu(0)
	p("VMOVUPS Y3, (AX)")
	label("gelu_done")
	p("VZEROUPPER")
	p("RET")
	out.WriteString("\n")
}

// tile writes tileAVX2x<mr>: C (mr x 16*nc) = A (mr x k) B (k x 16*nc),
// every operand row-major with its own row stride (in floats), nothing
// packed: for each 16-column chunk, 2*mr accumulators (Y0..), the B row in
// Y12-Y13, A broadcast from its mr rows into Y14/Y15 alternately.
func tile(mr int) {
	name := fmt.Sprintf("tileAVX2x%d", mr)
	acc := func(i, j int) string { return fmt.Sprintf("Y%d", 2*i+j) }
	// Row i of a (R10 = row 0, R11 = row 3) or c (DX, R10 = row 3).
	row := func(base0, base3, stride string, i int) string {
		b := base0
		if i >= 3 {
			b, i = base3, i-3
		}
		if i == 0 {
			return "(" + b + ")"
		}
		return fmt.Sprintf("(%s)(%s*%d)", b, stride, i)
	}
	fmt.Fprintf(&out, "// func %s(k int, a *float32, lda int, b *float32, ldb int, c *float32, ldc int, nc int)\n", name)
	fmt.Fprintf(&out, "TEXT ·%s(SB), NOSPLIT, $0-64\n", name)
	p("MOVQ k+0(FP), CX")
	p("MOVQ a+8(FP), AX")
	p("MOVQ lda+16(FP), R8")
	p("SHLQ $2, R8")
	p("MOVQ b+24(FP), BX")
	p("MOVQ ldb+32(FP), SI")
	p("SHLQ $2, SI")
	p("MOVQ c+40(FP), DX")
	p("MOVQ ldc+48(FP), DI")
	p("SHLQ $2, DI")
	p("MOVQ nc+56(FP), R9")
	p("TESTQ R9, R9")
	p("JEQ %s_done", name)
	label(name + "_chunk")
	for i := 0; i < mr; i++ {
		for j := 0; j < 2; j++ {
			p("VXORPS %s, %s, %s", acc(i, j), acc(i, j), acc(i, j))
		}
	}
	p("MOVQ AX, R10")
	p("LEAQ (AX)(R8*2), R11")
	p("ADDQ R8, R11")
	p("MOVQ BX, R12")
	p("MOVQ CX, R13")
	p("TESTQ R13, R13")
	p("JEQ %s_store", name)
	label(name + "_k")
	p("VMOVUPS (R12), Y12")
	p("VMOVUPS 32(R12), Y13")
	for i := 0; i < mr; i++ {
		bc := fmt.Sprintf("Y%d", 14+i%2)
		p("VBROADCASTSS %s, %s", row("R10", "R11", "R8", i), bc)
		p("VFMADD231PS %s, Y12, %s", bc, acc(i, 0))
		p("VFMADD231PS %s, Y13, %s", bc, acc(i, 1))
	}
	p("ADDQ $4, R10")
	p("ADDQ $4, R11")
	p("ADDQ SI, R12")
	p("DECQ R13")
	p("JNZ %s_k", name)
	label(name + "_store")
	p("LEAQ (DX)(DI*2), R10")
	p("ADDQ DI, R10")
	for i := 0; i < mr; i++ {
		r := row("DX", "R10", "DI", i)
		p("VMOVUPS %s, %s", acc(i, 0), r)
		// 32 bytes further: the same addressing with a displacement.
		p("VMOVUPS %s, 32%s", acc(i, 1), r)
	}
	p("ADDQ $64, BX")
	p("ADDQ $64, DX")
	p("DECQ R9")
	p("JNZ %s_chunk", name)
	label(name + "_done")
	p("VZEROUPPER")
	p("RET")
	out.WriteString("\n")
}

func tiles() {
	for mr := 1; mr <= 6; mr++ {
		tile(mr)
	}
}
