package kern

import (
	"fmt"
	"math"
	"sync/atomic"
)

// Codebook search: for a token chunk z (D floats) and a codebook of V
// codewords w_j with score offsets bias_j, the code is
//
//	argmax_j (bias_j + z . w_j), the lowest j on ties,
//
// which is cosine search (normalized codewords, bias 0) and L2 search
// (raw codewords, bias -|w_j|^2/2) in one form. The vector paths keep a
// running best per lane and never write scores to memory.

// Argmax paths, best first. ArgmaxPaths lists those the CPU supports.
const (
	PathAVX512  = "avx512"
	PathAVX2    = "avx2"
	PathGeneric = "generic"
)

// argmaxBlock is the codeword step of the vector kernels (32 for the
// AVX2 d=8 kernel, 16 or 8 for the others): V is padded to a multiple of it
// (padding codewords are zero with bias -Inf, so they never win).
const argmaxBlock = 32

// argmaxChunk is how many codewords the vector paths hold in L1 while a
// batch of tokens runs over them: its d rows (16 KB at d=8) plus its bias.
// Streaming the whole codebook (144 KB at V=4096, d=8) from L2 for every
// token instead costs about as much as the FMAs.
const argmaxChunk = 512

// argmaxBatch is how many tokens run over one chunk before the next chunk:
// their running maxima (128 x 16 lanes x 8 bytes = 16 KB at most) stay in
// L1 beside the chunk.
const argmaxBatch = 128

// Codebook is one codebook laid out for Argmax. It is immutable and safe to
// share between goroutines.
type Codebook struct {
	V, D int
	w    []float32 // (V, D) row-major: the generic path
	b    []float32 // V score offsets
	vpad int       // V rounded up to argmaxBlock
	// wt holds the codewords transposed chunk by chunk: the chunk of
	// codewords [j0, j0+width) (width = min(argmaxChunk, vpad-j0)) starts
	// at wt[j0*D] and is (D, width) row-major, zero past V.
	wt []float32
	bt []float32 // vpad: b, then -Inf past V
	// noBias: every offset is zero and V == vpad (cosine search at the
	// real widths), so a kernel may skip the offsets.
	noBias bool
}

// NewCodebook lays out the V codewords words (V, d) row-major and their
// score offsets bias (V) for Argmax. Both are copied.
func NewCodebook(words, bias []float32, V, d int) *Codebook {
	if V <= 0 || d <= 0 || len(words) < V*d || len(bias) < V {
		panic(fmt.Sprintf("kern.NewCodebook: %d words and %d offsets for V=%d, d=%d", len(words), len(bias), V, d))
	}
	vpad := (V + argmaxBlock - 1) / argmaxBlock * argmaxBlock
	c := &Codebook{
		V: V, D: d,
		w:    append([]float32(nil), words[:V*d]...),
		b:    append([]float32(nil), bias[:V]...),
		vpad: vpad,
		wt:   make([]float32, d*vpad),
		bt:   make([]float32, vpad),
	}
	for j0 := 0; j0 < vpad; j0 += argmaxChunk {
		width := min(argmaxChunk, vpad-j0)
		chunk := c.wt[j0*d : (j0+width)*d]
		for j := j0; j < min(j0+width, V); j++ {
			for t := 0; t < d; t++ {
				chunk[t*width+j-j0] = words[j*d+t]
			}
		}
	}
	copy(c.bt, bias[:V])
	c.noBias = vpad == V
	for _, v := range bias[:V] {
		if v != 0 {
			c.noBias = false
			break
		}
	}
	for j := V; j < vpad; j++ {
		c.bt[j] = float32(math.Inf(-1))
	}
	return c
}

// Argmax writes, for each of n tokens i, the code of the chunk
// z[i*ldz : i*ldz+D] into dst[i*ldd]: argmax_j (bias_j + z_i . w_j), ties to
// the lowest j. It runs on the calling goroutine; callers split tokens
// across cores. Paths differ from one another (and from a float64 oracle)
// only where the top two scores are within float32 rounding of each other.
func (c *Codebook) Argmax(dst []int32, ldd int, z []float32, ldz int, n int) {
	if n <= 0 {
		return
	}
	if ldz < c.D || ldd < 1 || len(z) < (n-1)*ldz+c.D || len(dst) < (n-1)*ldd+1 {
		panic(fmt.Sprintf("kern.Codebook.Argmax: n=%d tokens, ldz=%d, ldd=%d, len(z)=%d, len(dst)=%d, D=%d", n, ldz, ldd, len(z), len(dst), c.D))
	}
	switch currentArgmaxPath() {
	case pathAVX512:
		c.argmaxAVX512(dst, ldd, z, ldz, n)
	case pathAVX2:
		c.argmaxAVX2(dst, ldd, z, ldz, n)
	default:
		c.argmaxGeneric(dst, ldd, z, ldz, n)
	}
}

const (
	pathGeneric int32 = iota
	pathAVX2
	pathAVX512
)

var pathNames = map[int32]string{pathGeneric: PathGeneric, pathAVX2: PathAVX2, pathAVX512: PathAVX512}

// argmaxPath is the path Argmax runs: -1 until the first use picks the
// fastest one (bestArgmaxPath, per architecture, which self-checks the
// vector paths once: a few milliseconds, so not at program start);
// SetArgmaxPath changes it for tests and benchmarks.
var argmaxPath atomic.Int32

func init() { argmaxPath.Store(-1) }

func currentArgmaxPath() int32 {
	if p := argmaxPath.Load(); p >= 0 {
		return p
	}
	argmaxPath.CompareAndSwap(-1, bestArgmaxPath())
	return argmaxPath.Load()
}

