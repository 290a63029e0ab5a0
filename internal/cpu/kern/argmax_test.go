package kern

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/unitok/unitok/internal/cputime"
)

// forEachArgmaxPath runs fn once per path this CPU supports, with Argmax
// forced to it.
func forEachArgmaxPath(t *testing.T, fn func(t *testing.T)) {
	t.Helper()
	for _, p := range ArgmaxPaths() {
		t.Run(p, func(t *testing.T) {
			prev := SetArgmaxPath(p)
			defer SetArgmaxPath(prev)
			fn(t)
		})
	}
}

func TestArgmaxPathsAndDispatch(t *testing.T) {
	paths := ArgmaxPaths()
	t.Logf("argmax paths on this CPU: %v (chosen: %s)", paths, ArgmaxPath())
	require.Equal(t, paths[0], ArgmaxPath(), "start-up picks the fastest path")
	require.Equal(t, PathGeneric, paths[len(paths)-1], "the pure-Go path is always there")
	require.Panics(t, func() { SetArgmaxPath("sse9") })
	prev := SetArgmaxPath(PathGeneric)
	require.Equal(t, PathGeneric, ArgmaxPath())
	require.Equal(t, PathGeneric, SetArgmaxPath(prev))
	require.Equal(t, paths[0], ArgmaxPath())
}

// oracle64 scores every codeword in float64 and returns the argmax (lowest
// index on ties), the gap to the runner-up, and the float32 rounding scale
// of the scores (sum of |terms|).
func oracle64(z, w, bias []float32, V, d int) (best int, margin, scale float64) {
	s1, s2 := math.Inf(-1), math.Inf(-1)
	for j := 0; j < V; j++ {
		s, a := float64(bias[j]), math.Abs(float64(bias[j]))
		for t := 0; t < d; t++ {
			p := float64(z[t]) * float64(w[j*d+t])
			s += p
			a += math.Abs(p)
		}
		scale = math.Max(scale, a)
		if s > s1 {
			s1, s2, best = s, s1, j
		} else if s > s2 {
			s2 = s
		}
	}
	return best, s1 - s2, scale
}

func randSlice(rng *rand.Rand, n int, scale float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64() * scale)
	}
	return x
}

// Every path against the float64 oracle over codebook sizes that do and do
// not fill the 16-codeword blocks, d = 8 (the dedicated kernels) and other
// widths, token counts that do not fill the token groups, and strided
// inputs and outputs.
func TestArgmaxMatchesOracle(t *testing.T) {
	shapes := []struct{ V, d int }{
		{4096, 8}, {1, 8}, {7, 8}, {16, 8}, {33, 8}, {300, 8},
		{1000, 8}, {1, 1}, {50, 1}, {100, 3}, {17, 4}, {64, 13}, {257, 16}, {40, 64}, {35, 70}, {600, 13},
	}
	forEachArgmaxPath(t, func(t *testing.T) {
		for si, sh := range shapes {
			for _, l2 := range []bool{false, true} {
				rng := rand.New(rand.NewPCG(uint64(si), 7))
				V, d := sh.V, sh.d
				w := randSlice(rng, V*d, 1)
				bias := make([]float32, V)
				if l2 {
					for j := range bias {
						var s float32
						for _, v := range w[j*d : (j+1)*d] {
							s += v * v
						}
						bias[j] = -0.5 * s
					}
				}
				cb := NewCodebook(w, bias, V, d)
				n, ldz, ldd := 37, d+5, 3
				if si%3 == 0 { // past one batch of tokens
					n = argmaxBatch + 5
				}
				z := randSlice(rng, (n-1)*ldz+d, 1)
				dst := make([]int32, (n-1)*ldd+1)
				for i := range dst {
					dst[i] = -7 // untouched between strided outputs
				}
				cb.Argmax(dst, ldd, z, ldz, n)
				compared := 0
				for i := 0; i < n; i++ {
					want, margin, scale := oracle64(z[i*ldz:i*ldz+d], w, bias, V, d)
					if V > 1 && margin <= 1e-6*scale {
						continue
					}
					compared++
					require.Equal(t, int32(want), dst[i*ldd], "V=%d d=%d l2=%v token %d (margin %.3g)", V, d, l2, i, margin)
					for k := 1; k < ldd && i+1 < n; k++ {
						require.Equal(t, int32(-7), dst[i*ldd+k], "wrote between outputs")
					}
				}
				require.Greater(t, compared, n*8/10, "V=%d d=%d: too many near-ties", V, d)
			}
		}
	})
}

