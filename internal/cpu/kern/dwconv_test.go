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
		// (c, ld): whole positions, and slabs of wider ones.
		for _, cl := range [][2]int{{8, 8}, {24, 24}, {12, 12}, {40, 40}, {16, 40}, {8, 20}, {4, 12}} {
			c, ld := cl[0], cl[1]
			for _, stride := range []int{1, 2} {
				for _, width := range []int{1, 5, 6, 7, 13} {
					for _, withBias := range []bool{false, true} {
						name := fmt.Sprintf("c=%d ld=%d stride=%d width=%d bias=%v", c, ld, stride, width, withBias)
						n := ((width-1)*stride+2)*ld + c
						x := [3][]float32{randNormals(rng, n), randNormals(rng, n), randNormals(rng, n)}
						w := randNormals(rng, 8*ld+c)
						var bias []float32
						if withBias {
							bias = randNormals(rng, c)
						}
						dst := make([]float32, width*ld+5)
						for i := range dst {
							dst[i] = 7
						}
						Depthwise3x3Row(dst, x[0], x[1], x[2], w, bias, c, ld, width, stride)
						for i, v := range dst {
							if ox, j := i/ld, i%ld; ox >= width || j >= c {
								if v != 7 {
									t.Fatalf("%s: wrote outside the outputs at %d", name, i)
								}
								continue
							}
							ox, j := i/ld, i%ld
							want := 0.0
							if bias != nil {
								want = float64(bias[j])
							}
							for ky := 0; ky < 3; ky++ {
								for kx := 0; kx < 3; kx++ {
									want += float64(x[ky][(ox*stride+kx)*ld+j]) * float64(w[(ky*3+kx)*ld+j])
								}
							}
							if math.Abs(float64(v)-want) > 1e-5*(1+math.Abs(want)) {
								t.Fatalf("%s: output %d channel %d = %g, want %g", name, ox, j, v, want)
							}
						}
					}
				}
			}
		}
	})
}
