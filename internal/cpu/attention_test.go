package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/unitok/unitok/internal/cpu/kern"
)

// refAttention is MultiHeadAttention in float64.
func refAttention(qkv []float32, ldq, nb, N, heads, hd int, causal bool) []float64 {
	W := heads * hd
	out := make([]float64, nb*N*W)
	sc := make([]float64, N)
	for b := 0; b < nb; b++ {
		for h := 0; h < heads; h++ {
			for i := 0; i < N; i++ {
				L := N
				if causal {
					L = i + 1
				}
				mx := math.Inf(-1)
				for j := 0; j < L; j++ {
					s := 0.0
					for d := 0; d < hd; d++ {
						s += float64(qkv[(b*N+i)*ldq+h*hd+d]) * float64(qkv[(b*N+j)*ldq+W+h*hd+d])
					}
					sc[j] = s / math.Sqrt(float64(hd))
					mx = max(mx, sc[j])
				}
				sum := 0.0
				for j := 0; j < L; j++ {
					sc[j] = math.Exp(sc[j] - mx)
					sum += sc[j]
				}
				for d := 0; d < hd; d++ {
					acc := 0.0
					for j := 0; j < L; j++ {
						acc += sc[j] * float64(qkv[(b*N+j)*ldq+2*W+h*hd+d])
					}
					out[(b*N+i)*W+h*hd+d] = acc / sum
				}
			}
		}
	}
	return out
}

// TestMultiHeadAttention checks full and causal attention against float64
// on every kernel level (head widths that are a multiple of 16 take the
// kern.Tile path on vector levels, the others kern.Gemm), at sequence
// lengths that leave partial query tiles and key blocks, with padded row
// strides; and that the result is bitwise the same for 1, 2 and 5 threads
// and with reused scratch.
func TestMultiHeadAttention(t *testing.T) {
	for _, l := range kern.Supported() {
		prev := kern.SetLevel(l)
		for _, tc := range []struct{ nb, N, heads, hd int }{{2, 200, 3, 40}, {1, 64, 2, 64}, {3, 9, 2, 5}, {1, 130, 1, 33}, {2, 77, 2, 32}, {1, 3, 1, 16}} {
			for _, causal := range []bool{false, true} {
				name := fmt.Sprintf("%v/nb%d_N%d_h%d_hd%d_causal%v", l, tc.nb, tc.N, tc.heads, tc.hd, causal)
				W := tc.heads * tc.hd
				ldq, ldd := 3*W+3, W+5
				rng := rand.New(rand.NewPCG(uint64(tc.N), uint64(tc.hd)))
				qkv := make([]float32, tc.nb*tc.N*ldq)
				for i := range qkv {
					qkv[i] = float32(rng.NormFloat64() * 1.5)
				}
				want := refAttention(qkv, ldq, tc.nb, tc.N, tc.heads, tc.hd, causal)
				var first []float32
				s := new(AttnScratch)
				for _, th := range []int{1, 2, 5, 2} {
					dst := make([]float32, tc.nb*tc.N*ldd)
					MultiHeadAttention(dst, ldd, qkv, ldq, tc.nb, tc.N, tc.heads, tc.hd, causal, th, s)
					worst := 0.0
					for r := 0; r < tc.nb*tc.N; r++ {
						for c := 0; c < W; c++ {
							w := want[r*W+c]
							worst = max(worst, math.Abs(float64(dst[r*ldd+c])-w)/(1+math.Abs(w)))
						}
						for c := W; c < ldd; c++ {
							if dst[r*ldd+c] != 0 {
								t.Fatalf("%s: wrote past the heads at row %d column %d", name, r, c)
							}
						}
					}
					if worst > 5e-6 { // scores of up to ~15: float32 rounding of a score is ~1e-6 relative in its weight
						t.Errorf("%s threads %d: worst error %g vs float64", name, th, worst)
					}
					if first == nil {
						first = dst
					} else if !slices.Equal(first, dst) {
						t.Errorf("%s: threads %d changed the result", name, th)
					}
				}
			}
		}
		kern.SetLevel(prev)
	}
}
