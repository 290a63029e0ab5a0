package cpu

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/unitok/unitok/internal/engine"
	"github.com/unitok/unitok/internal/engine/enginetest"
)

func TestEngineConformance(t *testing.T) {
	enginetest.Run(t, New(2))
	// The stride-1 convolutions again on the im2col path.
	old := implicitMinChannels
	implicitMinChannels = 1 << 30
	defer func() { implicitMinChannels = old }()
	enginetest.Run(t, New(1))
}

func randSlice(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return v
}

func TestExp32(t *testing.T) {
	worst := 0.0
	for i := -1000000; i <= 1000000; i++ {
		x := float32(i) * 8.7e-5 // [-87, 87] (below -87.34 the result is subnormal; exp32 flushes to 0)
		want := math.Exp(float64(x))
		worst = max(worst, math.Abs(float64(exp32(x))-want)/want)
	}
	if worst > 2.5e-7 {
		t.Fatalf("exp32 worst relative error %g", worst)
	}
	if exp32(-100) != 0 || !math.IsInf(float64(exp32(100)), 1) || exp32(0) != 1 {
		t.Fatalf("exp32 limits: %g %g %g", exp32(-100), exp32(100), exp32(0))
	}
	t.Logf("exp32 worst relative error %.2g", worst)
}

func TestFastGELUsMatchFloat64(t *testing.T) {
	var worstErf, worstTanh float64
	for i := -200000; i <= 200000; i++ {
		x := float32(i) * 6e-5 // [-12, 12]
		f := float64(x)
		we := 0.5 * f * (1 + math.Erf(f/math.Sqrt2))
		wt := 0.5 * f * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(f+0.044715*f*f*f)))
		worstErf = max(worstErf, math.Abs(float64(geluErf32(x))-we)/(1+math.Abs(we)))
		worstTanh = max(worstTanh, math.Abs(float64(geluTanh32(x))-wt)/(1+math.Abs(wt)))
	}
	// erf32 is within 4e-7 of erf; GELU multiplies that by |x|/2 where
	// 1 + erf(x/sqrt2) cancels (x near -4.7): about 1e-6 absolute there.
	if worstErf > 1.5e-6 || worstTanh > 2e-7 {
		t.Fatalf("worst error: erf GELU %g, tanh GELU %g", worstErf, worstTanh)
	}
	t.Logf("worst error: erf GELU %.2g, tanh GELU %.2g", worstErf, worstTanh)
}

func BenchmarkGELU(b *testing.B) {
	x := make([]float32, 1<<16)
	for i := range x {
		x[i] = float32(i%2000)*0.004 - 4
	}
	b.Run("math.Erf", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			for j, v := range x {
				x[j] = geluErf(v)*0 + v
			}
		}
	})
	b.Run("erf32", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			for j, v := range x {
				x[j] = geluErf32(v)*0 + v
			}
		}
	})
}

// BenchmarkConv3x3 compares the im2col and implicit-GEMM paths on a
// decoder-sized stride-1 convolution (64x64, 320 -> 320 channels).
func BenchmarkConv3x3(b *testing.B) {
	rng := rand.New(rand.NewPCG(9, 9))
	const C, HW = 320, 64
	e := New(0)
	s := engine.Shape{B: 1, H: HW, W: HW, C: C}
	x := e.FromHost(randSlice(rng, s.Elems()), s)
	w := e.Conv(randSlice(rng, C*C*9), randSlice(rng, C), C, C, 3, 3, 1)
	for _, mode := range []struct {
		name string
		min  int
	}{{"im2col", 1 << 30}, {"implicit", 16}} {
		b.Run(mode.name, func(b *testing.B) {
			old := implicitMinChannels
			implicitMinChannels = mode.min
			defer func() { implicitMinChannels = old }()
			e.Conv2d(x, w, 1, 1)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				e.Conv2d(x, w, 1, 1)
			}
			b.ReportMetric(float64(HW*HW*C*C*9*2)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// GeGLU writes a new tensor (odd length: vector body and scalar tail) and
// leaves both inputs as they were.
func TestGeGLUKeepsInputs(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	s := engine.Shape{B: 1, H: 3, W: 7, C: 2001}
	e := New(3)
	g, v := randSlice(rng, s.Elems()), randSlice(rng, s.Elems())
	gt, vt := e.FromHost(g, s), e.FromHost(v, s)
	y := e.ToHost(e.GeGLU(gt, vt))
	if !slices.Equal(e.ToHost(gt), g) || !slices.Equal(e.ToHost(vt), v) {
		t.Fatal("GeGLU modified its inputs")
	}
	for i := range y {
		x := float64(g[i])
		want := 0.5 * x * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x))) * float64(v[i])
		if math.Abs(float64(y[i])-want) > 1e-6*(math.Abs(x*float64(v[i]))+1e-30) {
			t.Fatalf("GeGLU[%d] = %g, want %g", i, y[i], want)
		}
	}
}