// Constructed exact ties: copies of one codeword placed in other lanes and
// blocks (and a block past the first), bitwise equal scores; the lowest
// index must win on every path, whatever lane or block it sits in.
func TestArgmaxTiesKeepLowestIndex(t *testing.T) {
	for _, d := range []int{8, 5} {
		for _, copies := range [][]int{
			{13, 20},           // block 0 lane 13 vs block 1 lane 4
			{3, 19, 35},        // the same lane in three blocks
			{40, 9},            // the lower copy written second
			{70, 71, 72, 4000}, // neighbours in one block, one far away
			{0, 4095},
		} {
			V := 4096
			rng := rand.New(rand.NewPCG(uint64(d), uint64(copies[0])))
			w := randSlice(rng, V*d, 1)
			for j := 0; j < V; j++ { // unit codewords: a copy's direction wins clearly
				var s float32
				for _, v := range w[j*d : (j+1)*d] {
					s += v * v
				}
				r := float32(1 / math.Sqrt(float64(s)))
				for t := 0; t < d; t++ {
					w[j*d+t] *= r
				}
			}
			src := copies[len(copies)-1]
			for _, j := range copies {
				copy(w[j*d:(j+1)*d], w[src*d:(src+1)*d])
			}
			bias := make([]float32, V)
			cb := NewCodebook(w, bias, V, d)
			lowest := copies[0]
			for _, j := range copies {
				lowest = min(lowest, j)
			}
			// 9 tokens: all exactly the tied direction (so groups of 4 and 8
			// hold ties in every slot, and one group is short).
			n := 9
			z := make([]float32, n*d)
			for i := 0; i < n; i++ {
				for t := 0; t < d; t++ {
					z[i*d+t] = w[src*d+t] * float32(1+i)
				}
			}
			forEachArgmaxPath(t, func(t *testing.T) {
				dst := make([]int32, n)
				cb.Argmax(dst, 1, z, d, n)
				for i := range dst {
					require.Equal(t, int32(lowest), dst[i], "d=%d copies %v token %d", d, copies, i)
				}
			})
		}
	}
}

// A zero chunk scores every codeword at its bias: all-equal offsets tie
// everywhere and go to 0; otherwise the lowest index of the largest offset.
func TestArgmaxZeroChunkScoresTheBias(t *testing.T) {
	for _, d := range []int{8, 3} {
		V := 100
		rng := rand.New(rand.NewPCG(1, uint64(d)))
		w := randSlice(rng, V*d, 1)
		flat := NewCodebook(w, make([]float32, V), V, d)
		bias := make([]float32, V)
		for j := range bias {
			bias[j] = -1
		}
		bias[57], bias[41], bias[90] = 0.5, 0.5, 0.25
		peaked := NewCodebook(w, bias, V, d)
		forEachArgmaxPath(t, func(t *testing.T) {
			z := make([]float32, 5*d)
			dst := make([]int32, 5)
			flat.Argmax(dst, 1, z, d, 5)
			require.Equal(t, []int32{0, 0, 0, 0, 0}, dst)
			peaked.Argmax(dst, 1, z, d, 5)
			require.Equal(t, []int32{41, 41, 41, 41, 41}, dst)
		})
	}
}

// Paths agree with one another except where the top two are within float32
// noise; on the real shape (V=4096, d=8) count how often that happens.
func TestArgmaxPathsAgree(t *testing.T) {
	V, d, n := 4096, 8, 2000
	rng := rand.New(rand.NewPCG(3, 3))
	w := randSlice(rng, V*d, 1)
	bias := make([]float32, V)
	cb := NewCodebook(w, bias, V, d)
	z := randSlice(rng, n*d, 1)
	ref := make([]int32, n)
	prev := SetArgmaxPath(PathGeneric)
	cb.Argmax(ref, 1, z, d, n)
	SetArgmaxPath(prev)
	forEachArgmaxPath(t, func(t *testing.T) {
		got := make([]int32, n)
		cb.Argmax(got, 1, z, d, n)
		differ := 0
		for i := range got {
			if got[i] != ref[i] {
				_, margin, scale := oracle64(z[i*d:(i+1)*d], w, bias, V, d)
				require.LessOrEqual(t, margin, 1e-6*scale, "token %d: %d vs generic %d", i, got[i], ref[i])
				differ++
			}
		}
		t.Logf("%d of %d codes differ from the generic path, all within float32 noise", differ, n)
	})
}

