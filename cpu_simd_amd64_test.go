//go:build goexperiment.simd

package unitok

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSIMDExpAccuracy(t *testing.T) {
	if !SIMD() {
		t.Skip("CPU lacks AVX2/FMA: the vector kernels are off")
	}
	rng := rand.New(rand.NewPCG(1, 1))
	x := make([]float32, 100003)
	for i := range x {
		x[i] = -float32(rng.Float64()) * 100
	}
	x[0], x[1], x[2] = 0, -1e-30, -87.5
	got := append([]float32(nil), x...)
	simdExp(got)
	worst := 0.0
	for i, v := range x {
		want := math.Exp(float64(v))
		if want < 1e-37 { // clamped tail: tiny either way
			require.Less(t, float64(got[i]), 1e-37)
			continue
		}
		ulp := float64(math.Nextafter32(float32(want), 2)) - float64(float32(want))
		worst = math.Max(worst, math.Abs(float64(got[i])-want)/ulp)
	}
	t.Logf("worst error %.2f ulp over %d values", worst, len(x))
	require.Less(t, worst, 2.0)
}
