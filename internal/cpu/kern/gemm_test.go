package kern

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestGemmMatchesFloat64(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, sz := range [][3]int{{1, 1, 1}, {3, 5, 7}, {17, 33, 65}, {64, 100, 48}} {
		R, I, O := sz[0], sz[1], sz[2]
		a := make([]float32, R*(I+3))
		w := make([]float32, O*I)
		bias := make([]float32, O)
		for i := range a {
			a[i] = float32(rng.NormFloat64())
		}
		for i := range w {
			w[i] = float32(rng.NormFloat64())
		}
		for i := range bias {
			bias[i] = float32(rng.NormFloat64())
		}
		p := Pack(w, O, I)
		for _, acc := range []bool{false, true} {
			ldd := O + 2
			dst := make([]float32, R*ldd)
			for i := range dst {
				dst[i] = 0.5
			}
			Gemm(dst, ldd, a, I+3, R, p, bias, acc, 2)
			for r := 0; r < R; r++ {
				for o := 0; o < O; o++ {
					want := float64(bias[o])
					if acc {
						want += 0.5
					}
					for k := 0; k < I; k++ {
						want += float64(a[r*(I+3)+k]) * float64(w[o*I+k])
					}
					if got := float64(dst[r*ldd+o]); math.Abs(got-want) > 1e-4*(1+math.Abs(want))*math.Sqrt(float64(I)) {
						t.Fatalf("R=%d I=%d O=%d acc=%v: dst[%d,%d] = %g, want %g", R, I, O, acc, r, o, got, want)
					}
				}
				if dst[r*ldd+O] != 0.5 {
					t.Fatalf("padding column written")
				}
			}
		}
	}
}
