package kern

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/unitok/unitok/internal/cputime"
)

// BenchmarkGemmShapes times kern.Gemm at the shapes of the image path
// (vitamin_large ViT linears, attention per head, MbConv 1x1 convolutions,
// the 3x3 stem convolution by im2col) on 1 and 2 threads.
func BenchmarkGemmShapes(b *testing.B) {
	for _, s := range [][3]int{{16384, 160, 640}, {4096, 1280, 320}, {256, 1024, 3072}, {1024, 1024, 3072}, {1024, 2048, 1024}, {256, 1024, 1024}, {256, 1024, 2048}, {256, 2048, 1024}, {256, 64, 256}, {256, 256, 64}, {4096, 160, 640}, {4096, 640, 160}, {16384, 1440, 160}} {
		R, I, O := s[0], s[1], s[2]
		rng := rand.New(rand.NewPCG(1, 1))
		a, w, bias := randNormals(rng, R*I), randNormals(rng, O*I), randNormals(rng, O)
		p := Pack(w, O, I)
		dst := make([]float32, R*O)
		for _, th := range []int{1, 2} {
			b.Run(fmt.Sprintf("%dx%dx%d/t%d", R, I, O, th), func(b *testing.B) {
				t0 := cputime.Process()
				for i := 0; i < b.N; i++ {
					Gemm(dst, O, a, I, R, p, bias, false, th)
				}
				dt := cputime.Process() - t0
				flop := float64(2*R*I*O) * float64(b.N)
				b.ReportMetric(flop/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				b.ReportMetric(flop/dt.Seconds()/1e9, "GFLOP/cpu-s")
			})
		}
	}
}
