package kern

import (
	"math"
	"sync"

	"golang.org/x/sys/cpu"
)

// bestArgmaxPath is the fastest path this CPU runs: AVX-512 (F is all the
// kernels use; x/sys/cpu also checks that the OS saves the zmm state),
// then AVX2 with FMA, then pure Go. A vector path must also pass
// argmaxSelfCheck once, so a kernel that is wrong on some CPU falls back
// instead of returning wrong codes (and ArgmaxPaths, which the tests
// compare with the CPU's features, shows it).
func bestArgmaxPath() int32 {
	bestPathOnce.Do(func() {
		bestPath = pathGeneric
		if cpu.X86.HasAVX2 && cpu.X86.HasFMA && argmaxSelfCheck(pathAVX2) {
			bestPath = pathAVX2
		}
		if cpu.X86.HasAVX512F && argmaxSelfCheck(pathAVX512) {
			bestPath = pathAVX512
		}
	})
	return bestPath
}

var (
	bestPathOnce sync.Once
	bestPath     int32
)

// Each kernel scans one chunk of the codebook (argmaxChunk codewords or
// fewer, see Codebook.wt) and updates running maxima kept in memory between
// chunks. The AVX2 kernels take a run of tokens in place (below); the
// AVX-512 ones take groups of T tokens gathered t-major and share one
// signature:
//
//	kernel(wt, bias *float32, width int, zt *float32, d, j0, groups int, best *float32, idx *int32)
//
// wt is the chunk (d, width) row-major, bias its width score offsets, width
// a positive multiple of 16, j0 the index of its first codeword. The kernel
// runs groups groups of T tokens one after the other: group g's chunks are
// at zt[g*T*d:], t-major (zt[g*T*d+t*T+i] is component t of its token i),
// and its maxima at best[g*T*L:] and idx[g*T*L:]. For one group, best and
// idx are (T, L) for L lanes: best[i*L+l] is the largest score lane l has
// seen for token i (start at -Inf) and idx[i*L+l] the codeword that scored
// it (the first in ascending order); lane l sees the codewords j = l mod L.
// Each kernel scans its blocks of codewords in ascending order, scores them
// with FMAs against broadcast components and updates best with VMAXPS and
// idx by a blend under a strict > mask, so the lowest index of equal scores
// stays. No score goes to memory.

// argmax8AVX2 is d=8, AVX2, for n tokens in one call (no gather: the
// chunk of token i is at z + i*ldz bytes) with one running best per token
// (L = 1: best[i], idx[i]). Each token's 8 components are broadcast in
// Y0-Y7; each step scores 32 codewords (four ymm blocks, one 8-deep FMA
// chain each from the bias, codewords as memory operands). Instead of
// per-lane maxima it keeps the token's best score broadcast as a
// threshold: a step whose 32 scores all stay <= it costs three maxes, one
// compare and a movemask; otherwise (rarely) the step's maximum becomes
// the threshold and its lowest codeword the index. width is a multiple of
// 32 here.
//
//go:noescape
func argmax8AVX2(wt, bias *float32, width int, z *float32, ldz, j0, n int, best *float32, idx *int32)

// argmax8NoBiasAVX2 is argmax8AVX2 for a Codebook with noBias (all score
// offsets zero, V a multiple of the block): the bias is not read.
//
//go:noescape
func argmax8NoBiasAVX2(wt, bias *float32, width int, z *float32, ldz, j0, n int, best *float32, idx *int32)

// argmaxNAVX2 is any d, AVX2, with argmax8AVX2's interface and threshold
// (L = 1) plus d: per step of 32 codewords, two FMA chains per 8-codeword
// block (even and odd components), each component broadcast once from the
// token's chunk and FMAed with the four blocks of its row.
//
//go:noescape
func argmaxNAVX2(wt, bias *float32, width int, z *float32, ldz, j0, n int, best *float32, idx *int32, d int)

// argmax8AVX512 is d=8, T=4, L=16, AVX-512: per block of 16 codewords the 8
// codeword rows (Z0-Z7) and the bias (Z8) are loaded once; each token's
// score is two 4-deep VFMADD231PS.BCST chains (bias + z0..z3 w, z4..z7 w)
// with its components broadcast from zt, added, then VCMPPS GT into a mask
// register, VMAXPS for the best and VPBLENDMD for its index.
//
//go:noescape
func argmax8AVX512(wt, bias *float32, width int, zt *float32, d, j0, groups int, best *float32, idx *int32)

// argmaxNAVX512 is any d, T=8, L=16, AVX-512: per block of 16 codewords,
// one accumulator per token starting at the bias; for t < d, the codeword
// row t is loaded once and FMAed with each token's component t
// (VFMADD231PS.BCST).
//
//go:noescape
func argmaxNAVX512(wt, bias *float32, width int, zt *float32, d, j0, groups int, best *float32, idx *int32)

type argmaxKernel func(wt, bias *float32, width int, zt *float32, d, j0, groups int, best *float32, idx *int32)

