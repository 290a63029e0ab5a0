package kern

import "golang.org/x/sys/cpu"

// bestArgmaxPath is the fastest path this CPU runs: AVX-512 (F is all the
// kernels use; x/sys/cpu also checks that the OS saves the zmm state),
// then AVX2 with FMA, then pure Go.
func bestArgmaxPath() int32 {
	switch {
	case cpu.X86.HasAVX512F:
		return pathAVX512
	case cpu.X86.HasAVX2 && cpu.X86.HasFMA:
		return pathAVX2
	}
	return pathGeneric
}

// argmaxLanes receives a kernel's per-lane running maxima for up to 8
// tokens: best[i][l] is the largest score lane l saw for token i and
// idx[i][l] the codeword (the first in ascending order) that scored it.
// AVX2 kernels fill lanes 0-7, AVX-512 kernels lanes 0-15. Lanes that saw
// only padding hold -Inf and index 0.
type argmaxLanes struct {
	best [8][16]float32 // byte offset 0
	idx  [8][16]int32   // byte offset 512
}

// The kernels share one signature. wt is the transposed codebook (d, vpad)
// with rows vpad floats apart, bias its vpad score offsets (-Inf past V),
// vpad a positive multiple of 16. zt holds the token chunks t-major: for a
// kernel of T tokens, zt[t*T+i] is component t of token i (T = 1 for
// argmax8AVX2, whose zt is just the chunk). Each kernel scans the
// codewords in ascending blocks, scores them with FMAs against broadcast
// chunk components, and keeps per lane the best score and its index with a
// strict > (so the lowest index of equal scores), then writes out; it
// stores no scores.

// argmax8AVX2 is d=8, 1 token, AVX2: the 8 components are broadcast in
// Y0-Y7 once; each step scores 16 codewords (two ymm blocks) as two 4-deep
// FMA chains per block (bias + z0..z3 w, z4..z7 w, then added), with the
// codewords as memory operands. Lanes 0-7 of out token 0.
//
//go:noescape
func argmax8AVX2(wt, bias *float32, vpad int, zt *float32, d int, out *argmaxLanes)

// argmaxNAVX2 is any d, 4 tokens, AVX2: per block of 8 codewords, one
// accumulator per token starting at the bias; for t < d, the codeword row
// t is loaded once and FMAed with each token's broadcast component t.
// Lanes 0-7 of out tokens 0-3.
//
//go:noescape
func argmaxNAVX2(wt, bias *float32, vpad int, zt *float32, d int, out *argmaxLanes)

// argmax8AVX512 is d=8, 4 tokens, AVX-512: per block of 16 codewords the 8
// codeword rows (Z0-Z7) and the bias (Z8) are loaded once; each token's
// score is two 4-deep VFMADD231PS.BCST chains (bias + z0..z3 w, z4..z7 w)
// with its components broadcast from zt, added, then VCMPPS GT into a mask
// register, VMAXPS for the best and VPBLENDMD for its index. Lanes 0-15 of
// out tokens 0-3.
//
//go:noescape
func argmax8AVX512(wt, bias *float32, vpad int, zt *float32, d int, out *argmaxLanes)

// argmaxNAVX512 is any d, 8 tokens, AVX-512: per block of 16 codewords,
// one accumulator per token starting at the bias; for t < d, the codeword
// row t is loaded once and FMAed with each token's component t
// (VFMADD231PS.BCST). Lanes 0-15 of out tokens 0-7.
//
//go:noescape
func argmaxNAVX512(wt, bias *float32, vpad int, zt *float32, d int, out *argmaxLanes)

func (c *Codebook) argmaxAVX2(dst []int32, ldd int, z []float32, ldz int, n int) {
	if c.D != 8 {
		c.argmaxTokens(dst, ldd, z, ldz, n, 4, 8, argmaxNAVX2)
		return
	}
	var st argmaxLanes
	for i := 0; i < n; i++ {
		zi := z[i*ldz : i*ldz+8]
		argmax8AVX2(&c.wt[0], &c.bt[0], c.vpad, &zi[0], 8, &st)
		dst[i*ldd] = reduceLanes(st.best[0][:8], st.idx[0][:8])
	}
}

func (c *Codebook) argmaxAVX512(dst []int32, ldd int, z []float32, ldz int, n int) {
	if c.D == 8 {
		c.argmaxTokens(dst, ldd, z, ldz, n, 4, 16, argmax8AVX512)
	} else {
		c.argmaxTokens(dst, ldd, z, ldz, n, 8, 16, argmaxNAVX512)
	}
}

// argmaxTokens runs a T-token kernel over n tokens: each group of T chunks
// is gathered t-major into zt (a short last group is padded with zero
// chunks whose results are dropped), then each token's lanes are reduced.
func (c *Codebook) argmaxTokens(dst []int32, ldd int, z []float32, ldz int, n, T, lanes int,
	kernel func(wt, bias *float32, vpad int, zt *float32, d int, out *argmaxLanes)) {
	d := c.D
	var buf [8 * 64]float32
	zt := buf[:]
	if T*d > len(buf) {
		zt = make([]float32, T*d)
	}
	zt = zt[:T*d]
	var st argmaxLanes
	for g := 0; g < n; g += T {
		m := min(T, n-g)
		for i := 0; i < T; i++ {
			if i < m {
				zi := z[(g+i)*ldz : (g+i)*ldz+d]
				for t, v := range zi {
					zt[t*T+i] = v
				}
			} else {
				for t := 0; t < d; t++ {
					zt[t*T+i] = 0
				}
			}
		}
		kernel(&c.wt[0], &c.bt[0], c.vpad, &zt[0], d, &st)
		for i := 0; i < m; i++ {
			dst[(g+i)*ldd] = reduceLanes(st.best[i][:lanes], st.idx[i][:lanes])
		}
	}
}
