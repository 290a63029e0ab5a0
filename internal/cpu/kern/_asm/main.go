// Command _asm writes gemm_amd64.s: the GEMM microkernels of package kern
// for AVX-512 (zmm) and AVX2+FMA (ymm), the FMA-peak loops, the AVX2
// softmax/GeGLU vector math and row kernels (LayerNorm, erf GELU:
// rowops.go), the depthwise 3x3 row kernel (dwconv.go) and the 6-row A
// packing (pack.go); and argmax_avx2_amd64.s, the AVX2 codebook search
// kernels (argmax.go). Run it with `go generate ./internal/cpu/kern`
// (see the go:generate line in level.go); the output is committed, and
// `make asm-check` (part of make test) fails when it is not current.
//
// It is a plain text generator (no dependencies): the kernels are fully
// unrolled over the register tile, which is what a generator is for.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
)

var out bytes.Buffer

func p(format string, args ...any) { fmt.Fprintf(&out, "\t"+format+"\n", args...) }
func label(s string)               { fmt.Fprintf(&out, "%s:\n", s) }

// isa describes one vector width.
type isa struct {
	name  string // symbol suffix
	reg   string // "Z" or "Y"
	lanes int    // float32 per register
	zero  string // register-zeroing instruction
}

var (
	avx512 = isa{"512", "Z", 16, "VPXORD"}
	avx2   = isa{"256", "Y", 8, "VXORPS"}
)

// prefetchDist is how many k steps ahead the microkernels prefetch the
// W panel.
var prefetchDist = 64

