package kern

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestSoftmaxMatchesFloat64(t *testing.T) {
	forEachLevel(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(7, 8))
		for _, n := range []int{1, 7, 8, 9, 64, 255, 256, 1000} {
			for _, spread := range []float64{0.1, 5, 200} {
				x := make([]float32, n)
				for i := range x {
					x[i] = float32(rng.NormFloat64() * spread)
				}
				scale := float32(0.125)
				got := append([]float32(nil), x...)
				Softmax(got, scale)
				mx := math.Inf(-1)
				for _, v := range x {
					mx = math.Max(mx, float64(v)*float64(scale))
				}
				var sum float64
				want := make([]float64, n)
				for i, v := range x {
					want[i] = math.Exp(float64(v)*float64(scale) - mx)
					sum += want[i]
				}
				for i := range want {
					want[i] /= sum
					if d := math.Abs(float64(got[i]) - want[i]); d > 1e-6*want[i]+1e-30 && d > 4e-7*want[i]*float64(n) {
						t.Fatalf("n=%d spread=%g: softmax[%d] = %g, want %g", n, spread, i, got[i], want[i])
					}
				}
			}
		}
	})
}

// The vector exp is within 2 ulp of exp over the softmax range.
func TestExpShiftAccuracy(t *testing.T) {
	v := vecs[Current()]
	if v == nil {
		t.Skip("no vector level on this CPU")
	}
	rng := rand.New(rand.NewPCG(1, 1))
	x := make([]float32, 100000)
	for i := range x {
		x[i] = -float32(rng.Float64()) * 100
	}
	x[0], x[1], x[2] = 0, -1e-30, -87.5
	got := append([]float32(nil), x...)
	v.expShift(got, 1, 0)
	worst := 0.0
	for i, xv := range x {
		want := math.Exp(float64(xv))
		if want < 1e-37 { // clamped tail: tiny either way
			if got[i] >= 1e-37 {
				t.Fatalf("exp(%g) = %g", xv, got[i])
			}
			continue
		}
		ulp := float64(math.Nextafter32(float32(want), 2)) - float64(float32(want))
		worst = math.Max(worst, math.Abs(float64(got[i])-want)/ulp)
	}
	t.Logf("worst error %.2f ulp over %d values", worst, len(x))
	if worst >= 2 {
		t.Fatalf("worst error %.2f ulp", worst)
	}
}

func TestGeGLUAccuracy(t *testing.T) {
	forEachLevel(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(2, 2))
		n := 50001
		gate, val := make([]float32, n), make([]float32, n)
		for i := range gate {
			gate[i] = float32(rng.NormFloat64() * 4)
			val[i] = float32(rng.NormFloat64())
		}
		gate[0], gate[1], gate[2], gate[3] = 0, 60, -60, -1e-20
		got := append([]float32(nil), gate...)
		GeGLU(got, val)
		worst := 0.0
		for i := range gate {
			x := float64(gate[i])
			want := 0.5 * x * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x))) * float64(val[i])
			scale := math.Max(math.Abs(x*float64(val[i])), 1e-30)
			worst = math.Max(worst, math.Abs(float64(got[i])-want)/scale)
		}
		t.Logf("worst error %.2e relative to |gate*val|", worst)
		if worst >= 1e-6 {
			t.Fatalf("worst error %.2e", worst)
		}
	})
}
