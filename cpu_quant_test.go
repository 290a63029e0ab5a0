package unitok

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/unitok/unitok/internal/cpu/kern"
	"github.com/unitok/unitok/internal/cputime"
)

// The quantizer tests, the fixture conformance suite and the encode paths
// that end in quantize, once per codebook-search path this CPU supports
// (AVX-512, AVX2, pure Go), each forced in turn.
func TestQuantizeOnEveryArgmaxPath(t *testing.T) {
	t.Logf("argmax paths here: %v", kern.ArgmaxPaths())
	for _, p := range kern.ArgmaxPaths() {
		t.Run(p, func(t *testing.T) {
			prev := kern.SetArgmaxPath(p)
			defer kern.SetArgmaxPath(prev)
			t.Run("MatchesOracle", TestQuantizeMatchesOracle)
			t.Run("ZeroVectorsAndTies", TestQuantizeZeroVectorsAndTies)
			t.Run("CosineAndL2Agree", TestCosineAndL2AgreeOnNormalizedCodebooks)
			t.Run("Lookup", TestLookupReturnsNormalizedCodewords)
			t.Run("CodebookMajor", TestCodebookMajorLayout)
			t.Run("EncodeIsQuantProjThenQuantize", TestEncodeIsQuantProjThenQuantize)
			t.Run("ConcurrentCalls", TestConcurrentCallsAgree)
			t.Run("Conformance", TestConformanceCPU)
		})
	}
}

// BenchmarkQuantize is the codebook search at the real widths (K=8 codebooks
// of V=4096, d=8) on M=65,536 latent rows, per path and thread count.
// bench/faiss_compare.py runs it next to faiss.
func BenchmarkQuantize(b *testing.B) {
	const M = 65536
	m, err := benchModel()
	if err != nil {
		b.Fatal(err)
	}
	z := randNormal(rand.New(rand.NewPCG(1, 1)), M*realConfig.LatentDim)
	dst := make([]int32, M*realConfig.NumCodebooks)
	for _, p := range kern.ArgmaxPaths() {
		for _, threads := range []int{1, 2} {
			b.Run(fmt.Sprintf("path=%s/threads=%d", p, threads), func(b *testing.B) {
				prev := kern.SetArgmaxPath(p)
				defer kern.SetArgmaxPath(prev)
				tok, err := New(m, WithDevice("cpu"), WithThreads(threads))
				if err != nil {
					b.Fatal(err)
				}
				defer tok.Close()
				c0 := cputime.Process().Seconds()
				for b.Loop() {
					if err := tok.QuantizeInto(dst, z, M); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(M)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
				if c := cputime.Process().Seconds() - c0; c > 0 {
					b.ReportMetric(float64(M)*float64(b.N)/c, "tokens/cpu-s")
				}
			})
		}
	}
}
