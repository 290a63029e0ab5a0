package kern

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestDepthwise3x3RowMatchesFloat64 checks every level against a float64
// oracle: channel counts on and off the vector width, stride 1 and 2,
// widths through the six-output loop and its tail, with and without bias,
// and that nothing past the row is written.
func TestDepthwise3x3RowMatchesFloat64(t *testing.T) {
	forEachLevel(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(9, 10))
		for _, c := range []int{8, 24, 12, 40} {
			for _, stride := range []int{1, 2} {
				for _, width := range []int{1, 5, 6, 7, 13} {
					for _, withBias := range []bool{false, true} {
						name := fmt.Sprintf("c=%d stride=%d width=%d bias=%v", c, stride, width, withBias)
						n := ((width-1)*stride + 3) * c
						x := [3][]float32{randNormals(rng, n), randNormals(rng, n), randNormals(rng, n)}
						w := randNormals(rng, 9*c)
						var bias []float32
						if withBias {
							bias = randNormals(rng, c)
						}
						dst := make([]float32, width*c+5)
						for i := range dst {
							dst[i] = 7
						}
						Depthwise3x3Row(dst, x[0], x[1], x[2], w, bias, c, width, stride)
						for ox := 0; ox < width; ox++ {
							for j := 0; j < c; j++ {
								want := 0.0
								if bias != nil {
									want = float64(bias[j])
								}
								for ky := 0; ky < 3; ky++ {
									for kx := 0; kx < 3; kx++ {
										want += float64(x[ky][(ox*stride+kx)*c+j]) * float64(w[(ky*3+kx)*c+j])
									}
								}
								if got := float64(dst[ox*c+j]); math.Abs(got-want) > 1e-5*(1+math.Abs(want)) {
									t.Fatalf("%s: output %d channel %d = %g, want %g", name, ox, j, got, want)
								}
							}
						}
						for i := width * c; i < len(dst); i++ {
							if dst[i] != 7 {
								t.Fatalf("%s: wrote past the row at %d", name, i)
							}
						}
					}
				}
			}
		}
	})
}
