package kern

import (
	"math"
	"math/rand/v2"
	"testing"
)

// refLayerNorm is LayerNorm in float64 (two-pass statistics).
func refLayerNorm(x, g, b []float32, eps float32) []float64 {
	n := float64(len(x))
	var s float64
	for _, v := range x {
		s += float64(v)
	}
	m := s / n
	var q float64
	for _, v := range x {
		q += (float64(v) - m) * (float64(v) - m)
	}
	rstd := 1 / math.Sqrt(q/n+float64(eps))
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = (float64(v)-m)*rstd*float64(g[i]) + float64(b[i])
	}
	return out
}

// LayerNorm on every level against float64, at widths with and without a
// vector tail, rows centred and offset (mean up to 30 standard
// deviations), with dst aliasing x. The error of (x - m) * rstd in units of
// the output scale |g| (+ |b|) is what float32 statistics allow: ~1e-6.
func TestLayerNormMatchesFloat64(t *testing.T) {
	forEachLevel(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(5, 5))
		worst := 0.0
		for _, n := range []int{1, 3, 8, 13, 64, 160, 320, 1024, 1027, 1280, 4096} {
			for _, off := range []float64{0, 3, -30} {
				for _, eps := range []float32{1e-6, 1e-5} {
					x, g, b := make([]float32, n), make([]float32, n), make([]float32, n)
					sd := math.Exp(rng.NormFloat64() * 2)
					for i := range x {
						x[i] = float32((rng.NormFloat64() + off) * sd)
						g[i] = float32(rng.NormFloat64())
						b[i] = float32(rng.NormFloat64())
					}
					want := refLayerNorm(x, g, b, eps)
					got := make([]float32, n)
					LayerNorm(got, x, g, b, eps)
					in := append([]float32(nil), x...)
					LayerNorm(in, in, g, b, eps)
					for i := range want {
						if got[i] != in[i] {
							t.Fatalf("n=%d: aliased dst differs at %d: %g vs %g", n, i, in[i], got[i])
						}
						e := math.Abs(float64(got[i])-want[i]) / (math.Abs(float64(g[i])) + math.Abs(float64(b[i])) + 1e-30)
						if n > 1 {
							worst = max(worst, e)
						}
						if e > 1e-6 && n > 1 {
							t.Fatalf("n=%d offset %g eps %g: LayerNorm[%d] = %g, want %g (error %.2g)", n, off, eps, i, got[i], want[i], e)
						}
					}
				}
			}
		}
		t.Logf("worst error %.2g of |g|+|b|", worst)
		// A constant row normalizes to the bias.
		x := []float32{2.5, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5}
		g := []float32{1, 2, 3, 4, 5, 6, 7, 8, 9}
		b := []float32{9, 8, 7, 6, 5, 4, 3, 2, 1}
		LayerNorm(x, x, g, b, 1e-6)
		for i := range x {
			if x[i] != b[i] {
				t.Fatalf("constant row: %v", x)
			}
		}
	})
}

// GeluErf on every level against float64's erf: within 1.2e-6 of
// max(1, |GELU(x)|) (erf32's own error is up to 4.2e-7 absolute, near
// |z| = 3.6, and GELU multiplies it by |x|/2 where 1 + erf cancels), and
// within 4 ulp for x > 0.5.
func TestErf32(t *testing.T) {
	worst := 0.0
	for i := -600000; i <= 600000; i++ {
		z := float32(i) * 1e-5 // [-6, 6]
		worst = max(worst, math.Abs(float64(erf32(z))-math.Erf(float64(z))))
	}
	if worst > 4.5e-7 {
		t.Fatalf("erf32 worst absolute error %.3g", worst)
	}
}

func TestGeluErfMatchesFloat64(t *testing.T) {
	forEachLevel(t, func(t *testing.T) {
		var x []float32
		for i := -300000; i <= 300000; i++ {
			x = append(x, float32(i)*4e-5) // [-12, 12]
		}
		x = append(x, 0, -0, 1e-30, -1e-30, 100, -100, 3e38, -3e38, 5.656854, -5.656854, 7)
		got := append([]float32(nil), x...)
		GeluErf(got)
		worst, worstUlp := 0.0, 0.0
		for i, v := range x {
			f := float64(v)
			want := 0.5 * f * (1 + math.Erf(f/math.Sqrt2))
			d := math.Abs(float64(got[i]) - want)
			worst = max(worst, d/max(1, math.Abs(want)))
			if f > 0.5 && math.Abs(want) < 1e30 {
				ulp := float64(math.Nextafter32(float32(want), float32(math.Inf(1)))) - float64(float32(want))
				worstUlp = max(worstUlp, d/ulp)
			}
		}
		t.Logf("worst error %.2g absolute (relative above 1); %.1f ulp for x > 0.5", worst, worstUlp)
		if worst > 1.2e-6 || worstUlp > 4 {
			t.Fatalf("worst error %.2g absolute, %.1f ulp for x > 0.5", worst, worstUlp)
		}
		if got[len(x)-5] != 3e38 || got[len(x)-4] != 0 {
			t.Fatalf("GELU(3e38) = %g, GELU(-3e38) = %g", got[len(x)-5], got[len(x)-4])
		}
	})
}

// BenchmarkRowOps: the row kernels on L2-resident data, one thread.
func BenchmarkRowOps(b *testing.B) {
	x := make([]float32, 1<<14)
	for i := range x {
		x[i] = float32(i%2000)*0.004 - 4
	}
	g, bb, y := make([]float32, 1024), make([]float32, 1024), make([]float32, len(x))
	b.Run("GeluErf", func(b *testing.B) {
		b.SetBytes(int64(4 * len(x)))
		for i := 0; i < b.N; i++ {
			GeluErf(x)
		}
	})
	b.Run("LayerNorm1024", func(b *testing.B) {
		b.SetBytes(int64(4 * len(x)))
		for i := 0; i < b.N; i++ {
			for r := 0; r < len(x)/1024; r++ {
				LayerNorm(y[r*1024:(r+1)*1024], x[r*1024:(r+1)*1024], g, bb, 1e-6)
			}
		}
	})
	b.Run("GeGLU", func(b *testing.B) {
		b.SetBytes(int64(4 * len(x)))
		for i := 0; i < b.N; i++ {
			copy(y, x)
			GeGLU(y, x)
		}
	})
}
