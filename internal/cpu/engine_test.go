package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/unitok/unitok/internal/cpu/kern"
	"github.com/unitok/unitok/internal/engine"
	"github.com/unitok/unitok/internal/engine/enginetest"
)

func TestEngineConformance(t *testing.T) {
	// Released buffers come back filled with NaN: an op that leaves a
	// value of a reused buffer unwritten fails the comparison.
	defer func(p bool) { poisonReleased = p }(poisonReleased)
	poisonReleased = true
	// Every kernel level this CPU has (the default one is the last).
	for _, l := range kern.Supported() {
		t.Run(l.String(), func(t *testing.T) {
			defer kern.SetLevel(kern.SetLevel(l))
			enginetest.Run(t, New(2))
		})
	}
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

// BenchmarkGELU: the engine's erf GELU over a decoder-sized map, 2 threads.
func BenchmarkGELU(b *testing.B) {
	e := New(2)
	s := engine.Shape{B: 1, H: 64, W: 64, C: 1280}
	x := make([]float32, s.Elems())
	for i := range x {
		x[i] = float32(i%2000)*0.004 - 4
	}
	t := e.FromHost(x, s)
	b.SetBytes(int64(4 * len(x)))
	for i := 0; i < b.N; i++ {
		e.GELU(t)
	}
}

// BenchmarkLayerNorm: the encoder's token LayerNorm (256 x 1024) and a
// decoder LayerNorm2d (64x64x320), 2 threads.
func BenchmarkLayerNorm(b *testing.B) {
	e := New(2)
	rng := rand.New(rand.NewPCG(1, 1))
	for _, s := range []engine.Shape{{B: 1, H: 16, W: 16, C: 1024}, {B: 1, H: 64, W: 64, C: 320}} {
		b.Run(fmt.Sprintf("%dx%dx%d", s.H, s.W, s.C), func(b *testing.B) {
			x := e.FromHost(randSlice(rng, s.Elems()), s)
			g, bb := e.Vector(randSlice(rng, s.C)), e.Vector(randSlice(rng, s.C))
			b.SetBytes(int64(4 * s.Elems()))
			for i := 0; i < b.N; i++ {
				e.LayerNorm(x, g, bb, 1e-6)
			}
		})
	}
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

// BenchmarkDepthwise is the decoder's widest depthwise convolution
// (128x128x640, 3x3, stride 1).
func BenchmarkDepthwise(b *testing.B) {
	e := New(0)
	rng := rand.New(rand.NewPCG(1, 2))
	s := engine.Shape{B: 1, H: 128, W: 128, C: 640}
	x := e.FromHost(randSlice(rng, s.Elems()), s)
	w := e.Conv(randSlice(rng, 640*9), randSlice(rng, 640), 640, 640, 3, 3, 640)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.Conv2d(x, w, 1, 1)
	}
	b.ReportMetric(float64(2*9*s.Elems())*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
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