// ArgmaxPaths returns the paths this CPU supports, fastest first; the first
// is the one Argmax runs unless SetArgmaxPath says otherwise.
func ArgmaxPaths() []string {
	var out []string
	for p := bestArgmaxPath(); p >= pathGeneric; p-- {
		out = append(out, pathNames[p])
	}
	return out
}

// ArgmaxPath returns the path Argmax runs.
func ArgmaxPath() string { return pathNames[currentArgmaxPath()] }

// SetArgmaxPath makes Argmax run the named path (one of ArgmaxPaths) and
// returns the previous one. It is meant for tests and benchmarks that
// compare paths; it panics on a path the CPU lacks.
func SetArgmaxPath(name string) (prev string) {
	for p := bestArgmaxPath(); p >= pathGeneric; p-- {
		if pathNames[p] == name {
			prev := currentArgmaxPath()
			argmaxPath.Store(p)
			return pathNames[prev]
		}
	}
	panic(fmt.Sprintf("kern.SetArgmaxPath: path %q is not supported here (have %v)", name, ArgmaxPaths()))
}

// argmaxGeneric is the pure-Go path and the reference for the others.
func (c *Codebook) argmaxGeneric(dst []int32, ldd int, z []float32, ldz int, n int) {
	for i := 0; i < n; i++ {
		zi := z[i*ldz : i*ldz+c.D]
		if c.D == 8 {
			dst[i*ldd] = argmax8Go(zi, c.w, c.b, c.V)
		} else {
			dst[i*ldd] = argmaxNGo(zi, c.w, c.b, c.V, c.D)
		}
	}
}

// argmax8Go is the d=8 generic path: the chunk lives in registers and each
// codeword costs 8 multiplies and 8 adds.
func argmax8Go(z, w, bias []float32, V int) int32 {
	z0, z1, z2, z3, z4, z5, z6, z7 := z[0], z[1], z[2], z[3], z[4], z[5], z[6], z[7]
	w = w[:V*8]
	bias = bias[:V]
	best, idx := float32(0), int32(0)
	for j := 0; j < V; j++ {
		e := w[j*8 : j*8+8 : j*8+8]
		s := bias[j] + (((z0*e[0] + z1*e[1]) + (z2*e[2] + z3*e[3])) + ((z4*e[4] + z5*e[5]) + (z6*e[6] + z7*e[7])))
		if j == 0 || s > best {
			best, idx = s, int32(j)
		}
	}
	return idx
}

// argmaxNGo is the general-d generic path.
func argmaxNGo(z, w, bias []float32, V, d int) int32 {
	best, idx := float32(0), int32(0)
	for j := 0; j < V; j++ {
		e := w[j*d : (j+1)*d]
		var s float32
		for t, v := range z {
			s += v * e[t]
		}
		s += bias[j]
		if j == 0 || s > best {
			best, idx = s, int32(j)
		}
	}
	return idx
}

// argmaxSelfCheck runs a vector path on small integer-valued problems
// (d=8 and d=5, codebooks spanning two chunks, ragged token groups) whose
// scores are exact in float32 under any summation order, so every path must
// return exactly the generic path's codes, ties (which the small integers
// make common) included.
func argmaxSelfCheck(path int32) bool {
	for _, cs := range []struct {
		d, V   int
		noBias bool
	}{{8, argmaxChunk + 45, false}, {5, argmaxChunk + 45, false}, {8, argmaxChunk + 2*argmaxBlock, true}} {
		d := cs.d
		c, z, n := exactArgmaxCase(d, cs.V, 13, cs.noBias)
		want, got := make([]int32, n), make([]int32, n)
		c.argmaxGeneric(want, 1, z, d, n)
		switch path {
		case pathAVX512:
			c.argmaxAVX512(got, 1, z, d, n)
		case pathAVX2:
			c.argmaxAVX2(got, 1, z, d, n)
		}
		for i := range want {
			if got[i] != want[i] {
				return false
			}
		}
	}
	return true
}

// exactArgmaxCase returns a codebook of V > 40 codewords of width d and n
// token chunks with small integer components and biases (a fixed LCG), so
// every score is an exact float32 integer.
func exactArgmaxCase(d, V, n int, zeroBias bool) (*Codebook, []float32, int) {
	x := uint32(12345)
	next := func() float32 {
		x = x*1664525 + 1013904223
		return float32(int(x>>28) - 8) // -8..7
	}
	w := make([]float32, V*d)
	for i := range w {
		w[i] = next()
	}
	bias := make([]float32, V)
	for i := range bias {
		bias[i] = next()
	}
	z := make([]float32, n*d)
	for i := range z {
		z[i] = next()
	}
	// Exact ties at the top: codewords 3, 40 and V-1 (another chunk) are
	// copies of the largest possible codeword, and every fourth token is
	// aligned with it.
	for _, j := range []int{3, 40, V - 1} {
		for t := 0; t < d; t++ {
			w[j*d+t] = 7
		}
		bias[j] = 7
	}
	for i := 0; i < n; i += 4 {
		for t := 0; t < d; t++ {
			z[i*d+t] = 7
		}
	}
	if zeroBias {
		clear(bias)
	}
	return NewCodebook(w, bias, V, d), z, n
}

// reduceLanes returns the index of the best lane's codeword: the largest
// score, the lowest codeword index among equal scores. Each lane saw its
// codewords in ascending order and kept the first of equal maxima.
func reduceLanes(best []float32, idx []int32) int32 {
	idx = idx[:len(best)]
	w := 0
	for l := 1; l < len(best); l++ {
		if best[l] > best[w] || (best[l] == best[w] && idx[l] < idx[w]) {
			w = l
		}
	}
	return idx[w]
}