// kernel writes gemmKernel<isa>x<mr><suffix>: an mr x (cols*lanes) tile
// over W panels bRow bytes wide (a k step's row of the panel).
// Accumulators are registers 0 .. mr*cols-1 (row-major over the tile),
// then cols registers for the B row, then two broadcast registers
// alternating by row so consecutive rows' broadcasts are independent.
func kernel(s isa, mr, cols, bRow int, suffix string) {
	nr := cols * s.lanes
	name := fmt.Sprintf("gemmKernel%sx%d%s", s.name, mr, suffix)
	acc := func(i, j int) string { return fmt.Sprintf("%s%d", s.reg, i*cols+j) }
	breg := func(j int) string { return fmt.Sprintf("%s%d", s.reg, mr*cols+j) }
	bc := func(i int) string { return fmt.Sprintf("%s%d", s.reg, mr*cols+cols+i%2) }
	if mr*cols+cols+2 > 32 || (s.reg == "Y" && mr*cols+cols+2 > 16) {
		log.Fatalf("%s: tile %dx%d needs too many registers", name, mr, nr)
	}
	fmt.Fprintf(&out, "// func %s(kc int, a, b, c *float32, ldc int, bias *float32, load int, tiles int, pf *float32, pfn int)\n", name)
	fmt.Fprintf(&out, "// %d x %d tile: %d accumulators, B row in %d registers, A broadcast;\n", mr, nr, mr*cols, cols)
	fmt.Fprintf(&out, "// tiles consecutive A micro-panels into tiles C blocks %d rows apart.\n", mr)
	fmt.Fprintf(&out, "TEXT ·%s(SB), NOSPLIT, $0-80\n", name)
	p("MOVQ kc+0(FP), CX")
	p("MOVQ a+8(FP), AX")
	p("MOVQ b+16(FP), BX")
	p("MOVQ c+24(FP), DX")
	p("MOVQ ldc+32(FP), R8")
	p("SHLQ $2, R8")
	p("MOVQ bias+40(FP), R9")
	p("MOVQ load+48(FP), R10")
	p("MOVQ tiles+56(FP), R12")
	p("MOVQ pf+64(FP), R11")
	p("MOVQ pfn+72(FP), R13")
	p("ADDQ R11, R13")
	p("MOVQ BX, SI")
	p("MOVQ CX, DI")
	p("TESTQ R12, R12")
	p("JEQ %s_done", name)
	label(name + "_tile")
	p("MOVQ SI, BX")
	p("MOVQ DI, CX")
	// The C tile is loaded (or written) only after the k loop: ask for
	// its rows now (each may straddle a line more), so the epilogue does
	// not wait on L3 or memory (256x1024x3072, one thread, with the B
	// prefetch below: median 70 vs 61 GFLOP/s in interleaved runs).
	p("MOVQ DX, R14")
	for i := 0; i < mr; i++ {
		for off := 0; off < cols*4*s.lanes; off += 64 {
			p("PREFETCHT0 %d(R14)", off)
		}
		p("PREFETCHT0 %d(R14)", cols*4*s.lanes-4)
		if i < mr-1 {
			p("ADDQ R8, R14")
		}
	}
	for i := 0; i < mr; i++ {
		for j := 0; j < cols; j++ {
			p("%s %s, %s, %s", s.zero, acc(i, j), acc(i, j), acc(i, j))
		}
	}
	// One k step: the B row (cols registers, bRow bytes apart per k: the
	// panel may be wider than the tile), then for each row a broadcast of
	// A and cols FMAs.
	step := func(k int, t0 bool) {
		for j := 0; j < cols; j++ {
			p("VMOVUPS %d(BX), %s", k*bRow+j*4*s.lanes, breg(j))
		}
		// The panel slice comes from L3 or memory the first time a tile
		// reads it: prefetch the row's lines prefetchDist k ahead (the
		// whole row: an AVX2 tile on a 32-wide panel reads the other half
		// in its second pass).
		if t0 {
			for off := 0; off < bRow; off += 64 {
				p("PREFETCHT0 %d(BX)", k*bRow+prefetchDist*bRow+off)
			}
		}
		for i := 0; i < mr; i++ {
			p("VBROADCASTSS %d(AX), %s", (k*mr+i)*4, bc(i))
			for j := 0; j < cols; j++ {
				p("VFMADD231PS %s, %s, %s", bc(i), breg(j), acc(i, j))
			}
		}
	}
	const unroll = 4
	loop4 := func(tag string, t0 bool) {
		p("CMPQ CX, $%d", unroll)
		p("JLT %s_tail", name)
		label(name + "_loop4" + tag)
		// One line of the next panel slice per 4 k steps, into L2, while it
		// lasts: by the time the tiles move on, it is no longer in memory.
		p("CMPQ R11, R13")
		p("JAE %s_nopf%s", name, tag)
		p("PREFETCHT1 (R11)")
		p("ADDQ $64, R11")
		label(name + "_nopf" + tag)
		for k := 0; k < unroll; k++ {
			step(k, t0)
		}
		p("ADDQ $%d, AX", unroll*mr*4)
		p("ADDQ $%d, BX", unroll*bRow)
		p("SUBQ $%d, CX", unroll)
		p("CMPQ CX, $%d", unroll)
		p("JGE %s_loop4%s", name, tag)
		p("JMP %s_tail", name)
	}
	// The first tile brings the slice into L1 (PREFETCHT0 ahead of its
	// loads); the others find it there and skip the prefetches, which would
	// only take load slots.
	p("CMPQ R12, tiles+56(FP)")
	p("JNE %s_rest", name)
	loop4("first", true)
	label(name + "_rest")
	loop4("", false)
	label(name + "_tail")
	p("TESTQ CX, CX")
	p("JEQ %s_epilogue", name)
	label(name + "_loop1")
	step(0, true)
	p("ADDQ $%d, AX", mr*4)
	p("ADDQ $%d, BX", bRow)
	p("DECQ CX")
	p("JNZ %s_loop1", name)
	label(name + "_epilogue")
	p("TESTQ R9, R9")
	p("JEQ %s_nobias", name)
	for j := 0; j < cols; j++ {
		p("VMOVUPS %d(R9), %s", j*4*s.lanes, breg(j))
	}
	for i := 0; i < mr; i++ {
		for j := 0; j < cols; j++ {
			p("VADDPS %s, %s, %s", breg(j), acc(i, j), acc(i, j))
		}
	}
	label(name + "_nobias")
	p("TESTQ R10, R10")
	p("JEQ %s_store", name)
	for i := 0; i < mr; i++ {
		for j := 0; j < cols; j++ {
			p("VADDPS %d(DX), %s, %s", j*4*s.lanes, acc(i, j), acc(i, j))
		}
		if i < mr-1 {
			p("ADDQ R8, DX")
		}
	}
	for i := 0; i < mr-1; i++ {
		p("SUBQ R8, DX")
	}
	label(name + "_store")
	for i := 0; i < mr; i++ {
		for j := 0; j < cols; j++ {
			p("VMOVUPS %s, %d(DX)", acc(i, j), j*4*s.lanes)
		}
		p("ADDQ R8, DX")
	}
	p("DECQ R12")
	p("JNZ %s_tile", name)
	label(name + "_done")
	p("VZEROUPPER")
	p("RET")
	out.WriteString("\n")
}

