//go:build goexperiment.simd

package unitok

import (
	"math"
	"math/rand/v2"
	"simd/archsimd"
	"testing"

	"github.com/stretchr/testify/require"
)

// The vector kernels must switch on exactly when the CPU has what they use.
func TestSIMDEnabledWithAVX2AndFMA(t *testing.T) {
	require.Equal(t, archsimd.X86.AVX2() && archsimd.X86.FMA(), SIMD())
}

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

func TestSIMDGeGLUAccuracy(t *testing.T) {
	if !SIMD() {
		t.Skip("CPU lacks AVX2/FMA: the vector kernels are off")
	}
	rng := rand.New(rand.NewPCG(2, 2))
	n := 50001
	gate, val := make([]float32, n), make([]float32, n)
	for i := range gate {
		gate[i] = float32(rng.NormFloat64() * 4)
		val[i] = float32(rng.NormFloat64())
	}
	gate[0], gate[1], gate[2], gate[3] = 0, 60, -60, -1e-20
	got := append([]float32(nil), gate...)
	simdGeGLU(got, val)
	worst := 0.0
	for i := range gate {
		x := float64(gate[i])
		want := 0.5 * x * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x))) * float64(val[i])
		// error relative to the operand scale: |x * val| bounds the result.
		scale := math.Max(math.Abs(x*float64(val[i])), 1e-30)
		worst = math.Max(worst, math.Abs(float64(got[i])-want)/scale)
	}
	t.Logf("worst error %.2e relative to |gate*val|", worst)
	require.Less(t, worst, 1e-6)
}

// BenchmarkSIMDGemmQKV times one core on the encode side's largest GEMM
// (256 tokens x 1024 -> 3072) and reports GFLOP/s.
func BenchmarkSIMDGemmQKV(b *testing.B) {
	if !SIMD() {
		b.Skip("CPU lacks AVX2/FMA")
	}
	R, I, O := 256, 1024, 3072
	a := randNormal(rand.New(rand.NewPCG(1, 1)), R*I)
	wt := packPanels(randNormal(rand.New(rand.NewPCG(2, 2)), O*I), O, I)
	dst := make([]float32, R*O)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		simdGemm(dst, a, I, O, I, nil, wt, 0, R, 0, O, false)
	}
	b.ReportMetric(float64(2*R*I*O)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}