// Integer-valued problems score exactly in float32 under any summation
// order: every path must match the generic one code for code, on many
// exact ties; and the start-up self-check accepts every path the CPU has.
func TestArgmaxExactIntegerProblemsAgree(t *testing.T) {
	ties := 0
	for _, cs := range []struct {
		d, V     int
		zeroBias bool
	}{{8, 2*argmaxChunk + 100, false}, {5, 2*argmaxChunk + 100, false}, {1, 2*argmaxChunk + 100, false}, {16, 2*argmaxChunk + 100, false}, {8, 2*argmaxChunk + 3*argmaxBlock, true}} {
		d := cs.d
		c, z, n := exactArgmaxCase(d, cs.V, 301, cs.zeroBias)
		// The zero-offset case runs the kernels that skip the offsets.
		require.Equal(t, cs.zeroBias, c.noBias, "%+v", cs)
		want := make([]int32, n)
		c.argmaxGeneric(want, 1, z, d, n)
		for i := 0; i < n; i++ {
			_, margin, _ := oracle64(z[i*d:(i+1)*d], c.w, c.b, c.V, d)
			if margin == 0 {
				ties++
			}
		}
		forEachArgmaxPath(t, func(t *testing.T) {
			got := make([]int32, n)
			c.Argmax(got, 1, z, d, n)
			require.Equal(t, want, got, "d=%d", d)
		})
	}
	t.Logf("%d tokens with an exact tie for the best score", ties)
	require.Greater(t, ties, 50, "the integer problems must exercise ties")
	for _, p := range ArgmaxPaths() {
		for q, name := range pathNames {
			if name == p && q != pathGeneric {
				require.True(t, argmaxSelfCheck(q), p)
			}
		}
	}
}

func TestArgmaxRejectsShortInputs(t *testing.T) {
	cb := NewCodebook(make([]float32, 16), make([]float32, 2), 2, 8)
	require.Panics(t, func() { cb.Argmax(make([]int32, 2), 1, make([]float32, 15), 8, 2) })
	require.Panics(t, func() { cb.Argmax(make([]int32, 1), 1, make([]float32, 16), 8, 2) })
	require.Panics(t, func() { cb.Argmax(make([]int32, 2), 1, make([]float32, 16), 7, 2) })
	require.Panics(t, func() { NewCodebook(make([]float32, 15), make([]float32, 2), 2, 8) })
	cb.Argmax(nil, 1, nil, 8, 0) // nothing to do
}

// BenchmarkArgmax scores tokens against one real-size codebook (V=4096,
// d=8) on one goroutine, per path.
func BenchmarkArgmax(b *testing.B) {
	for _, sh := range []struct{ V, d int }{{4096, 8}, {4096, 16}} {
		rng := rand.New(rand.NewPCG(1, 1))
		cb := NewCodebook(randSlice(rng, sh.V*sh.d, 1), make([]float32, sh.V), sh.V, sh.d)
		n := 256
		z := randSlice(rng, n*sh.d, 1)
		dst := make([]int32, n)
		for _, p := range ArgmaxPaths() {
			b.Run(fmt.Sprintf("%s/V=%d/d=%d", p, sh.V, sh.d), func(b *testing.B) {
				prev := SetArgmaxPath(p)
				defer SetArgmaxPath(prev)
				c0 := cputime.Process().Seconds()
				for b.Loop() {
					cb.Argmax(dst, 1, z, sh.d, n)
				}
				b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "chunks/s")
				if c := cputime.Process().Seconds() - c0; c > 0 {
					b.ReportMetric(float64(n)*float64(b.N)/c, "chunks/cpu-s")
				}
			})
		}
	}
}