// peak writes fmaPeak<isa>(n int): n iterations of chains independent
// VFMADD231PS chains (no loads), the FMA throughput ceiling.
func peak(s isa, chains int) {
	name := "fmaPeak" + s.name
	fmt.Fprintf(&out, "// func %s(n int)\n", name)
	fmt.Fprintf(&out, "// %d independent FMA chains per iteration: %d flop.\n", chains, chains*s.lanes*2)
	fmt.Fprintf(&out, "TEXT ·%s(SB), NOSPLIT, $0-8\n", name)
	p("MOVQ n+0(FP), CX")
	for i := 0; i < chains+2; i++ {
		p("%s %s%d, %s%d, %s%d", s.zero, s.reg, i, s.reg, i, s.reg, i)
	}
	p("TESTQ CX, CX")
	p("JEQ %s_done", name)
	label(name + "_loop")
	for i := 0; i < chains; i++ {
		p("VFMADD231PS %s%d, %s%d, %s%d", s.reg, chains, s.reg, chains+1, s.reg, i)
	}
	p("DECQ CX")
	p("JNZ %s_loop", name)
	label(name + "_done")
	p("VZEROUPPER")
	p("RET")
	out.WriteString("\n")
}

// Constants of the vector math, each replicated over 8 lanes in
// vecconst<>: name -> offset.
var consts = []struct {
	name string
	bits uint32
}{
	{"lo", 0xc2ae0000},    // -87
	{"hi", 0x42b00000},    // 88
	{"log2e", 0x3fb8aa3b}, // 1.44269504088896341
	{"c1", 0x3f318000},    // 0.693359375
	{"c2", 0xb95e8083},    // -2.12194440e-4
	{"p0", 0x39506967},    // 1.9875691500e-4
	{"p1", 0x3ab743ce},    // 1.3981999507e-3
	{"p2", 0x3c088908},    // 8.3334519073e-3
	{"p3", 0x3d2aa9c1},    // 4.1665795894e-2
	{"p4", 0x3e2aaaaa},    // 1.6666665459e-1
	{"p5", 0x3f000000},    // 5.0000001201e-1
	{"one", 0x3f800000},   // 1
	{"i127", 127},         // exponent bias (int32)
	{"gk1", 0x3d372713},   // 0.044715
	{"gk0", 0xbfcc422a},   // -2 sqrt(2/pi)
}

func c(name string) string {
	for i, k := range consts {
		if k.name == name {
			return fmt.Sprintf("vecconst<>+%d(SB)", i*32)
		}
	}
	log.Fatalf("no constant %s", name)
	return ""
}

// expY0 writes exp(Y0) into Y0 (temporaries Y1-Y3): Cephes' expf, n =
// round(v log2 e), r = v - n ln 2 in two parts (fused), a degree-5
// polynomial in r, then 2^n through the exponent bits; v clamped to
// [-87, 88].
func expY0() {
	p("VMAXPS %s, Y0, Y0", c("lo"))
	p("VMINPS %s, Y0, Y0", c("hi"))
	p("VMULPS %s, Y0, Y1", c("log2e"))
	p("VROUNDPS $0, Y1, Y1")
	p("VFNMADD231PS %s, Y1, Y0", c("c1"))
	p("VFNMADD231PS %s, Y1, Y0", c("c2"))
	p("VMOVUPS %s, Y2", c("p0"))
	for _, k := range []string{"p1", "p2", "p3", "p4", "p5"} {
		p("VFMADD213PS %s, Y0, Y2", c(k))
	}
	p("VMULPS Y0, Y0, Y3")
	p("VFMADD213PS Y0, Y3, Y2")
	p("VADDPS %s, Y2, Y2", c("one"))
	p("VCVTPS2DQ Y1, Y1")
	p("VPADDD %s, Y1, Y1", c("i127"))
	p("VPSLLD $23, Y1, Y1")
	p("VMULPS Y1, Y2, Y0")
}

// hsum8 reduces Y4's 8 lanes into X4 lane 0 (X5 temporary).
func hsum(op string) {
	p("VEXTRACTF128 $1, Y4, X5")
	p("%s X5, X4, X4", op)
	p("VPERMILPS $0x4e, X4, X5")
	p("%s X5, X4, X4", op)
	p("VPERMILPS $0xb1, X4, X5")
	p("%s X5, X4, X4", op)
}

