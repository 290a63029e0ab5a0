package unitok

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/unitok/unitok/internal/cpu/kern"
)

func randNormal(rng *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

// maxRelErr is max|got-want| / max|want|: the error relative to the
// tensor's scale, so entries near zero do not dominate.
func maxRelErr(got []float32, want []float64) float64 {
	var num, den float64
	for i := range want {
		num = math.Max(num, math.Abs(float64(got[i])-want[i]))
		den = math.Max(den, math.Abs(want[i]))
	}
	return num / den
}

var testConfigs = []Config{
	{InDim: 48, LatentDim: 16, NumCodebooks: 4, CodebookSize: 100, NumHeads: 4},              // pool up 12 -> 16
	{InDim: 64, LatentDim: 16, NumCodebooks: 2, CodebookSize: 37, NumHeads: 2},               // pool down 32 -> 16
	{InDim: 64, LatentDim: 16, NumCodebooks: 8, CodebookSize: 50, NumHeads: 4},               // hd == D, d = 2
	{InDim: 96, LatentDim: 24, NumCodebooks: 3, CodebookSize: 70, NumHeads: 4, Causal: true}, // d = 8, hd == D
}

func TestCPUProjectionsMatchFloat64Reference(t *testing.T) { checkCPUProjections(t) }

// Every kernel level this CPU supports (the tests above run the default
// one) passes the PyTorch conformance suite and the float64 oracle.
func TestCPUEachKernelLevel(t *testing.T) {
	for _, l := range kern.Supported() {
		if l == kern.Current() {
			continue
		}
		t.Run(l.String(), func(t *testing.T) {
			defer kern.SetLevel(kern.SetLevel(l))
			runConformance(t, "cpu")
			checkCPUProjections(t)
		})
	}
}

func checkCPUProjections(t *testing.T) {
	for ci, c := range testConfigs {
		for _, causal := range []bool{false, true} {
			c.Causal = causal
			m, err := SynthModel(c, uint64(10+ci))
			require.NoError(t, err)
			tok, err := New(m, WithDevice("cpu"), WithThreads(3))
			require.NoError(t, err)
			rng := rand.New(rand.NewPCG(uint64(ci), 7))
			for _, bn := range [][2]int{{1, 1}, {2, 7}, {3, 13}} {
				B, N := bn[0], bn[1]
				x := randNormal(rng, B*N*c.InDim)
				z, err := tok.QuantProj(x, B, N)
				require.NoError(t, err)
				e := maxRelErr(z, refProject(&m.QuantProj, to64(x), B, N, causal))
				require.Less(t, e, 2e-6, "quant_proj cfg %d causal %v B=%d N=%d", ci, causal, B, N)
				y, err := tok.PostQuantProj(z, B, N)
				require.NoError(t, err)
				e = maxRelErr(y, refProject(&m.PostQuantProj, to64(z), B, N, causal))
				require.Less(t, e, 2e-6, "post_quant_proj cfg %d causal %v B=%d N=%d", ci, causal, B, N)
			}
			tok.Close()
		}
	}
}

func nanF() float64 { return math.NaN() }