func (c *Codebook) argmaxAVX2(dst []int32, ldd int, z []float32, ldz int, n int) {
	c.argmaxRowsAVX2(dst, ldd, z, ldz, n)
}

func (c *Codebook) argmaxAVX512(dst []int32, ldd int, z []float32, ldz int, n int) {
	if c.D == 8 {
		c.argmaxChunked(dst, ldd, z, ldz, n, 4, 16, argmax8AVX512)
	} else {
		c.argmaxChunked(dst, ldd, z, ldz, n, 8, 16, argmaxNAVX512)
	}
}

// argmaxScratch is one Argmax call's working memory.
type argmaxScratch struct {
	zt   []float32 // the batch's chunks, t-major per group of T tokens
	best []float32 // (batch, L) running maxima
	idx  []int32
}

var argmaxScratchPool = sync.Pool{New: func() any { return new(argmaxScratch) }}

// argmaxRowsAVX2 runs argmax8AVX2 (d=8) or argmaxNAVX2: per batch of up
// to argmaxBatch tokens, each chunk of the codebook in ascending order, all
// the batch's tokens in one call.
func (c *Codebook) argmaxRowsAVX2(dst []int32, ldd int, z []float32, ldz int, n int) {
	s := argmaxScratchPool.Get().(*argmaxScratch)
	defer argmaxScratchPool.Put(s)
	if len(s.best) < argmaxBatch {
		s.best = make([]float32, argmaxBatch*16)
		s.idx = make([]int32, argmaxBatch*16)
	}
	negInf := float32(math.Inf(-1))
	for b0 := 0; b0 < n; b0 += argmaxBatch {
		nb := min(argmaxBatch, n-b0)
		best, idx := s.best[:nb], s.idx[:nb]
		for i := range best {
			best[i], idx[i] = negInf, 0
		}
		for j0 := 0; j0 < c.vpad; j0 += argmaxChunk {
			width := min(argmaxChunk, c.vpad-j0)
			if c.D == 8 && c.noBias {
				argmax8NoBiasAVX2(&c.wt[j0*8], &c.bt[j0], width, &z[b0*ldz], ldz*4, j0, nb, &best[0], &idx[0])
			} else if c.D == 8 {
				argmax8AVX2(&c.wt[j0*8], &c.bt[j0], width, &z[b0*ldz], ldz*4, j0, nb, &best[0], &idx[0])
			} else {
				argmaxNAVX2(&c.wt[j0*c.D], &c.bt[j0], width, &z[b0*ldz], ldz*4, j0, nb, &best[0], &idx[0], c.D)
			}
		}
		for i, j := range idx {
			dst[(b0+i)*ldd] = j
		}
	}
}

// argmaxChunked runs a T-token, L-lane kernel over n tokens: per batch of
// up to argmaxBatch tokens, each chunk of the codebook in ascending order
// runs over every group of T tokens (a short last group is padded with zero
// chunks whose results are dropped); then each token's lanes are reduced.
func (c *Codebook) argmaxChunked(dst []int32, ldd int, z []float32, ldz int, n, T, L int, kernel argmaxKernel) {
	d := c.D
	s := argmaxScratchPool.Get().(*argmaxScratch)
	defer argmaxScratchPool.Put(s)
	groupsMax := (min(n, argmaxBatch) + T - 1) / T
	if len(s.zt) < groupsMax*T*d {
		s.zt = make([]float32, groupsMax*T*d)
	}
	if len(s.best) < groupsMax*T*L {
		s.best = make([]float32, groupsMax*T*L)
		s.idx = make([]int32, groupsMax*T*L)
	}
	negInf := float32(math.Inf(-1))
	for b0 := 0; b0 < n; b0 += argmaxBatch {
		nb := min(argmaxBatch, n-b0)
		groups := (nb + T - 1) / T
		{
			zt := s.zt[:groups*T*d]
			for g := 0; g < groups; g++ {
				zg := zt[g*T*d : (g+1)*T*d]
				for i := 0; i < T; i++ {
					if r := b0 + g*T + i; r < b0+nb {
						for t, v := range z[r*ldz : r*ldz+d] {
							zg[t*T+i] = v
						}
					} else {
						for t := 0; t < d; t++ {
							zg[t*T+i] = 0
						}
					}
				}
			}
		}
		best, idx := s.best[:groups*T*L], s.idx[:groups*T*L]
		for i := range best {
			best[i], idx[i] = negInf, 0
		}
		for j0 := 0; j0 < c.vpad; j0 += argmaxChunk {
			width := min(argmaxChunk, c.vpad-j0)
			kernel(&c.wt[j0*d], &c.bt[j0], width, &s.zt[0], d, j0, groups, &best[0], &idx[0])
		}
		for i := 0; i < nb; i++ {
			dst[(b0+i)*ldd] = reduceLanes(best[i*L:(i+1)*L], idx[i*L:(i+1)*L])
		}
	}
}