func vec() {
	for i, k := range consts {
		for l := 0; l < 8; l++ {
			fmt.Fprintf(&out, "DATA vecconst<>+%d(SB)/4, $0x%08x\n", i*32+l*4, k.bits)
		}
	}
	fmt.Fprintf(&out, "GLOBL vecconst<>(SB), RODATA|NOPTR, $%d\n\n", len(consts)*32)

	out.WriteString(`// func expShiftAVX2(x *float32, n int, scale, shift float32) float32
// x[i] = exp(x[i]*scale - shift) (one fused rounding for the argument),
// returns the sum of the new values; n a multiple of 8.
TEXT ·expShiftAVX2(SB), NOSPLIT, $0-28
`)
	p("MOVQ x+0(FP), AX")
	p("MOVQ n+8(FP), CX")
	p("VBROADCASTSS scale+16(FP), Y6")
	p("VBROADCASTSS shift+20(FP), Y7")
	p("VXORPS Y4, Y4, Y4")
	p("SHRQ $3, CX")
	p("JEQ expShift_done")
	label("expShift_loop")
	p("VMOVUPS (AX), Y0")
	p("VFMSUB213PS Y7, Y6, Y0")
	expY0()
	p("VMOVUPS Y0, (AX)")
	p("VADDPS Y0, Y4, Y4")
	p("ADDQ $32, AX")
	p("DECQ CX")
	p("JNZ expShift_loop")
	label("expShift_done")
	hsum("VADDPS")
	p("VZEROUPPER")
	p("MOVSS X4, ret+24(FP)")
	p("RET")
	out.WriteString("\n")

	out.WriteString(`// func maxAVX2(x *float32, n int) float32
// max of x[0:n]; n a positive multiple of 8.
TEXT ·maxAVX2(SB), NOSPLIT, $0-20
`)
	p("MOVQ x+0(FP), AX")
	p("MOVQ n+8(FP), CX")
	p("VMOVUPS (AX), Y4")
	p("SHRQ $3, CX")
	label("max_loop")
	p("VMAXPS (AX), Y4, Y4")
	p("ADDQ $32, AX")
	p("DECQ CX")
	p("JNZ max_loop")
	hsum("VMAXPS")
	p("VZEROUPPER")
	p("MOVSS X4, ret+16(FP)")
	p("RET")
	out.WriteString("\n")

	out.WriteString(`// func scaleAVX2(x *float32, n int, s float32)
// x[i] *= s; n a multiple of 8.
TEXT ·scaleAVX2(SB), NOSPLIT, $0-20
`)
	p("MOVQ x+0(FP), AX")
	p("MOVQ n+8(FP), CX")
	p("VBROADCASTSS s+16(FP), Y1")
	p("SHRQ $3, CX")
	p("JEQ scale_done")
	label("scale_loop")
	p("VMULPS (AX), Y1, Y0")
	p("VMOVUPS Y0, (AX)")
	p("ADDQ $32, AX")
	p("DECQ CX")
	p("JNZ scale_loop")
	label("scale_done")
	p("VZEROUPPER")
	p("RET")
	out.WriteString("\n")

	out.WriteString(`// func gegluAVX2(gate, val *float32, n int)
// gate[i] = gelu_tanh(gate[i]) * val[i] as x / (1 + exp(-2y)) * val,
// y = sqrt(2/pi) (x + 0.044715 x^3); n a multiple of 8.
TEXT ·gegluAVX2(SB), NOSPLIT, $0-24
`)
	p("MOVQ gate+0(FP), AX")
	p("MOVQ val+8(FP), BX")
	p("MOVQ n+16(FP), CX")
	p("SHRQ $3, CX")
	p("JEQ geglu_done")
	label("geglu_loop")
	p("VMOVUPS (AX), Y5")
	p("VMULPS Y5, Y5, Y0")
	p("VMULPS %s, Y0, Y0", c("gk1"))
	p("VFMADD213PS Y5, Y5, Y0")
	p("VMULPS %s, Y0, Y0", c("gk0"))
	expY0()
	p("VADDPS %s, Y0, Y0", c("one"))
	p("VDIVPS Y0, Y5, Y5")
	p("VMULPS (BX), Y5, Y5")
	p("VMOVUPS Y5, (AX)")
	p("ADDQ $32, AX")
	p("ADDQ $32, BX")
	p("DECQ CX")
	p("JNZ geglu_loop")
	label("geglu_done")
	p("VZEROUPPER")
	p("RET")
	out.WriteString("\n")
}

var outDir = flag.String("dir", ".", "directory the generated files are written to")

func main() {
	flag.Parse()
	header := func(tags string) {
		out.Reset()
		out.WriteString("// Code generated by internal/cpu/kern/_asm; DO NOT EDIT.\n\n")
		if tags != "" {
			out.WriteString("//go:build " + tags + "\n\n")
		}
		out.WriteString("#include \"textflag.h\"\n\n")
	}
	write := func(name string) {
		if err := os.WriteFile(filepath.Join(*outDir, name), out.Bytes(), 0o644); err != nil {
			log.Fatal(err)
		}
	}
	header("!purego")
	kernel(avx512, 12, 2, 128, "")
	kernel(avx2, 6, 2, 128, "")
	kernel(avx2, 6, 2, 64, "p16")
	peak(avx512, 24)
	peak(avx2, 12)
	vec()
	rowOps()
	tiles()
	dwConv()
	pack6()
	write("gemm_amd64.s")
	// The codebook search's assembly is built with -tags purego too (as
	// argmax_amd64.s and argmax_amd64.go are).
	header("")
	argmax8(true)
	argmax8(false)
	argmaxN()
	write("argmax_avx2_amd64.s")
}
