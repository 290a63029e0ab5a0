package cpu

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkMultiHeadAttention: one vitamin_large block's attention (256
// tokens, 16 heads of 64) and the core's encoder chunk (8 images), 2 threads.
func BenchmarkMultiHeadAttention(b *testing.B) {
	for _, nb := range []int{1, 8} {
		for _, causal := range []bool{false, true} {
			b.Run(fmt.Sprintf("nb%d/causal=%v", nb, causal), func(b *testing.B) {
				const N, H, hd = 256, 16, 64
				W := H * hd
				rng := rand.New(rand.NewPCG(1, 2))
				qkv := make([]float32, nb*N*3*W)
				for i := range qkv {
					qkv[i] = float32(rng.NormFloat64())
				}
				dst := make([]float32, nb*N*W)
				s := new(AttnScratch)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					MultiHeadAttention(dst, W, qkv, 3*W, nb, N, H, hd, causal, 2, s)
				}
				b.ReportMetric(float64(b.N)*float64(nb*H)*4*N*N*hd/1e9/b.Elapsed().Seconds(), "GFLOP/s(full)")
			})
		}
	}
}
